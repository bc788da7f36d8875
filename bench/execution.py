"""Bench section ``execution``: clips as the unit of work (issue 12), all in one run.

1. A dataset that fits in one shard (HD, default settings), run as a user runs it
   (``python -m pipeline run``, a fresh process each, Ray start included) with 1 and 2
   workers: wall seconds and the ratio; and the same through ``pipeline.run.run`` with
   per-clip timestamps: the start-up (to the first clip) and the steady rate after it.
2. The same run killed (SIGKILL of the driver) once about 75 % of its clips are staged, then
   resumed: the resume's wall seconds as a fraction of the uninterrupted run's, and whether
   the three outputs (1 worker, 2 workers, killed + resumed) are byte-identical.
3. The GPU plan on the CPU: a local Ray with logical GPUs, RAFT (small) and SAM (tiny) with
   random weights, so each model stage runs as its own operator: per operator, clips, mean
   batch size (clips per call) and the seconds it waited for input.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _cli(data: str, out: str, workers: int, extra=()) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "pipeline", "run", "--dataset", "webvid", "--data", data, "--out", out,
                             "--workers", str(workers), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _tar_digest(out: str) -> str:
    h = hashlib.sha256()
    for p in sorted(glob.glob(os.path.join(out, "*.tar"))):
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def _wait_ray_gone(timeout: float = 30.0) -> None:
    """Let the previous run's Ray processes exit before the next timing starts."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        names = [p.info["name"] or "" for p in psutil.process_iter(["name"])]
        if not any(n.startswith(("raylet", "gcs_server", "ray::")) for n in names):
            return
        time.sleep(0.5)


def _timed_run(data: str, out: str, workers: int, fresh: bool = True) -> dict[str, Any]:
    """One CLI run, timed from process start to exit; ``fresh`` clears OUT first."""
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    _wait_ray_gone()
    t0 = time.perf_counter()
    p = _cli(data, out, workers)
    text, _ = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"run failed ({p.returncode}):\n{text[-3000:]}")
    return {"workers": workers, "wall_s": round(wall, 2), "tars": _tar_digest(out)}


STEADY_SCRIPT = r'''
import json, sys, time
sys.path.insert(0, {root!r})
from pipeline.config import Config
from pipeline.run import run
t0 = time.perf_counter()
times = []
progress = lambda *a: None
progress.clip = lambda r: times.append(time.perf_counter() - t0)
res = run(Config().replace(**{{"ray.num_workers": {workers}}}), "webvid", {data!r}, {out!r}, force=True,
          progress=progress)
k = min({workers}, len(times)) - 1
steady = (len(times) - 1 - k) / (times[-1] - times[k]) if len(times) > k + 1 and times[-1] > times[k] else None
print(json.dumps({{"workers": {workers}, "run_s": round(time.perf_counter() - t0, 2), "first_clip_s": round(times[0], 2),
                  "steady_clips_per_s": round(steady, 3) if steady else None}}))
'''


