"""DragNUWA's Trajectory Sampler (Sec. 3.1), split between the pipeline and the loader.

The paper samples, every time a clip is read: a grid of anchors with interval lambda,
shifted by one random perturbation delta in [-lambda/2, lambda/2]; n ~ U[1, N]; n anchors
drawn by a multinomial weighted by ||f_0|| at the anchors; each drawn point tracked frame
to frame through the flow; the sparse displacements Gaussian-filtered, with a zero frame
prepended.

Here the pipeline does the expensive, draw-independent part once per clip
(``compute_anchors``: sample delta, build the grid, track *all* anchors, weight them) and
the trainer's loader does the cheap, per-read part (``draw_trajectories`` then
``rasterize_displacements``, then its Gaussian filter).

Conventions: flow ``(L-1, 2, H, W)`` float32, channel 0 = dx, 1 = dy, ``flow[t]`` maps
frame t to t+1; points are ``(x, y)`` float32 with pixel centers at integers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "sample_delta",
    "anchor_grid",
    "bilinear_sample",
    "track_points",
    "compute_anchors",
    "draw_trajectories",
    "rasterize_displacements",
]


def sample_delta(rng: np.random.Generator, interval: int) -> tuple[int, int]:
    """One random grid shift per clip: ``(dx, dy)``, each an integer uniform in
    ``[-interval//2, interval//2]`` (both ends included)."""
    interval = int(interval)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    h = interval // 2
    dx, dy = rng.integers(-h, h, size=2, endpoint=True)
    return int(dx), int(dy)


def _axis_positions(size: int, interval: int, shift: int) -> np.ndarray:
    """``interval//2 + k*interval + shift`` for every integer k that lands in ``[0, size-1]``."""
    off = interval // 2 + int(shift)
    k0 = -(off // interval)                     # ceil(-off / interval)
    k1 = (size - 1 - off) // interval           # floor((size-1-off) / interval)
    if k1 < k0:
        return np.zeros(0, np.int64)
    return off + interval * np.arange(k0, k1 + 1, dtype=np.int64)


def anchor_grid(height: int, width: int, interval: int = 16, delta: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Anchor points ``(A, 2)`` float32 ``(x, y)``, integer-valued.

    ``x = interval//2 + k*interval + delta[0]`` and ``y = interval//2 + m*interval + delta[1]``
    for all integers k, m with the point inside ``[0, width-1] x [0, height-1]``.
    Row-major order: y outer, x inner.
    """
    interval = int(interval)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    xs = _axis_positions(int(width), interval, int(delta[0]))
    ys = _axis_positions(int(height), interval, int(delta[1]))
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def bilinear_sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` ``(C, H, W)`` at ``points`` ``(N, 2)`` (x, y) -> ``(N, C)``.

    Coordinates are clamped to ``[0, W-1] x [0, H-1]`` before sampling (points outside the
    image take the value at the nearest border). The result has the field's float dtype
    (float32 for integer fields); weights are computed in float64.
    """
    field = np.asarray(field)
    if field.ndim != 3:
        raise ValueError(f"field must be shaped (C, H, W), got {field.shape}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    c, h, w = field.shape
    out_dtype = np.result_type(field.dtype, np.float32)
    if pts.shape[0] == 0:
        return np.zeros((0, c), out_dtype)
    x = np.clip(pts[:, 0], 0.0, w - 1)
    y = np.clip(pts[:, 1], 0.0, h - 1)
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = x - x0
    wy = y - y0
    f00 = field[:, y0, x0]
    f01 = field[:, y0, x1]
    f10 = field[:, y1, x0]
    f11 = field[:, y1, x1]
    top = f00 * (1.0 - wx) + f01 * wx
    bot = f10 * (1.0 - wx) + f11 * wx
    val = top * (1.0 - wy) + bot * wy                       # (C, N)
    return np.ascontiguousarray(val.T).astype(out_dtype, copy=False)


def _inside(p: np.ndarray, h: int, w: int) -> np.ndarray:
    return (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)


def track_points(points: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track points through a clip by chaining the forward flow.

    points: ``(N, 2)`` (x, y) at frame 0; flow: ``(L-1, 2, H, W)``.
    ``p[t+1] = p[t] + bilinear(flow[t], p[t])`` (positions are accumulated in float64).

    Returns ``tracks`` ``(N, L, 2)`` float32 and ``visible`` ``(N, L)`` bool.
    ``visible[i, t]`` is true while the point is inside ``[0, W-1] x [0, H-1]``. Once a
    point leaves the frame it stays invisible for the rest of the clip (it is not tracked
    back in), and its coordinates are frozen at the first out-of-frame position from then
    on. The coordinates of invisible points are therefore NOT meaningful for conditioning:
    consumers must mask them with ``visible``. A point outside the frame at t=0 is
    invisible throughout and keeps its initial coordinates.

    Raises ValueError if the flow sampled along a visible track is not finite.
    """
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be shaped (L-1, 2, H, W), got {flow.shape}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = pts.shape[0]
    steps, _, h, w = flow.shape
    tracks = np.empty((n, steps + 1, 2), np.float64)
    visible = np.empty((n, steps + 1), bool)
    pos = pts.copy()
    active = _inside(pos, h, w)
    tracks[:, 0] = pos
    visible[:, 0] = active
    for t in range(steps):
        idx = np.flatnonzero(active)
        if idx.size:
            d = bilinear_sample(flow[t], pos[idx])
            if not np.all(np.isfinite(d)):
                raise ValueError(f"non-finite flow sampled at step {t}")
            pos[idx] += d
            active[idx] = _inside(pos[idx], h, w)
        tracks[:, t + 1] = pos
        visible[:, t + 1] = active
    return tracks.astype(np.float32), visible


def compute_anchors(flow: np.ndarray, interval: int = 16, rng: np.random.Generator | None = None,
                    delta: tuple[int, int] | None = None) -> dict[str, Any]:
    """Pipeline side of the Trajectory Sampler: track every anchor of one shifted grid.

    flow: ``(L-1, 2, H, W)`` forward flow. ``delta`` is the grid shift; when None it is drawn
    with ``sample_delta(rng, interval)`` (``rng`` None means a fresh, unseeded generator;
    pass a seeded one for reproducible output).

    Returns a dict:
      ``anchor_tracks``  ``(A, L, 2)`` float32 (x, y) per frame (see ``track_points``:
                         coordinates of invisible points are not meaningful),
      ``anchor_weights`` ``(A,)`` float32, ``||flow[0]||_2`` at the anchor pixel (the
                         paper's multinomial weight),
      ``anchor_visible`` ``(A, L)`` bool,
      ``delta``          ``(dx, dy)`` ints,
      ``interval``       int.
    """
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] < 1:
        raise ValueError(f"flow must be shaped (L-1, 2, H, W) with L >= 2, got {flow.shape}")
    interval = int(interval)
    if delta is None:
        delta = sample_delta(rng if rng is not None else np.random.default_rng(), interval)
    delta = (int(delta[0]), int(delta[1]))
    _, _, h, w = flow.shape
    anchors = anchor_grid(h, w, interval, delta)
    ix = anchors[:, 0].astype(np.intp)
    iy = anchors[:, 1].astype(np.intp)
    f0 = flow[0][:, iy, ix].T.astype(np.float64)              # (A, 2)
    weights = np.sqrt(f0[:, 0] ** 2 + f0[:, 1] ** 2).astype(np.float32)
    tracks, visible = track_points(anchors, flow)
    return {
        "anchor_tracks": tracks,
        "anchor_weights": weights,
        "anchor_visible": visible,
        "delta": delta,
        "interval": interval,
    }


def draw_trajectories(weights: np.ndarray, rng: np.random.Generator, max_n: int = 8) -> np.ndarray:
    """Loader side of the Trajectory Sampler: pick the anchors to condition on, per read.

    The paper's draw: ``n ~ U[1, N]`` (integers, both ends included, ``N = max_n``), then n
    anchors drawn from a multinomial proportional to ``weights`` (``||f_0||`` at the
    anchors), without replacement, i.e. successive weighted draws, each removing the drawn
    anchor and renormalising (``rng.choice(A, n, replace=False, p=weights/sum)``, which
    numpy implements as exactly this successive sampling). With n = 1 this is the plain
    multinomial; for n > 1 each anchor's chance of being among the n is less than
    proportional to its weight (the largest weights saturate).

    n is capped at the number of anchors with positive weight, so zero-weight anchors are
    never drawn unless all weights are zero; then n anchors (capped at A) are drawn
    uniformly without replacement. Returns int64 indices into ``weights`` in draw order
    (empty when there are no anchors).
    """
    max_n = int(max_n)
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    n = int(rng.integers(1, max_n, endpoint=True))
    a = w.size
    if a == 0:
        return np.zeros(0, np.int64)
    positive = int(np.count_nonzero(w > 0))
    if positive == 0:
        return rng.choice(a, size=min(n, a), replace=False).astype(np.int64)
    p = w / w.sum()
    return rng.choice(a, size=min(n, positive), replace=False, p=p).astype(np.int64)


def rasterize_displacements(tracks: np.ndarray, visible: np.ndarray, indices: np.ndarray,
                            height: int, width: int) -> np.ndarray:
    """Sparse displacement map of the drawn tracks, before any Gaussian filtering.

    Returns ``out`` ``(L, 2, H, W)`` float32 (DragNUWA release convention):
    ``out[0]`` is all zero (the prepended zero frame); for t = 0..L-2, ``out[t+1]`` holds the
    displacement ``(x[t+1] - x[t], y[t+1] - y[t])`` of each drawn track that is visible at
    both t and t+1, written at the integer pixel ``(round(x[t]), round(y[t]))`` of the
    point's position at frame t (rounding half up; clipped to the frame). Elsewhere zero.
    Where two tracks fall on the same pixel of the same frame, the one later in
    ``indices`` wins.
    """
    tracks = np.asarray(tracks)
    visible = np.asarray(visible, dtype=bool)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or visible.shape != tracks.shape[:2]:
        raise ValueError(f"tracks (A, L, 2) and visible (A, L) expected, got {tracks.shape} and {visible.shape}")
    h, w = int(height), int(width)
    length = tracks.shape[1]
    out = np.zeros((length, 2, h, w), np.float32)
    if length < 2:
        return out
    t_idx = np.arange(length - 1)
    for k in np.asarray(indices, dtype=np.int64).ravel():
        tr = tracks[k].astype(np.float64)                   # (L, 2)
        ok = visible[k, :-1] & visible[k, 1:]
        if not ok.any():
            continue
        d = tr[1:] - tr[:-1]                                # (L-1, 2)
        px = np.clip(np.floor(tr[:-1, 0] + 0.5), 0, w - 1).astype(np.intp)
        py = np.clip(np.floor(tr[:-1, 1] + 0.5), 0, h - 1).astype(np.intp)
        t, px, py, d = t_idx[ok], px[ok], py[ok], d[ok]
        out[t + 1, 0, py, px] = d[:, 0]
        out[t + 1, 1, py, px] = d[:, 1]
    return out
