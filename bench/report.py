"""The benchmark's table and its targets (issue 6)."""
from __future__ import annotations

from typing import Any

from schemas.sample import FLOW_MEMBER

TARGETS = {
    "hd_vs_lower_bound": 0.85,   # end to end HD >= 0.85 x the lower bound
    "scaling_2_workers": 1.7,    # 2 workers >= 1.7 x 1 worker
    "vs_baseline": 3.0,          # >= 3 x the Farneback baseline's clips/s at <= its EPE
    "hd_bytes_per_clip": 2_000_000,  # <= 2 MB per HD clip including dense flow
    "memory_growth": 1.10,       # peak RSS at the last check <= 1.1 x at the first
    "one_shard_2_workers": 1.6,  # issue 12: 64 HD clips in one shard, 2 workers >= 1.6 x 1 worker (wall)
    "resume_fraction": 0.7,      # issue 12: killed at ~75 %, the resume <= 0.7 x a full run (wall)
}


LABELS = {
    "decode": "  decode (decoder, resized; + JPEG round trip)",
    "jpeg_round_trip": "  JPEG round trip alone (part of decode)",
    "entities": "  entities (default: motion masks, flow tracker)",
    "shard_writing": "  shard writing (encode_sample + tar)",
    "flow_codec": "  flow codec alone (encode_flow)",
    "state_pickle": "  isolation hand-off (pickle round trip)",
}


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def check_targets(r: dict) -> list[dict[str, Any]]:
    """Each target: name, value, threshold, met (None when not measured)."""
    out = []
    hd1 = _get(r, "hd", "e2e", "1", "steady_clips_per_s")
    hd2 = _get(r, "hd", "e2e", "2", "steady_clips_per_s")
    lb = _get(r, "hd", "lower_bound", "clips_per_s")
    v = _ratio(hd1, lb)
    out.append({"target": "end to end HD >= 0.85 x lower bound (1 worker, steady)", "value": v,
                "threshold": TARGETS["hd_vs_lower_bound"], "met": None if v is None else v >= TARGETS["hd_vs_lower_bound"]})
    v = _ratio(hd2, hd1)
    out.append({"target": "2 workers >= 1.7 x 1 worker (HD, steady)", "value": v,
                "threshold": TARGETS["scaling_2_workers"], "met": None if v is None else v >= TARGETS["scaling_2_workers"]})
    base = _get(r, "hd", "baseline", "clips_per_s")
    v = _ratio(hd1, base)
    e_ours, e_base = _get(r, "accuracy", "ours", "epe"), _get(r, "accuracy", "baseline", "epe")
    met = None if v is None or e_ours is None or e_base is None else (v >= TARGETS["vs_baseline"] and e_ours <= e_base)
    out.append({"target": ">= 3 x Farneback baseline clips/s at <= its EPE (HD)", "value": v,
                "epe_ours": e_ours, "epe_baseline": e_base, "threshold": TARGETS["vs_baseline"], "met": met})
    b = _get(r, "hd", "bytes", "mean_bytes_per_clip")
    out.append({"target": "<= 2 MB per HD clip incl. dense flow (mean)", "value": b,
                "max": _get(r, "hd", "bytes", "max_bytes_per_clip"),
                "threshold": TARGETS["hd_bytes_per_clip"], "met": None if b is None else b <= TARGETS["hd_bytes_per_clip"]})
    m = _get(r, "memory") or {}
    at = m.get("peak_rss_mb_at") or {}
    a, z = at.get(str(m.get("check_at"))), at.get(str(m.get("rows")))
    v = _ratio(z, a)
    out.append({"target": f"peak memory flat from {m.get('check_at')} to {m.get('rows')} clips (LD, 1 worker)",
                "value": v, "peak_mb_first": a, "peak_mb_last": z, "threshold": TARGETS["memory_growth"],
                "met": None if v is None else v <= TARGETS["memory_growth"]})
    v = _get(r, "execution", "one_shard", "speedup_2_vs_1")
    out.append({"target": "one shard of HD clips: 2 workers >= 1.6 x 1 worker (wall, Ray start incl.)", "value": v,
                "threshold": TARGETS["one_shard_2_workers"], "met": None if v is None else v >= TARGETS["one_shard_2_workers"]})
    v = _get(r, "execution", "one_shard", "resume_fraction")
    out.append({"target": "killed at ~75 %, resume <= 0.7 x a full run (wall, Ray start incl.)", "value": v,
                "threshold": TARGETS["resume_fraction"], "met": None if v is None else v <= TARGETS["resume_fraction"]})
    return out


