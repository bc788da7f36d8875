"""Dataset statistics of a run's output: ``python -m pipeline stats OUT``.

Reads what a run left in OUT (``*.stats.json``, the per-shard status tables, the tars'
``json``/``anchors.npz``/``entities.npz`` members through ``pipeline.shards.iter_samples``;
frames and flow are not read) and
returns a summary:

- counts: clips, ok, error by reason, filtered by reason, shards, tars, frames, bytes;
- per-clip distributions (n, mean, min, p10, p50, p90, max): sample bytes, anchors per clip,
  anchor visibility, trackability (``anchors reliable through``: of the anchors in frame
  through the clip, the share reliable through it, as ``--min-trackable`` compares; and the
  share reliable at the last frame), the trainers' draw coverage (``meta.anchors.coverage``:
  drawable weight share, reliable span, drawn path share against the paper's unfiltered
  draw), entities per clip, entity radius (pooled over entities), entity
  visibility, and the motion statistics of ``meta["motion"]`` (see stages/motion.py);
- time per stage from the shards' ``stage_seconds`` (summed over workers) and the
  throughput it implies (clips per worker-second).

``format_report`` prints it as tables; ``write_plots`` draws the distributions as PNG
files with matplotlib (Agg backend, no display needed).
"""
from __future__ import annotations

import glob
import json
import math
import os
from collections import Counter
from typing import Any

import numpy as np

from schemas.sample import ANCHORS_MEMBER, ENTITIES_MEMBER, JSON, load_npz
from stages.trajectories import trackability

from pipeline.shards import iter_samples

_LIGHT = (JSON.name, ANCHORS_MEMBER, ENTITIES_MEMBER)   # the members the report reads

PLOT_FILES = ("status.png", "motion.png", "tracks.png", "bytes_time.png")

