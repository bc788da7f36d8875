"""The measurements of ``python -m bench``: each function returns plain dicts (JSON-ready).

All throughput figures are clips per second of wall time on the clips of one dataset built
by ``bench.clips``; the same dataset feeds the per-stage loop, the lower bound, the baseline
and the end-to-end runs of a profile.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np

from pipeline.config import Config
from pipeline.inputs.manifest import build_manifest

# ----------------------------------------------------------------------------- helpers


def _rows(data: str, n: int | None = None) -> list[dict]:
    rows = build_manifest("webvid", data).to_pylist()
    return rows[:n] if n else rows


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


def clip_rows_ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


# ----------------------------------------------------------------------------- per stage

def per_stage(cfg: Config, data: str, n: int | None = None) -> dict[str, Any]:
    """Each clip stage timed on its own, clip after clip, in this process, through the run's own
    loop (``pipeline.clip.loop.ClipSteps``: the seconds it adds to each clip's timings).

    Also: the JPEG round trip (inside decode), the flow codec and the shard writer, and the
    size of the clip state a worker receives from its isolation child (pickled)."""
    from pipeline.clip.loop import ClipSteps
    from pipeline.clip.work import ClipWork
    from pipeline.shards import TarShardWriter
    from pipeline.steps import clip_stages
    from schemas.sample import Sample, decode_jpeg, encode_flow, encode_jpeg, encode_sample

    rows = _rows(data, n)
    steps = ClipSteps(cfg)
    stage_names = clip_stages()
    secs: dict[str, float] = {s: 0.0 for s in stage_names}
    counts: dict[str, int] = {s: 0 for s in stage_names}
    extra = {"jpeg_round_trip": 0.0, "flow_codec": 0.0, "shard_writing": 0.0, "state_pickle": 0.0}
    state_bytes = []
    failed: dict[str, int] = {}
    tmp = tempfile.mkdtemp(prefix="bench-shard-")
    writer = TarShardWriter(tmp, "bench", 0)
    written = 0
    try:
        for row in rows:
            work = steps.run([ClipWork(row=row, shard=0)])[0]
            for stage, seconds in work.timings.items():
                secs[stage] += seconds
                counts[stage] += 1
            if work.done:
                failed[work.reason] = failed.get(work.reason, 0) + 1
                continue
            state = work.sample
            q = cfg.decode.jpeg_quality
            t0 = time.perf_counter()
            jp = [encode_jpeg(f, q) for f in state.frames]
            _ = [decode_jpeg(j) for j in jp]
            extra["jpeg_round_trip"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            encode_flow(state.flow, float(state.meta["flow"]["step"]))
            extra["flow_codec"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            members = encode_sample(state)
            writer.write(row["clip_id"], members)
            extra["shard_writing"] += time.perf_counter() - t0
            written += 1
            work.sample, work.members = Sample(key=state.key, meta=state.meta), members  # what the child sends
            sent = work
            t0 = time.perf_counter()
            blob = pickle.dumps(sent, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(blob)
            extra["state_pickle"] += time.perf_counter() - t0
            state_bytes.append(len(blob))
        t0 = time.perf_counter()
        writer.close()
        extra["shard_writing"] += time.perf_counter() - t0
    finally:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
    stages = {}
    for s in stage_names:
        stages[s] = {"clips": counts[s], "seconds": round(secs[s], 4), "clips_per_s": _rate(counts[s], secs[s]),
                     "ms_per_clip": round(1000 * secs[s] / counts[s], 2) if counts[s] else None}
    for k, v in extra.items():
        stages[k] = {"clips": written, "seconds": round(v, 4), "clips_per_s": _rate(written, v),
                     "ms_per_clip": round(1000 * v / written, 2) if written else None}
    total = sum(secs.values()) + extra["shard_writing"]
    return {
        "clips": len(rows), "ok": written, "failed": failed, "stages": stages,
        "all_stages_clips_per_s": _rate(written, total),
        "state_pickle_mb_per_clip": round(float(np.mean(state_bytes)) / 1e6, 2) if state_bytes else None,
        "notes": {"decode": "includes the JPEG round trip (jpeg_round_trip is its share)",
                  "shard_writing": "encode_sample (JPEG bytes as stored, flow codec, npz, json) + tar write",
                  "state_pickle": "pickle round trip of what an isolation child sends its worker (the encoded "
                                  "members, meta and timings)"},
    }


# ----------------------------------------------------------------------------- lower bound

def lower_bound(cfg: Config, data: str, n: int | None = None,
                presets: tuple[str, ...] = ("ultrafast", "fast", "balanced", "medium")) -> dict[str, Any]:
    """The same decode and flow as the pipeline, in a bare loop: no framework, no JPEG, no
    shards. Same frames (same seed and clip ids), same flow backend and settings.

    Also (not part of the bound): the flow of each DIS preset on the same frames, so that
    the bound for another preset is ``1 / (1/decode + 1/flow_preset)``."""
    from stages.decode import clip_rng, decode_video
    from stages.errors import ClipError
    from stages.flow.base import make_flow_backend

    rows = clip_rows_ok(_rows(data, n))
    p = cfg.get_profile()
    f = cfg.flow
    backend = make_flow_backend(f.backend, preset=f.preset)
    others = {pr: make_flow_backend("dis", preset=pr) for pr in presets}
    t_other = {pr: 0.0 for pr in presets}
    paths = [os.path.join(r["source"]) for r in rows]
    t_dec = t_flow = 0.0
    done = 0
    for r, path in zip(rows, paths):
        t0 = time.perf_counter()
        try:
            clip = decode_video(path, p.frames, p.fps, p.width, p.height, clip_rng(cfg.seed, r["clip_id"], "start"))
        except ClipError:
            continue
        t1 = time.perf_counter()
        backend.forward(clip.frames)
        t2 = time.perf_counter()
        t_dec += t1 - t0
        t_flow += t2 - t1
        done += 1
        for pr, be in others.items():
            t3 = time.perf_counter()
            be.forward(clip.frames)
            t_other[pr] += time.perf_counter() - t3
    by_preset = {}
    for pr in presets:
        by_preset[pr] = {"flow_clips_per_s": _rate(done, t_other[pr]),
                         "bound_clips_per_s": _rate(done, t_dec + t_other[pr])}
    return {"clips": done, "seconds": round(t_dec + t_flow, 3), "clips_per_s": _rate(done, t_dec + t_flow),
            "decode_clips_per_s": _rate(done, t_dec), "flow_clips_per_s": _rate(done, t_flow),
            "flow": backend.describe(), "dis_presets": by_preset}


# ----------------------------------------------------------------------------- baseline

def _v2d_decode(path: str, indices: list[int], width: int, height: int) -> np.ndarray:
    """Decode ``indices`` sequentially with OpenCV (grab every frame, retrieve the needed ones),
    resize to cover the profile size and center-crop: gray uint8 (L, H, W)."""
    import cv2

    cap = cv2.VideoCapture(path)
    want = sorted(set(int(i) for i in indices))
    got: dict[int, np.ndarray] = {}
    i = 0
    try:
        while want and i <= want[-1]:
            if not cap.grab():
                break
            if i in want:
                ok, bgr = cap.retrieve()
                if ok:
                    h0, w0 = bgr.shape[:2]
                    s = max(width / w0, height / h0)
                    rw, rh = max(width, round(w0 * s)), max(height, round(h0 * s))
                    img = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_AREA)
                    x, y = (rw - width) // 2, (rh - height) // 2
                    got[i] = cv2.cvtColor(img[y:y + height, x:x + width], cv2.COLOR_BGR2GRAY)
            i += 1
    finally:
        cap.release()
    last = None
    out = []
    for k in indices:  # repeat the last decodable frame when the file ends early
        last = got.get(int(k), last)
        if last is None:
            raise ValueError(f"{path}: frame {k} does not decode")
        out.append(last)
    return np.stack(out)


FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _farneback(gray: np.ndarray) -> np.ndarray:
    import cv2

    p = FARNEBACK
    out = np.empty((len(gray) - 1, 2) + gray.shape[1:], np.float32)
    for t in range(len(gray) - 1):
        f = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, p["pyr_scale"], p["levels"], p["winsize"],
                                         p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
        out[t, 0], out[t, 1] = f[..., 0], f[..., 1]
    return out


def baseline_throughput(cfg: Config, data: str, n: int | None = None) -> dict[str, Any]:
    """video2dataset-style flow subsampler: sequential OpenCV decode of the sampled frames,
    Farneback at the profile size, flow saved as float16 .npy (in memory). The frames
    sampled are those the pipeline samples (same indices), so both do the same number of pairs."""
    from stages.decode import clip_rng, select_frames
    from stages.decoders import read_frame_table

    rows = clip_rows_ok(_rows(data, n))
    p = cfg.get_profile()
    done, secs = 0, 0.0
    for r in rows:
        table = read_frame_table(r["source"])  # index only (not timed): frame count and rate
        nframes, fps = table.num_frames, table.header_fps
        try:
            idx, _ = select_frames(nframes, fps, p.frames, p.fps, clip_rng(cfg.seed, r["clip_id"], "start"))
        except Exception:
            continue
        t0 = time.perf_counter()
        gray = _v2d_decode(r["source"], list(idx), p.width, p.height)
        flow = _farneback(gray)
        buf = io.BytesIO()
        np.save(buf, flow.astype(np.float16))
        secs += time.perf_counter() - t0
        done += 1
    return {"clips": done, "seconds": round(secs, 3), "clips_per_s": _rate(done, secs),
            "method": "OpenCV decode (grab/retrieve), INTER_AREA resize + center crop, gray, "
                      "Farneback " + ", ".join(f"{k}={v}" for k, v in FARNEBACK.items()) + ", float16 npy"}


# ----------------------------------------------------------------------------- accuracy

def _track_drift(flow: np.ndarray, gt: np.ndarray, interval: int = 16) -> float:
    """Mean distance at the last frame between anchors tracked through ``flow`` and through the
    exact flow (anchors visible in both all the way)."""
    from stages.trajectories import anchor_grid, track_points

    h, w = gt.shape[-2:]
    a = anchor_grid(h, w, interval)
    te, ve = track_points(a, flow)
    tg, vg = track_points(a, gt)
    ok = ve[:, -1] & vg[:, -1]
    if not ok.any():
        return float("nan")
    return float(np.linalg.norm(te[ok, -1] - tg[ok, -1], axis=1).mean())


def flow_accuracy(cfg: Config, clips, presets=("ultrafast", "fast", "balanced", "medium")) -> dict[str, Any]:
    """End-point error against the exact flow of ``clips`` (``bench.clips.MotionClip`` with mp4
    paths, one file frame per sampled frame):

    * ``methods``: every DIS preset and Farneback on the frames the pipeline's flow stage sees
      (decode_video + JPEG round trip), timed per pair;
    * ``ours``: the configured backend with the stored quantisation (what a shard holds);
    * ``baseline``: the video2dataset-style decode + Farneback."""
    from schemas.sample import decode_jpeg, dequantize_flow, encode_jpeg
    from stages.decode import clip_rng, decode_video
    from stages.flow.base import make_flow_backend
    from stages.flow.cpu import DISFlow, FarnebackFlow
    from stages.flow.ops import endpoint_error

    p = cfg.get_profile()
    frames, base_gray = [], []
    for c in clips:
        dc = decode_video(c.path, p.frames, p.fps, p.width, p.height, clip_rng(0, c.name, "start"))
        if list(dc.indices) != list(range(p.frames)):
            raise RuntimeError(f"{c.path}: expected frames 0..{p.frames - 1}, got {list(dc.indices)}")
        frames.append(np.stack([decode_jpeg(encode_jpeg(f, cfg.decode.jpeg_quality)) for f in dc.frames]))
        base_gray.append(_v2d_decode(c.path, list(range(p.frames)), p.width, p.height))
    levels = sorted({c.level for c in clips}, key=[c.level for c in clips].index)

    def score(name: str, run: Callable[[int], np.ndarray]) -> dict[str, Any]:
        per_level: dict[str, list[float]] = {lv: [] for lv in levels}
        drift = []
        secs, pairs = 0.0, 0
        for i, c in enumerate(clips):
            t0 = time.perf_counter()
            f = run(i)
            secs += time.perf_counter() - t0
            pairs += len(f)
            per_level[c.level].append(endpoint_error(f, c.flow))
            drift.append(_track_drift(f, c.flow))
        allv = [v for vs in per_level.values() for v in vs]
        return {"method": name, "epe": round(float(np.mean(allv)), 4),
                "epe_by_level": {k: round(float(np.mean(v)), 4) for k, v in per_level.items()},
                "track_drift_px": round(float(np.nanmean(drift)), 3),
                "pairs_per_s": _rate(pairs, secs)}

    methods = {}
    for pr in presets:
        be = DISFlow(pr)
        methods[f"dis_{pr}"] = score(f"DIS {pr}", lambda i, be=be: be.forward(frames[i]))
    fb = FarnebackFlow()
    methods["farneback"] = score("Farneback (same frames)", lambda i: fb.forward(frames[i]))
    f = cfg.flow
    ours_be = make_flow_backend(f.backend, preset=f.preset)
    step = float(f.step)
    ours = score(f"ours ({f.backend} {f.preset}, stored precision)",
                 lambda i: dequantize_flow(ours_be.forward(frames[i]), step))
    base = score("baseline (v2d-style decode + Farneback)", lambda i: _farneback(base_gray[i]))
    return {"clips": len(clips), "profile": p.name, "levels": levels, "methods": methods, "ours": ours,
            "baseline": base, "ours_flow": ours_be.describe()}


# ----------------------------------------------------------------------------- end to end

_RAY_AGENTS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::JobSupervisor")


class RssSampler:
    """Peak of the summed RSS of this run's Ray worker processes (``ray::`` processes under
    this driver, with their own children such as isolation processes), sampled every
    ``interval`` s; idle pool workers and Ray's agents are left out. ``peak_worker``: the
    largest RSS of one worker with its children (a clip operator and its isolation child),
    the figure a worker's memory budget is about."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.peak_worker = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _workers(self, trees: list | None = None):
        out = []
        for p in self.me.children(recursive=True):
            try:
                name = p.name()
                if not name.startswith("ray::"):
                    try:
                        cmd = " ".join(p.cmdline()[:1])
                    except Exception:
                        cmd = ""
                    if not cmd.startswith("ray::"):
                        continue
                    name = cmd
                if name.startswith(_RAY_AGENTS):
                    continue
                tree = [p] + p.children(recursive=True)
                out += tree
                if trees is not None:
                    trees.append(tree)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
        return out

    def _rss(self, p) -> int | None:
        try:
            return p.memory_info().rss
        except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
            return None

    def sample(self) -> int:
        trees: list = []
        rss = {p.pid: self._rss(p) for p in {p.pid: p for p in self._workers(trees)}.values()}
        seen = [v for v in rss.values() if v is not None]
        total, n = sum(seen), len(seen)
        for tree in trees:
            self.peak_worker = max(self.peak_worker, sum(rss.get(p.pid) or 0 for p in tree))
        if total > self.peak:
            self.peak, self.peak_procs = total, n
        return total

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def ensure_ray(num_cpus: int | None = None) -> None:
    """One local Ray instance for all end-to-end runs (workers import the repo via PYTHONPATH,
    as pipeline.run does)."""
    import logging

    import ray

    if ray.is_initialized():
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kw = {"num_cpus": num_cpus} if num_cpus else {}
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"env_vars": env}, **kw)


