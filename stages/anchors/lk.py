"""``"lk"``: the chained dense flow, with each step that fails the dense checks re-tracked by
pyramidal Lucas-Kanade (CPU, no weights; docs/trajectories.md, issue 23).

Why: on fast motion the *check* fails before the track does. Measured on the synthetic fast
scenes (``pipeline/testdata/fast_scenes.py``), the forward flow still follows a disc moving
30 px per frame to within 0.5 px while the backward flow of the check (DIS balanced, and
DIS medium too) is off by 20-45 px there, so the step test ends a good span. Lucas-Kanade
seeded by the dense step finds the same surface and, tracked back from where it lands,
comes back to the start: its own forward-backward test lets the span go on. Where the dense
flow is wrong by more than LK's pyramid can recover, or the patch changed (an occluder, a
deforming surface), LK's tests fail as well and the span ends as before.

Per step t -> t+1 of an anchor still reliable at t (``p`` its position, ``F_t``/``B_t`` the
forward/backward flows, ``thr(s) = step_px + step_rel * s``):

1. dense: ``q_f = p + F_t(p)`` (the forward flow's end point) and ``q_b``, the inverted
   backward flow's (``q_b + B_t(q_b) = p``, ``inverse_iterations`` fixed-point steps from
   ``q_f``; one step is ``p - B_t(q_f)``, the FB test's own point); passes when ``q_f`` is in
   frame and ``|q_f - q_b| <= thr(|q_f - p|)`` (with one iteration exactly the step test of
   ``anchor_reliability``); the step goes to the midpoint of ``q_f`` and ``q_b``, FB residual
   ``e = q_f - q_b``. The midpoint is candidate (b) of issue 23, the forward and the inverted
   backward flow combined: each flow's own error is halved where they disagree a little
   (ground-truth p90 on the fast scenes 0.43 -> 0.27 px on shake, 0.74 -> 0.63 on
   rotate_scale; the real clips' round trip median at HD 1.34 -> 0.98 px on carphone,
   0.71 -> 0.43 on bigbuckbunny; bench/anchors.py ``--trackers lk:inverse_iterations=0,lk``);
2. otherwise LK: ``q' = LK(frame t -> t+1, p, seeded at q)``, ``r = LK(frame t+1 -> t, q',
   seeded at p)`` (``cv2.calcOpticalFlowPyrLK``, ``window`` px, ``levels`` pyramid levels,
   ``min_eig`` its texture floor); passes when both converge, ``q'`` is in frame,
   ``|r - p| <= thr(|q' - p|)`` and the normalised cross-correlation of the
   ``(2 ncc_radius + 1)^2`` patches at ``p`` (frame t) and ``q'`` (frame t+1) is at least
   ``ncc_min`` (LK's FB test alone lets wrong matches through on real clips: without the
   NCC test the round trip p90 at HD goes 2.64 -> 4.10 px on bigbuckbunny, 3.27 -> 4.20 on
   carphone); the step is ``q'`` and the residual ``e = r - p``;
3. drift: the round trip to frame 0 linearised, ``|sum of the residuals e so far| <=
   roundtrip_px`` (chaining the position back through the backward flow, as
   ``anchor_reliability`` does, would fail on exactly the steps LK rescued; measured with
   LK off, ``lk:min_eig=1e9``, the linearised test keeps the chained one's drawn path within
   0.01 on the real clips at HD, 0.03 / 0.36 / 0.31 against 0.03 / 0.37 / 0.31, and more of
   the occlusion scene's true path, 0.95 against 0.87, at a ground-truth p90 of 0.21 against
   0.25 px).

The first step that fails ends the anchor's reliable span (a prefix, as every backend);
past it the anchor follows the dense flow (``visible``: in frame, as ``track_points``).
With ``inverse_iterations=0`` a step that passes the dense test is the flow backend's own
(``q_f``), and where the dense checks hold the tracks are identical to ``"flow"``'s.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..trajectories import FB_ROUNDTRIP_PX, FB_STEP_PX, FB_STEP_REL, _inside, bilinear_sample
from .base import GENERIC_OPTIONS, AnchorTracker, AnchorTracks, _check_rule, check_reliable_prefix

__all__ = ["LKAnchorTracker", "make_lk", "LK_WINDOW", "LK_LEVELS", "LK_MIN_EIG", "LK_NCC_MIN", "LK_NCC_RADIUS",
           "LK_INVERSE_ITERATIONS", "patch_ncc"]

# LK settings, measured against the alternatives (docs/trajectories.md; ``bench/anchors.py
# --trackers lk,lk:window=15,...``). The window covers the surface around an anchor at HD
# without reaching far across motion boundaries; two pyramid levels recover a seed that is off
# by up to about 4 window radii; the eigenvalue floor (OpenCV's normalised minimum eigenvalue
# of the window's structure tensor) refuses flat patches, where LK converges anywhere (1e-2
# against 1e-3: the real clips' round trip p90 at HD 13.1 -> 2.8 px on bikes, 4.2 -> 3.3 on
# carphone, for 0.01 less drawn path; the fast scenes keep 0.83 of translate's true path
# instead of 0.85, 0.78 without LK); NCC 0.9 on 11 x 11 patches refuses mismatches (none: the
# real clips' round trip p90 goes up by 30-55 %).
LK_WINDOW = 21
LK_LEVELS = 2
LK_MIN_EIG = 1e-2
LK_NCC_MIN = 0.9
LK_NCC_RADIUS = 5
LK_ITERATIONS = 20
LK_EPSILON = 0.03
# Fixed-point steps inverting the backward flow for the dense step's midpoint (0: the forward
# flow alone). 3 against 1, HD: the real clips' round trip p90 4.27 -> 3.27 px (carphone),
# 3.40 -> 2.64 (bigbuckbunny), 2.27 -> 2.83 (bikes), for 0.01 less drawn path; at LD it costs
# carphone 0.04 of its drawn path (0.50 -> 0.46). 2 bilinear samples more per step.
LK_INVERSE_ITERATIONS = 3


def patch_ncc(a: np.ndarray, b: np.ndarray, pa: np.ndarray, pb: np.ndarray, radius: int = LK_NCC_RADIUS) -> np.ndarray:
    """Normalised cross-correlation of the ``(2 radius + 1)^2`` patches of gray images ``a`` at
    points ``pa`` and ``b`` at ``pb`` (``(N, 2)``, bilinear): ``(N,)`` in [-1, 1]; a patch
    without contrast gives -1 (nothing to match on)."""
    r = int(radius)
    off = np.stack(np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1)), -1).reshape(-1, 2).astype(np.float64)

    def patches(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        s = bilinear_sample(np.asarray(img, np.float32)[None], (pts[:, None, :] + off[None]).reshape(-1, 2))
        v = s.reshape(len(pts), -1).astype(np.float64)
        return v - v.mean(axis=1, keepdims=True)

    va, vb = patches(a, np.asarray(pa, np.float64)), patches(b, np.asarray(pb, np.float64))
    den = np.sqrt((va * va).sum(1) * (vb * vb).sum(1))
    return np.where(den > 1e-6, (va * vb).sum(1) / np.maximum(den, 1e-6), -1.0)


class LKAnchorTracker(AnchorTracker):
    """See the module docstring. ``step_px``, ``step_rel``, ``roundtrip_px``: the rule (the
    defaults of ``stages.trajectories``); ``inverse_iterations``: the dense step's midpoint;
    ``window``, ``levels``, ``min_eig``, ``ncc_min``, ``ncc_radius``, ``iterations``,
    ``epsilon``: LK's."""

    name = "lk"
    device_kind = "cpu"
    needs_flow = True
    needs_backward_flow = True

    def __init__(self, step_px: float = FB_STEP_PX, step_rel: float = FB_STEP_REL,
                 roundtrip_px: float | None = FB_ROUNDTRIP_PX, window: int = LK_WINDOW, levels: int = LK_LEVELS,
                 min_eig: float = LK_MIN_EIG, ncc_min: float = LK_NCC_MIN, ncc_radius: int = LK_NCC_RADIUS,
                 iterations: int = LK_ITERATIONS, epsilon: float = LK_EPSILON,
                 inverse_iterations: int = LK_INVERSE_ITERATIONS):
        if step_px is None:
            raise ValueError("the lk anchor tracker needs a step test (step_px)")
        _check_rule(step_px, step_rel, roundtrip_px)
        if int(window) < 3 or int(window) % 2 == 0:
            raise ValueError(f"window must be an odd number of pixels >= 3, got {window}")
        if int(levels) < 0 or not float(min_eig) >= 0 or not -1.0 <= float(ncc_min) <= 1.0 or int(ncc_radius) < 1:
            raise ValueError(f"bad LK settings: levels {levels}, min_eig {min_eig}, ncc_min {ncc_min}, "
                             f"ncc_radius {ncc_radius}")
        self.step_px, self.step_rel = float(step_px), float(step_rel)
        self.roundtrip_px = None if roundtrip_px is None else float(roundtrip_px)
        self.window, self.levels = int(window), int(levels)
        self.min_eig, self.ncc_min, self.ncc_radius = float(min_eig), float(ncc_min), int(ncc_radius)
        self.iterations, self.epsilon = int(iterations), float(epsilon)
        self.inverse_iterations = max(0, int(inverse_iterations))

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name,
                "tracking": "dense flow chained (midpoint of the forward and the inverted backward flow's end "
                            "points); a step failing the dense test re-tracked by pyramidal LK",
                "rule": "step FB error <= step_px + step_rel * |step| (dense flows, else LK back and "
                        "patch NCC >= ncc_min); |sum of the steps' FB residuals| <= roundtrip_px",
                "step_px": self.step_px, "step_rel": self.step_rel, "roundtrip_px": self.roundtrip_px,
                "window": self.window, "levels": self.levels, "min_eig": self.min_eig, "ncc_min": self.ncc_min,
                "ncc_radius": self.ncc_radius, "iterations": self.iterations, "epsilon": self.epsilon,
                "inverse_iterations": self.inverse_iterations}

    def _lk(self, a: np.ndarray, b: np.ndarray, p: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.iterations, self.epsilon)
        q, status, _ = cv2.calcOpticalFlowPyrLK(
            a, b, p.astype(np.float32).reshape(-1, 1, 2), guess.astype(np.float32).reshape(-1, 1, 2),
            winSize=(self.window, self.window), maxLevel=self.levels, criteria=crit,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW, minEigThreshold=self.min_eig)
        return q.reshape(-1, 2).astype(np.float64), status.ravel() == 1

    def track(self, frames, anchors, flow=None, backward_flow=None) -> AnchorTracks:
        import cv2

        if flow is None or backward_flow is None or frames is None:
            raise ValueError("the lk anchor tracker needs the frames, the forward and the backward flow")
        flow, back = np.asarray(flow), np.asarray(backward_flow)
        frames = np.asarray(frames)
        if flow.ndim != 4 or flow.shape[1] != 2 or back.shape != flow.shape:
            raise ValueError(f"forward/backward flow must both be (L-1, 2, H, W), got {flow.shape} and {back.shape}")
        steps, _, h, w = flow.shape
        if frames.shape[:3] != (steps + 1, h, w) or frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"frames (L, H, W, 3) uint8 matching the flow {flow.shape} expected, got "
                             f"{frames.shape} {frames.dtype}")
        gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
        pos = np.asarray(anchors, np.float64).reshape(-1, 2).copy()
        a = pos.shape[0]
        tracks = np.empty((a, steps + 1, 2), np.float64)
        visible = np.zeros((a, steps + 1), bool)
        passes = np.zeros((a, steps + 1), bool)
        tracks[:, 0] = pos
        visible[:, 0] = _inside(pos, h, w)
        alive = visible[:, 0].copy()
        passes[:, 0] = True
        drift = np.zeros((a, 2))
        tried = rescued = 0
        thr = lambda s: self.step_px + self.step_rel * s  # noqa: E731
        norm = lambda v: np.sqrt(v[:, 0] ** 2 + v[:, 1] ** 2)  # noqa: E731
        for t in range(steps):
            idx = np.flatnonzero(visible[:, t])
            if idx.size == 0:
                tracks[:, t + 1] = pos
                continue
            d = bilinear_sample(flow[t], pos[idx]).astype(np.float64)
            if not np.all(np.isfinite(d)):
                raise ValueError(f"non-finite flow sampled at step {t}")
            q = pos[idx] + d
            live = np.flatnonzero(alive[idx])
            passed = np.zeros(idx.size, bool)
            resid = np.zeros((idx.size, 2))
            if live.size:
                q_fwd = q[live].copy()
                q_back = q_fwd.copy()
                for _ in range(max(1, self.inverse_iterations)):     # q_back + B_t(q_back) = p
                    q_back = pos[idx[live]] - bilinear_sample(back[t], q_back).astype(np.float64)
                e = q_fwd - q_back                        # one iteration: d + B_t(q), the FB residual
                inside = _inside(q_fwd, h, w)
                ok = inside & (norm(e) <= thr(norm(d[live])))
                passed[live], resid[live] = ok, e
                if self.inverse_iterations:
                    both = live[ok]
                    q[both] = 0.5 * (q_fwd[ok] + q_back[ok])
                todo = live[~ok & inside]                 # a step out of the frame ends the span anyway
                if todo.size:
                    tried += todo.size
                    p0 = pos[idx[todo]]
                    q1, st1 = self._lk(gray[t], gray[t + 1], p0, q[todo])
                    r0, st0 = self._lk(gray[t + 1], gray[t], q1, p0)
                    fb = r0 - p0
                    good = st1 & st0 & _inside(q1, h, w) & (norm(fb) <= thr(norm(q1 - p0)))
                    if good.any():
                        g = np.flatnonzero(good)
                        good[g] = patch_ncc(gray[t], gray[t + 1], p0[g], q1[g], self.ncc_radius) >= self.ncc_min
                    sel = todo[good]
                    q[sel], passed[sel], resid[sel] = q1[good], True, fb[good]
                    rescued += int(good.sum())
                drift[idx[live]] += resid[live]
                if self.roundtrip_px is not None:
                    passed[live] &= norm(drift[idx[live]]) <= self.roundtrip_px
            alive[idx] &= passed
            alive[visible[:, t] == 0] = False
            pos[idx] = q
            visible[:, t + 1] = visible[:, t] & _inside(pos, h, w)
            passes[:, t + 1] = alive
            tracks[:, t + 1] = pos
        return AnchorTracks(tracks.astype(np.float32), visible, check_reliable_prefix(passes, visible),
                            {"lk_tried_steps": int(tried), "lk_rescued_steps": int(rescued)})


def make_lk(**options: Any) -> AnchorTracker:
    """The registry's factory (``ANCHOR_TRACKERS["lk"]``): the generic options are not its own."""
    return LKAnchorTracker(**{k: v for k, v in options.items() if k not in GENERIC_OPTIONS})
