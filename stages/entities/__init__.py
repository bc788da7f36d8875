"""DragEntity entities of a clip: first-frame masks -> incircles -> tracked centers.

Modules: ``extract`` (``EntityStage``, the per-clip stage, and the ``auto`` mask rule),
``masks`` (the ``MaskSource`` interface, ``EntityMasks``, the ``MASK_SOURCES`` registry),
``masks_gt`` (dataset id maps), ``masks_sam`` (segment-anything; ``sam_amg``: its batched
automatic mask generator), ``masks_motion`` (colour + flow regions, CPU), ``incircle``
(entity centers and radii), ``tracking`` (center trackers, the ``TRACKERS`` registry).
The stage's names are re-exported here (``from stages.entities import EntityStage``).
"""
from __future__ import annotations

from .extract import EntityStage, choose_mask_source, make_entity_stage, mask_choices, tracker_choices

__all__ = ["EntityStage", "make_entity_stage", "choose_mask_source", "mask_choices", "tracker_choices"]