def end_to_end(cfg: Config, data: str, out_dir: str, workers: int, checkpoints: tuple[int, ...] = ()) -> dict[str, Any]:
    """``pipeline.run.run`` on Ray with ``workers`` shard workers (the run a user makes).

    ``wall_clips_per_s`` counts everything (manifest, actor start, index); the steady rate
    leaves out the start: clips finished after the first ``workers`` clips / the time from
    the ``workers``-th clip to the last (clip results as the driver receives them).
    ``checkpoints``: clip counts at which the peak RSS so far is recorded."""
    from pipeline.run.plan import run as run_plan

    ensure_ray()
    shutil.rmtree(out_dir, ignore_errors=True)
    cfg = cfg.replace(**{"ray.num_workers": workers})
    marks: dict[int, int] = {}
    clip_times: list[float] = []
    with RssSampler() as rss:
        def progress(st, k, total):
            rss.sample()

        def clip(r):
            clip_times.append(time.perf_counter())
            for c in checkpoints:
                if c not in marks and len(clip_times) >= c:
                    rss.sample()
                    marks[c] = rss.peak

        progress.clip = clip
        t0 = time.perf_counter()
        res = run_plan(cfg, "webvid", data, out_dir, force=True, progress=progress)
        wall = time.perf_counter() - t0
    k0 = min(workers, len(clip_times)) - 1
    steady = 0.0
    if len(clip_times) > k0 + 1 and clip_times[-1] > clip_times[k0]:
        steady = (len(clip_times) - 1 - k0) / (clip_times[-1] - clip_times[k0])
    return {
        "workers": workers, "clips": res.clips, "ok": res.ok, "error": res.error, "filtered": res.filtered,
        "shards": res.shards, "seconds": round(wall, 3), "wall_clips_per_s": _rate(res.clips, wall),
        "steady_clips_per_s": round(steady, 3), "worker_pids": max([int(st.get("workers") or 0) for st in res.stats] or [0]),
        "peak_rss_mb": round(rss.peak / 2 ** 20, 1), "peak_rss_processes": rss.peak_procs,
        "peak_rss_per_worker_mb": round(rss.peak_worker / 2 ** 20, 1),
        "peak_rss_mb_at": {str(k): round(v / 2 ** 20, 1) for k, v in marks.items()},
        "stage_seconds": _sum_stage_seconds(res.stats),
        "out_dir": res.out_dir, "prefix": res.prefix,
    }


