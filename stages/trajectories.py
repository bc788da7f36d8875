"""DragNUWA's Trajectory Sampler (Sec. 3.1), split between the pipeline and the loader.

The paper samples, every time a clip is read: a grid of anchors with interval lambda,
shifted by one random perturbation delta in [-lambda/2, lambda/2]; n ~ U[1, N]; n anchors
drawn by a multinomial weighted by ||f_0|| at the anchors; each drawn point tracked frame
to frame through the flow; the sparse displacements Gaussian-filtered, with a zero frame
prepended.

Here the pipeline does the expensive, draw-independent part once per clip
(``compute_anchors``: sample delta, build the grid, track *all* anchors, weight them, and
mark each anchor's reliable frames with forward-backward checks, ``anchor_reliability``)
and the trainer's loader does the cheap, per-read part (``draw_trajectories`` among the
anchors reliable at frame 0, then ``rasterize_displacements`` on the reliable span only,
then its Gaussian filter).

Reliability (docs/trajectories.md): the paper tracks every anchor through the flow and
trusts it throughout. On real footage many anchors lose their surface within a few frames
(occlusion, large motion, textureless areas); they stay inside the frame ("visible") but
their tracks are wrong. ``reliable`` marks, per anchor, the prefix of frames whose
positions passed the checks; the trainer's trajectory ends at its first unreliable frame.

Conventions: flow ``(L-1, 2, H, W)`` float32, channel 0 = dx, 1 = dy, ``flow[t]`` maps
frame t to t+1; points are ``(x, y)`` float32 with pixel centers at integers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# The anchors' forward-backward (FB) reliability rule (see anchor_reliability;
# docs/trajectories.md has the measurements on real clips and on the fast synthetic scenes
# with ground truth that set these). The step tolerance grows with the step (0.7 + 0.14 |d|:
# Sundaram et al.'s |w + w_back|^2 < 0.01 (|w|^2 + |w_back|^2) + 0.5 made linear, an upper
# bound of it); the round trip is tied to what it serves: 0.3 x the trainer's Gaussian sigma
# (DragNUWA's 10 px), an error the trajectory map cannot show.
TRAINER_SIGMA_PX = 10.0
ROUNDTRIP_SIGMA_SHARE = 0.3
FB_STEP_PX = 0.7
FB_STEP_REL = 0.14
FB_ROUNDTRIP_PX = ROUNDTRIP_SIGMA_SHARE * TRAINER_SIGMA_PX

__all__ = [
    "sample_delta",
    "anchor_grid",
    "bilinear_sample",
    "track_points",
    "compose_flows",
    "fb_errors",
    "roundtrip_errors",
    "anchor_reliability",
    "trackability",
    "FB_STEP_PX",
    "FB_STEP_REL",
    "FB_ROUNDTRIP_PX",
    "TRAINER_SIGMA_PX",
    "ROUNDTRIP_SIGMA_SHARE",
    "anchor_weights",
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


def _check_track_inputs(tracks, visible, backward_flow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tracks = np.asarray(tracks)
    visible = np.asarray(visible, dtype=bool)
    back = np.asarray(backward_flow)
    if back.ndim != 4 or back.shape[1] != 2 or tracks.ndim != 3 or back.shape[0] != tracks.shape[1] - 1:
        raise ValueError(f"tracks (A, L, 2) and backward flow (L-1, 2, H, W) expected, got {tracks.shape} "
                         f"and {back.shape}")
    return tracks, visible, back


def fb_errors(tracks: np.ndarray, visible: np.ndarray, backward_flow: np.ndarray) -> np.ndarray:
    """Forward-backward error of every step of every track: ``(A, L-1)`` float32 px.

    For the step t -> t+1 of track i, ``d = tracks[i, t+1] - tracks[i, t]`` (the forward flow
    at the point, as chained by :func:`track_points`) and ``b = B_t(tracks[i, t+1])``
    (bilinear) with ``B_t = backward_flow[t]`` mapping frame t+1 back to t; the error is
    ``|d + b|``: how far the surface found at the step's end comes back from where it
    started. A step whose end or start is not visible gets ``inf``.
    """
    tracks, visible, back = _check_track_inputs(tracks, visible, backward_flow)
    a, length = tracks.shape[:2]
    err = np.full((a, length - 1), np.inf, np.float32)
    for t in range(length - 1):
        ok = np.flatnonzero(visible[:, t] & visible[:, t + 1])
        if ok.size == 0:
            continue
        p0 = tracks[ok, t].astype(np.float64)
        p1 = tracks[ok, t + 1].astype(np.float64)
        b = bilinear_sample(back[t], p1).astype(np.float64)
        e = p1 - p0 + b
        err[ok, t] = np.sqrt(e[:, 0] ** 2 + e[:, 1] ** 2)
    return err


def roundtrip_errors(tracks: np.ndarray, visible: np.ndarray, backward_flow: np.ndarray) -> np.ndarray:
    """Round-trip error of every track at every frame: ``(A, L)`` float32 px.

    ``err[i, t]``: track i's position at frame t chained back to frame 0 through the
    backward flow (``p <- p + B_s(p)`` for s = t-1 .. 0, bilinear), distance to its frame-0
    position. ``err[:, 0] = 0``; ``inf`` where the track is not visible at t or the chain
    back leaves the frame.
    """
    tracks, visible, back = _check_track_inputs(tracks, visible, backward_flow)
    a, length = tracks.shape[:2]
    _, _, h, w = back.shape
    err = np.full((a, length), np.inf, np.float32)
    err[visible[:, 0], 0] = 0.0
    for t in range(1, length):
        ok = np.flatnonzero(visible[:, t])
        if ok.size == 0:
            continue
        p = tracks[ok, t].astype(np.float64)
        inside = np.ones(ok.size, bool)
        for s in range(t - 1, -1, -1):
            p += bilinear_sample(back[s], p).astype(np.float64)
            inside &= _inside(p, h, w)
        e = p - tracks[ok, 0].astype(np.float64)
        err[ok, t] = np.where(inside, np.sqrt(e[:, 0] ** 2 + e[:, 1] ** 2), np.inf)
    return err


def anchor_reliability(tracks: np.ndarray, visible: np.ndarray, backward_flow: np.ndarray,
                       step_px: float | None = FB_STEP_PX, step_rel: float = FB_STEP_REL,
                       roundtrip_px: float | None = FB_ROUNDTRIP_PX) -> np.ndarray:
    """Per-anchor, per-frame reliability ``(A, L)`` bool from forward-backward consistency.

    Two tests, each off when its threshold is None:

    - the step test: step t -> t+1 passes when both ends are visible and its FB error
      (:func:`fb_errors`) is at most ``step_px + step_rel * |d|`` (``d`` the step): the
      surface under the point at t+1 is the one it left at t (fails at occlusions and where
      the flow loses the surface);
    - the round-trip test: the position at t+1 chained back to frame 0 through the backward
      flow lands within ``roundtrip_px`` of the anchor (:func:`roundtrip_errors`): small
      per-step errors have not added up to a drift.

    ``reliable[i, t]`` is true when every step of track i up to frame t passed both tests
    *and* the step leaving frame 0 passed:

    - ``reliable[i, 0] = reliable[i, 1]`` = the first step passed (an anchor counts as
      reliable at frame 0 only when it can be followed at least one frame, so any anchor
      drawn from the reliable ones gives at least one displacement);
    - ``reliable[i, t+1] = reliable[i, t]`` and step t passed, for t >= 1.

    So reliability is a prefix of each track: once a step fails (occlusion, the flow losing
    the surface, drift, leaving the frame) the anchor stays unreliable for the rest of the
    clip, and its later coordinates must not be used. ``reliable`` implies ``visible``.
    """
    if step_px is not None and (not float(step_px) > 0 or float(step_rel) < 0):
        raise ValueError(f"step threshold must have step_px > 0 and step_rel >= 0, got {step_px}, {step_rel}")
    if roundtrip_px is not None and not float(roundtrip_px) > 0:
        raise ValueError(f"roundtrip_px must be > 0 px or None, got {roundtrip_px}")
    tracks = np.asarray(tracks)
    visible = np.asarray(visible, dtype=bool)
    a, length = visible.shape
    reliable = np.zeros((a, length), bool)
    if length < 2:
        reliable[:] = visible
        return reliable
    passed = visible[:, :-1] & visible[:, 1:]
    if step_px is not None:
        err = fb_errors(tracks, visible, backward_flow)
        d = np.diff(tracks.astype(np.float64), axis=1)
        passed &= err <= float(step_px) + float(step_rel) * np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)
    if roundtrip_px is not None:
        passed &= roundtrip_errors(tracks, visible, backward_flow)[:, 1:] <= float(roundtrip_px)
    reliable[:, 1:] = np.logical_and.accumulate(passed, axis=1)
    reliable[:, 0] = reliable[:, 1]
    return reliable & visible


def trackability(visible: np.ndarray, reliable: np.ndarray | None) -> dict[str, Any]:
    """Per-clip trackability statistics of the anchors (JSON-serialisable, 4 decimals).

    ``reliable_through``   of the anchors inside the frame through the whole clip, the
                           fraction reliable through the clip (reliable at the last frame);
                           None when no anchor stays in frame (what ``--min-trackable``
                           compares against; None passes it only when it is unset);
    ``reliable_through_all`` the same over all anchors (those leaving the frame count as
                           not reliable);
    ``reliable_while_visible`` of the anchors in frame at frame 0, the fraction reliable
                           at every frame they are in frame (an anchor leaving the frame
                           counts when it was followed until it left; a fast pan where no
                           anchor stays in frame still has a meaningful value);
    ``reliable_per_frame`` per frame t, reliable / in-frame anchors (None for a frame with
                           none in frame);
    ``reliable_start`` / ``reliable_end`` / ``in_frame_through`` / ``count``: anchor counts.
    With ``reliable`` None (older shards) every field is None except the counts of visible.
    """
    visible = np.asarray(visible, dtype=bool)
    a, length = visible.shape
    in_through = visible.all(axis=1)
    out: dict[str, Any] = {"count": int(a), "in_frame_through": int(in_through.sum())}
    if reliable is None:
        out.update(reliable_through=None, reliable_through_all=None, reliable_while_visible=None,
                   reliable_per_frame=None, reliable_start=None, reliable_end=None)
        return out
    reliable = np.asarray(reliable, dtype=bool) & visible
    n_in = int(in_through.sum())
    per = []
    for t in range(length):
        v = int(visible[:, t].sum())
        per.append(round(float(reliable[:, t].sum()) / v, 4) if v else None)
    out.update(
        reliable_through=round(float(reliable[in_through, -1].sum()) / n_in, 4) if n_in else None,
        reliable_through_all=round(float(reliable[:, -1].sum()) / a, 4) if a else None,
        reliable_while_visible=(round(float((reliable == visible).all(axis=1)[visible[:, 0]].sum())
                                      / int(visible[:, 0].sum()), 4) if visible[:, 0].any() else None),
        reliable_per_frame=per,
        reliable_start=int(reliable[:, 0].sum()),
        reliable_end=int(reliable[:, -1].sum()),
    )
    return out


def compose_flows(steps) -> np.ndarray:
    """Compose consecutive flow fields into one: ``(2, H, W)`` float32.

    ``steps`` is a sequence of ``(2, H, W)`` fields, ``steps[k]`` mapping frame k to k+1 of a
    chain; the result maps frame 0 to the chain's last frame:
    ``F(x) = F_prev(x) + steps[k](x + F_prev(x))`` (bilinear, coordinates clamped to the
    frame as in :func:`bilinear_sample`). One field is returned as float32 unchanged.
    """
    import cv2

    steps = [np.asarray(s, np.float32) for s in steps]
    if not steps:
        raise ValueError("compose_flows needs at least one flow field")
    out = steps[0].copy()
    if len(steps) == 1:
        return out
    _, h, w = out.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for s in steps[1:]:
        mx = np.clip(gx + out[0], 0, w - 1)
        my = np.clip(gy + out[1], 0, h - 1)
        for c in range(2):
            out[c] += cv2.remap(s[c], mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def anchor_weights(flow: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """The paper's multinomial weights: ``||flow[0]||_2`` at each (integer) anchor pixel, ``(A,)`` float32."""
    ix = np.asarray(anchors)[:, 0].astype(np.intp)
    iy = np.asarray(anchors)[:, 1].astype(np.intp)
    f0 = np.asarray(flow)[0][:, iy, ix].T.astype(np.float64)   # (A, 2)
    return np.sqrt(f0[:, 0] ** 2 + f0[:, 1] ** 2).astype(np.float32)