def variant_figures(r: dict) -> list[dict[str, Any]]:
    """The HD end-to-end variants (``e2e_variants``) against the same lower bound and baseline:
    ratio to the bound for their flow preset, ratio to the baseline, the EPE of their preset."""
    out = []
    base = _get(r, "hd", "baseline", "clips_per_s")
    default_preset = _get(r, "flow_default", "preset")
    for name, v in (_get(r, "hd", "e2e_variants") or {}).items():
        preset = (v.get("overrides") or {}).get("flow.preset", default_preset)
        bound = _get(r, "hd", "lower_bound", "dis_presets", preset, "bound_clips_per_s")
        rate = v.get("steady_clips_per_s")
        epe = _get(r, "accuracy", "methods", f"dis_{preset}", "epe")
        out.append({"variant": name, "overrides": v.get("overrides"), "preset": preset, "clips_per_s": rate,
                    "vs_lower_bound": _ratio(rate, bound), "vs_baseline": _ratio(rate, base), "epe": epe,
                    "epe_baseline": _get(r, "accuracy", "baseline", "epe")})
    return out


def _f(x, nd=1, unit=""):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def format_table(r: dict) -> str:
    """One table: rows are figures, columns LD | HD (clips/s unless the row says otherwise)."""
    m = r.get("machine", {})
    fd = r.get("flow_default", {})
    cols = ("ld", "hd")
    lines = []
    prof = {k: _get(r, "config", k, "profile") for k in cols}
    title = (f"trajshards CPU benchmark ({r.get('mode')}, commit {r.get('commit')}, {m.get('cpus')} CPUs, "
             f"load {m.get('loadavg_start')} -> {m.get('loadavg_end')}, flow {fd.get('backend')} "
             f"{fd.get('preset')}, {r.get('seconds')} s)")
    lines.append(title)
    rows: list[tuple[str, str, str]] = []

    def add(label, fn):
        rows.append((label, *(fn(k) for k in cols)))

    def sep(label=""):
        rows.append((label, "", ""))

    add("clips (of which in the per-stage loop)",
        lambda k: f"{_f(_get(r, 'clips', k))} ({_f(_get(r, k, 'per_stage', 'clips'))})")
    sep("per stage, one process [clips/s (ms/clip)]")
    order = ["decode", "jpeg_round_trip", "flow", "motion", "trajectories", "entities", "shard_writing",
             "flow_codec", "state_pickle"]
    found = list((_get(r, "hd", "per_stage", "stages") or _get(r, "ld", "per_stage", "stages") or {}).keys())
    stages = [s for s in order if s in found] + [s for s in found if s not in order]
    for s in stages:
        def cell(k, s=s):
            st = _get(r, k, "per_stage", "stages", s) or {}
            if not st.get("clips"):
                return "-"
            return f"{_f(st.get('clips_per_s'))} ({_f(st.get('ms_per_clip'))})"
        add(LABELS.get(s, f"  {s}"), cell)
    add("  all stages + shard writing", lambda k: _f(_get(r, k, "per_stage", "all_stages_clips_per_s")))
    add("  handed over by the isolation child (MB)", lambda k: _f(_get(r, k, "per_stage", "state_pickle_mb_per_clip"), 2))
    sep("lower bound and end to end")
    add("lower bound: decode + flow, bare loop", lambda k: _f(_get(r, k, "lower_bound", "clips_per_s")))
    for pr in ("ultrafast", "fast", "balanced", "medium"):
        add(f"  flow only / bound with DIS {pr}",
            lambda k, pr=pr: f"{_f(_get(r, k, 'lower_bound', 'dis_presets', pr, 'flow_clips_per_s'))} / "
                             f"{_f(_get(r, k, 'lower_bound', 'dis_presets', pr, 'bound_clips_per_s'))}")
    for w in ("1", "2"):
        add(f"end to end, {w} worker(s): steady (wall)",
            lambda k, w=w: f"{_f(_get(r, k, 'e2e', w, 'steady_clips_per_s'))} ({_f(_get(r, k, 'e2e', w, 'wall_clips_per_s'))})")
        add(f"  peak RSS, {w} worker(s) (MB, summed)", lambda k, w=w: _f(_get(r, k, "e2e", w, "peak_rss_mb")))
    add("end to end 1 worker / lower bound",
        lambda k: _f(_ratio(_get(r, k, "e2e", "1", "steady_clips_per_s"), _get(r, k, "lower_bound", "clips_per_s")), 2))
    add("2 workers / 1 worker",
        lambda k: _f(_ratio(_get(r, k, "e2e", "2", "steady_clips_per_s"), _get(r, k, "e2e", "1", "steady_clips_per_s")), 2))
    add("baseline: v2d-style decode + Farneback", lambda k: _f(_get(r, k, "baseline", "clips_per_s")))
    add("end to end 1 worker / baseline",
        lambda k: _f(_ratio(_get(r, k, "e2e", "1", "steady_clips_per_s"), _get(r, k, "baseline", "clips_per_s")), 2))
    sep("shard bytes per clip (mean)")
    add("  total (max)", lambda k: f"{_f(_get(r, k, 'bytes', 'mean_bytes_per_clip'))} ({_f(_get(r, k, 'bytes', 'max_bytes_per_clip'))})")
    members = sorted({g for k in cols for g in (_get(r, k, "bytes", "by_member") or {})})
    for g in members:
        add(f"  {g}", lambda k, g=g: _f(_get(r, k, "bytes", "by_member", g)))
    add(f"  {FLOW_MEMBER} at step 1/16 | 1/8 | 1/4 px", lambda k: " | ".join(
        _f(_get(r, k, "bytes", "flow_pfz_bytes_by_step", s)) for s in ("1/16", "1/8", "1/4")))

    acc = r.get("accuracy")
    if acc:
        sep(f"flow accuracy, {acc.get('profile')} clips of known motion ({acc.get('clips')}): "
            "EPE px | anchor drift at last frame px | pairs/s")
        entries = list((acc.get("methods") or {}).values()) + [acc.get("ours"), acc.get("baseline")]
        for e in entries:
            if not e:
                continue
            by = " ".join(f"{k} {v:.2f}" for k, v in (e.get("epe_by_level") or {}).items())
            rows.append((f"  {e['method']}", "-", f"{e['epe']:.3f} ({by}) | {e['track_drift_px']:.2f} | "
                                                   f"{_f(e.get('pairs_per_s'))}"))
    mem = r.get("memory")
    if mem:
        at = mem.get("peak_rss_mb_at") or {}
        sep("memory, LD tiny clips, 1 worker")
        rows.append((f"  peak RSS at {mem.get('check_at')} / {mem.get('rows')} clips (MB)",
                     f"{_f(at.get(str(mem.get('check_at'))))} / {_f(at.get(str(mem.get('rows'))))}", ""))
        rows.append(("  clips/s steady (wall)", f"{_f(mem.get('steady_clips_per_s'))} ({_f(mem.get('wall_clips_per_s'))})", ""))

    plan = r.get("plan")
    if plan:
        sep(f"driver: plan of a WebVid CSV (manifest, parquet, shard tasks of {plan.get('samples_per_shard')})")
        for n, v in (plan.get("sizes") or {}).items():
            rows.append((f"  {int(n):,} rows ({v.get('csv_mb')} MB CSV): s (rows/s)",
                         f"{_f(v.get('seconds'))} ({_f(v.get('rows_per_s'), 0)})", ""))
            rows.append((f"  {int(n):,} rows: peak RSS (after imports) MB",
                         f"{_f(v.get('peak_rss_mb'))} ({_f(v.get('rss_after_imports_mb'))})", ""))

    ex = r.get("execution")
    if ex:
        one = ex.get("one_shard") or {}
        sep(f"execution (issue 12): {one.get('clips')} HD clips in one shard, `pipeline run` wall incl. Ray start")
        for k in ("w1", "w2"):
            v = one.get(k) or {}
            rows.append((f"  {v.get('workers')} worker(s): wall s", "", _f(v.get("wall_s"))))
        rows.append(("  2 workers / 1 worker (wall)", "", _f(one.get("speedup_2_vs_1"), 2)))
        for k in ("1", "2"):
            v = (one.get("steady") or {}).get(k) or {}
            rows.append((f"  {k} worker(s): first clip s, steady clips/s after it", "",
                         f"{_f(v.get('first_clip_s'))}, {_f(v.get('steady_clips_per_s'), 2)}"))
        rows.append(("  2 workers / 1 worker (steady)", "", _f(one.get("steady_2_vs_1"), 2)))
        rows.append((f"  killed at {one.get('staged_at_kill')} clips staged, resumed: wall s (of a full run)", "",
                     f"{_f(one.get('resume_wall_s'))} ({_f(one.get('resume_fraction'), 2)})"))
        rows.append(("  tars identical (1 worker, 2 workers, killed + resumed)", "", str(one.get("identical"))))
        g = ex.get("gpu_plan") or {}
        if g:
            sep(f"GPU plan on the CPU: logical GPUs, random RAFT small + tiny SAM, LD, {g.get('clips')} clips, "
                f"{_f(g.get('seconds'))} s")
            sep("  operator [steps] GPUs: clips, mean batch (clips per call), seconds waited for input")
            for grp in g.get("groups") or []:
                o = (g.get("operators") or {}).get(grp["name"], {})
                rows.append((f"  {grp['name']} [{', '.join(grp['steps']) or 'encode'}] {_f(grp['num_gpus'], 2)}",
                             f"{o.get('clips')}, {_f(o.get('mean_batch'), 2)}, {_f(o.get('wait_s'))}", ""))

    w0 = max(len(a) for a, b, c in rows if b or c)
    w1 = max(max(len(b) for _, b, _ in rows), len(f"LD {prof['ld']}"))
    lines.append(f"{'':<{w0}} | {'LD ' + str(prof['ld']):<{w1}} | HD {prof['hd']}")
    lines.append("-" * (w0 + w1 + 30))
    for a, b, c in rows:
        if not b and not c:
            lines.append(a)
        else:
            lines.append(f"{a:<{w0}} | {b:<{w1}} | {c}")
    lines.append("targets (issues 6, 12):")
    for t in r.get("targets") or []:
        status = "not measured" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        extra = ""
        if "epe_ours" in t:
            extra = f", EPE ours {_f(t['epe_ours'], 3)} vs baseline {_f(t['epe_baseline'], 3)}"
        if "max" in t:
            extra = f", max {_f(t['max'])}"
        if "peak_mb_first" in t:
            extra = f" ({_f(t['peak_mb_first'])} -> {_f(t['peak_mb_last'])} MB)"
        lines.append(f"  [{status:>12}] {t['target']}: {_f(t['value'], 3)} (threshold {t['threshold']}){extra}")
    variants = r.get("variants") or []
    if variants:
        lines.append("the same HD end to end (1 worker, steady) with other settings, against the same bound and baseline:")
        for v in variants:
            over = ", ".join(f"{k}={val}" for k, val in (v.get("overrides") or {}).items())
            lines.append(f"  {over}: {_f(v['clips_per_s'], 2)} clips/s = {_f(v['vs_lower_bound'], 2)} x the "
                         f"decode + DIS {v['preset']} bound, {_f(v['vs_baseline'], 2)} x the baseline "
                         f"(EPE {_f(v['epe'], 3)} vs {_f(v['epe_baseline'], 3)})")
    return "\n".join(lines)