def _sum_stage_seconds(stats: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for st in stats:
        for k, v in (st.get("stage_seconds") or {}).items():
            out[k] = round(out.get(k, 0.0) + float(v), 3)
    return out


# ----------------------------------------------------------------------------- bytes

def shard_bytes(out_dir: str) -> dict[str, Any]:
    """Bytes per clip in the shards of a run, split by member (frames summed as ``frames``)."""
    from pipeline.shards import iter_samples
    from schemas.sample import FLOW_MEMBER, decode_flow, encode_flow, is_frame_member

    per_clip: dict[str, dict[str, int]] = {}
    tars = sorted(n for n in os.listdir(out_dir) if n.endswith(".tar"))
    tar_bytes = 0
    # The flow member's size at coarser quantisation steps (re-encoded from the stored flow).
    by_step: dict[str, list[int]] = {}
    for name in tars:
        tar_bytes += os.path.getsize(os.path.join(out_dir, name))
        for key, members in iter_samples(os.path.join(out_dir, name)):
            d = per_clip.setdefault(key, {})
            for ext, data in members.items():
                group = "frames (jpg)" if is_frame_member(ext) else ext
                d[group] = d.get(group, 0) + len(data)
            if FLOW_MEMBER in members and len(by_step.get("1/16", [])) < 8:
                flow = decode_flow(members[FLOW_MEMBER])
                for label, step in (("1/16", 1 / 16), ("1/8", 1 / 8), ("1/4", 1 / 4)):
                    by_step.setdefault(label, []).append(len(encode_flow(flow, step)))
    n = len(per_clip)
    if not n:
        return {"clips": 0}
    groups = sorted({g for d in per_clip.values() for g in d})
    totals = [sum(d.values()) for d in per_clip.values()]
    return {
        "clips": n,
        "mean_bytes_per_clip": int(np.mean(totals)), "max_bytes_per_clip": int(np.max(totals)),
        "tar_bytes_per_clip": int(tar_bytes / n),
        "by_member": {g: int(np.mean([d.get(g, 0) for d in per_clip.values()])) for g in groups},
        "flow_pfz_bytes_by_step": {k: int(np.mean(v)) for k, v in by_step.items()},
    }


# ----------------------------------------------------------------------------- the driver's plan

_PLAN_SCRIPT = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[4])
from pipeline.inputs.manifest import build_manifest, write_manifest
from pipeline.run.plan import manifest_row_group, shard_tasks
def rss():
    # VmHWM: this process image's peak (ru_maxrss would keep the forking parent's peak across exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
