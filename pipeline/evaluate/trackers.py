"""The trackers that follow the conditioning points in a generated video, from frame 0.

``flow`` (default, CPU, no weights): the video's own dense flow (DIS, ``stages.flow``; the
pipeline's medium preset forward, balanced backward, as the shards' anchors use) and the
pipeline's own anchor tracker (``stages.anchors``, ``lk`` by default: each point chained through
the flow, refined with the inverted backward flow, a step that fails the forward-backward rule
re-tracked by Lucas-Kanade); a point that fails the rule is unverified from there on, its
positions the tracker's estimates. The same tracker that made the conditions measures the
generated video, so the floor (the real frames) is the tracker's own error, not a weaker
tracker's.
``cotracker``: CoTracker3 offline from a checkpoint file given by path
(``stages.entities.tracking.CoTrackerTracker``; the ``cotracker`` package is installed by the
user, imported only here). All queries of a video go through one forward pass.

A tracker is built once per evaluation (``make_point_tracker``); a failure to build it (package
missing, no checkpoint) is an ``EvaluateSetupError``: the command stops before the first video.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

TRACKERS = ("flow", "cotracker")
# one CoTracker forward pass per video (all queries tracked jointly, as the published scripts do)
COTRACKER_QUERIES_PER_PASS = 100_000


class TrackerSetupError(Exception):
    """The tracker cannot be built (exit 2 before the first video)."""


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class FlowPointTracker:
    """Points chained through the video's DIS flow with a forward-backward check."""

    name = "flow"

    def __init__(self, forward_preset: str = "medium", backward_preset: str = "balanced", anchor_tracker: str = "lk"):
        from stages.anchors import make_anchor_tracker
        from stages.flow.base import make_flow_backend

        try:
            self.forward_backend = make_flow_backend("dis", preset=forward_preset)
            self.backward_backend = make_flow_backend("dis", preset=backward_preset)
            self.tracker = make_anchor_tracker(anchor_tracker)
        except ValueError as e:
            raise TrackerSetupError(f"cannot set up the flow tracker: {e}") from None

    def describe(self) -> dict[str, Any]:
        import cv2

        return {"name": self.name, "version": f"opencv {cv2.__version__}", "weights_digest": None,
                "forward_flow": self.forward_backend.describe(), "backward_flow": self.backward_backend.describe(),
                **{k: v for k, v in self.tracker.describe().items() if k != "tracker"}}

    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames (L, H, W, 3) uint8 RGB, queries (Q, 2) at frame 0 -> tracks (Q, L, 2)
        float32 and verified (Q, L) bool."""
        fwd = self.forward_backend.forward(frames)
        back = self.backward_backend.backward(frames)
        out = self.tracker.track(frames, queries, fwd, back)
        verified = out.reliable if out.reliable is not None else out.visible
        return np.asarray(out.tracks, np.float32), np.asarray(verified, bool)


class CoTrackerPointTracker:
    """CoTracker3 offline (queries at frame 0, all in one pass)."""

    name = "cotracker"

    def __init__(self, checkpoint: str | None, device: str = "auto"):
        from stages.entities.tracking import CoTrackerTracker
        from stages.errors import ClipError

        try:
            self.tracker = CoTrackerTracker(checkpoint, device=device, batch_size=COTRACKER_QUERIES_PER_PASS)
        except ClipError as e:
            raise TrackerSetupError(f"cannot set up the 'cotracker' tracker: {e.message}") from None
        self.digest = file_digest(str(checkpoint))

    def describe(self) -> dict[str, Any]:
        try:
            from cotracker.version import __version__ as version
        except ImportError:
            version = "unknown"
        d = self.tracker.describe()
        return {"name": self.name, "version": f"cotracker {version}", "weights_digest": self.digest,
                "model": d.get("model"), "checkpoint": d.get("checkpoint"), "device": d.get("device"),
                "queries_per_pass": COTRACKER_QUERIES_PER_PASS}

    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.tracker.track(frames, queries)


def make_point_tracker(name: str, cotracker_checkpoint: str | None = None, device: str = "auto",
                       flow_preset: str = "medium"):
    """The tracker called ``name`` (``TRACKERS``); ``TrackerSetupError`` when it cannot be built."""
    if name == "flow":
        return FlowPointTracker(forward_preset=flow_preset)
    if name == "cotracker":
        return CoTrackerPointTracker(cotracker_checkpoint, device=device)
    raise TrackerSetupError(f"unknown tracker {name!r}; choose {' or '.join(TRACKERS)}")
