"""Anchor trackers: one interface, one registry, the chained-flow backend, and the one call
that gives the anchors step its arrays.

Every backend follows the anchors of DragNUWA's shifted grid (``stages.trajectories``) from
frame 0 through the clip and fills the same arrays (``AnchorTracks``):

``tracks``   ``(A, L, 2)`` float32 (x, y) per frame (profile pixels, pixel centers at
             integers; coordinates past an anchor's reliable span are estimates);
``visible``  ``(A, L)`` bool, the point is in frame (and, for trackers that know it, not
             occluded);
``reliable`` ``(A, L)`` bool, a prefix per anchor: the frames whose positions passed the
             backend's checks; ``reliable[:, 0] = reliable[:, 1]`` (an anchor counts at
             frame 0 only when it can be followed one step), ``reliable`` implies ``visible``.
             None only when a backend is asked for no checks (``FlowAnchorTracker`` without a
             backward flow: ``trajectories.reliability: false``).

A backend class declares ``name``, ``device_kind`` (``"cpu"`` or ``"torch"``: where the run
places it), ``needs_flow`` / ``needs_backward_flow`` (the inputs it reads), ``describe()``
(its name and settings, for the sample's meta) and ``track``; ``track_many`` takes several
clips at once (a torch backend batches them; the CPU ones loop).

``ANCHOR_TRACKERS`` (a ``stages.registry.Registry``): ``"flow"`` (the dense forward flow
chained, the forward-backward rule of ``stages.trajectories.anchor_reliability``), ``"lk"``
(``stages.anchors.lk``, the default: each step the midpoint of the forward and the inverted
backward flow, a step that fails the dense checks re-tracked by pyramidal Lucas-Kanade with
its own checks), ``"cotracker"`` (``stages.anchors.cotracker``:
CoTracker3 on the grid, imported when chosen). ``make_anchor_tracker(name, **options)``
builds one; options named in ``GENERIC_OPTIONS`` are dropped by backends with no use for
them, any other unknown option is an error.

``track_anchors(tracker, frames, flow, ...)`` is the anchors step's call: the grid and its
shift, the paper's ``||f0||`` weights from the dense flow, the tracker's arrays, in
``stages.trajectories.compute_anchors``'s layout plus ``tracker`` (describe()) and
``tracker_stats``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..registry import Registry
from ..trajectories import (FB_ROUNDTRIP_PX, FB_STEP_PX, FB_STEP_REL, anchor_grid, anchor_reliability,
                            anchor_weights, sample_delta, track_points)

__all__ = [
    "AnchorTracks",
    "AnchorTracker",
    "FlowAnchorTracker",
    "ANCHOR_TRACKERS",
    "GENERIC_OPTIONS",
    "make_anchor_tracker",
    "anchor_setup",
    "track_anchors",
    "track_anchors_many",
    "check_reliable_prefix",
]

# Options the anchors step may pass to every backend; the CPU ones ignore them.
GENERIC_OPTIONS = ("device", "checkpoint", "batch_size")


@dataclass
class AnchorTracks:
    """What every anchor tracker returns for one clip (see the module docstring)."""

    tracks: np.ndarray
    visible: np.ndarray
    reliable: np.ndarray | None
    stats: dict[str, Any] = field(default_factory=dict)   # per-clip counts, JSON-serialisable


def check_reliable_prefix(reliable: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``reliable`` made what the interface promises: within ``visible``, a prefix per anchor,
    and frame 0 reliable only with frame 1."""
    rel = np.logical_and.accumulate(np.asarray(reliable, bool) & np.asarray(visible, bool), axis=1)
    if rel.shape[1] > 1:
        rel[:, 0] = rel[:, 1]
    return rel


class AnchorTracker:
    """Interface of an anchor tracker (one instance per worker, reused for every clip)."""

    name = "base"
    device_kind = "cpu"
    needs_flow = False
    needs_backward_flow = False

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name}

    def track(self, frames: np.ndarray | None, anchors: np.ndarray, flow: np.ndarray | None = None,
              backward_flow: np.ndarray | None = None) -> AnchorTracks:
        """frames ``(L, H, W, 3)`` uint8 RGB (None for a backend that reads only flows),
        anchors ``(A, 2)`` (x, y) at frame 0, ``flow[t]`` / ``backward_flow[t]``
        ``(L-1, 2, H, W)`` mapping frame t to t+1 / t+1 to t -> ``AnchorTracks``."""
        raise NotImplementedError

    def track_many(self, clips: Sequence[dict[str, Any]]) -> list[AnchorTracks]:
        """Several clips, each a dict of ``track``'s arguments (``frames``, ``anchors``,
        ``flow``, ``backward_flow``); results in the same order. Here one at a time."""
        return [self.track(c.get("frames"), c["anchors"], c.get("flow"), c.get("backward_flow")) for c in clips]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def _check_rule(step_px: float | None, step_rel: float, roundtrip_px: float | None) -> None:
    if step_px is not None and (not float(step_px) > 0 or float(step_rel) < 0):
        raise ValueError(f"step threshold must have step_px > 0 and step_rel >= 0, got {step_px}, {step_rel}")
    if roundtrip_px is not None and not float(roundtrip_px) > 0:
        raise ValueError(f"roundtrip_px must be > 0 px or None, got {roundtrip_px}")