data, out, sps = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = rss()
t0 = time.perf_counter()
m = build_manifest("webvid", data)
t1 = time.perf_counter()
write_manifest(m, out, row_group_size=manifest_row_group(sps))
t2 = time.perf_counter()
tasks = shard_tasks(m.num_rows, sps)
t3 = time.perf_counter()
print(json.dumps({"rows": m.num_rows, "shards": len(tasks), "manifest_s": t1 - t0, "write_s": t2 - t1,
                  "tasks_s": t3 - t2, "rss_after_imports_mb": base, "peak_rss_mb": rss(),
                  "arrow_mb": m.nbytes / 2**20}))
"""


def write_webvid_csv(path: str, rows: int) -> str:
    """A WebVid-shaped CSV of ``rows`` rows (10,000 per page_dir, as WebVid's folders; no video
    files: the sources all point to missing files, which the plan does not look at)."""
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("videoid,contentUrl,duration,page_dir,name\n")
        for i in range(rows):
            vid = 1_000_000 + i
            f.write(f"{vid},https://ak.picdn.net/shutterstock/videos/{vid}/preview/stock-footage-clip.mp4,"
                    f"PT00H00M{5 + i % 55:02d}S,{i // 10000 * 50 + 1:06d}_{i // 10000 * 50 + 50:06d},"
                    f"\"Aerial view of a winter forest at sunset, drone flying over snowy trees, shot {i}\"\n")
    os.replace(tmp, path)
    return path


def driver_plan(work: str, sizes: tuple[int, ...], samples_per_shard: int = 100) -> dict[str, Any]:
    """What the driver spends before the first clip, for WebVid CSVs of each size: the manifest
    (CSV -> checked rows -> Arrow), its parquet file and the shard tasks, each size in a fresh
    process (its peak RSS is the plan's, not this benchmark's)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict[str, Any] = {"samples_per_shard": samples_per_shard, "sizes": {}}
    for n in sizes:
        d = os.path.join(work, f"webvid_rows_{n}")
        write_webvid_csv(os.path.join(d, "webvid.csv"), n)
        man = os.path.join(work, f"manifest_rows_{n}.parquet")
        proc = subprocess.run([sys.executable, "-c", _PLAN_SCRIPT, d, man, str(samples_per_shard), root],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"plan of {n} rows failed: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        total = r["manifest_s"] + r["write_s"] + r["tasks_s"]
        r.update(seconds=round(total, 2), rows_per_s=_rate(r["rows"], total),
                 csv_mb=round(os.path.getsize(os.path.join(d, "webvid.csv")) / 2**20, 1))
        out["sizes"][str(n)] = {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        with contextlib.suppress(FileNotFoundError):
            os.remove(man)
    return out