def compute_anchors(flow: np.ndarray, interval: int = 16, rng: np.random.Generator | None = None,
                    delta: tuple[int, int] | None = None, backward_flow: np.ndarray | None = None,
                    step_px: float | None = FB_STEP_PX, step_rel: float = FB_STEP_REL,
                    roundtrip_px: float | None = FB_ROUNDTRIP_PX) -> dict[str, Any]:
    """Pipeline side of the Trajectory Sampler: track every anchor of one shifted grid.

    flow: ``(L-1, 2, H, W)`` forward flow. ``delta`` is the grid shift; when None it is drawn
    with ``sample_delta(rng, interval)`` (``rng`` None means a fresh, unseeded generator;
    pass a seeded one for reproducible output). ``backward_flow`` ``(L-1, 2, H, W)``
    (``backward_flow[t]`` maps frame t+1 to t), when given, marks each anchor's reliable
    frames with :func:`anchor_reliability` and the thresholds ``step_px``, ``step_rel``,
    ``roundtrip_px``.

    Returns a dict:
      ``anchor_tracks``  ``(A, L, 2)`` float32 (x, y) per frame (see ``track_points``:
                         coordinates of invisible points are not meaningful),
      ``anchor_weights`` ``(A,)`` float32, ``||flow[0]||_2`` at the anchor pixel (the
                         paper's multinomial weight; the loader uses it among the anchors
                         reliable at frame 0 only),
      ``anchor_visible`` ``(A, L)`` bool,
      ``anchor_reliable`` ``(A, L)`` bool, or None without ``backward_flow``,
      ``delta``          ``(dx, dy)`` ints,
      ``interval``       int.
    """
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] < 1:
        raise ValueError(f"flow must be shaped (L-1, 2, H, W) with L >= 2, got {flow.shape}")
    if backward_flow is not None and np.shape(backward_flow) != flow.shape:
        raise ValueError(f"backward flow {np.shape(backward_flow)} must match the forward flow {flow.shape}")
    interval = int(interval)
    if delta is None:
        delta = sample_delta(rng if rng is not None else np.random.default_rng(), interval)
    delta = (int(delta[0]), int(delta[1]))
    _, _, h, w = flow.shape
    anchors = anchor_grid(h, w, interval, delta)
    weights = anchor_weights(flow, anchors)
    tracks, visible = track_points(anchors, flow)
    reliable = None
    if backward_flow is not None:
        reliable = anchor_reliability(tracks, visible, backward_flow, step_px, step_rel, roundtrip_px)
    return {
        "anchor_tracks": tracks,
        "anchor_weights": weights,
        "anchor_visible": visible,
        "anchor_reliable": reliable,
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
