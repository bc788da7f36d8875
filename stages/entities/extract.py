"""DragEntity entities of a clip: first-frame masks -> incircles -> tracked centers.

The pipeline's two entity steps (``pipeline/steps/entity_masks.py``, ``entity_tracks.py``)
read the configuration once, build the mask sources and the tracker, and call these with
explicit values:

``choose_mask_source(requested, row, sam_configured) -> (name, reason)``
    The ``auto`` rule: ``gt`` when the manifest row has masks, else ``sam`` when a SAM
    checkpoint is configured, else ``motion``. ``mask_source_names(requested, sam_configured)``
    lists the sources clips can use under a setting (what preflight builds).
``extract_entities(sample, masks, source, tracker, backward, requested, min_radius, min_area)``
    From the frame-0 candidates of a mask source (``masks``: ``ChosenMasks``) to the sample's
    ``entity_ids`` (K,) int32, ``entity_mask`` (H, W) uint16, ``entity_radii`` (K,) float32,
    ``entity_tracks`` (K, L, 2) float32, ``entity_visibility`` (K, L) bool and
    ``meta["entities"]``.
``mask_choices()`` / ``tracker_choices()``
    The valid ``entities.masks`` (auto, the registered mask sources, none) and
    ``entities.tracker`` values, read from the registries (``MASK_SOURCES``, ``TRACKERS``)
    at each call, so that plugin-registered names count.

Per clip (docs/entities.md has the rules and thresholds):
1. the mask source gives candidate ids on frame 0 (``stages.entities.masks``);
2. candidates under ``min_area`` pixels are dropped (``dropped_small_area``);
3. incircle per candidate (``stages.entities.incircle``); radius < ``min_radius`` -> dropped
   (``dropped_small``);
4. ids: the dataset's ids when every kept id fits in 1..65535 (gt), else 1..K in candidate
   order (``meta.entities.source_ids`` keeps the original ids); ``entity_mask`` holds the
   ids of the kept entities, 0 elsewhere;
5. the tracker follows the centers through the clip (``stages.entities.tracking``).

Everything used comes from the sample (``frames``, ``flow``, the meta geometry, the backward
flow) and the manifest row, so the result is the same on a shard resumed from a stage cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from schemas.sample import Sample

from ..errors import ClipError
from .incircle import incircles
from .masks import MASK_SOURCES, NO_ENTITY, EntityMasks
from .tracking import TRACKERS, CenterTracker

__all__ = ["ChosenMasks", "choose_mask_source", "mask_source_names", "extract_entities", "mask_choices",
           "tracker_choices"]

UINT16_MAX = 65535


def mask_choices() -> tuple[str, ...]:
    """The valid ``entities.masks``: auto, the registered mask sources (``MASK_SOURCES``), none."""
    return ("auto", *MASK_SOURCES.choices(), "none")


def tracker_choices() -> tuple[str, ...]:
    """The valid ``entities.tracker``: the registered trackers (``TRACKERS``)."""
    return TRACKERS.choices()


def choose_mask_source(requested: str, row: dict, sam_configured: Any) -> tuple[str, str]:
    """(source name, reason) for one clip (``sam_configured``: a SAM checkpoint is set)."""
    if requested == "auto":
        if row.get("masks"):
            return "gt", "auto: the dataset has masks"
        if sam_configured:
            return "sam", "auto: no dataset masks; a SAM checkpoint is configured"
        return "motion", "auto: no dataset masks and no SAM checkpoint"
    if requested == "gt" and not row.get("masks"):
        raise ClipError("missing_masks", f"--masks gt but dataset {row.get('dataset')!r} gives no masks for this clip")
    return requested, "requested"


def mask_source_names(requested: str, sam_configured: Any) -> tuple[str, ...]:
    """The mask sources clips can use under ``requested``: ``auto`` -> gt (clips with dataset
    masks) and sam or motion (the others)."""
    if requested == "auto":
        return tuple(dict.fromkeys(choose_mask_source("auto", row, sam_configured)[0]
                                   for row in ({"masks": True}, {})))
    return (requested,)


@dataclass
class ChosenMasks:
    """What the mask step leaves on the sample (``Sample.entity_masks``) for the track step."""
    source: str                          # the mask source's name
    reason: str                          # why it was chosen (choose_mask_source)
    masks: EntityMasks                   # frame-0 candidates
    settings: dict[str, Any]             # the source's describe()
    backward_flow: np.ndarray | None = None     # the backward flow the source used, if any
    backward_settings: dict[str, Any] | None = None   # its backend's describe()

def extract_entities(sample: Sample, chosen: ChosenMasks, tracker: CenterTracker,
                     backward: Callable[[], tuple[np.ndarray, dict]] | None, requested: str,
                     min_radius: float, min_area: int) -> Sample:
    """Incircles, ids and tracked centers of the candidates in ``chosen`` (module docstring).
    ``backward()``: the clip's backward flow and its backend's describe(), asked for only
    when the tracker needs it."""
    frames = np.asarray(sample.frames)
    flow = sample.flow
    meta = sample.meta
    em = chosen.masks
    id_map, cand = em.id_map, np.asarray(em.ids, np.int64)
    kinds = list(em.kinds) if em.kinds else ["region"] * cand.size

    # areas and the two size rules
    if cand.size:
        lut = {int(v): i for i, v in enumerate(cand)}
        uniq, counts = np.unique(id_map[id_map != NO_ENTITY], return_counts=True)
        areas = np.zeros(cand.size, np.int64)
        for v, n in zip(uniq, counts):
            if int(v) in lut:
                areas[lut[int(v)]] = n
    else:
        areas = np.zeros(0, np.int64)
    min_area = int(min_area or 0)
    big = areas >= max(min_area, 1)
    centers, radii = incircles(id_map, cand[big])
    keep_r = radii >= float(min_radius)
    idx = np.flatnonzero(big)[keep_r]
    kept, centers, radii = cand[idx], centers[keep_r], radii[keep_r]

    # ids and the id map
    if kept.size == 0 or (kept.min() >= 1 and kept.max() <= UINT16_MAX):
        out_ids, renumbered = kept.copy(), False
    else:
        out_ids, renumbered = np.arange(1, kept.size + 1, dtype=np.int64), True
    mask = np.zeros(id_map.shape, np.uint16)
    if kept.size:
        pos = np.searchsorted(kept, id_map) if np.all(np.diff(kept) > 0) else None
        if pos is not None:
            pos = np.clip(pos, 0, kept.size - 1)
            hit = kept[pos] == id_map
            mask[hit] = out_ids[pos[hit]].astype(np.uint16)
        else:  # candidate order not sorted: go id by id
            for v, o in zip(kept, out_ids):
                mask[id_map == v] = o

    # tracks
    length = frames.shape[0]
    back, back_desc = chosen.backward_flow, chosen.backward_settings
    if kept.size:
        if back is None and tracker.needs_backward_flow and backward is not None:
            back, back_desc = backward()
        tracks, vis = tracker.track(frames, centers, flow=flow, backward_flow=back,
                                    entity_mask=mask, entity_ids=out_ids, radii=radii)
    else:
        tracks, vis = np.zeros((0, length, 2), np.float32), np.zeros((0, length), bool)

    sample.entity_ids = out_ids.astype(np.int32)
    sample.entity_mask = mask
    sample.entity_radii = radii.astype(np.float32)
    sample.entity_tracks = np.asarray(tracks, np.float32)
    sample.entity_visibility = np.asarray(vis, bool)
    sdesc = chosen.settings
    tdesc = tracker.describe()
    meta["entities"] = {
        "mask_source": chosen.source,
        "mask_source_requested": requested,
        "mask_source_reason": chosen.reason,
        "model": sdesc.get("model"),
        "tracker": tdesc.get("tracker", tracker.name),
        "tracker_settings": tdesc,
        "backward_flow": back_desc if back is not None else None,
        "mask_settings": sdesc,
        "mask_info": em.info,
        "count": int(kept.size),
        "candidates": int(cand.size),
        "dropped_small": int((~keep_r).sum()),
        "dropped_small_area": int((~big).sum()),
        "dropped": {k: int(v) for k, v in em.dropped.items()},
        "min_radius": float(min_radius),
        "min_area": min_area,
        "ids": "renumbered 1..K (see source_ids)" if renumbered else ("dataset ids" if chosen.source == "gt" else "region labels"),
        "source_ids": [int(v) for v in kept],
        "kinds": [kinds[i] for i in idx],
        "areas": [int(areas[i]) for i in idx],
        "centers": "incircle: argmax of the exact EDT (plateau tie rule, sub-pixel), radius = its maximum",
        "visible_at_end": int(np.asarray(vis)[:, -1].sum()) if kept.size else 0,
        # trackability of the entities: share of (entity, frame) pairs visible, and per frame
        "visible_fraction": round(float(np.asarray(vis).mean()), 4) if kept.size else None,
        "visible_per_frame": [round(float(v), 4) for v in np.asarray(vis).mean(0)] if kept.size else None,
    }
    return sample
