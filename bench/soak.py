"""Soak run: many small synthetic clips through the real pipeline, peak RSS as it grows.

    .venv/bin/python bench/soak.py                   # 10,000 clips, LD profile, Ray executor
    .venv/bin/python bench/soak.py --clips 2000 --checkpoints 500,2000

A few distinct small mp4 files are rendered once (pipeline.testdata.synthetic) and listed many times
in a WebVid CSV under different ids (symlinks), so making the dataset takes seconds. The run
is ``pipeline.run.run`` as the CLI calls it. A sampler thread adds up the resident memory
(RSS, psutil) of the driver and all its descendant processes (the local Ray cluster: its
system processes, the GroupOperator actors and their clip-isolation children) every 0.5 s.
Printed: the peak total RSS (and per group) over the clips done so far at each checkpoint
(default 1,000 and 10,000 clips), and the throughput. Flat peaks = streaming works: memory
does not grow with the dataset.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GROUPS = ("driver", "ray_workers", "isolation_children", "ray_system")


def make_dataset(root: str, clips: int, distinct: int, width: int, height: int, frames: int, fps: float) -> str:
    from pipeline.testdata.synthetic import random_scene, write_mp4

    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "v"), exist_ok=True)
    srcs = []
    for i in range(distinct):
        p = os.path.join(root, "src", f"s{i}.mp4")
        if not os.path.exists(p):
            write_mp4(p, random_scene(1000 + i, width=width, height=height, num_frames=frames).frames, fps)
        srcs.append(p)
    with open(os.path.join(root, ".webvid.csv.tmp"), "w") as f:
        f.write("videoid,contentUrl,duration,page_dir,name\n")
        for k in range(clips):
            vid = f"soak{k:07d}"
            link = os.path.join(root, "v", vid + ".mp4")
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(srcs[k % distinct], os.path.dirname(link)), link)
            f.write(f"{vid},,PT{frames / fps:.2f}S,v,soak clip {k}\n")
    os.replace(os.path.join(root, ".webvid.csv.tmp"), os.path.join(root, "webvid.csv"))
    return root


class RssSampler(threading.Thread):
    """Samples RSS of this process and all its descendants; keeps the peaks."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.lock = threading.Lock()
        self.peak_total = 0
        self.peak_groups = dict.fromkeys(GROUPS, 0)
        self.peak_procs = 0
        self.stop_event = threading.Event()

    def group(self, p) -> str:
        if p.pid == self.me.pid:
            return "driver"
        try:
            cmd = " ".join(p.cmdline())
        except Exception:
            return "ray_system"
        if "multiprocessing" in cmd or "spawn_main" in cmd:
            return "isolation_children"
        name = p.name()
        if (name.startswith("ray::") and name not in ("ray::DashboardAgent", "ray::RuntimeEnvAgent")) \
                or "default_worker.py" in cmd:
            return "ray_workers"
        return "ray_system"

    def sample(self) -> None:
        groups = dict.fromkeys(GROUPS, 0)
        procs = [self.me] + self.me.children(recursive=True)
        for p in procs:
            try:
                groups[self.group(p)] += p.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        total = sum(groups.values())
        with self.lock:
            self.peak_total = max(self.peak_total, total)
            self.peak_procs = max(self.peak_procs, len(procs))
            for k, v in groups.items():
                self.peak_groups[k] = max(self.peak_groups[k], v)

    def snapshot(self) -> dict:
        with self.lock:
            return {"peak_total_mb": self.peak_total / 2**20,
                    **{f"peak_{k}_mb": v / 2**20 for k, v in self.peak_groups.items()},
                    "peak_processes": self.peak_procs}

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10_000)
    ap.add_argument("--checkpoints", default="1000,10000", help="clip counts at which to print the peak so far")
    ap.add_argument("--distinct", type=int, default=4, help="distinct source files")
    ap.add_argument("--size", default="160x96", help="source frame size WxH")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--profile", default="dragnuwa-ld")
    ap.add_argument("--flow-preset", default="ultrafast")
    ap.add_argument("--samples-per-shard", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--executor", default="ray", choices=("ray", "local"))
    ap.add_argument("--no-isolation", action="store_true")
    ap.add_argument("--entities", action="store_true", help="also run the entity stage (slow on CPU)")
    ap.add_argument("--work", default=None, help="folder for data and output (default: a temp folder, removed)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from pipeline.config import Config
    from pipeline.run.plan import run

    work = args.work or tempfile.mkdtemp(prefix="soak-")
    data, out = os.path.join(work, "data"), os.path.join(work, "out")
    w, h = (int(v) for v in args.size.lower().split("x"))
    t0 = time.perf_counter()
    make_dataset(data, args.clips, args.distinct, w, h, args.frames, args.fps)
    print(f"dataset: {args.clips} clips ({args.distinct} distinct {w}x{h} files, {args.frames} frames) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)

    cfg = Config(profile=args.profile).replace(**{
        "flow.preset": args.flow_preset, "shards.samples_per_shard": args.samples_per_shard,
        "ray.num_workers": args.workers, "isolation.enabled": not args.no_isolation,
        "entities.enabled": args.entities})
    checkpoints = sorted(int(c) for c in args.checkpoints.split(",") if c)
    sampler = RssSampler()
    sampler.sample()
    sampler.start()
    done = {"clips": 0, "next": 0}
    report = []
    t_run = time.perf_counter()

    def progress(st, n, total):
        done["clips"] += st["clips"]
        while done["next"] < len(checkpoints) and done["clips"] >= checkpoints[done["next"]]:
            sampler.sample()
            snap = {"clips_done": done["clips"], "seconds": round(time.perf_counter() - t_run, 1), **sampler.snapshot()}
            report.append(snap)
            print(f"after {snap['clips_done']:>6} clips ({snap['seconds']:.0f} s): peak RSS total "
                  f"{snap['peak_total_mb']:.0f} MB = driver {snap['peak_driver_mb']:.0f} + Ray workers "
                  f"{snap['peak_ray_workers_mb']:.0f} + isolation children {snap['peak_isolation_children_mb']:.0f} "
                  f"+ Ray system {snap['peak_ray_system_mb']:.0f} (peaks per group; {snap['peak_processes']} processes)",
                  flush=True)
            done["next"] += 1

    try:
        res = run(cfg, "webvid", data, out, executor=args.executor, progress=progress)
    finally:
        sampler.stop_event.set()
    print(f"run: {res.clips} clips -> ok {res.ok}, error {res.error}, filtered {res.filtered} in {res.shards} shards, "
          f"{res.seconds:.0f} s, {res.clips_per_second:.1f} clips/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "checkpoints": report, "ok": res.ok, "error": res.error,
                       "seconds": res.seconds}, f, indent=1)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if res.ok == res.clips else 1


if __name__ == "__main__":
    sys.exit(main())
