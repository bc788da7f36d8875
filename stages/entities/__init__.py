"""DragEntity entities of a clip: first-frame masks -> incircles -> tracked centers.

Modules: ``extract`` (``extract_entities``, the ``auto`` mask rule), ``masks`` (the
``MaskSource`` interface, ``EntityMasks``, the ``MASK_SOURCES`` registry), ``masks_gt``
(dataset id maps), ``masks_sam`` (segment-anything; ``sam_amg``: its batched automatic mask
generator), ``masks_motion`` (colour + flow regions, CPU), ``incircle`` (entity centers and
radii), ``tracking`` (center trackers, the ``TRACKERS`` registry). The pipeline's entity steps
(``pipeline/steps/entity_masks.py``, ``entity_tracks.py``) call them.
"""
from __future__ import annotations

from .extract import (ChosenMasks, choose_mask_source, extract_entities, mask_choices, mask_source_names,
                      tracker_choices)

__all__ = ["ChosenMasks", "choose_mask_source", "mask_source_names", "extract_entities", "mask_choices",
           "tracker_choices"]
