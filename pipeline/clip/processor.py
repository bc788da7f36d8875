"""Per-clip processing with no Ray in it: what every operator of the run calls.

``ClipProcessor`` runs the stages of one clip in order (decode -> captions -> flow ->
motion -> trajectories -> entities) on its ``schemas.sample.Sample`` (the clip's content:
each stage fills its fields and meta); the entity stage is also available as its two halves
(``entity_masks``, ``entity_tracks``) and the model stages over several clips at once
(``captions_many``, ``flow_many``, ``entity_masks_many``), which the GPU operators of
``pipeline.run`` use; ``step`` / ``step_many`` call one of them by name. ``run`` returns a
``ClipRun``: the sample with the stages done and their seconds (bookkeeping, kept beside the
sample). The shard loop, staging and commit live in ``pipeline.run``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from schemas.sample import DEFAULT_FLOW_STEP, Sample, decode_jpeg, dequantize_flow, encode_jpeg
from schemas.status import CLIP_STAGES
from stages.decode import clip_rng, decode_frame_folder, decode_video
from stages.errors import ClipError, split_reason

from pipeline.clip.runtime import import_plugins, keep_freed_memory, set_cpu_threads
from pipeline.config import Config

log = logging.getLogger(__name__)

# steps that read the manifest row besides the sample (the mask source may come from the dataset)
_ROW_STEPS = ("entities", "entity_masks", "entity_tracks")


@dataclass
class ClipRun:
    """What ``ClipProcessor.run`` gives back: the sample and the run's bookkeeping of it.
    ``members``: the encoded sample instead, when the isolation child was asked for it (then
    ``sample`` holds only the meta)."""
    sample: Sample
    stages_done: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    members: dict[str, bytes] | None = None


class ClipFiltered(Exception):
    """A deliberate filter rejected the clip (recorded in the filtered table)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