# (label, path into meta["motion"], unit) for the motion rows and plots.
MOTION_FIELDS = (
    ("flow |f| mean", ("magnitude", "mean"), "px/frame"),
    ("flow |f| p90", ("magnitude", "p90"), "px/frame"),
    ("moving fraction", ("moving_fraction",), ""),
    ("camera speed", ("camera", "speed"), "px/frame"),
    ("camera inlier ratio", ("camera", "inlier_ratio"), ""),
    ("camera zoom", ("camera", "zoom"), "per frame"),
    ("camera rotation", ("camera", "rotation_deg"), "deg/frame"),
    ("object motion", ("object_motion", "mean"), "px/frame"),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def distribution(values) -> dict[str, float | int | None]:
    """n, mean, min, p10, p50, p90, max of the finite values (None when there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "min": None, "p10": None, "p50": None, "p90": None, "max": None}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"n": int(v.size), "mean": float(v.mean()), "min": float(v.min()), "p10": float(p10),
            "p50": float(p50), "p90": float(p90), "max": float(v.max())}


def collect(out_dir: str, max_samples: int | None = None) -> dict[str, Any]:
    """Everything ``stats`` reports, as a JSON-serialisable dict."""
    import pyarrow.parquet as pq

    from schemas.status import STATUS_SCHEMA

    from pipeline.storage import is_remote, redact

    if is_remote(out_dir):
        raise FileNotFoundError(
            f"stats reads a local output folder, and {redact(out_dir)!r} is on an object store: copy it "
            f"first (for example `aws s3 sync {redact(out_dir)} DIR --exclude '*.tar'` and the tars you "
            f"want), or use validate / preview, which read the URI directly")
    stats_files = sorted(glob.glob(os.path.join(out_dir, "*.stats.json")))
    if not stats_files:
        raise FileNotFoundError(f"no shard stats (*.stats.json) in {out_dir!r}: not a run's output folder")
    shard_stats = []
    for p in stats_files:
        with open(p) as f:
            shard_stats.append(json.load(f))
    index = None
    if os.path.exists(os.path.join(out_dir, "index.json")):
        with open(os.path.join(out_dir, "index.json")) as f:
            index = json.load(f)

    # Status tables shard by shard, four columns each (not a dict per clip: 10M clips).
    by_status, errors, filtered = Counter(), Counter(), Counter()
    sample_bytes, clip_seconds = [], []
    n_status = 0
    for p in stats_files:
        sp = p[: -len(".stats.json")] + ".parquet"
        if not os.path.exists(sp):
            continue
        t = pq.read_table(sp, schema=STATUS_SCHEMA, columns=["status", "reason", "bytes", "seconds"])
        n_status += t.num_rows
        status = t["status"].to_pylist()
        by_status.update(status)
        for st, reason, nbytes, secs in zip(status, t["reason"].to_pylist(), t["bytes"].to_pylist(),
                                            t["seconds"].to_pylist()):
            if st == "ok":
                if nbytes is not None:
                    sample_bytes.append(nbytes)
                if secs is not None:
                    clip_seconds.append(secs)
            elif st == "error":
                errors[reason] += 1
            elif st == "filtered":
                filtered[reason] += 1

    tars = [t for st in shard_stats for t in st.get("tars", [])]
    tar_bytes = sum(os.path.getsize(os.path.join(out_dir, t)) for t in tars if os.path.exists(os.path.join(out_dir, t)))

    frames_total, sizes = 0, Counter()
    anchors_n, anchor_vis, anchor_vis_last, anchor_vis_t = [], [], [], []
    rel_through, rel_last, rel_t = [], [], []
    cov: dict[str, list] = {"drawable weight share": [], "reliable span (of L-1)": [], "drawn path share": []}
    unverified = no_reliable = flow_failures = 0
    ent_n, ent_radii, ent_vis, ent_vis_t = [], [], [], []
    motion_vals: dict[str, list] = {label: [] for label, _, _ in MOTION_FIELDS}
    cuts = 0
    with_motion = 0
    samples = 0
    with_entities = 0
    for t in tars:
        path = os.path.join(out_dir, t)
        if not os.path.exists(path):
            continue
        for key, m in iter_samples(path, members=_LIGHT):  # frames and flow are not read
            if max_samples is not None and samples >= max_samples:
                break
            samples += 1
            meta = json.loads(m[JSON.name]) if JSON.name in m else {}
            prof = meta.get("profile") or {}
            frames_total += int(prof.get("frames") or 0)
            sizes[f"{prof.get('width')}x{prof.get('height')}x{prof.get('frames')}"] += 1
            if ANCHORS_MEMBER in m:
                a = load_npz(m[ANCHORS_MEMBER])
                vis = a["visible"]
                anchors_n.append(len(vis))
                if vis.size:
                    anchor_vis.append(float(vis.mean()))
                    anchor_vis_last.append(float(vis[:, -1].mean()))
                    anchor_vis_t.append(vis.mean(0))
                if "reliable" not in a:
                    unverified += 1                    # schema 1 or reliability off: never checked
                elif vis.size:
                    rel = a["reliable"] & vis
                    track = trackability(vis, rel)
                    rel_through.append(track["reliable_through"])
                    rel_last.append(float(rel[:, -1].mean()))
                    rel_t.append(rel.mean(0))
                    no_reliable += not bool((rel[:, 0] & rel[:, 1]).any()) if rel.shape[1] > 1 else 0
            c = (meta.get("anchors") or {}).get("coverage") or {}
            for label, key_ in zip(cov, ("drawable_share", "mean_span", "drawn_path_share")):
                if c.get(key_) is not None:
                    cov[label].append(float(c[key_]))
            if ENTITIES_MEMBER in m:
                e = load_npz(m[ENTITIES_MEMBER])
                with_entities += 1
                ent_n.append(len(e["ids"]))
                ent_radii.extend(float(r) for r in e["radii"])
                if e["visibility"].size:
                    ent_vis.append(float(e["visibility"].mean()))
                    ent_vis_t.append(e["visibility"].mean(0))
            mo = meta.get("motion")
            if mo:
                with_motion += 1
                cuts += bool(_get(mo, ("cut", "detected")))
                flow_failures += bool(_get(mo, ("cut", "flow_failure")))
                for label, path_, _ in MOTION_FIELDS:
                    motion_vals[label].append(_get(mo, path_))

    stage_seconds: Counter = Counter()
    for st in shard_stats:
        stage_seconds.update(st.get("stage_seconds") or {})
    ok = by_status.get("ok", 0)
    # the run's stage order, as the driver recorded it in each shard's stats
    run_order = next((st["stages"] for st in shard_stats if st.get("stages")), [])
    order = [k for k in run_order if k in stage_seconds] + sorted(set(stage_seconds) - set(run_order))
    stages = {k: {"seconds": round(stage_seconds[k], 3),
                  "clips_per_second": (ok / stage_seconds[k] if stage_seconds[k] > 0 else None)} for k in order}

    def per_frame(rows):
        if not rows:
            return []
        n = max(len(r) for r in rows)
        acc = np.full((len(rows), n), np.nan)
        for i, r in enumerate(rows):
            acc[i, :len(r)] = r
        return [float(x) for x in np.nanmean(acc, 0)]

    return {
        "out_dir": os.path.abspath(out_dir),
        "prefix": (index or {}).get("prefix") or (shard_stats[0].get("name", "").rsplit("-", 1)[0]),
        "counts": {
            "clips": n_status, "ok": ok, "error": by_status.get("error", 0),
            "filtered": by_status.get("filtered", 0), "shards": len(shard_stats), "tars": len(tars),
            "samples_read": samples, "frames": frames_total, "tar_bytes": int(tar_bytes),
            "sample_bytes": int(sum(sample_bytes)), "clip_shapes": dict(sizes),
            "with_entities": with_entities, "with_motion": with_motion, "scene_cuts": cuts,
            "flow_failures": flow_failures, "unverified_anchors": unverified,
            "no_reliable_anchor": no_reliable,
        },
        "errors": dict(errors.most_common()),
        "filtered": dict(filtered.most_common()),
        "distributions": {
            "sample bytes": distribution(sample_bytes),
            "clip seconds": distribution(clip_seconds),
            "anchors per clip": distribution(anchors_n),
            "anchor visibility": distribution(anchor_vis),
            "anchors visible at end": distribution(anchor_vis_last),
            "anchors reliable through": distribution(rel_through),
            "anchors reliable at end": distribution(rel_last),
            # the trainers' draw coverage (meta.anchors.coverage, docs/trajectories.md)
            **{label: distribution(v) for label, v in cov.items()},
            "entities per clip": distribution(ent_n),
            "entity radius": distribution(ent_radii),
            "entity visibility": distribution(ent_vis),
            **{label: distribution(v) for label, v in motion_vals.items()},
        },
        "units": {"sample bytes": "B", "clip seconds": "s", "entity radius": "px",
                  **{label: unit for label, _, unit in MOTION_FIELDS}},
        "visibility_by_frame": {"anchors": per_frame(anchor_vis_t), "entities": per_frame(ent_vis_t),
                                "anchors reliable": per_frame(rel_t)},
        "stages": stages,
        "raw": {"sample_bytes": sample_bytes, "anchors": anchors_n, "entities": ent_n, "radii": ent_radii,
                "motion": motion_vals},
    }


# --------------------------------------------------------------------------- text
def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TB"


def _fmt(v: float | None, label: str) -> str:
    if v is None:
        return "-"
    if label == "sample bytes":
        return _human_bytes(v)
    if label.endswith("per clip"):
        return f"{v:.1f}" if v != int(v) else f"{int(v)}"
    if label in ("moving fraction", "camera inlier ratio") or "visib" in label or "reliable" in label or "share" in label:
        return f"{v:.1%}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def text_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Plain-text table; ``align`` has one letter per column, l or r (default: l then r...)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def fmt_row(r):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(r, widths, align)).rstrip()

    line = "-" * max(len(fmt_row(r)) for r in [header] + rows)
    return "\n".join([fmt_row(header), line] + [fmt_row(r) for r in rows])


def format_report(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    pct = lambda n: f"{n / c['clips']:.1%}" if c["clips"] else "-"  # noqa: E731
    reasons = lambda d: ", ".join(f"{k} {v}" for k, v in d.items()) or "-"  # noqa: E731
    rows = [
        ["clips", str(c["clips"]), ""],
        ["ok", str(c["ok"]), pct(c["ok"])],
        ["error", str(c["error"]), pct(c["error"]) + ("  " + reasons(summary["errors"]) if c["error"] else "")],
        ["filtered", str(c["filtered"]), pct(c["filtered"]) + ("  " + reasons(summary["filtered"]) if c["filtered"] else "")],
        ["shards / tars", f"{c['shards']} / {c['tars']}", _human_bytes(c["tar_bytes"])],
        ["frames", str(c["frames"]), ", ".join(f"{k} x{v}" for k, v in c["clip_shapes"].items()) + "  (WxHxL)"],
        ["with entities", str(c["with_entities"]), pct(c["with_entities"]) if c["ok"] else "-"],
        ["scene cuts", str(c["scene_cuts"]), f"of {c['with_motion']} clips with motion stats (shot changes)"],
        ["flow failures", str(c.get("flow_failures", 0)), "flagged pairs that are the same shot"],
        ["no reliable anchor", str(c.get("no_reliable_anchor", 0)),
         "samples the trainer draws no trajectory from"
         + (f"; {c['unverified_anchors']} with unverified anchors (schema 1)" if c.get("unverified_anchors") else "")],
    ]
    out = [f"{summary['prefix']}  ({summary['out_dir']})", "", text_table(["count", "n", "detail"], rows, "lrl"), ""]
    drows = []
    for label, d in summary["distributions"].items():
        unit = summary["units"].get(label, "")
        drows.append([label + (f" [{unit}]" if unit and unit != "B" else ""), str(d["n"])]
                     + [_fmt(d[k], label) for k in ("mean", "min", "p10", "p50", "p90", "max")])
    out += [text_table(["per clip", "n", "mean", "min", "p10", "p50", "p90", "max"], drows), ""]
    srows = [[k, f"{v['seconds']:.2f}", "-" if v["clips_per_second"] is None else f"{v['clips_per_second']:.2f}"]
             for k, v in summary["stages"].items()]
    if srows:
        out += [text_table(["stage", "seconds (all workers)", "clips/s per worker"], srows), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- plots
def _hist(ax, values, title: str, color: str = "#4477aa", bins: int = 20) -> None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if v:
        ax.hist(v, bins=min(bins, max(3, len(set(v)))), color=color, edgecolor="white")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def write_plots(summary: dict[str, Any], plot_dir: str) -> list[str]:
    """Write the PNG plots (PLOT_FILES) into ``plot_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    raw, paths = summary["raw"], []

    def save(fig, name):
        p = os.path.join(plot_dir, name)
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

    # status: ok / each error reason / each filter reason
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = ["ok"] + [f"error: {k}" for k in summary["errors"]] + [f"filtered: {k}" for k in summary["filtered"]]
    vals = [summary["counts"]["ok"]] + list(summary["errors"].values()) + list(summary["filtered"].values())
    colors = ["#228833"] + ["#ee6677"] * len(summary["errors"]) + ["#ccbb44"] * len(summary["filtered"])
    ax.barh(labels[::-1], vals[::-1], color=colors[::-1])
    ax.set_xlabel("clips")
    ax.set_title(f"{summary['counts']['clips']} clips", fontsize=9)
    save(fig, "status.png")

    fig, axes = plt.subplots(2, 4, figsize=(12, 5))
    for ax, (label, _, unit) in zip(axes.ravel(), MOTION_FIELDS):
        _hist(ax, raw["motion"].get(label, []), f"{label}" + (f" [{unit}]" if unit else ""))
    save(fig, "motion.png")

    fig, axes = plt.subplots(1, 4, figsize=(13, 3))
    _hist(axes[0], raw["anchors"], "anchors per clip")
    _hist(axes[1], raw["entities"], "entities per clip", "#aa3377")
    _hist(axes[2], raw["radii"], "entity radius [px]", "#aa3377")
    vb = summary["visibility_by_frame"]
    for name, color in (("anchors", "#4477aa"), ("anchors reliable", "#228833"), ("entities", "#aa3377")):
        if vb.get(name):
            axes[3].plot(range(len(vb[name])), vb[name], marker=".", color=color, label=name)
    axes[3].set_ylim(0, 1.05)
    axes[3].set_xlabel("frame", fontsize=8)
    axes[3].set_title("visible fraction by frame", fontsize=9)
    axes[3].tick_params(labelsize=7)
    if vb["anchors"] or vb["entities"]:
        axes[3].legend(fontsize=7)
    save(fig, "tracks.png")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    _hist(axes[0], [b / 1024.0 for b in raw["sample_bytes"]], "sample size [KB]", "#66ccee")
    st = summary["stages"]
    if st:
        axes[1].bar(list(st), [v["seconds"] for v in st.values()], color="#66ccee")
    axes[1].set_title("seconds per stage (all workers)", fontsize=9)
    axes[1].tick_params(labelsize=7)
    save(fig, "bytes_time.png")
    return paths


def report(out_dir: str, plot_dir: str | None = None, plots: bool = True,
           max_samples: int | None = None) -> tuple[dict[str, Any], str, list[str]]:
    """(summary, text table, plot paths); plots go to ``plot_dir`` (default OUT/_report)."""
    summary = collect(out_dir, max_samples)
    paths = write_plots(summary, plot_dir or os.path.join(out_dir, "_report")) if plots else []
    return summary, format_report(summary), paths
