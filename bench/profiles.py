"""The profiles side by side (issue 25): memory per worker, throughput per core, bytes per clip.

    .venv/bin/python bench/profiles.py [--clips 3] [--profiles dragnuwa-hd,cogvideox,wan]

(``python -m bench`` runs it as its section ``profiles``.) Every profile runs the same
synthetic clips: 854x480, 24 fps, 7 s, long enough for each built-in profile (cogvideox
samples 6 s, wan 5 s) and covering 832x480 without an upscale. Default settings (entities
included: motion masks and the flow tracker). For each profile:

- **per step**, in a fresh process per profile, one clip after another: milliseconds, the
  RSS before the step, its peak during the step (the kernel's high-water mark, reset before
  each step through ``/proc/self/clear_refs``) and what stays held after it (the largest over
  the clips); then the sample encoding;
- **the big arrays** of one clip at the profile size (what bounds a worker's memory);
- **end to end**, ``pipeline.run`` on Ray with one worker of one core
  (``num_cpus_per_worker`` 1): clips/s per core (the clips over the seconds their steps took),
  the wall rate, the peak RSS of that worker (its operator process with its clip-isolation
  child), milliseconds per stage;
- **bytes per clip** in the shards, by member.

A figure printer, not a test: nothing is asserted; the wan target (<= 3 GB per worker) is
printed as met or not. Say the machine's load when quoting the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import clips as bclips  # noqa: E402
from bench import measure  # noqa: E402

PROFILES = ("dragnuwa-hd", "cogvideox", "wan")
SOURCE = dict(width=854, height=480, fps=24, seconds=7.0)   # 480p, 16:9, 168 frames
WAN_TARGET_MB = 3 * 1024


def profile_dataset(folder: str, clips: int) -> str:
    """``clips`` distinct synthetic clips (``SOURCE``) in the WebVid layout, cached."""
    return bclips.video_dataset(os.path.join(folder, f"profiles_{clips}"), clips, distinct=clips, real=False,
                                base=os.path.join(folder, "rendered_854x480"), **SOURCE)


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
    except (OSError, StopIteration):
        return None


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def big_arrays(profile, members: dict[str, bytes] | None = None) -> dict[str, float]:
    """MB of the arrays one clip holds at ``profile``'s size (docs/performance.md, "Memory per
    worker"): the decoded frames, the forward and backward flow (float32), the flow encoder's
    shuffled residuals (as large as the flow), the motion step's magnitudes, and the stored
    members when given."""
    frames, pairs, px = profile.frames, profile.frames - 1, profile.width * profile.height
    out = {"frames uint8 (L, H, W, 3)": frames * px * 3, "flow float32 (L-1, 2, H, W)": pairs * 2 * px * 4,
           "backward flow float32 (L-1, 2, H, W)": pairs * 2 * px * 4,
           "flow encoder residual bytes (4 per value)": pairs * 2 * px * 4,
           "motion magnitudes float32 (L-1, H, W)": pairs * px * 4}
    if members:
        out["stored members (what the isolation child sends)"] = sum(map(len, members.values()))
    return {k: round(v / 2 ** 20, 1) for k, v in out.items()}


def step_memory(cfg, data: str, clips: int) -> dict[str, Any]:
    """Each step on each clip in this process (module docstring): per step the mean ms and the
    largest RSS figures over the clips (MB)."""
    from pipeline.clip.loop import ClipSteps, encode
    from pipeline.clip.work import ClipWork

    rows = measure.clip_rows_ok(measure._rows(data, clips))
    steps = ClipSteps(cfg)
    per: dict[str, dict[str, float]] = {}
    resettable = _reset_peak()
    members = None
    failed: dict[str, int] = {}

    def record(name: str, before: float, t0: float) -> None:
        d = per.setdefault(name, {"ms": 0.0, "clips": 0, "rss_before_mb": 0.0, "peak_mb": 0.0, "held_after_mb": 0.0})
        d["ms"] += 1000 * (time.perf_counter() - t0)
        d["clips"] += 1
        d["rss_before_mb"] = max(d["rss_before_mb"], before)
        d["peak_mb"] = max(d["peak_mb"], _status_mb("VmHWM") or 0.0)
        d["held_after_mb"] = max(d["held_after_mb"], _status_mb("VmRSS") or 0.0)

    for row in rows:
        work = ClipWork(row=row, shard=0)
        for step in steps.steps:
            before = _status_mb("VmRSS") or 0.0
            _reset_peak()
            t0 = time.perf_counter()
            steps.run([work], [step.name])
            record(step.name, before, t0)
            if work.done:
                break
        if work.done:
            failed[work.reason] = failed.get(work.reason, 0) + 1
            continue
        before = _status_mb("VmRSS") or 0.0
        _reset_peak()
        t0 = time.perf_counter()
        members = encode(work)
        record("encode", before, t0)
        del work
    out = {name: {k: round(v / d["clips"], 1) if k == "ms" else (int(v) if k == "clips" else round(v, 1))
                  for k, v in d.items()} for name, d in per.items()}
    return {"clips": len(rows), "failed": failed, "peak_resettable": resettable, "steps": out,
            "process_peak_mb": round(max((d["peak_mb"] for d in out.values()), default=0.0), 1),
            "arrays_mb": big_arrays(cfg.get_profile(), members)}


def _step_memory_child(name: str, data: str, clips: int) -> dict[str, Any]:
    """``step_memory`` for a built-in profile, in a fresh process (see ``profile_figures``)."""
    import cv2

    from pipeline.config import Config

    cv2.setNumThreads(1)
    return step_memory(Config(profile=name), data, clips)


def profile_figures(name: str, data: str, clips: int, work: str) -> dict[str, Any]:
    """One profile's figures. The per-step memory runs in a fresh process: a worker keeps the
    heap its clips grew (``pipeline.clip.runtime.keep_freed_memory``), so a process that ran
    another profile first would start from that profile's heap."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.config import Config

    cfg = Config(profile=name).replace(**{"shards.samples_per_shard": clips})
    p = cfg.get_profile()
    out: dict[str, Any] = {"profile": p.as_meta(), "span_s": round(p.span_seconds, 3)}
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        out["in_process"] = pool.submit(_step_memory_child, name, data, clips).result()
    e2e = measure.end_to_end(cfg, data, os.path.join(work, "runs", f"profile_{name}"), 1)
    out["e2e"] = {k: v for k, v in e2e.items() if k not in ("out_dir", "prefix")}
    # Per core: the clips over the seconds the steps took on the worker's one core (its
    # start, the shard commit and Ray are left out; with a few clips the "steady" rate of
    # measure.end_to_end is a quotient of two or three intervals).
    secs = sum((e2e.get("stage_seconds") or {}).values())
    out["e2e"]["clips_per_core_s"] = round(e2e["ok"] / secs, 3) if secs > 0 and e2e.get("ok") else None
    out["bytes"] = measure.shard_bytes(e2e["out_dir"])
    return out


