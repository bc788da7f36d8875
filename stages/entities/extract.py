"""DragEntity entities of a clip: first-frame masks -> incircles -> tracked centers.

Public API
----------
``make_entity_stage(cfg, profile, main_flow) -> EntityStage | None``
    Called once per worker by ``pipeline.clip.processor.ClipProcessor``; None when entities
    are disabled (``cfg.enabled`` false or ``cfg.masks == "none"``).
``EntityStage(cfg, profile=None, main_flow=None)``
    ``main_flow``: a callable with no argument returning the run's main flow backend (the
    caller's, created on first call), which ``entities.backward_flow`` "auto" and "same"
    need (``stages.flow.base.make_backward_backend``); None: no main backend (auto -> DIS).
    ``stage(sample, row) -> sample`` (a ``schemas.sample.Sample``; ``row``: the manifest
    row): sets ``sample.entity_ids`` (K,) int32, ``entity_mask`` (H, W) uint16,
    ``entity_radii`` (K,) float32, ``entity_tracks`` (K, L, 2) float32, ``entity_visibility``
    (K, L) bool and ``meta["entities"]``. Two halves: ``masks_step(sample, row)`` (frame-0
    masks into ``sample.entity_masks``; ``masks_many(samples, rows)`` for several clips) and
    ``tracks_step(sample, row)`` (the rest; it clears ``entity_masks``). Mask sources and
    the tracker are created on first use and reused for every clip of the worker;
    ``mask_source(name)``, ``tracker`` and ``backward_backend()`` build them without a clip
    (the driver's preflight), ``mask_source_names()`` says which mask sources the
    configuration can use.
``choose_mask_source(requested, row, sam_checkpoint) -> (name, reason)``
    The ``auto`` rule: ``gt`` when the manifest row has masks, else ``sam`` when a SAM
    checkpoint is configured, else ``motion``.
``mask_choices()`` / ``tracker_choices()``
    The valid ``entities.masks`` (auto, the registered mask sources, none) and
    ``entities.tracker`` values, read from the registries (``MASK_SOURCES``, ``TRACKERS``)
    at each call, so that plugin-registered names count.

Per clip (docs/entities.md has the rules and thresholds):
1. the mask source gives candidate ids on frame 0 (``stages.entities.masks``; a plugin's
   source is created with no option);
2. candidates under ``min_area`` pixels are dropped (``dropped_small_area``);
3. incircle per candidate (``stages.entities.incircle``); radius < ``min_radius`` -> dropped
   (``dropped_small``);
4. ids: the dataset's ids when every kept id fits in 1..65535 (gt), else 1..K in candidate
   order (``meta.entities.source_ids`` keeps the original ids); ``entity_mask`` holds the
   ids of the kept entities, 0 elsewhere;
5. the tracker follows the centers through the clip (``stages.entities.tracking``).

Everything used comes from the sample (``frames``, ``flow``, the meta geometry, and the
``backward_flow`` of the trajectories step when it came from the same backend) and the
manifest row, so the stage gives the same result on a shard resumed from a stage cache.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from schemas.sample import Sample

from ..errors import ClipError
from ..flow.base import FlowBackend, make_backward_backend
from .incircle import incircles
from .masks import MASK_SOURCES, NO_ENTITY, MaskSource, make_mask_source
from .tracking import TRACKERS, CenterTracker, make_tracker

__all__ = ["make_entity_stage", "EntityStage", "choose_mask_source", "mask_choices", "tracker_choices"]

UINT16_MAX = 65535


def mask_choices() -> tuple[str, ...]:
    """The valid ``entities.masks``: auto, the registered mask sources (``MASK_SOURCES``), none."""
    return ("auto", *MASK_SOURCES.choices(), "none")


def tracker_choices() -> tuple[str, ...]:
    """The valid ``entities.tracker``: the registered trackers (``TRACKERS``)."""
    return TRACKERS.choices()


def choose_mask_source(requested: str, row: dict, sam_checkpoint: str | None) -> tuple[str, str]:
    """(source name, reason) for one clip."""
    if requested == "auto":
        if row.get("masks"):
            return "gt", "auto: the dataset has masks"
        if sam_checkpoint:
            return "sam", "auto: no dataset masks; a SAM checkpoint is configured"
        return "motion", "auto: no dataset masks and no SAM checkpoint"
    if requested == "gt" and not row.get("masks"):
        raise ClipError("missing_masks", f"--masks gt but dataset {row.get('dataset')!r} gives no masks for this clip")
    return requested, "requested"


class EntityStage:
    """The per-worker entity stage (see the module docstring)."""

    def __init__(self, cfg, profile=None, main_flow: Callable[[], FlowBackend | None] | None = None):
        masks = str(cfg.masks).lower()
        tracker = str(cfg.tracker).lower()
        if masks not in mask_choices():
            raise ValueError(f"unknown --masks {cfg.masks!r}; choose one of {', '.join(mask_choices())}")
        if tracker not in tracker_choices():
            raise ValueError(f"unknown --tracker {cfg.tracker!r}; choose one of {', '.join(tracker_choices())}")
        self.cfg, self.profile, self.main_flow = cfg, profile, main_flow
        self.requested, self.tracker_name = masks, tracker
        self._sources: dict[str, MaskSource | Exception] = {}
        self._tracker: CenterTracker | Exception | None = None
        self._backward = None

    def mask_source_names(self) -> tuple[str, ...]:
        """The mask sources clips can use under this configuration (``choose_mask_source``):
        ``auto`` -> gt (clips with dataset masks) and sam or motion (the others)."""
        if self.requested == "auto":  # a clip with dataset masks, then one without
            return tuple(choose_mask_source("auto", row, self.cfg.sam_checkpoint)[0]
                         for row in ({"masks": True}, {}))
        return (self.requested,)

    # ---- backends (created once, failures remembered so every clip reports them cheaply)
    def mask_source(self, name: str) -> MaskSource:
        if name not in self._sources:
            c = self.cfg
            try:
                if name == "gt":
                    src = make_mask_source("gt", void_ids=tuple(c.void_ids), keep_background=bool(c.keep_background),
                                           stuff_max_id=int(getattr(c, "stuff_max_id", 124)))
                elif name == "sam":
                    sam = dict(c.sam or {})
                    batch = sam.pop("batch_size", None)
                    src = make_mask_source("sam", model_type=c.sam_model, checkpoint=c.sam_checkpoint,
                                           device=c.device, batch_size=batch, params=sam)
                elif name == "motion":
                    src = make_mask_source("motion", **dict(getattr(c, "motion", None) or {}))
                else:  # a plugin's mask source (MASK_SOURCES.register): no option
                    src = make_mask_source(name)
            except (ClipError, ValueError) as e:
                src = e
            self._sources[name] = src
        src = self._sources[name]
        if isinstance(src, Exception):
            raise src
        return src

    @property
    def tracker(self) -> CenterTracker:
        if self._tracker is None:
            c = self.cfg
            try:
                self._tracker = make_tracker(self.tracker_name, fb_threshold=c.fb_threshold,
                                             checkpoint=c.cotracker_checkpoint, device=c.device)
            except (ClipError, ValueError) as e:
                self._tracker = e
        if isinstance(self._tracker, Exception):
            raise self._tracker
        return self._tracker

    def backward_backend(self):
        """The backend of the backward flow (``EntityConfig.backward_flow``). It is not stored
        and feeds only the forward-backward checks, so on CPU ``auto`` takes DIS balanced: the
        same visibility and tracks as a medium backward flow on the test scenes, at half its
        cost; coarser presets (fast, ultrafast) make the check reject good steps
        (docs/performance.md)."""
        if self._backward is None:
            main = self.main_flow() if self.main_flow is not None else None
            self._backward = make_backward_backend(getattr(self.cfg, "backward_flow", "auto"), main)
        return self._backward

    def backward_flow(self, frames: np.ndarray, sample: Sample | None = None) -> np.ndarray:
        """The clip's backward flow: the one already in ``sample.backward_flow`` (the
        trajectories step computes it for the anchors' reliability) when it came from the same
        backend (``sample.backward_flow_backend`` equal to this backend's ``describe()``),
        else computed here."""
        if sample is not None and sample.backward_flow is not None \
                and sample.backward_flow_backend == self.backward_backend().describe():
            return sample.backward_flow
        return self.backward_backend().backward(frames)

    # ---- the stage: masks of frame 0, then incircles and tracks (two halves, so that a GPU
    # mask model can run in its own operator over several clips; ``__call__`` = both)
    def __call__(self, sample: Sample, row: dict) -> Sample:
        return self.tracks_step(self.masks_step(sample, row), row)

    def _choose(self, row: dict):
        name, reason = choose_mask_source(self.requested, row or {}, self.cfg.sam_checkpoint)
        return name, reason, self.mask_source(name)

    def masks_step(self, sample: Sample, row: dict) -> Sample:
        """First-frame candidate masks into ``sample.entity_masks`` (``(source name, reason,
        EntityMasks, backward flow or None)``, for ``tracks_step``)."""
        frames = np.asarray(sample.frames)
        name, reason, source = self._choose(row)
        back = None
        if getattr(source, "needs_backward_flow", False):
            back = self.backward_flow(frames, sample)
        em = source.masks(frames, sample.flow, sample.meta, row or {}, backward_flow=back)
        sample.entity_masks = (name, reason, em, back)
        return sample

    def masks_many(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        """``masks_step`` of several clips; a source with ``masks_many`` (SAM) sees all of its
        clips in one call (image embeddings batched across clips)."""
        groups: dict[str, list[int]] = {}
        chosen = [self._choose(r) for r in rows]
        for i, (name, _, source) in enumerate(chosen):
            if hasattr(source, "masks_many") and not getattr(source, "needs_backward_flow", False):
                groups.setdefault(name, []).append(i)
            else:
                self.masks_step(samples[i], rows[i])
        for name, idx in groups.items():
            source = chosen[idx[0]][2]
            items = [(np.asarray(samples[i].frames), samples[i].flow, samples[i].meta, rows[i] or {}) for i in idx]
            for i, em in zip(idx, source.masks_many(items)):
                samples[i].entity_masks = (chosen[i][0], chosen[i][1], em, None)
        return samples

    def tracks_step(self, sample: Sample, row: dict) -> Sample:
        """Incircles, ids and tracked centers from the masks of ``masks_step`` (run here when
        ``sample.entity_masks`` is None); clears ``sample.entity_masks``."""
        if sample.entity_masks is None:
            self.masks_step(sample, row)
        name, reason, em, back = sample.entity_masks
        sample.entity_masks = None
        source = self.mask_source(name)
        tracker = self.tracker
        frames = np.asarray(sample.frames)
        flow = sample.flow
        meta = sample.meta
        c = self.cfg
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
        min_area = int(getattr(c, "min_area", 0) or 0)
        big = areas >= max(min_area, 1)
        centers, radii = incircles(id_map, cand[big])
        keep_r = radii >= float(c.min_radius)
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
        if kept.size:
            if back is None and tracker.needs_backward_flow:
                back = self.backward_flow(frames, sample)
            tracks, vis = tracker.track(frames, centers, flow=flow, backward_flow=back,
                                        entity_mask=mask, entity_ids=out_ids, radii=radii)
        else:
            tracks, vis = np.zeros((0, length, 2), np.float32), np.zeros((0, length), bool)

        sample.entity_ids = out_ids.astype(np.int32)
        sample.entity_mask = mask
        sample.entity_radii = radii.astype(np.float32)
        sample.entity_tracks = np.asarray(tracks, np.float32)
        sample.entity_visibility = np.asarray(vis, bool)
        sdesc = source.describe()
        tdesc = tracker.describe()
        meta["entities"] = {
            "mask_source": name,
            "mask_source_requested": self.requested,
            "mask_source_reason": reason,
            "model": sdesc.get("model"),
            "tracker": tdesc.get("tracker", self.tracker_name),
            "tracker_settings": tdesc,
            "backward_flow": self.backward_backend().describe() if back is not None else None,
            "mask_settings": sdesc,
            "mask_info": em.info,
            "count": int(kept.size),
            "candidates": int(cand.size),
            "dropped_small": int((~keep_r).sum()),
            "dropped_small_area": int((~big).sum()),
            "dropped": {k: int(v) for k, v in em.dropped.items()},
            "min_radius": float(c.min_radius),
            "min_area": min_area,
            "ids": "renumbered 1..K (see source_ids)" if renumbered else ("dataset ids" if name == "gt" else "region labels"),
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


def make_entity_stage(cfg, profile=None, main_flow: Callable[[], FlowBackend | None] | None = None
                      ) -> EntityStage | None:
    """The entity stage for ``cfg`` (an ``EntityConfig``), or None when disabled;
    ``main_flow`` as for ``EntityStage``."""
    if not getattr(cfg, "enabled", True) or str(cfg.masks).lower() == "none":
        return None
    return EntityStage(cfg, profile, main_flow)
