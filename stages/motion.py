"""Per-clip motion statistics and the run-time filters on them (meta["motion"]).

``motion_stats(flow, frames)`` summarises one clip's forward flow ``(L-1, 2, H, W)`` and
frames ``(L, H, W, 3)`` uint8 into a small JSON-serialisable dict:

``magnitude``       flow magnitude ``|f|`` (px/frame) over all pixels of all pairs: ``mean``,
                    ``p50``, ``p90``, ``p99``, ``max``, and ``per_pair`` means.
``moving_fraction`` fraction of (pair, pixel) samples with ``|f| >= MOVING_PX``.
``camera``          a global similarity (rotation + uniform zoom + translation) fitted to
                    each pair's flow with RANSAC on a subsampled grid of correspondences
                    ``p -> p + f(p)`` (see :func:`fit_similarity`):

                    - ``inlier_ratio``: of the grid points that move (``|f| >= MOVING_PX``),
                      the fraction the global motion explains (within the RANSAC
                      threshold), pooled over the pairs. About 1 when all motion is camera
                      motion (a pan, a zoom), about 0 for a static camera filming moving
                      objects; ``None`` when (almost) nothing moves.
                    - ``inlier_ratio_all``: fraction of all grid points explained (how well a
                      single global motion describes the whole field).
                    - ``translation`` ``[tx, ty]``: mean displacement (px/frame) of the frame
                      center under the fitted motion; ``speed``: mean of its length per pair
                      (px/frame, what ``--max-camera-motion`` compares against).
                    - ``zoom``: per-pair scale, geometric mean (> 1 zooms in); ``zoom_total``
                      its product over the clip; ``rotation_deg``: mean per pair (clockwise on
                      screen, as y points down); ``per_pair`` lists.
``object_motion``   the flow left after removing the fitted camera motion: ``mean`` residual
                    magnitude (px/frame) and ``moving_fraction`` (residual ``>= MOVING_PX``).
``cut``             the scene-cut test for the sampled span (see below): ``detected`` (a
                    shot change), ``pairs`` (indices t of the pairs (t, t+1) that are shot
                    changes), ``flow_failure`` / ``flow_failure_pairs`` (pairs the flow
                    could not follow within one continuous shot), ``flagged_pairs`` (both
                    kinds), ``reason`` per flagged pair (``"shot_change"`` |
                    ``"flow_failure"``), ``matches`` per flagged pair, ``hist_distance`` and
                    ``warp_error`` per pair, ``rule``.

Scene-cut rule, per consecutive pair (t, t+1) of sampled frames (the sampled frames are
0.25 s apart at 4 fps, so within one shot both signals stay low):

- ``hist_distance``: total-variation distance (half the L1 distance, in [0, 1]) between the
  two frames' normalised 8x8x8 RGB histograms;
- ``warp_error``: frame t+1 warped back to frame t through the flow (bilinear), mean
  absolute luma difference to frame t (0-255 levels) over the pixels whose flow target lies
  inside frame t+1. Flow cannot explain a cut, so the error stays high.

A pair is a cut when ``hist_distance >= CUT_HIST`` (the colours change wholesale), or when
``warp_error >= CUT_WARP`` and ``hist_distance >= CUT_HIST_WITH_WARP`` (the flow does not
explain the change and the colours changed too; the second condition keeps fast motion
with heavy occlusion from counting). The thresholds were set on the synthetic scenes
(tests/stages/test_motion.py) and the embedded sample's real clips.

Shot change or flow failure: fast hand-held footage also fails those tests (the flow cannot
follow 30-50 px per frame, so the warp error is high, and the view changes colours). For
each flagged pair, distinctive ORB feature matches (``SAME_SHOT_MATCHES``, Lowe's ratio test
0.75, 1000 features on the profile frames) are counted between frames (t, t+1), (t-1, t+1)
and (t, t+2) (a blurred frame does not hide that the shot goes on); the pair is a
``flow_failure`` when the largest count is at least ``SAME_SHOT_MATCHES`` (the content
persists), else a ``shot_change``. Measured on real clips (docs/trajectories.md): the four
real cuts built from real clips gave at most 10 matches; of the 14 flagged pairs of
continuous fast hand-held shots, 11 gave 13-175 (flow failure), 3 gave 5-9 and are still
called shot changes (motion blur at both ends). ``--drop-cuts`` drops shot changes only;
flow failures show as low trackability (``--min-trackable``).

Everything here is deterministic: the RANSAC draws come from a fixed-seed generator, so
the statistics depend only on the flow and frames.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ClipFiltered

__all__ = [
    "MOVING_PX",
    "CUT_HIST",
    "CUT_WARP",
    "CUT_HIST_WITH_WARP",
    "SAME_SHOT_MATCHES",
    "shared_features",
    "fit_similarity",
    "grid_correspondences",
    "hist_distance",
    "warp_error",
    "motion_stats",
    "check_filters",
]

MOVING_PX = 1.0            # a pixel "moves" when |f| >= 1 px/frame
GRID_POINTS = 20           # about this many grid points along the short side
RANSAC_HYPOTHESES = 128
RANSAC_BASE_PX = 1.0       # inlier threshold: RANSAC_BASE_PX + RANSAC_REL * median |f| of the pair
RANSAC_REL = 0.05
MIN_MOVING_POINTS = 0.01   # inlier_ratio is None when fewer than 1% of the grid points move
CUT_HIST = 0.5
CUT_WARP = 25.0
CUT_HIST_WITH_WARP = 0.2
SAME_SHOT_MATCHES = 12    # distinctive ORB matches that make a flagged pair a flow failure
ORB_FEATURES = 1000
ORB_RATIO = 0.75
HIST_BINS = 8
CUT_STRIDE = 2            # the cut signals are computed at half resolution
_DECIMALS = 4
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# --------------------------------------------------------------------------- camera motion
def grid_correspondences(flow_pair: np.ndarray, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points ``p`` (N, 2) on a regular grid (a margin of one step from the border) and their
    flow ``f(p)`` (N, 2), float64, from one ``(2, H, W)`` flow field."""
    _, h, w = flow_pair.shape
    if step is None:
        step = max(2, min(h, w) // GRID_POINTS)
    m = step if min(h, w) > 4 * step else 0
    ys = np.arange(m, h - m, step)
    xs = np.arange(m, w - m, step)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    pts = np.stack([gx, gy], 1).astype(np.float64)
    f = flow_pair[:, gy, gx].T.astype(np.float64)
    return pts, f


def _apply(s: complex, t: complex, z: np.ndarray) -> np.ndarray:
    return s * z + t


def _lsq_similarity(z: np.ndarray, zp: np.ndarray) -> tuple[complex, complex]:
    """Least-squares ``zp = s * z + t`` (complex points), s = zoom * exp(i * rotation)."""
    zm, zpm = z.mean(), zp.mean()
    zc, zpc = z - zm, zp - zpm
    den = float(np.sum(np.abs(zc) ** 2))
    s = complex(np.sum(np.conj(zc) * zpc) / den) if den > 1e-9 else 1.0 + 0j
    return s, complex(zpm - s * zm)


def fit_similarity(points: np.ndarray, flow_at_points: np.ndarray, threshold: float,
                   rng: np.random.Generator, hypotheses: int = RANSAC_HYPOTHESES) -> dict[str, Any]:
    """RANSAC fit of a similarity ``q = s p + t`` to correspondences ``p -> p + f(p)``.

    Minimal sets of two points give ``hypotheses`` candidate models (vectorised); the one
    with most inliers (residual ``<= threshold`` px; ties: smaller summed residual) is
    refined by least squares on its inliers, twice. Returns ``s`` and ``t`` (complex, x =
    real, y = imag), the boolean ``inliers`` and the ``residual`` (N,) per point.
    """
    z = points[:, 0] + 1j * points[:, 1]
    zp = z + (flow_at_points[:, 0] + 1j * flow_at_points[:, 1])
    n = len(z)
    if n < 2:
        return {"s": 1.0 + 0j, "t": 0j, "inliers": np.ones(n, bool), "residual": np.zeros(n)}
    i = rng.integers(0, n, size=hypotheses)
    j = rng.integers(0, n, size=hypotheses)
    dz = z[i] - z[j]
    ok = np.abs(dz) > 1.0
    i, j, dz = i[ok], j[ok], dz[ok]
    s = (zp[i] - zp[j]) / dz
    t = zp[i] - s * z[i]
    # Always consider the pure translation by the median flow too (robust for tiny grids).
    s = np.append(s, 1.0 + 0j)
    d = zp - z
    t = np.append(t, complex(float(np.median(d.real)), float(np.median(d.imag))))
    e = s[:, None] * z[None, :] + t[:, None] - zp[None, :]                # (M, N)
    res2 = e.real ** 2 + e.imag ** 2
    thr2 = threshold * threshold
    inl = res2 <= thr2
    # Most inliers; ties broken by the smaller truncated squared residual (MSAC-like).
    score = inl.sum(1) * 1e6 - np.minimum(res2, thr2).sum(1) / thr2
    best = int(np.argmax(score))
    sb, tb = complex(s[best]), complex(t[best])
    inliers = inl[best]
    for _ in range(2):
        if inliers.sum() < 2:
            break
        sb, tb = _lsq_similarity(z[inliers], zp[inliers])
        residual = np.abs(_apply(sb, tb, z) - zp)
        inliers = residual <= threshold
    residual = np.abs(_apply(sb, tb, z) - zp)
    return {"s": sb, "t": tb, "inliers": residual <= threshold, "residual": residual}


# --------------------------------------------------------------------------- scene cuts
def _hist(frame: np.ndarray) -> np.ndarray:
    import cv2

    h = cv2.calcHist([np.ascontiguousarray(frame)], [0, 1, 2], None, [HIST_BINS] * 3, [0, 256] * 3).ravel()
    return h / max(float(h.sum()), 1.0)


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance in [0, 1] between two RGB frames' 8x8x8 colour histograms."""
    return float(0.5 * np.abs(_hist(a) - _hist(b)).sum())


def _luma(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _warp_error_luma(y0: np.ndarray, y1: np.ndarray, flow01: np.ndarray, stride: int = 1) -> float:
    import cv2

    h, w = y0.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    # On a ``stride``-subsampled grid the flow (in full-resolution px) scales by 1/stride.
    mx = gx + flow01[0] / stride
    my = gy + flow01[1] / stride
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    if not inside.any():
        return float("nan")
    warped = cv2.remap(y1, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.abs(warped - y0)[inside].mean())


def warp_error(frame0: np.ndarray, frame1: np.ndarray, flow01: np.ndarray) -> float:
    """Mean |luma(frame1 warped back through flow01) - luma(frame0)| (0-255 levels) over the
    pixels of frame 0 whose flow target lies inside frame 1 (NaN when there are none)."""
    return _warp_error_luma(_luma(frame0), _luma(frame1), np.asarray(flow01, np.float32))


def _is_cut(hist_d: float, warp_e: float) -> bool:
    if hist_d >= CUT_HIST:
        return True
    return bool(math.isfinite(warp_e) and warp_e >= CUT_WARP and hist_d >= CUT_HIST_WITH_WARP)


def shared_features(frame0: np.ndarray, frame1: np.ndarray, orb=None) -> int:
    """Distinctive ORB matches between two RGB frames: matches whose nearest descriptor
    distance is under ``ORB_RATIO`` times the second nearest (Lowe's ratio test)."""
    import cv2

    orb = orb if orb is not None else cv2.ORB_create(ORB_FEATURES)
    g0 = cv2.cvtColor(np.ascontiguousarray(frame0), cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(np.ascontiguousarray(frame1), cv2.COLOR_RGB2GRAY)
    _, d0 = orb.detectAndCompute(g0, None)
    _, d1 = orb.detectAndCompute(g1, None)
    if d0 is None or d1 is None or len(d0) < 2 or len(d1) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d0, d1, k=2)
    return int(sum(1 for m in pairs if len(m) == 2 and m[0].distance < ORB_RATIO * m[1].distance))


def _same_shot_matches(frames: np.ndarray, t: int, orb) -> int:
    """The largest distinctive-match count across the pair (t, t+1), skipping one frame on
    either side as well."""
    n = len(frames)
    pairs = [(t, t + 1), (t - 1, t + 1), (t, t + 2)]
    return max(shared_features(frames[a], frames[b], orb) for a, b in pairs if 0 <= a and b < n)


# --------------------------------------------------------------------------- the stage
def _r(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), _DECIMALS)


def motion_stats(flow: np.ndarray, frames: np.ndarray) -> dict[str, Any]:
    """Motion statistics of one clip (see the module docstring for every field)."""
    flow = np.asarray(flow, np.float32)
    frames = np.asarray(frames)
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] < 1:
        raise ValueError(f"flow must be shaped (L-1, 2, H, W) with L >= 2, got {flow.shape}")
    if frames.shape[0] != flow.shape[0] + 1 or frames.shape[1:3] != flow.shape[2:]:
        raise ValueError(f"frames {frames.shape} do not match flow {flow.shape}")
    n_pairs, _, h, w = flow.shape
    # |f| pair by pair into one array: the same values as the whole-array expression, without
    # its three (P, H, W) temporaries (366 MB at 81 frames of 832x480)
    mag = np.empty((n_pairs, h, w), np.float32)                      # (P, H, W)
    for t in range(n_pairs):
        np.sqrt(flow[t, 0] ** 2 + flow[t, 1] ** 2, out=mag[t])
    sub = mag[:, ::2, ::2].ravel()                                   # percentiles on a 1/4 subsample
    p50, p90, p99 = np.percentile(sub, [50, 90, 99])

    rng = np.random.default_rng(20240901)
    center = complex((w - 1) / 2.0, (h - 1) / 2.0)
    trans, zooms, rots, ratio_all = [], [], [], []
    moving_pts = moving_inl = 0
    res_sum = res_moving = n_pts = 0
    hist_d, warp_e = [], []
    for t in range(n_pairs):
        pts, f = grid_correspondences(flow[t])
        fm = np.hypot(f[:, 0], f[:, 1])
        thr = RANSAC_BASE_PX + RANSAC_REL * float(np.median(fm))
        fit = fit_similarity(pts, f, thr, rng)
        s, tr = fit["s"], fit["t"]
        c = s * center + tr - center                                  # motion of the frame center
        trans.append((c.real, c.imag))
        zooms.append(abs(s))
        rots.append(math.degrees(math.atan2(s.imag, s.real)))
        ratio_all.append(float(fit["inliers"].mean()))
        mv = fm >= MOVING_PX
        moving_pts += int(mv.sum())
        moving_inl += int((fit["inliers"] & mv).sum())
        res_sum += float(fit["residual"].sum())
        res_moving += int((fit["residual"] >= MOVING_PX).sum())
        n_pts += len(pts)
    # Cut signals on every other row and column (half resolution): plenty for both tests.
    small = [np.ascontiguousarray(f[::CUT_STRIDE, ::CUT_STRIDE]) for f in frames]  # one copy each
    hists = [_hist(f) for f in small]
    lumas = [_luma(f) for f in small]
    for t in range(n_pairs):
        hist_d.append(float(0.5 * np.abs(hists[t] - hists[t + 1]).sum()))
        warp_e.append(_warp_error_luma(lumas[t], lumas[t + 1],
                                       flow[t][:, ::CUT_STRIDE, ::CUT_STRIDE], CUT_STRIDE))

    trans_a = np.asarray(trans)
    speed = np.hypot(trans_a[:, 0], trans_a[:, 1])
    flagged = [t for t in range(n_pairs) if _is_cut(hist_d[t], warp_e[t])]
    matches: dict[str, int] = {}
    if flagged:
        import cv2

        orb = cv2.ORB_create(ORB_FEATURES)
        matches = {str(t): _same_shot_matches(frames, t, orb) for t in flagged}
    cuts = [t for t in flagged if matches[str(t)] < SAME_SHOT_MATCHES]
    failures = [t for t in flagged if matches[str(t)] >= SAME_SHOT_MATCHES]
    enough_moving = moving_pts >= max(1, MIN_MOVING_POINTS * n_pts)
    return {
        "magnitude": {
            "mean": _r(mag.mean()), "p50": _r(p50), "p90": _r(p90), "p99": _r(p99), "max": _r(mag.max()),
            "per_pair": [_r(v) for v in mag.reshape(n_pairs, -1).mean(1)],
        },
        "moving_px": MOVING_PX,
        "moving_fraction": _r((mag >= MOVING_PX).mean()),
        "camera": {
            "model": "similarity",
            "inlier_ratio": _r(moving_inl / moving_pts) if enough_moving else None,
            "inlier_ratio_all": _r(float(np.mean(ratio_all))),
            "translation": [_r(trans_a[:, 0].mean()), _r(trans_a[:, 1].mean())],
            "speed": _r(speed.mean()),
            "zoom": _r(math.exp(float(np.mean(np.log(zooms))))),
            "zoom_total": _r(float(np.prod(zooms))),
            "rotation_deg": _r(float(np.mean(rots))),
            "per_pair": {
                "translation": [[_r(a), _r(b)] for a, b in trans],
                "zoom": [_r(v) for v in zooms],
                "rotation_deg": [_r(v) for v in rots],
                "inlier_ratio_all": [_r(v) for v in ratio_all],
            },
        },
        "object_motion": {
            "mean": _r(res_sum / max(n_pts, 1)),
            "moving_fraction": _r(res_moving / max(n_pts, 1)),
        },
        "cut": {
            "detected": bool(cuts),
            "pairs": cuts,
            "flow_failure": bool(failures),
            "flow_failure_pairs": failures,
            "flagged_pairs": flagged,
            "reason": {str(t): ("flow_failure" if t in failures else "shot_change") for t in flagged},
            "matches": matches,
            "hist_distance": [_r(v) for v in hist_d],
            "warp_error": [_r(v) for v in warp_e],
            "rule": (f"flagged: hist_distance >= {CUT_HIST} or (warp_error >= {CUT_WARP} and "
                     f"hist_distance >= {CUT_HIST_WITH_WARP}); a flagged pair is a flow_failure when "
                     f"frames across it share >= {SAME_SHOT_MATCHES} distinctive ORB matches "
                     f"(pairs t/t+1, t-1/t+1, t/t+2), else a shot_change"),
        },
    }


def check_filters(stats: dict[str, Any], drop_cuts: bool = False, min_motion: float | None = None,
                  max_camera_motion: float | None = None) -> None:
    """Raise ``ClipFiltered`` for the first run-time filter the clip fails (None turns a
    filter off). Reasons: ``scene_cut`` (a shot change; flow failures are not cuts),
    ``low_motion`` (mean |f| below ``min_motion``), ``camera_motion`` (camera ``speed`` above
    ``max_camera_motion``)."""
    if drop_cuts and stats["cut"]["detected"]:
        raise ClipFiltered("scene_cut", f"shot change between sampled frames {stats['cut']['pairs']} (--drop-cuts)")
    if min_motion is not None and (stats["magnitude"]["mean"] or 0.0) < min_motion:
        raise ClipFiltered("low_motion", f"mean flow magnitude {stats['magnitude']['mean']:.3f} px/frame "
                                         f"< --min-motion {min_motion}")
    if max_camera_motion is not None and (stats["camera"]["speed"] or 0.0) > max_camera_motion:
        raise ClipFiltered("camera_motion", f"camera speed {stats['camera']['speed']:.3f} px/frame "
                                            f"> --max-camera-motion {max_camera_motion}")