def profiles(work: str, clips: int, names=PROFILES) -> dict[str, Any]:
    """The section's figures: one entry per profile (``profile_figures``) on the same clips."""
    data = profile_dataset(os.path.join(work, "clips"), clips)
    res: dict[str, Any] = {"clips": clips, "source": SOURCE, "profiles": {}}
    for name in names:
        res["profiles"][name] = profile_figures(name, data, clips, work)
    wan = res["profiles"].get("wan")
    if wan:
        peak = wan["e2e"].get("peak_rss_per_worker_mb")
        res["wan_target"] = {"target_mb": WAN_TARGET_MB, "peak_rss_per_worker_mb": peak,
                             "met": None if peak is None else peak <= WAN_TARGET_MB}
    return res


def _f(x, nd=1) -> str:
    if x is None:
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def format_profiles(r: dict[str, Any]) -> str:
    """The section as a table: one column per profile."""
    names = list(r.get("profiles") or {})
    if not names:
        return ""
    P = r["profiles"]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, fn) -> None:
        rows.append((label, [fn(P[n]) for n in names]))

    src = r.get("source") or {}
    add("frames, size, fps (span s)", lambda x: f"{x['profile']['frames']}, {x['profile']['width']}x"
        f"{x['profile']['height']}, {x['profile']['fps']:g} ({x['span_s']:g})")
    add("end to end, 1 worker of 1 core: clips/s per core (wall)",
        lambda x: f"{_f(x['e2e'].get('clips_per_core_s'), 3)} ({_f(x['e2e'].get('wall_clips_per_s'), 3)})")
    add("  ok / clips", lambda x: f"{x['e2e'].get('ok')} / {x['e2e'].get('clips')}")
    add("  peak RSS of the worker (operator + isolation child), MB",
        lambda x: _f(x["e2e"].get("peak_rss_per_worker_mb")))
    add("  peak RSS of all Ray workers, MB", lambda x: _f(x["e2e"].get("peak_rss_mb")))
    stages = [s for s in ("decode", "captions", "flow", "motion", "trajectories", "entities")]
    for s in stages:
        add(f"  {s}: ms per clip (end to end)", lambda x, s=s: _f(
            1000 * x["e2e"]["stage_seconds"][s] / max(1, x["e2e"].get("ok") or 1), 0)
            if s in (x["e2e"].get("stage_seconds") or {}) else "-")
    add("bytes per clip: mean (max)", lambda x: f"{_f((x.get('bytes') or {}).get('mean_bytes_per_clip'))} "
        f"({_f((x.get('bytes') or {}).get('max_bytes_per_clip'))})")
    members = sorted({g for n in names for g in ((P[n].get("bytes") or {}).get("by_member") or {})})
    for g in members:
        add(f"  {g}", lambda x, g=g: _f(((x.get("bytes") or {}).get("by_member") or {}).get(g)))
    steps = list(dict.fromkeys(s for n in names for s in P[n]["in_process"]["steps"]))
    rows.append(("in one process, per step: ms | RSS before -> peak -> held after (MB)", []))
    for s in steps:
        def cell(x, s=s):
            d = x["in_process"]["steps"].get(s)
            return "-" if not d else (f"{_f(d['ms'], 0)} | {_f(d['rss_before_mb'], 0)} -> {_f(d['peak_mb'], 0)} -> "
                                      f"{_f(d['held_after_mb'], 0)}")
        add(f"  {s}", cell)
    add("  process peak (MB)", lambda x: _f(x["in_process"]["process_peak_mb"]))
    arrays = list(dict.fromkeys(a for n in names for a in P[n]["in_process"]["arrays_mb"]))
    rows.append(("one clip's big arrays (MB)", []))
    for a in arrays:
        add(f"  {a}", lambda x, a=a: _f(x["in_process"]["arrays_mb"].get(a)))
    w0 = max(len(a) for a, _ in rows)
    w = [max([len(n)] + [len(c[i]) for _, c in rows if c]) for i, n in enumerate(names)]
    lines = [f"profiles: {r.get('clips')} synthetic clips of {src.get('width')}x{src.get('height')}, "
             f"{src.get('fps')} fps, {src.get('seconds')} s; default settings (entities on)",
             f"{'':<{w0}} | " + " | ".join(f"{n:<{w[i]}}" for i, n in enumerate(names)),
             "-" * (w0 + sum(w) + 3 * len(names))]
    for label, cells in rows:
        lines.append(label if not cells else f"{label:<{w0}} | " + " | ".join(
            f"{c:<{w[i]}}" for i, c in enumerate(cells)))
    t = r.get("wan_target")
    if t:
        status = "not measured" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        lines.append(f"target (issue 25): wan <= {t['target_mb']} MB per worker: [{status}] "
                     f"{_f(t['peak_rss_per_worker_mb'])} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/profiles.py", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=3, help="clips per profile (distinct synthetic clips)")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated profile names")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "out", "bench", "profiles"))
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)   # one core, as in a worker (num_cpus_per_worker 1)
    from pipeline.clip.runtime import keep_freed_memory

    keep_freed_memory()
    load = os.getloadavg()
    r = profiles(os.path.abspath(args.workdir), args.clips, tuple(p for p in args.profiles.split(",") if p))
    r["loadavg"] = [round(x, 2) for x in load] + [round(x, 2) for x in os.getloadavg()]
    print(format_profiles(r))
    print(f"(load average at start {r['loadavg'][:3]}, at end {r['loadavg'][3:]}; {os.cpu_count()} CPUs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
