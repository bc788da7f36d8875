"""The report's pictures: the ObjMC distribution, the error per frame (with the tracker's floor
when it was measured), and overlays of the conditioning against the achieved trajectories for
the best and worst samples (a contact sheet PNG and a GIF each).

Overlay colours: conditioning trajectory green (its span; a dot where it should be now), the
tracked point magenta (a filled dot where the tracker verified it, a ring where it did not), a
white segment between the two at every frame that counts (its length is that frame's error);
paths whose span ended before the frame shown are thin and grey.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipeline.tools.preview import frame_columns, write_gif, write_png

COND_RGB = (40, 230, 70)
TRACK_RGB = (255, 60, 220)
ERR_RGB = (255, 255, 255)
ENDED_RGB = (150, 150, 150)   # paths whose span ended before this frame
_SHIFT = 4
_ONE = 1 << _SHIFT
MAX_TILE_WIDTH = 384


def _fix(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _polyline(img, pts, color, thickness=1):
    import cv2

    pts = np.asarray(pts, np.float64)
    if len(pts) >= 2 and np.isfinite(pts).all():
        cv2.polylines(img, [np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)], False, color, thickness,
                      cv2.LINE_AA, _SHIFT)


def _dot(img, p, radius, color, filled=True):
    import cv2

    if np.isfinite(p).all():
        cv2.circle(img, _fix(p), max(1, int(round(radius * _ONE))), color, -1 if filled else 1, cv2.LINE_AA, _SHIFT)


def _text(img, text, org, scale=0.42, color=(255, 255, 255)):
    import cv2

    (tw, th), base = cv2.getTextSize(text, 0, scale, 1)
    x, y = org
    img[max(0, y - th - 3):y + base, max(0, x - 2):x + tw + 2] //= 3
    cv2.putText(img, text, (x, y), 0, scale, color, 1, cv2.LINE_AA)


def overlay_frame(frame: np.ndarray, t: int, reference: np.ndarray, ref_mask: np.ndarray, tracked: np.ndarray,
                  verified: np.ndarray, counted: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Frame t with every condition's reference (green) and tracked (magenta) path up to t,
    within the frames ``ref_mask`` marks (the span; all frames for protocols without spans)."""
    import cv2

    img = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img).copy()
    ref, tr = reference * scale, tracked * scale
    lu = tr.shape[1]
    for i in range(len(ref)):
        span = np.flatnonzero(ref_mask[i, :t + 1])
        if span.size == 0:
            continue
        end = span[-1]                      # nothing is drawn past the span (it is not scored)
        _polyline(img, ref[i, :end + 1], COND_RGB if end == t else ENDED_RGB, 2 if end == t else 1)
        _polyline(img, tr[i, :min(end, lu - 1) + 1], TRACK_RGB if end == t else ENDED_RGB, 1)
        if end == t and t < lu:
            if counted[i, t]:
                _polyline(img, np.stack([ref[i, t], tr[i, t]]), ERR_RGB, 1)
            _dot(img, ref[i, t], 3.0, COND_RGB)
            _dot(img, tr[i, t], 2.5, TRACK_RGB, filled=bool(verified[i, t]))
    return img


def write_overlay(out_dir: str, name: str, frames: np.ndarray, s, ref_mask: np.ndarray, title: str,
                  fps: float = 4.0, columns: int = 4) -> dict[str, str]:
    """Contact sheet (``columns`` frames spread over the clip) and GIF of one scored sample."""
    scale = min(1.0, MAX_TILE_WIDTH / frames.shape[2])
    tiles = [overlay_frame(frames[t], t, s.reference, ref_mask, s.tracked, s.verified, s.mask, scale)
             for t in range(len(frames))]
    for t, tile in enumerate(tiles):
        _text(tile, f"t={t}", (4, 14))
    ts = frame_columns(len(tiles), columns)
    gap = np.zeros((tiles[0].shape[0], 2, 3), np.uint8)
    row = np.concatenate([x for t in ts for x in (tiles[t], gap)][:-1], 1)
    header = np.full((22, row.shape[1], 3), 24, np.uint8)
    _text(header, title, (4, 15))
    _text(header, "green: conditioning  magenta: tracked (ring: unverified)  white: error",
          (max(4, row.shape[1] - 470), 15), 0.38, (200, 230, 255))
    os.makedirs(out_dir, exist_ok=True)
    paths = {"png": write_png(os.path.join(out_dir, f"{name}.png"), np.concatenate([header, row], 0))}
    paths["gif"] = write_gif(os.path.join(out_dir, f"{name}.gif"), tiles, fps)
    return paths