def _steady_run(data: str, out: str, workers: int) -> dict[str, Any]:
    """``pipeline.run.run`` in a fresh process with per-clip timestamps: the steady rate
    (clips after the first per worker / the time they took) beside the start-up."""
    shutil.rmtree(out, ignore_errors=True)
    _wait_ray_gone()
    code = STEADY_SCRIPT.format(root=ROOT, workers=workers, data=data, out=out)
    p = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"steady run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def one_shard(data: str, work: str, clips: int) -> dict[str, Any]:
    r1 = _timed_run(data, os.path.join(work, "w1"), 1)
    r2 = _timed_run(data, os.path.join(work, "w2"), 2)
    s1 = _steady_run(data, os.path.join(work, "s1"), 1)
    s2 = _steady_run(data, os.path.join(work, "s2"), 2)
    # killed at ~75 % of the clips staged, then resumed (2 workers, as the full run above)
    out = os.path.join(work, "killed")
    shutil.rmtree(out, ignore_errors=True)
    _wait_ray_gone()
    parts = os.path.join(out, "_parts", "shards", "000000")
    target = max(1, int(round(0.75 * clips)))
    p = _cli(data, out, 2)
    t0 = time.perf_counter()
    while len(glob.glob(os.path.join(parts, "*.part"))) < target:
        if p.poll() is not None:
            raise RuntimeError("the run ended before 75 % of its clips were staged")
        time.sleep(0.05)
    killed_after = time.perf_counter() - t0
    staged = len(glob.glob(os.path.join(parts, "*.part")))
    os.killpg(p.pid, signal.SIGKILL)  # the driver and everything it started (Ray included)
    p.wait()
    p.stdout.close()
    resumed = _timed_run(data, out, 2, fresh=False)
    return {
        "clips": clips, "w1": r1, "w2": r2,
        "speedup_2_vs_1": round(r1["wall_s"] / r2["wall_s"], 3),
        "steady": {"1": s1, "2": s2},
        "steady_2_vs_1": round(s2["steady_clips_per_s"] / s1["steady_clips_per_s"], 3)
        if s1.get("steady_clips_per_s") and s2.get("steady_clips_per_s") else None,
        "killed_after_s": round(killed_after, 2), "staged_at_kill": staged,
        "resume_wall_s": resumed["wall_s"], "resume_fraction": round(resumed["wall_s"] / r2["wall_s"], 3),
        "identical": len({r1["tars"], r2["tars"], resumed["tars"]}) == 1,
    }


GPU_PLAN_SCRIPT = r'''
import json, os, sys
import ray, torch
from torchvision.models.optical_flow import raft_small
sys.path.insert(0, {root!r})
from pipeline.config import Config
from pipeline.run import run
from stages.entities.masks_sam import build_sam_model

work, data = {work!r}, {data!r}
torch.manual_seed(0)
torch.save(raft_small(weights=None).state_dict(), os.path.join(work, "raft_small.pth"))
torch.save(build_sam_model("tiny_test").state_dict(), os.path.join(work, "sam_tiny.pth"))
cfg = Config(profile="dragnuwa-ld").replace(**{{
    "flow.backend": "raft", "flow.checkpoint": os.path.join(work, "raft_small.pth"), "flow.device": "cpu",
    "entities.masks": "sam", "entities.sam_model": "tiny_test", "entities.device": "cpu",
    "entities.sam_checkpoint": os.path.join(work, "sam_tiny.pth"),
    "entities.sam": {{"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}},
    "ray.groups": {{"flow": {{"batch_size": 4}}, "masks": {{"batch_size": 4}}}}}})
ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {root!r}}}}})
res = run(cfg, "webvid", data, os.path.join(work, "out"), executor="ray", force=True)
ops = {{}}
for st in res.stats:
    for op, b in st["batches"].items():
        o = ops.setdefault(op, {{"clips": 0, "batch_sum": 0.0, "wait_s": 0.0}})
        o["clips"] += b["clips"]; o["batch_sum"] += b["mean_batch"] * b["clips"]; o["wait_s"] += b["wait_s"]
secs = {{}}
for st in res.stats:
    for k, v in st["stage_seconds"].items():
        secs[k] = secs.get(k, 0.0) + v
print(json.dumps({{"groups": res.groups, "ok": res.ok, "clips": res.clips, "seconds": round(res.seconds, 2),
                   "operators": {{k: {{"clips": v["clips"], "mean_batch": round(v["batch_sum"] / max(v["clips"], 1), 2),
                                      "wait_s": round(v["wait_s"], 2)}} for k, v in ops.items()}},
                   "stage_seconds": {{k: round(v, 2) for k, v in secs.items()}}}}))
'''


def gpu_plan(data: str, work: str) -> dict[str, Any]:
    os.makedirs(work, exist_ok=True)
    _wait_ray_gone()
    code = GPU_PLAN_SCRIPT.format(root=ROOT, work=work, data=data)
    p = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"GPU plan run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def execution(work: str, hd_data: str, hd_clips: int, ld_data: str) -> dict[str, Any]:
    return {"one_shard": one_shard(hd_data, os.path.join(work, "one_shard"), hd_clips),
            "gpu_plan": gpu_plan(ld_data, os.path.join(work, "gpu_plan"))}