class FlowAnchorTracker(AnchorTracker):
    """The dense forward flow chained (``stages.trajectories.track_points``) and the
    forward-backward rule (``anchor_reliability``: step FB error <= ``step_px + step_rel *
    |step|``, position chained back to frame 0 within ``roundtrip_px``; None turns a test
    off). Without a backward flow it marks nothing (``reliable`` None)."""

    name = "flow"
    device_kind = "cpu"
    needs_flow = True
    needs_backward_flow = True

    def __init__(self, step_px: float | None = FB_STEP_PX, step_rel: float = FB_STEP_REL,
                 roundtrip_px: float | None = FB_ROUNDTRIP_PX):
        _check_rule(step_px, step_rel, roundtrip_px)
        self.step_px = None if step_px is None else float(step_px)
        self.step_rel = float(step_rel)
        self.roundtrip_px = None if roundtrip_px is None else float(roundtrip_px)

    def rule(self) -> dict[str, Any]:
        return {"step_px": self.step_px, "step_rel": self.step_rel, "roundtrip_px": self.roundtrip_px}

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name, "tracking": "dense forward flow chained, bilinear",
                "rule": "step FB error <= step_px + step_rel * |step| (backward flow); position chained back "
                        "to frame 0 through the backward flow within roundtrip_px", **self.rule()}

    def track(self, frames, anchors, flow=None, backward_flow=None) -> AnchorTracks:
        if flow is None:
            raise ValueError("the flow anchor tracker needs the forward flow")
        if backward_flow is not None and np.shape(backward_flow) != np.shape(flow):
            raise ValueError(f"backward flow {np.shape(backward_flow)} must match the forward flow {np.shape(flow)}")
        tracks, visible = track_points(anchors, flow)
        reliable = None
        if backward_flow is not None:
            reliable = anchor_reliability(tracks, visible, backward_flow, self.step_px, self.step_rel,
                                          self.roundtrip_px)
        return AnchorTracks(tracks, visible, reliable)


# ---- registry --------------------------------------------------------------------------------

def _make_flow(**options: Any) -> AnchorTracker:
    return FlowAnchorTracker(**{k: v for k, v in options.items() if k not in GENERIC_OPTIONS})


# name -> factory(**options) -> AnchorTracker; the torch backend is imported when chosen.
ANCHOR_TRACKERS = Registry("anchor tracker", {
    "flow": _make_flow,
    "lk": "stages.anchors.lk:make_lk",
    "cotracker": "stages.anchors.cotracker:make_cotracker",
})


def make_anchor_tracker(name: str, **options: Any) -> AnchorTracker:
    """The anchor tracker called ``name`` (``ANCHOR_TRACKERS``) built with ``options`` (its
    own settings; ``GENERIC_OPTIONS`` are dropped by backends that have no use for them)."""
    return ANCHOR_TRACKERS.create(name, **options)


# ---- the anchors step's call -----------------------------------------------------------------

def anchor_setup(flow: np.ndarray, interval: int = 16, rng: np.random.Generator | None = None,
                 delta: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The grid the paper's sampler uses for one clip: ``(anchors (A, 2) float32, weights (A,)
    float32 = ||flow[0]|| at each anchor, delta)``; ``delta`` None draws it from ``rng``
    (``sample_delta``; None: a fresh generator), as ``compute_anchors`` does."""
    flow = np.asarray(flow)
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] < 1:
        raise ValueError(f"flow must be shaped (L-1, 2, H, W) with L >= 2, got {flow.shape}")
    interval = int(interval)
    if delta is None:
        delta = sample_delta(rng if rng is not None else np.random.default_rng(), interval)
    delta = (int(delta[0]), int(delta[1]))
    anchors = anchor_grid(flow.shape[2], flow.shape[3], interval, delta)
    return anchors, anchor_weights(flow, anchors), delta


def _result(tracker: AnchorTracker, out: AnchorTracks, weights: np.ndarray, delta, interval: int) -> dict[str, Any]:
    return {
        "anchor_tracks": out.tracks,
        "anchor_weights": weights,
        "anchor_visible": out.visible,
        "anchor_reliable": out.reliable,
        "delta": delta,
        "interval": int(interval),
        "tracker": tracker.describe(),
        "tracker_stats": dict(out.stats),
    }


def track_anchors(tracker: AnchorTracker, frames: np.ndarray | None, flow: np.ndarray,
                  backward_flow: np.ndarray | None = None, interval: int = 16,
                  rng: np.random.Generator | None = None, delta: tuple[int, int] | None = None) -> dict[str, Any]:
    """Grid, weights and ``tracker``'s arrays for one clip, in ``compute_anchors``' layout
    (``anchor_tracks``, ``anchor_weights``, ``anchor_visible``, ``anchor_reliable``, ``delta``,
    ``interval``) plus ``tracker`` (its describe()) and ``tracker_stats``. The weights are
    always the dense flow's ``||f0||`` (the paper's), whatever follows the anchors."""
    return track_anchors_many(tracker, [dict(frames=frames, flow=flow, backward_flow=backward_flow, rng=rng,
                                             delta=delta)], interval)[0]


def track_anchors_many(tracker: AnchorTracker, clips: Sequence[dict[str, Any]], interval: int = 16) -> list[dict[str, Any]]:
    """``track_anchors`` of several clips (dicts of its arguments: ``frames``, ``flow``,
    ``backward_flow``, ``rng``, ``delta``), the tracker seeing all of them in one
    ``track_many`` call (a model batches them)."""
    setups = [anchor_setup(c["flow"], interval, c.get("rng"), c.get("delta")) for c in clips]
    for c in clips:
        back = c.get("backward_flow")
        if tracker.needs_backward_flow and back is not None and np.shape(back) != np.shape(c["flow"]):
            raise ValueError(f"backward flow {np.shape(back)} must match the forward flow {np.shape(c['flow'])}")
    outs = tracker.track_many([{"frames": c.get("frames"), "anchors": anchors, "flow": c["flow"],
                                "backward_flow": c.get("backward_flow")} for c, (anchors, _, _) in zip(clips, setups)])
    return [_result(tracker, out, weights, delta, interval) for out, (_, weights, delta) in zip(outs, setups)]