def _plot_distribution(path: str, values: list[float], summary: dict) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(values, bins=min(30, max(5, len(values))), color="#4477aa")
    ax.axvline(summary["objmc"], color="k", lw=1.5, label=f"ObjMC {summary['objmc']:.2f} px")
    fl = summary.get("floor")
    if fl and fl.get("objmc") is not None:
        ax.axvline(fl["objmc"], color="#cc3311", lw=1.5, ls="--", label=f"tracker floor {fl['objmc']:.2f} px")
    ax.set_xlabel("ObjMC per sample (px)")
    ax.set_ylabel("samples")
    ax.set_title(f"{summary['protocol']['name']}, tracker {summary['tracker']['name']}: "
                 f"{summary['evaluated']} evaluated, {len(summary['missing'])} missing")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_per_frame(path: str, summary: dict) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for curve, label, style in ((summary["per_frame"], "generated", "-o"),
                                ((summary.get("floor") or {}).get("per_frame"), "tracker floor (real frames)", "--s")):
        if curve:
            t = [i for i, v in enumerate(curve) if v is not None]
            ax.plot(t, [curve[i] for i in t], style, ms=3, label=label)
    ax.set_xlabel("frame t")
    ax.set_ylabel("mean error (px)")
    ax.set_title(f"error per frame ({summary['protocol']['name']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_figures(out: str, es, ev, rows: list[dict], scored: dict, paths: dict[str, str], summary: dict,
                  overlays: int = 2, plots: bool = True) -> dict[str, Any]:
    """Plots and best/worst overlays; returns the files written (relative to ``out``)."""
    from pipeline.evaluate.videos import load_video

    files: dict[str, Any] = {}
    values = [r["objmc"] for r in rows if r["objmc"] is not None]
    if plots and values:
        os.makedirs(os.path.join(out, "plots"), exist_ok=True)
        files["plots"] = [os.path.relpath(f, out) for f in (
            _plot_distribution(os.path.join(out, "plots", "objmc_distribution.png"), values, summary),
            _plot_per_frame(os.path.join(out, "plots", "error_per_frame.png"), summary))]
    ranked = sorted((r for r in rows if r["objmc"] is not None), key=lambda r: (r["objmc"], r["key"]))
    if overlays and ranked:
        k = min(int(overlays), (len(ranked) + 1) // 2)
        picks = [("best", i + 1, r) for i, r in enumerate(ranked[:k])]
        picks += [("worst", i + 1, r) for i, r in enumerate(reversed(ranked[k:][-k:]))]
        written = []
        for kind, rank, r in picks:
            sample = es.sample(r["key"])
            frames, _ = load_video(paths[r["key"]], sample)
            s = scored[r["key"]]
            _, ref_mask = ev.conditions(sample)
            if ev.p.reference == "tracker_on_real" or not ev.p.span_only:
                ref_mask = np.ones(s.mask.shape, bool)
            title = f"{kind} {rank}: {r['key']}  ObjMC {r['objmc']:.2f} px ({summary['protocol']['name']})"
            fps = float(sample.profile.get("fps") or 4.0)
            p = write_overlay(os.path.join(out, "overlays"), f"{kind}{rank}_{r['key']}", frames[s.frames_idx], s,
                              ref_mask, title, fps)
            written += [os.path.relpath(v, out) for v in p.values()]
        files["overlays"] = written
    return files