class ClipProcessor:
    """Holds the stage backends (loaded once per worker) and processes clips."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        import_plugins(getattr(cfg, "plugins", ()))
        set_cpu_threads(cfg.ray.num_cpus_per_worker)
        keep_freed_memory()
        self.profile = cfg.get_profile()
        self._flow = None
        self._entities = None
        self._torch_sized = False
        self._captioner = None
        from stages.captions import check_caption_settings

        check_caption_settings(cfg.captions.source, cfg.captions.model)  # fails before the first clip

    def _torch_threads(self) -> None:
        """Size torch's thread pool once a backend has imported torch (see set_cpu_threads)."""
        import sys

        if not self._torch_sized and "torch" in sys.modules:
            set_cpu_threads(self.cfg.ray.num_cpus_per_worker)
            self._torch_sized = True

    # ---- backends, created lazily so that a worker only loads what its stages use
    @property
    def flow_backend(self):
        if self._flow is None:
            from stages.flow.base import make_flow_backend

            f = self.cfg.flow
            opts = {k: v for k, v in dict(checkpoint=f.checkpoint, source=f.source, device=f.device,
                                         batch_size=f.batch_size).items() if v is not None}
            self._flow = make_flow_backend(f.backend, preset=f.preset, **opts)
            self._torch_threads()
        return self._flow

    @property
    def captioner(self):
        """The BLIP-2 captioner (``"blip2"`` of the ``stages.captions.CAPTIONERS`` registry:
        ``Blip2Captioner``, or what a plugin registered under that name), or None when the
        caption source does not use one (``dataset``, ``none``, or ``auto`` without a model
        folder). Built on first use; its model is loaded when the first clip needs a caption."""
        if self._captioner is None:
            c = self.cfg.captions
            if c.model and c.source in ("auto", "blip2"):
                from stages.captions import make_captioner

                self._captioner = make_captioner("blip2", c.model, device=c.device, batch_size=c.batch_size,
                                                 prompt=c.prompt, max_new_tokens=c.max_new_tokens, frames=c.frames,
                                                 dtype=c.dtype)
            else:
                self._captioner = False
        return self._captioner or None

    @property
    def entity_stage(self) -> Callable[[Sample, dict], Sample] | None:
        if self._entities is None:
            try:
                from stages.entities import make_entity_stage
            except ImportError:
                self._entities = False
            else:
                self._entities = make_entity_stage(self.cfg.entities, self.profile,
                                                   lambda: self.flow_backend) or False
        return self._entities or None

    # ---- stages
    def step(self, name: str, sample: Sample | None, row: dict | None = None) -> Sample:
        """Run one step (a clip stage or an entity half) by name on one clip."""
        if name == "decode":
            return self.decode(row)
        if name in _ROW_STEPS:
            return getattr(self, name)(sample, row)
        return getattr(self, name)(sample)

    def step_many(self, name: str, samples: list[Sample], rows: list[dict] | None = None) -> list[Sample]:
        """A model step over several clips (``captions``, ``flow``, ``entity_masks``)."""
        if name == "entity_masks":
            return self.entity_masks_many(samples, rows)
        return getattr(self, name + "_many")(samples)

    def decode(self, row: dict) -> Sample:
        if row.get("error"):
            reason, message = split_reason(row["error"])
            raise ClipError(reason, message)
        p, d = self.profile, self.cfg.decode
        rng = clip_rng(self.cfg.seed, row["clip_id"], "start")
        src = row["source"]
        if row.get("fps") and os.path.isdir(src):
            clip = decode_frame_folder(src, row["fps"], p.frames, p.fps, p.width, p.height, rng, d.max_source_pixels)
        else:
            from pipeline.io import local_path

            with local_path(src) as path:
                clip = decode_video(path, p.frames, p.fps, p.width, p.height, rng, d.max_source_pixels,
                                    d.max_source_frames)
        # Round-trip through JPEG: every later stage sees exactly the frames the shard stores.
        jpegs = [encode_jpeg(f, d.jpeg_quality) for f in clip.frames]
        frames = np.stack([decode_jpeg(j) for j in jpegs])
        meta = {
            "clip_id": row["clip_id"],
            "dataset": row["dataset"],
            "source_id": row["source_id"],
            "caption_empty": not (row.get("caption") or "").strip(),
            "profile": {"name": p.name, "frames": p.frames, "width": p.width, "height": p.height, "fps": p.fps},
            "coords": "x right, y down, profile pixels, pixel centers at integers",
            "frames_codec": {"format": "jpeg", "quality": d.jpeg_quality},
            "seed": self.cfg.seed,
            **clip.meta(),
        }
        return Sample(key=row["clip_id"], caption=row.get("caption") or "", meta=meta, frames_jpeg=jpegs,
                      frames=frames)

    def captions(self, sample: Sample) -> Sample:
        """The sample's text by the caption rule (stages.captions.choose_caption)."""
        return self.captions_many([sample])[0]

    def captions_many(self, states: list[Sample]) -> list[Sample]:
        """Captions of several decoded clips in one batched model call (for a GPU operator
        that holds several clips). Sets ``caption`` (the ``.txt`` member),
        ``meta["caption"] = {source, model, prompt, frames, max_new_tokens}`` (``frames``: the
        captioned frame indices; all but ``source`` None for ``dataset`` / ``none``) and
        ``meta["caption_empty"]``, and adds "captions" to ``meta["stages_done"]`` so that a
        later ``run(row, until, sample)`` goes on from there. Dataset captions are replaced only
        with ``source: blip2``."""
        from stages.captions import choose_caption

        source = self.cfg.captions.source
        captioner = self.captioner if source != "dataset" and source != "none" else None
        chosen = [choose_caption(source, s.caption, captioner is not None) for s in states]
        todo = [k for k, how in enumerate(chosen) if how == "blip2"]
        texts = captioner.caption_many([states[k].frames for k in todo]) if todo else []
        self._torch_threads()
        generated = dict(zip(todo, texts))
        for k, (state, how) in enumerate(zip(states, chosen)):
            info = {"source": how, "model": None, "prompt": None, "frames": None, "max_new_tokens": None}
            if how == "blip2":
                d = captioner.describe()
                state.caption = generated[k]
                info.update(model=d["model"], prompt=d["prompt"], max_new_tokens=d["max_new_tokens"],
                            frames=captioner.frame_indices(len(state.frames)))
            elif how == "none":
                state.caption = ""
            state.meta["caption"] = info
            state.meta["caption_empty"] = not (state.caption or "").strip()
            done = list(state.meta.get("stages_done") or [])
            state.meta["stages_done"] = done if "captions" in done else done + ["captions"]
        return states

    def flow(self, sample: Sample) -> Sample:
        return self._store_flow(sample, self.flow_backend.forward(sample.frames))

    def flow_many(self, states: list[Sample]) -> list[Sample]:
        """``flow`` of several clips, their frame pairs batched together where the backend
        can (``forward_many``: the torch backends) and the clips share one frame size."""
        many = getattr(self.flow_backend, "forward_many", None)
        if many is None or len(states) < 2 or len({s.frames.shape for s in states}) != 1:
            return [self.flow(s) for s in states]
        return [self._store_flow(s, f) for s, f in zip(states, many([s.frames for s in states]))]

    def _store_flow(self, state: Sample, flow: np.ndarray) -> Sample:
        step = float(self.cfg.flow.step or DEFAULT_FLOW_STEP)
        state.flow = dequantize_flow(flow, step)  # exactly what the shard stores
        state.meta["flow"] = {**self.flow_backend.describe(), "step": step, "encoding": "pfz1",
                                 "max_encoding_error": step / 2}
        return state

    def motion(self, state: Sample) -> Sample:
        """Per-clip motion statistics (meta["motion"]) and the run-time filters on them."""
        try:
            from stages.motion import check_filters, motion_stats
        except ImportError:
            return state
        stats = motion_stats(state.flow, state.frames)
        state.meta["motion"] = stats
        rejected = check_filters(stats, self.cfg.filters)
        if rejected:
            raise ClipFiltered(*rejected)
        return state

    def trajectories(self, state: Sample) -> Sample:
        """Anchors, their reliability and the clip's trackability (meta["anchors"]), and the
        ``--min-trackable`` filter. The backward flow it computes for the reliability checks
        stays in ``backward_flow`` (with ``backward_flow_backend``, the backend's describe())
        so the entity stage reuses it instead of computing it again."""
        from stages.anchors.base import make_anchor_tracker, track_anchors
        from stages.flow.base import make_backward_backend
        from stages.trajectories import trackability

        t = self.cfg.trajectories
        rng = clip_rng(self.cfg.seed, state.key, "anchors")
        back, back_desc = None, None
        if getattr(t, "reliability", True):
            stage = self.entity_stage if self.cfg.entities.enabled else None
            if stage is not None:
                backend = stage.backward_backend()
            else:  # entities off: one backend per worker, made on first use
                backend = self.__dict__.get("_anchor_backward")
                if backend is None:
                    backend = make_backward_backend(getattr(self.cfg.entities, "backward_flow", "auto"),
                                                    self.flow_backend)
                    self.__dict__["_anchor_backward"] = backend
            back_desc = backend.describe()
            if state.backward_flow is not None and state.backward_flow_backend == back_desc:
                back = state.backward_flow
            else:
                back = backend.backward(state.frames)
            state.backward_flow, state.backward_flow_backend = back, back_desc
        step_px, step_rel, rt_px = t.reliable_step_px, float(t.reliable_step_rel or 0.0), t.reliable_roundtrip_px
        # Issue 23 (docs/trajectories.md): one anchor tracker per worker; without the checks the
        # dense flow chained, unchecked, as before.
        key = "_anchor_tracker" if back is not None else "_anchor_tracker_unchecked"
        tracker = self.__dict__.get(key)
        if tracker is None:
            name = t.tracker if back is not None else "flow"
            tracker = make_anchor_tracker(name, step_px=step_px, step_rel=step_rel, roundtrip_px=rt_px,
                                          checkpoint=t.cotracker_checkpoint, device=t.device,
                                          batch_size=t.batch_size, **dict(t.tracker_options))
            self.__dict__[key] = tracker
            self._torch_threads()
        res = track_anchors(tracker, state.frames, state.flow, back, interval=t.interval, rng=rng)
        state.anchor_tracks, state.anchor_weights = res["anchor_tracks"], res["anchor_weights"]
        state.anchor_visible, state.anchor_reliable = res["anchor_visible"], res["anchor_reliable"]
        track = trackability(res["anchor_visible"], res["anchor_reliable"])
        state.meta["anchors"] = {
            "interval": int(t.interval), "delta": [int(v) for v in res["delta"]],
            "count": int(len(res["anchor_weights"])), "max_trajectories": int(t.max_trajectories),
            "reliability": None if back is None else {
                "rule": "forward-backward: step FB error <= step_px + step_rel * |step| and the position "
                        "chained back to frame 0 within roundtrip_px of the anchor; a prefix of each track "
                        "(docs/trajectories.md)",
                "step_px": None if step_px is None else float(step_px), "step_rel": step_rel,
                "roundtrip_px": None if rt_px is None else float(rt_px),
                "backward_flow": back_desc,
                "tracker": res["tracker"], "tracker_stats": res["tracker_stats"],
            },
            "trackability": track,
        }
        lo = getattr(self.cfg.filters, "min_trackable", None)
        if lo and back is not None:
            share, what = track["reliable_through"], "in-frame anchors reliable through the clip"
            if share is None:        # no anchor stays in frame (a fast pan): followed until they leave
                share, what = track["reliable_while_visible"], "anchors reliable until they leave the frame"
            if share is None or share < float(lo):
                shown = "no anchor" if share is None else f"{share:.3f}"
                raise ClipFiltered("low_trackability", f"share of {what}: {shown} < --min-trackable {lo}")
        return state

    def entities(self, state: Sample, row: dict | None = None) -> Sample:
        return self.entity_tracks(self.entity_masks(state, row), row)

    # the entity stage in two halves: first-frame masks (SAM: a GPU model), then incircles
    # and tracking (CoTracker: a GPU model); ``entities`` = both. ``row``: the manifest row
    # (a dataset's own masks, ``gt``, come from it).
    def entity_masks(self, state: Sample, row: dict | None = None) -> Sample:
        stage = self.entity_stage if self.cfg.entities.enabled else None
        if stage is not None:
            stage.masks_step(state, row or {})
            self._torch_threads()
        return state

    def entity_masks_many(self, states: list[Sample], rows: list[dict] | None = None) -> list[Sample]:
        stage = self.entity_stage if self.cfg.entities.enabled else None
        if stage is not None:
            stage.masks_many(states, [r or {} for r in (rows or [None] * len(states))])
            self._torch_threads()
        return states

    def entity_tracks(self, state: Sample, row: dict | None = None) -> Sample:
        stage = self.entity_stage if self.cfg.entities.enabled else None
        if stage is None:
            state.meta["entities"] = None
            return state
        return stage.tracks_step(state, row or {})

    def run(self, row: dict, until: str = "entities", sample: Sample | None = None,
            on_stage: Callable[[str], None] | None = None) -> ClipRun:
        """Run the stages after those already done on ``sample`` (its ``meta["stages_done"]``)
        up to ``until`` (inclusive).

        Per-stage seconds go to ``ClipRun.timings`` (shard stats), never into the sample's
        meta: a sample's content must not depend on timing. ``on_stage(name)`` is called
        before each stage (the isolation runner uses it for per-stage timeouts)."""
        done = list(sample.meta.get("stages_done") or []) if sample is not None else []
        timings: dict[str, float] = {}
        for stage in CLIP_STAGES[: CLIP_STAGES.index(until) + 1]:
            if stage in done:
                continue
            if on_stage is not None:
                on_stage(stage)
            t0 = time.perf_counter()
            sample = self.step(stage, sample, row)
            timings[stage] = round(time.perf_counter() - t0, 4)
            done = done + [stage]
        sample.meta.pop("timings", None)  # written by older versions into stage caches
        sample.meta["stages_done"] = done
        return ClipRun(sample, list(done), timings)


def stage_dir(out_dir: str, stage: str) -> str:
    return out_dir if stage == "shards" else os.path.join(out_dir, "_stages", stage)
