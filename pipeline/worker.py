"""Per-clip and per-shard processing with no Ray in it: the unit the Ray plan schedules.

``ClipProcessor`` runs the stages of one clip in order (decode -> captions -> flow ->
motion -> trajectories -> entities); ``process_shard`` runs a processor over the clips of
one shard and writes the shard atomically (or, with ``--stage``, a stage cache that a later
run resumes from).
"""
from __future__ import annotations

import functools
import logging
import os
import time
import traceback
from typing import Callable

import numpy as np

from schemas.sample import DEFAULT_FLOW_STEP, decode_jpeg, decode_sample, dequantize_flow, encode_jpeg, encode_sample
from schemas.status import STATUS_ERROR, STATUS_FILTERED, STATUS_OK
from stages.decode import clip_rng, decode_frame_folder, decode_video
from stages.errors import ClipError, split_reason

from .config import Config
from .shards import TarShardWriter, read_stats, shard_name, shard_paths, write_stats, write_status

log = logging.getLogger(__name__)

# Per-clip stages in order; "shards" is the final output (all stages + the shard writer).
CLIP_STAGES = ("decode", "captions", "flow", "motion", "trajectories", "entities")
STAGES = CLIP_STAGES + ("shards",)


class ClipFiltered(Exception):
    """A deliberate filter rejected the clip (recorded in the filtered table)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def set_cpu_threads(cpus: float) -> int:
    """OpenCV's thread pool sized to the CPUs a worker holds (``ray.num_cpus_per_worker``,
    at least 1): n workers on n cores then do not oversubscribe them, and one worker's speed
    is one core's. Returns the thread count."""
    import cv2

    n = max(1, int(round(float(cpus or 1))))
    cv2.setNumThreads(n)
    return n


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@functools.cache
def keep_freed_memory(trim_bytes: int = 512 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Let this process reuse the memory of the previous clip (glibc only; else a no-op).

    Every clip allocates the same big arrays (frames, flow, their temporaries: 10-30 MB
    each at HD). By default glibc serves such sizes with fresh mmaps or trims the heap after
    they are freed, so each clip touches new pages again: about 2,000 page faults per HD
    clip, 12-16 % of a worker's time on the development VM (docs/performance.md). Arrays
    under ``mmap_bytes`` now come from the heap, and the heap is trimmed only when more than
    ``trim_bytes`` are free at its top. The RSS of a worker then stays at its peak instead of
    falling back between clips. Returns whether glibc accepted the settings (once per
    process: later calls return the first answer)."""
    ok = False
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name and "libc" in name:
            libc = ctypes.CDLL(name)
            ok = bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_bytes))) and bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_bytes)))
    except (OSError, AttributeError):
        ok = False
    return ok


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
        self._captioner = None
        from stages.captions import check_caption_settings

        check_caption_settings(cfg.captions.source, cfg.captions.model)  # fails before the first clip

    # ---- backends, created lazily so that a worker only loads what its stages use
    @property
    def flow_backend(self):
        if self._flow is None:
            from stages.flow import make_flow_backend

            f = self.cfg.flow
            opts = {k: v for k, v in dict(checkpoint=f.checkpoint, source=f.source, device=f.device,
                                         batch_size=f.batch_size).items() if v is not None}
            self._flow = make_flow_backend(f.backend, preset=f.preset, **opts)
        return self._flow

    @property
    def captioner(self):
        """The BLIP-2 captioner (stages.captions.Blip2Captioner), or None when the caption
        source does not use one (``dataset``, ``none``, or ``auto`` without a model folder).
        Built on first use; its model is loaded when the first clip needs a caption."""
        if self._captioner is None:
            c = self.cfg.captions
            if c.model and c.source in ("auto", "blip2"):
                from stages.captions import Blip2Captioner

                self._captioner = Blip2Captioner(c.model, device=c.device, batch_size=c.batch_size, prompt=c.prompt,
                                                 max_new_tokens=c.max_new_tokens, frames=c.frames, dtype=c.dtype)
            else:
                self._captioner = False
        return self._captioner or None

    @property
    def entity_stage(self) -> Callable[[dict, dict], dict] | None:
        if self._entities is None:
            try:
                from stages.entities import make_entity_stage
            except ImportError:
                self._entities = False
            else:
                self._entities = make_entity_stage(self.cfg.entities, self.profile, self) or False
        return self._entities or None

    # ---- stages
    def decode(self, row: dict) -> dict:
        if row.get("error"):
            reason, message = split_reason(row["error"])
            raise ClipError(reason, message)
        p, d = self.profile, self.cfg.decode
        rng = clip_rng(self.cfg.seed, row["clip_id"], "start")
        src = row["source"]
        if row.get("fps") and os.path.isdir(src):
            clip = decode_frame_folder(src, row["fps"], p.frames, p.fps, p.width, p.height, rng, d.max_source_pixels)
        else:
            from .io import local_path

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
        state = {"clip_id": row["clip_id"], "caption": row.get("caption") or "", "meta": meta,
                 "frames_jpeg": jpegs, "frames": frames, "row": row}
        return state

    def captions(self, state: dict) -> dict:
        """The sample's text by the caption rule (stages.captions.choose_caption)."""
        return self.captions_many([state])[0]

    def captions_many(self, states: list[dict]) -> list[dict]:
        """Captions of several decoded clip states in one batched model call (for a GPU
        operator that holds several clips). Sets ``state["caption"]`` (the ``.txt`` member),
        ``meta["caption"] = {source, model, prompt, frames, max_new_tokens}`` (``frames``: the
        captioned frame indices; all but ``source`` None for ``dataset`` / ``none``) and
        ``meta["caption_empty"]``, and adds "captions" to ``state["stages_done"]`` so that a
        later ``run(row, until, state)`` goes on from there. Dataset captions are replaced only
        with ``source: blip2``."""
        from stages.captions import choose_caption

        source = self.cfg.captions.source
        captioner = self.captioner if source != "dataset" and source != "none" else None
        chosen = [choose_caption(source, s.get("caption"), captioner is not None) for s in states]
        todo = [k for k, how in enumerate(chosen) if how == "blip2"]
        texts = captioner.caption_many([states[k]["frames"] for k in todo]) if todo else []
        generated = dict(zip(todo, texts))
        for k, (state, how) in enumerate(zip(states, chosen)):
            info = {"source": how, "model": None, "prompt": None, "frames": None, "max_new_tokens": None}
            if how == "blip2":
                d = captioner.describe()
                state["caption"] = generated[k]
                info.update(model=d["model"], prompt=d["prompt"], max_new_tokens=d["max_new_tokens"],
                            frames=captioner.frame_indices(len(state["frames"])))
            elif how == "none":
                state["caption"] = ""
            state["meta"]["caption"] = info
            state["meta"]["caption_empty"] = not (state.get("caption") or "").strip()
            done = list(state.get("stages_done") or [])
            state["stages_done"] = done if "captions" in done else done + ["captions"]
        return states

    def flow(self, state: dict) -> dict:
        step = float(self.cfg.flow.step or DEFAULT_FLOW_STEP)
        flow = self.flow_backend.forward(state["frames"])
        state["flow"] = dequantize_flow(flow, step)  # exactly what the shard stores
        state["meta"]["flow"] = {**self.flow_backend.describe(), "step": step, "encoding": "pfz1",
                                 "max_encoding_error": step / 2}
        return state

    def motion(self, state: dict) -> dict:
        """Per-clip motion statistics (meta["motion"]) and the run-time filters on them."""
        try:
            from stages.motion import check_filters, motion_stats
        except ImportError:
            return state
        stats = motion_stats(state["flow"], state["frames"])
        state["meta"]["motion"] = stats
        rejected = check_filters(stats, self.cfg.filters)
        if rejected:
            raise ClipFiltered(*rejected)
        return state

    def trajectories(self, state: dict) -> dict:
        from stages.trajectories import compute_anchors

        t = self.cfg.trajectories
        rng = clip_rng(self.cfg.seed, state["clip_id"], "anchors")
        res = compute_anchors(state["flow"], interval=t.interval, rng=rng)
        state.update(anchor_tracks=res["anchor_tracks"], anchor_weights=res["anchor_weights"],
                     anchor_visible=res["anchor_visible"])
        state["meta"]["anchors"] = {"interval": int(t.interval), "delta": [int(v) for v in res["delta"]],
                                    "count": int(len(res["anchor_weights"])),
                                    "max_trajectories": int(t.max_trajectories)}
        return state

    def entities(self, state: dict) -> dict:
        stage = self.entity_stage if self.cfg.entities.enabled else None
        if stage is None:
            state["meta"]["entities"] = None
            return state
        return stage(state, state.get("row") or {})

    def run(self, row: dict, until: str = "entities", state: dict | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
        """Run the stages after those already in ``state`` up to ``until`` (inclusive).

        Per-stage seconds go to ``state["timings"]`` (shard stats), never into the sample's
        meta: a sample's content must not depend on timing. ``on_stage(name)`` is called
        before each stage (the isolation runner uses it for per-stage timeouts)."""
        done = state.get("stages_done", []) if state else []
        timings: dict[str, float] = {}
        for stage in CLIP_STAGES[: CLIP_STAGES.index(until) + 1]:
            if stage in done:
                continue
            if on_stage is not None:
                on_stage(stage)
            t0 = time.perf_counter()
            state = self.decode(row) if stage == "decode" else getattr(self, stage)(state)
            timings[stage] = round(time.perf_counter() - t0, 4)
            done = done + [stage]
        state["stages_done"] = done
        state["timings"] = timings
        state["meta"].pop("timings", None)  # written by older versions into stage caches
        state["meta"]["stages_done"] = done
        return state


def state_from_members(members: dict[str, bytes], row: dict) -> dict:
    """Rebuild a clip state from stage-cache members (the inverse of encode_sample)."""
    s = decode_sample(members)
    s.update(clip_id=row["clip_id"], row=row)
    s["stages_done"] = list(s["meta"].get("stages_done", []))
    return s


def _status(row: dict, shard: int, status: str, reason=None, message=None, tar=None, nbytes=None, secs=None) -> dict:
    return {"clip_id": row["clip_id"], "row": int(row["row"]), "shard": shard, "status": status,
            "reason": reason, "message": message, "tar": tar, "bytes": nbytes, "seconds": secs}


def remove_file(path: str) -> bool:
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False


def remove_shard_leftovers(d: str, prefix: str, shard: int) -> list[str]:
    """Remove what an interrupted attempt at a not-done shard may have left in ``d``: temporary
    files of its tar parts, status and stats, and tar parts already renamed into place (a
    shard is only valid once its stats file exists). Probes the known names (no listing)."""
    name = shard_name(prefix, shard)
    removed = [p for p in (os.path.join(d, f".{name}.parquet.tmp"), os.path.join(d, f".{name}.stats.json.tmp"))
               if remove_file(p)]
    part = 0
    while True:
        tar = shard_name(prefix, shard, part) + ".tar"
        found = [p for p in (os.path.join(d, tar), os.path.join(d, f".{tar}.tmp")) if remove_file(p)]
        removed += found
        if not found and part > 0:
            break
        part += 1
    if removed:
        log.warning("shard %s: removed leftovers of an interrupted attempt: %s", name,
                    ", ".join(os.path.basename(p) for p in removed))
    return removed


def import_plugins(names) -> None:
    """Import plugin modules (dotted names, or paths of .py files) that register adapters,
    flow backends or stages; every worker process does this before processing clips."""
    import importlib
    import importlib.util
    import sys

    for name in names or ():
        if str(name).endswith(".py"):
            mod_name = "pipeline_plugin_" + os.path.splitext(os.path.basename(name))[0]
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load plugin file {name}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(name)


def stage_dir(out_dir: str, stage: str) -> str:
    return out_dir if stage == "shards" else os.path.join(out_dir, "_stages", stage)


def _load_stage_cache(out_dir: str, prefix: str, shard: int, target: str) -> tuple[str | None, dict, dict]:
    """The most advanced completed stage cache before ``target`` for this shard, if any."""
    import pyarrow.parquet as pq
    import tarfile

    stages = CLIP_STAGES[: CLIP_STAGES.index(target) + 1] if target in CLIP_STAGES else CLIP_STAGES
    for stage in reversed(stages):
        d = stage_dir(out_dir, stage)
        paths = shard_paths(d, prefix, shard)
        stats = read_stats(paths["stats"])
        if stats is None:
            continue
        members: dict[str, dict[str, bytes]] = {}
        for tar_name in stats.get("tars", []):
            with tarfile.open(os.path.join(d, tar_name)) as tf:
                for m in tf:
                    key, _, ext = m.name.partition(".")
                    members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        status = {r["clip_id"]: r for r in pq.read_table(paths["status"]).to_pylist()}
        return stage, members, status
    return None, {}, {}


def process_shard(rows: list[dict], shard: int, cfg: Config, out_dir: str, prefix: str,
                  processor: ClipProcessor, target: str = "shards", force: bool = False,
                  clip_runner: Callable[[ClipProcessor, dict, str, dict | None], dict] | None = None,
                  commit_check: Callable[[], None] | None = None) -> dict:
    """Process one shard's clips and write its output; returns its stats.

    Every row ends in exactly one status row (ok / error / filtered). Already-done shards
    (stats file present) are skipped unless ``force``. Temporary files carry a tag unique to
    this attempt. ``commit_check()`` is called before anything is renamed into place; it
    raises when this attempt must not commit (its run was superseded).
    """
    if target not in STAGES:
        raise ValueError(f"unknown stage {target!r}; stages: {', '.join(STAGES)}")
    d = stage_dir(out_dir, target)
    os.makedirs(d, exist_ok=True)
    paths = shard_paths(d, prefix, shard)
    if not force:
        st = read_stats(paths["stats"])
        if st is not None:
            st["skipped"] = True
            return st
    if force:
        remove_file(paths["stats"])  # not done any more until this run completes it
    remove_shard_leftovers(d, prefix, shard)
    until = "entities" if target == "shards" else target
    cached_stage, cached, cached_status = (None, {}, {}) if force else _load_stage_cache(out_dir, prefix, shard, until)
    run = clip_runner or (lambda proc, row, until, state: proc.run(row, until, state))
    tag = f"{os.getpid()}-{os.urandom(3).hex()}"
    writer = TarShardWriter(d, prefix, shard, cfg.shards.max_shard_bytes, tmp_tag=tag)
    status_rows, t_start = [], time.perf_counter()
    stage_seconds: dict[str, float] = {}
    entity_stats: dict = {"mask_sources": {}, "entities": 0}  # issue 3: which mask source `auto` chose
    try:
        for row in rows:
            t0 = time.perf_counter()
            try:
                prior = cached_status.get(row["clip_id"])
                if prior is not None and prior["status"] != STATUS_OK:
                    raise (ClipError if prior["status"] == STATUS_ERROR else ClipFiltered)(prior["reason"], prior["message"])
                state = state_from_members(cached[row["clip_id"]], row) if row["clip_id"] in cached else None
                state = run(processor, row, until, state)
                members = state.pop("_members", None)  # encoded by an isolation child already
                if members is None:
                    members = encode_sample(state)
                ent = state["meta"].get("entities")
                if ent:
                    srcs = entity_stats["mask_sources"]
                    srcs[ent["mask_source"]] = srcs.get(ent["mask_source"], 0) + 1
                    entity_stats["entities"] += int(ent.get("count", 0))
                tar = writer.write(row["clip_id"], members)
                for k, v in (state.get("timings") or {}).items():
                    stage_seconds[k] = stage_seconds.get(k, 0.0) + v
                status_rows.append(_status(row, shard, STATUS_OK, tar=tar, nbytes=sum(map(len, members.values())),
                                           secs=time.perf_counter() - t0))
            except ClipFiltered as e:
                status_rows.append(_status(row, shard, STATUS_FILTERED, e.reason, e.message, secs=time.perf_counter() - t0))
            except ClipError as e:
                status_rows.append(_status(row, shard, STATUS_ERROR, e.reason, e.message, secs=time.perf_counter() - t0))
            except Exception as e:  # a bug or an unexpected library failure: record it, go on
                tb = traceback.format_exc(limit=3)
                log.warning("clip %s failed: %s", row["clip_id"], tb)
                status_rows.append(_status(row, shard, STATUS_ERROR, "internal",
                                           f"{type(e).__name__}: {e}"[:2000], secs=time.perf_counter() - t0))
        if commit_check is not None:
            commit_check()
        tars = writer.close()
    except BaseException:
        writer.abort()
        raise
    write_status(paths["status"], status_rows, tag)
    counts = {s: sum(r["status"] == s for r in status_rows) for s in (STATUS_OK, STATUS_ERROR, STATUS_FILTERED)}
    stats = {
        "shard": shard,
        "name": shard_name(prefix, shard),
        "stage": target,
        "resumed_from": cached_stage,
        "tars": tars,
        "tar_counts": list(writer.counts),
        "clips": len(rows),
        **counts,
        "bytes": int(sum(r["bytes"] or 0 for r in status_rows)),
        "seconds": round(time.perf_counter() - t_start, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "entities": entity_stats,
        "pid": os.getpid(),
    }
    if commit_check is not None:
        commit_check()
    write_stats(paths["stats"], stats, tag)  # last: marks the shard done
    stats["skipped"] = False
    return stats
