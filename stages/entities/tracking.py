"""Entity center trackers: follow each entity's incircle center from frame 0 through the clip.

Public API
----------
``CenterTracker``                       the interface: ``track(frames, centers, flow=None,
                                        backward_flow=None) -> (tracks (K, L, 2) float32,
                                        visibility (K, L) bool)`` and ``describe() -> dict``;
                                        ``needs_flow`` / ``needs_backward_flow`` say which
                                        optional inputs it uses.
``FlowTracker(fb_threshold=1.5, max_support=64)``
                                        CPU, no weights: chains the dense forward flow with a
                                        forward-backward consistency check; the entity's other
                                        pixels (support points) guard the center.
``CoTrackerTracker(checkpoint, device="auto", batch_size=256)``
                                        CoTracker3 offline (``cotracker`` package, installed
                                        by the user; imported lazily).
``cotracker_inputs(frames, centers)``   pure input preparation for CoTracker (numpy).
``cotracker_outputs(tracks, visibility, height, width)``
                                        pure output conversion to our layout.
``make_tracker(name, **options)``       ``"flow"`` | ``"cotracker"`` (``TRACKERS``, a registry).
``COTRACKER_INSTALL_HINT``              the message shown when the package is missing.

Conventions: points are (x, y) float32, x right, y down, profile pixels, pixel centers at
integers (the anchor tracks' convention). ``tracks[k, 0]`` is the query center itself and
``visibility[k, 0]`` is True for a center inside the frame. Coordinates of invisible points
are estimates (see each tracker) and must be masked with ``visibility`` by consumers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..devices import resolve_device
from ..errors import ClipError
from ..registry import Registry
from ..trajectories import _inside, bilinear_sample

__all__ = [
    "CenterTracker",
    "FlowTracker",
    "CoTrackerTracker",
    "cotracker_inputs",
    "cotracker_outputs",
    "make_tracker",
    "TRACKERS",
    "COTRACKER_INSTALL_HINT",
]

COTRACKER_INSTALL_HINT = (
    "the 'cotracker' tracker needs the CoTracker package, which is not on PyPI (source only, "
    "licence CC BY-NC 4.0): install it with "
    "`pip install git+https://github.com/facebookresearch/co-tracker.git` and pass the "
    "CoTracker3 offline checkpoint with --cotracker-checkpoint PATH (scaled_offline.pth from "
    "the CoTracker release page); or use --tracker flow (CPU, no weights)"
)


def _check_centers(centers: np.ndarray) -> np.ndarray:
    c = np.asarray(centers, np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(c)):
        raise ValueError("centers must be finite")
    return c


class CenterTracker:
    """Interface of an entity center tracker (one instance per worker, reused per clip)."""

    name = "base"
    needs_flow = False
    needs_backward_flow = False
    device_kind = "cpu"           # "torch": a model (its own GPU operator on a GPU cluster)

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name}

    def track(self, frames: np.ndarray, centers: np.ndarray, flow: np.ndarray | None = None,
              backward_flow: np.ndarray | None = None, entity_mask: np.ndarray | None = None,
              entity_ids: np.ndarray | None = None, radii: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """frames ``(L, H, W, 3)`` uint8 RGB, centers ``(K, 2)`` at frame 0 ->
        ``tracks (K, L, 2) float32``, ``visibility (K, L) bool``. ``entity_mask`` (H, W),
        ``entity_ids`` (K,) and ``radii`` (K,) (frame-0 id map and incircles, optional) let a
        tracker use the entity around its center."""
        raise NotImplementedError


# --------------------------------------------------------------------------- flow tracker
class FlowTracker(CenterTracker):
    """Chains the dense flow with bilinear sampling; visibility from the frame bounds and a
    forward-backward (FB) consistency check; the rest of the entity keeps the center honest.

    FB test of a step ``p -> q = p + d`` from frame t to t+1: ``q`` inside the frame and
    ``|d + B_t(q)| < fb_threshold`` px, where ``B_t = backward_flow[t]`` maps frame t+1 back
    to t (the surface found at ``q`` in frame t+1 comes back to ``p``).

    Entity support (when the frame-0 id map is given, as the entity stage does): up to
    ``max_support`` points on a grid inside each entity and, when ``radii`` are given,
    inside its incircle (the core of the entity around its center; eroded by 2 px when that
    leaves any) are chained through the flow too, each dropped for good at its first failed FB
    test. Per step, the entity's motion ``m`` is the per-axis median of its live points'
    steps and its spread ``s = 1.4826 * MAD`` (norm of the per-axis values); it exists while
    at least ``max(3, 10%)`` of the points live.

    Per step t -> t+1, for a center ``p`` (float64 internally):

    * visible at t: ``d = F_t(p)``. If the step ``d`` passes the FB test but
      ``|d - m| > outlier_px + outlier_k * s`` (defaults 0.5 px and 2), the center's own flow
      is an outlier of its entity's motion (typically flow smeared onto it from an occluder
      passing by, which the FB test cannot see when both flows are smeared alike): the step
      is ``m``; otherwise it is ``d`` (so a deforming or rotating entity, whose spread is
      large, keeps its center's own flow; and a step ``d`` that fails the FB test is never
      rescued by ``m``). Step FB-verified: ``p <- q``, visible at t+1, and
      the step is the center's last verified velocity ``v``. Not verified (the center is
      occluded at t+1 or leaves the frame): invisible at t+1 and ``p <- p + m`` (or ``+ v``
      when the entity has no live support, or ``+ d`` before any verified step).
    * invisible at t: ``p <- p + m`` (the visible part of the entity carries it; ``v``, then
      ``d``, when there is no support), and the center is visible again at t+1 when this step
      passes the FB test (the surface now under it moved like the entity: it came out from
      behind its occluder).

    Coordinates while invisible are these estimates (they may lie outside the frame);
    visibility says which coordinates are measured. A background moving like the entity
    can re-acquire a center early (a known limit). Without the id map there is no support
    (``m`` never exists).
    """

    name = "flow"
    needs_flow = True
    needs_backward_flow = True

    def __init__(self, fb_threshold: float = 1.5, max_support: int = 64, outlier_px: float = 0.5,
                 outlier_k: float = 2.0):
        fb_threshold = float(fb_threshold)
        if not fb_threshold > 0:
            raise ValueError(f"fb_threshold must be > 0 px, got {fb_threshold}")
        self.fb_threshold = fb_threshold
        self.max_support = max(0, int(max_support))
        self.outlier_px = float(outlier_px)
        self.outlier_k = float(outlier_k)

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name, "fb_threshold": self.fb_threshold, "sampling": "bilinear",
                "max_support": self.max_support,
                "outlier_rule": f"|d - m| > {self.outlier_px} + {self.outlier_k} * 1.4826 * MAD",
                "invisible_coords": "entity motion, else constant-velocity extrapolation"}

    def support_points(self, entity_mask: np.ndarray, entity_ids: np.ndarray, centers: np.ndarray | None = None,
                       radii: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Grid points inside each entity (and inside its incircle when ``centers``/``radii``
        are given): (N, 2) float64 (x, y) and their entity index (N,)."""
        import cv2

        mask = np.asarray(entity_mask)
        pts, owner = [], []
        kernel = np.ones((5, 5), np.uint8)
        h, w = mask.shape
        for k, v in enumerate(np.asarray(entity_ids).ravel()):
            m = mask == v
            if centers is not None and radii is not None:
                yy, xx = np.ogrid[0:h, 0:w]
                m &= (xx - centers[k][0]) ** 2 + (yy - centers[k][1]) ** 2 <= float(radii[k]) ** 2
            eroded = cv2.erode(m.astype(np.uint8), kernel).astype(bool)
            if eroded.any():
                m = eroded
            ys, xs = np.nonzero(m)
            if xs.size == 0 or self.max_support == 0:
                continue
            step = max(1, int(np.sqrt(xs.size / self.max_support)))
            sel = (xs % step == 0) & (ys % step == 0)
            if sel.sum() > self.max_support:      # keep an even subset, deterministic
                sel = np.flatnonzero(sel)[np.linspace(0, sel.sum() - 1, self.max_support).astype(int)]
            pts.append(np.stack([xs[sel], ys[sel]], 1).astype(np.float64))
            owner.append(np.full(len(pts[-1]), k))
        if not pts:
            return np.zeros((0, 2)), np.zeros(0, int)
        return np.concatenate(pts), np.concatenate(owner)

    def _fb_ok(self, back_t: np.ndarray, p: np.ndarray, step: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        q = p + step
        if len(q) == 0:
            return q, np.zeros(0, bool)
        b = bilinear_sample(back_t, q).astype(np.float64)
        return q, _inside(q, h, w) & (((step + b) ** 2).sum(1) < self.fb_threshold ** 2)

    def track(self, frames, centers, flow=None, backward_flow=None, entity_mask=None, entity_ids=None,
              radii=None):
        if flow is None or backward_flow is None:
            raise ValueError("the flow tracker needs the forward and the backward flow")
        flow = np.asarray(flow)
        back = np.asarray(backward_flow)
        if flow.ndim != 4 or flow.shape[1] != 2 or back.shape != flow.shape:
            raise ValueError(f"forward/backward flow must both be (L-1, 2, H, W), got {flow.shape} and {back.shape}")
        c = _check_centers(centers)
        k = c.shape[0]
        steps, _, h, w = flow.shape
        tracks = np.empty((k, steps + 1, 2), np.float64)
        vis = np.zeros((k, steps + 1), bool)
        pos = c.copy()
        visible = _inside(pos, h, w)
        velocity = np.zeros((k, 2), np.float64)
        has_velocity = np.zeros(k, bool)
        tracks[:, 0], vis[:, 0] = pos, visible
        if entity_mask is not None and entity_ids is not None and k:
            sup, owner = self.support_points(entity_mask, entity_ids, c if radii is not None else None, radii)
        else:
            sup, owner = np.zeros((0, 2)), np.zeros(0, int)
        alive = np.ones(len(sup), bool)
        need = np.maximum(3, np.ceil(0.1 * np.bincount(owner, minlength=k))).astype(int)
        sample = lambda f, p: bilinear_sample(f, p).astype(np.float64) if len(p) else np.zeros((0, 2))  # noqa: E731
        for t in range(steps):
            # the entities' own motion from their live support points
            m = np.zeros((k, 2))
            spread = np.zeros(k)
            has_m = np.zeros(k, bool)
            if len(sup):
                ds = sample(flow[t], sup)
                qs, ok_s = self._fb_ok(back[t], sup, ds, h, w)
                ok_s &= alive
                for e in np.unique(owner[ok_s]):
                    sel = ok_s & (owner == e)
                    if sel.sum() >= need[e]:
                        m[e] = np.median(ds[sel], 0)
                        spread[e] = float(np.linalg.norm(1.4826 * np.median(np.abs(ds[sel] - m[e]), 0)))
                        has_m[e] = True
                sup = np.where(ok_s[:, None], qs, sup)
                alive = ok_s
            d = sample(flow[t], pos)
            if not np.all(np.isfinite(d[visible])):
                raise ValueError(f"non-finite flow sampled at step {t}")
            # A visible center whose own step passes the FB test but is an outlier of its
            # entity's motion follows the entity instead; one whose own step fails stays failed.
            _, own_ok = self._fb_ok(back[t], pos, d, h, w)
            outlier = own_ok & has_m & (np.linalg.norm(d - m, axis=1) > self.outlier_px + self.outlier_k * spread)
            carried = np.where(has_m[:, None], m, np.where(has_velocity[:, None], velocity, d))
            step = np.where((visible & ~outlier)[:, None], d, np.where(visible[:, None], m, carried))
            q, ok = self._fb_ok(back[t], pos, step, h, w)
            fallback = visible & ~ok
            q[fallback] = pos[fallback] + carried[fallback]
            velocity[ok] = step[ok]
            has_velocity |= ok
            pos, visible = q, ok
            tracks[:, t + 1], vis[:, t + 1] = pos, visible
        return tracks.astype(np.float32), vis


# --------------------------------------------------------------------------- CoTracker
def cotracker_inputs(frames: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoTracker's inputs, as numpy (no torch, no model): a pure function.

    frames ``(L, H, W, 3)`` uint8 RGB (our frames, as stored) -> ``video`` float32
    ``(1, L, 3, H, W)``, RGB channel order (not BGR), values 0-255 (not normalised);
    centers ``(K, 2)`` (x, y) at frame 0 -> ``queries`` float32 ``(1, K, 3)`` rows
    ``(t=0, x, y)`` in input pixels (CoTracker rescales them with the video, pixel centers
    at integers, the same convention as ours).
    """
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"frames must be (L, H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
    c = _check_centers(centers)
    video = np.ascontiguousarray(f.transpose(0, 3, 1, 2)[None].astype(np.float32))
    queries = np.zeros((1, c.shape[0], 3), np.float32)
    queries[0, :, 1:] = c
    return video, queries


def cotracker_outputs(tracks: np.ndarray, visibility: np.ndarray, height: int, width: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """CoTracker's outputs ``tracks (1, L, K, 2)`` and ``visibility (1, L, K)`` (bool or
    probability) -> ours: ``(K, L, 2)`` float32 and ``(K, L)`` bool; a point outside the
    frame ``[0, W-1] x [0, H-1]`` is invisible whatever CoTracker says (CoTracker can place
    points outside the frame; the coordinates are kept, the flag says they are not seen)."""
    tr = np.asarray(tracks, np.float32)
    vi = np.asarray(visibility)
    if tr.ndim != 4 or tr.shape[0] != 1 or tr.shape[-1] != 2 or vi.shape != tr.shape[:3]:
        raise ValueError(f"expected tracks (1, L, K, 2) and visibility (1, L, K), got {tr.shape} and {vi.shape}")
    out = np.ascontiguousarray(tr[0].transpose(1, 0, 2))
    vis = (vi[0].T > 0.5) if vi.dtype != bool else vi[0].T.copy()
    inside = (out[..., 0] >= 0) & (out[..., 0] <= width - 1) & (out[..., 1] >= 0) & (out[..., 1] <= height - 1)
    return out, np.ascontiguousarray(vis & inside & np.isfinite(out).all(-1))


def load_cotracker(checkpoint: str | None, device: str, install_hint: str, setting: str):
    """CoTracker3 offline from a checkpoint file: ``(predictor on its device, checkpoint, device)``.
    The one loading path of the entity and the anchor trackers; ``ClipError``
    (``backend_unavailable``) with ``install_hint`` when the package is missing, naming
    ``setting`` when the checkpoint is not given or not there."""
    import os

    try:
        from cotracker.predictor import CoTrackerPredictor
    except ImportError as e:
        raise ClipError("backend_unavailable", f"{install_hint} (import failed: {e})") from None
    if not checkpoint:
        raise ClipError("backend_unavailable", f"CoTracker needs {setting} (the CoTracker3 offline weights, "
                                               f"scaled_offline.pth)")
    if not os.path.isfile(checkpoint):
        raise ClipError("backend_unavailable", f"CoTracker checkpoint {checkpoint} does not exist")
    dev = str(resolve_device(device, check=False))
    # CoTracker's own builder loads the state dict with map_location="cpu"; then it is moved.
    return CoTrackerPredictor(checkpoint=str(checkpoint)).to(dev).eval(), str(checkpoint), dev


class CoTrackerTracker(CenterTracker):
    """CoTracker3 offline on the profile frames, the entity centers as queries at t=0.

    ``checkpoint``: the CoTracker3 offline weights (``scaled_offline.pth``);
    ``device``: "auto" (CUDA when available) | "cuda" | "cuda:1" | "cpu";
    ``batch_size``: at most this many queries per forward pass (all entities of a clip in
    one pass unless there are more). The package is imported here (lazily): when it is
    missing, ``ClipError("backend_unavailable", COTRACKER_INSTALL_HINT)``.
    """

    name = "cotracker"
    device_kind = "torch"

    def __init__(self, checkpoint: str | None = None, device: str = "auto", batch_size: int = 256):
        self.model, self.checkpoint, self.device = load_cotracker(checkpoint, device, COTRACKER_INSTALL_HINT,
                                                                  "--cotracker-checkpoint PATH")
        self.batch_size = max(1, int(batch_size))

    def describe(self) -> dict[str, Any]:
        import os

        return {"tracker": self.name, "model": "cotracker3_offline", "checkpoint": os.path.basename(self.checkpoint),
                "device": self.device, "queries": "incircle centers at t=0", "input": "RGB float 0-255"}

    def track(self, frames, centers, flow=None, backward_flow=None, entity_mask=None, entity_ids=None, radii=None):
        import torch

        frames = np.asarray(frames)
        length, h, w = frames.shape[:3]
        c = _check_centers(centers)
        if c.shape[0] == 0:
            return np.zeros((0, length, 2), np.float32), np.zeros((0, length), bool)
        video, queries = cotracker_inputs(frames, c)
        v = torch.from_numpy(video).to(self.device)
        outs_t, outs_v = [], []
        with torch.no_grad():
            for i in range(0, c.shape[0], self.batch_size):
                q = torch.from_numpy(queries[:, i:i + self.batch_size]).to(self.device)
                tr, vi = self.model(v, queries=q)
                outs_t.append(tr.float().cpu().numpy())
                outs_v.append(vi.cpu().numpy())
        tracks, vis = cotracker_outputs(np.concatenate(outs_t, 2), np.concatenate(outs_v, 2), h, w)
        return tracks, vis


# --------------------------------------------------------------------------- registry
def _make_flow(fb_threshold: float = 1.5, max_support: int = 64, **_: Any) -> CenterTracker:
    return FlowTracker(fb_threshold, max_support)


def _make_cotracker(checkpoint: str | None = None, device: str = "auto", batch_size: int = 256, **_: Any) -> CenterTracker:
    return CoTrackerTracker(checkpoint, device, batch_size)


# name -> factory(fb_threshold=..., checkpoint=..., device=..., **ignored) -> CenterTracker;
# a plugin adds one with ``TRACKERS.register(name, factory)``.
# what the registry's readers ask without building one (the planner, the entity steps)
_make_flow.needs_backward_flow = FlowTracker.needs_backward_flow
_make_cotracker.device_kind = "torch"
TRACKERS = Registry("entity tracker", {"flow": _make_flow, "cotracker": _make_cotracker})


def make_tracker(name: str, **options: Any) -> CenterTracker:
    """The tracker called ``name`` ("flow" | "cotracker" | a plugin's, see ``TRACKERS``);
    options: fb_threshold (flow), checkpoint / device / batch_size (cotracker); others are
    ignored."""
    return TRACKERS.create(name, **options)
