"""Entity mask sources: the interface, its result, and the registry of sources.

A mask source gives one id map of the first profile frame: the candidate entities of a clip.

Public API
----------
``MaskSource``                     the interface: ``masks(frames, flow, meta, row) -> EntityMasks``
                                   and ``describe() -> dict`` (stored in the sample meta);
                                   ``needs_backward_flow`` asks the caller for the backward flow.
``EntityMasks``                    ``id_map`` (H, W) int64 (``NO_ENTITY`` = -1 where no entity),
                                   ``ids`` (K,) int64 candidate ids, ``kinds`` (K,) str
                                   ("thing" | "stuff" | "region"), ``dropped`` counts by rule,
                                   ``info`` (per-clip provenance).
``from_label_map(labels, kind, **info)``
                                   a label map (0 = none, 1..n regions) -> ``EntityMasks``.
``MASK_SOURCES``                   the registry (``stages.registry.Registry``): "gt"
                                   (``masks_gt.GtMaskSource``), "sam" (``masks_sam.SamMaskSource``),
                                   "motion" (``masks_motion.MotionMaskSource``), each imported on
                                   first use; a plugin adds one with
                                   ``MASK_SOURCES.register(name, factory)``.
``make_mask_source(name, **options)`` ``MASK_SOURCES.create``: "gt" (void_ids, keep_background,
                                   stuff_max_id) | "sam" (model_type, checkpoint, device,
                                   batch_size, params) | "motion" (segment_motion parameters).

Each source's rules are in its module's docstring (and docs/entities.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..registry import Registry

__all__ = ["NO_ENTITY", "EntityMasks", "MaskSource", "MASK_SOURCES", "from_label_map", "make_mask_source"]

NO_ENTITY = -1


@dataclass
class EntityMasks:
    id_map: np.ndarray                     # (H, W) int64, NO_ENTITY where no candidate
    ids: np.ndarray                        # (K,) int64 candidate ids, as they appear in id_map
    kinds: list[str] = field(default_factory=list)   # per id: thing | stuff | region
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class MaskSource:
    """Interface: one instance per worker (models loaded once), ``masks`` per clip."""

    name = "base"
    needs_backward_flow = False   # True: masks() wants the backward flow (backward_flow=...)
    device_kind = "cpu"           # "torch": a model (its own GPU operator on a GPU cluster)

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name}

    def masks(self, frames: np.ndarray, flow: np.ndarray | None, meta: dict, row: dict,
              backward_flow: np.ndarray | None = None) -> EntityMasks:
        """frames (L, H, W, 3) uint8 RGB, flow (L-1, 2, H, W), the sample meta (geometry),
        the manifest row -> candidate entities on frame 0."""
        raise NotImplementedError



def from_label_map(labels: np.ndarray, kind: str = "region", **info: Any) -> EntityMasks:
    """A 0-based-free label map (0 = none, 1..n regions) -> EntityMasks."""
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    id_map = labels.astype(np.int64)
    id_map[labels == 0] = NO_ENTITY
    return EntityMasks(id_map, ids, [kind] * ids.size, {}, dict(info))



# name -> factory(**options) -> MaskSource
MASK_SOURCES = Registry("mask source", {
    "gt": "stages.entities.masks_gt:GtMaskSource",
    "sam": "stages.entities.masks_sam:SamMaskSource",
    "motion": "stages.entities.masks_motion:MotionMaskSource",
})


def make_mask_source(name: str, **options: Any) -> MaskSource:
    """``gt`` (void_ids, keep_background, stuff_max_id) | ``sam`` (model_type, checkpoint,
    device, batch_size, params) | ``motion`` (segment_motion parameters) | a plugin's."""
    return MASK_SOURCES.create(name, **options)
