"""``"cotracker"``: CoTracker3 (offline) on the anchor grid, a torch backend (issue 23).

CoTracker follows every anchor through the clip jointly and says, per frame, whether the
point is visible and how confident it is of the position: its own visibility and
confidence replace the forward-backward rule.

* Weights by path (``checkpoint``: ``scaled_offline.pth``), loaded by the package's own
  ``CoTrackerPredictor(checkpoint=...)`` (the entity tracker's loading code); the package is
  source-only (CC BY-NC 4.0) and imported when the backend is built: missing, it is a setup
  error (``ClipError("backend_unavailable", ANCHOR_COTRACKER_INSTALL_HINT)``).
* Native outputs: we call the predictor's model directly (the predictor's ``forward`` keeps
  only a thresholded visibility): video resized to the model's resolution (bilinear, corners
  aligned, as the predictor does), queries ``(t=0, x, y)`` scaled with it, ``iters``
  refinements; tracks scaled back; the visibility and confidence probabilities kept.
* ``visible[i, t]``: visibility probability > ``visibility_threshold`` and inside the frame
  (not a prefix: a point may come back); ``reliable``: the prefix of frames that are visible
  with confidence > ``confidence_threshold`` (frame 0 reliable with frame 1, as every
  backend). Frame 0 is the anchor itself.
* ``track_many``: several clips on the resident model (a GPU operator holds several clips).
  Clips of the same size go through one call, ``batch_size`` at a time, the anchor counts
  padded to the largest (a grid shift changes the count by a row or a column) and cut back
  after. CoTracker3 offline's ``forward`` (facebookresearch/co-tracker 82e02e8) takes one
  video per call only (``coords.view(B * T, ...)`` of a tensor expanded over T fails for
  B > 1): the default ``batch_size`` is 1, and a larger one falls back to one clip per call
  when the model refuses it (``batched`` in describe() says which ran).

The defaults of the two thresholds are CoTracker's predictor's visibility threshold (0.9)
and an even confidence (0.5); without the real weights here they are not measured yet
(docs/trajectories.md says how to measure them with ``bench/anchors.py``).
``cotracker_queries`` and ``cotracker_anchor_outputs`` are the pure numpy halves around the
model call (tested without the package).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..trajectories import _inside
from .base import GENERIC_OPTIONS, AnchorTracker, AnchorTracks, check_reliable_prefix

__all__ = ["CoTrackerAnchorTracker", "cotracker_queries", "cotracker_anchor_outputs", "make_cotracker",
           "ANCHOR_COTRACKER_INSTALL_HINT", "COTRACKER_VISIBILITY", "COTRACKER_CONFIDENCE", "COTRACKER_ITERS",
           "RULE_OPTIONS"]

ANCHOR_COTRACKER_INSTALL_HINT = (
    "the 'cotracker' anchor tracker needs the CoTracker package, which is not on PyPI (source only, "
    "licence CC BY-NC 4.0): install it with "
    "`pip install git+https://github.com/facebookresearch/co-tracker.git` and set "
    "trajectories.cotracker_checkpoint to the CoTracker3 offline weights (scaled_offline.pth from the "
    "CoTracker release page); or use trajectories.tracker lk or flow (CPU, no weights)"
)
COTRACKER_VISIBILITY = 0.9     # CoTrackerPredictor's own visibility threshold
COTRACKER_CONFIDENCE = 0.5
COTRACKER_ITERS = 6            # CoTrackerPredictor's refinement count
# The forward-backward rule's options (the CPU backends'): CoTracker has its own rule.
RULE_OPTIONS = ("step_px", "step_rel", "roundtrip_px")


def cotracker_queries(anchors: Sequence[np.ndarray], height: int, width: int, model_hw: tuple[int, int]
                      ) -> tuple[np.ndarray, list[int]]:
    """Queries of a batch of clips (all ``height x width``) in the model's resolution
    ``model_hw`` = (h, w): ``(B, N, 3)`` float32 rows ``(t=0, x, y)`` (x scaled by
    ``(w_m - 1) / (width - 1)``, y likewise: corners aligned), padded to the largest anchor
    count with copies of each clip's first anchor; and each clip's own count."""
    pts = [np.asarray(a, np.float64).reshape(-1, 2) for a in anchors]
    counts = [len(p) for p in pts]
    n = max(counts) if counts else 0
    out = np.zeros((len(pts), n, 3), np.float32)
    sx = (model_hw[1] - 1) / max(width - 1, 1)
    sy = (model_hw[0] - 1) / max(height - 1, 1)
    for b, p in enumerate(pts):
        if len(p) == 0:
            continue
        full = np.concatenate([p, np.repeat(p[:1], n - len(p), 0)]) if len(p) < n else p
        out[b, :, 1] = full[:, 0] * sx
        out[b, :, 2] = full[:, 1] * sy
    return out, counts


def cotracker_anchor_outputs(coords: np.ndarray, visibility: np.ndarray, confidence: np.ndarray,
                             anchors: np.ndarray, height: int, width: int, model_hw: tuple[int, int],
                             visibility_threshold: float = COTRACKER_VISIBILITY,
                             confidence_threshold: float = COTRACKER_CONFIDENCE) -> AnchorTracks:
    """One clip's model outputs -> ``AnchorTracks``. ``coords`` ``(L, N, 2)`` in the model's
    pixels, ``visibility`` / ``confidence`` ``(L, N)`` probabilities (``N`` >= the clip's
    anchors: padding is cut off). Frame 0 is the anchor itself (the model's frame-0 estimate
    is replaced, as CoTracker's predictor does); see the module docstring for the masks."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    a = len(anchors)
    c = np.asarray(coords, np.float64)[:, :a]
    vis_p = np.asarray(visibility, np.float64)[:, :a]
    conf_p = np.asarray(confidence, np.float64)[:, :a]
    if c.ndim != 3 or c.shape[-1] != 2 or vis_p.shape != c.shape[:2] or conf_p.shape != c.shape[:2]:
        raise ValueError(f"expected coords (L, N, 2), visibility and confidence (L, N), got {np.shape(coords)}, "
                         f"{np.shape(visibility)}, {np.shape(confidence)}")
    length = c.shape[0]
    tracks = np.ascontiguousarray(c.transpose(1, 0, 2))
    tracks[..., 0] *= (width - 1) / max(model_hw[1] - 1, 1)
    tracks[..., 1] *= (height - 1) / max(model_hw[0] - 1, 1)
    tracks[:, 0] = anchors
    finite = np.isfinite(tracks).all(-1)
    inside = np.zeros((a, length), bool)
    for t in range(length):
        inside[finite[:, t], t] = _inside(tracks[finite[:, t], t], height, width)
    visible = inside & (vis_p.T > float(visibility_threshold))
    visible[:, 0] = inside[:, 0]
    confident = conf_p.T > float(confidence_threshold)
    confident[:, 0] = True
    reliable = check_reliable_prefix(visible & confident, visible)
    stats = {"confidence_median": round(float(np.median(conf_p[1:])), 4) if length > 1 and a else None}
    return AnchorTracks(np.where(np.isfinite(tracks), tracks, 0.0).astype(np.float32), visible, reliable, stats)


class CoTrackerAnchorTracker(AnchorTracker):
    """See the module docstring. ``checkpoint``: the CoTracker3 offline weights; ``device``:
    "auto" (CUDA when available) | "cuda" | "cuda:N" | "cpu"; ``batch_size``: clips per model
    call; ``iters``: the model's refinement count."""

    name = "cotracker"
    device_kind = "torch"
    needs_flow = False
    needs_backward_flow = False

    def __init__(self, checkpoint: str | None = None, device: str = "auto", batch_size: int = 1,
                 visibility_threshold: float = COTRACKER_VISIBILITY,
                 confidence_threshold: float = COTRACKER_CONFIDENCE, iters: int = COTRACKER_ITERS):
        for what, v in (("visibility_threshold", visibility_threshold), ("confidence_threshold", confidence_threshold)):
            if not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {v}")
        from ..entities.tracking import load_cotracker

        self.predictor, self.checkpoint, self.device = load_cotracker(
            checkpoint, device, ANCHOR_COTRACKER_INSTALL_HINT, "trajectories.cotracker_checkpoint")
        self.batch_size = max(1, int(batch_size))
        self.visibility_threshold = float(visibility_threshold)
        self.confidence_threshold = float(confidence_threshold)
        self.iters = max(1, int(iters))
        self.model_hw = tuple(int(v) for v in self.predictor.interp_shape)
        self.batched: bool | None = None      # whether the model took several clips per call

    def describe(self) -> dict[str, Any]:
        return {"tracker": self.name, "model": "cotracker3_offline", "checkpoint": os.path.basename(self.checkpoint),
                "device": self.device, "model_resolution": list(self.model_hw), "iters": self.iters,
                "batch_size": self.batch_size, "batched": self.batched,
                "visibility_threshold": self.visibility_threshold, "confidence_threshold": self.confidence_threshold,
                "rule": "visible: visibility > visibility_threshold and in frame; reliable: the prefix of visible "
                        "frames with confidence > confidence_threshold"}

    def track(self, frames, anchors, flow=None, backward_flow=None) -> AnchorTracks:
        return self.track_many([{"frames": frames, "anchors": anchors}])[0]

    def track_many(self, clips: Sequence[dict[str, Any]]) -> list[AnchorTracks]:
        out: list[AnchorTracks | None] = [None] * len(clips)
        groups: dict[tuple, list[int]] = {}
        for k, c in enumerate(clips):
            f = np.asarray(c["frames"])
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frames must be (L, H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
            groups.setdefault(f.shape, []).append(k)
        for shape, members in groups.items():
            length, h, w = shape[:3]
            for i in range(0, len(members), self.batch_size):
                batch = members[i:i + self.batch_size]
                anchors = [np.asarray(clips[k]["anchors"], np.float64).reshape(-1, 2) for k in batch]
                if max(len(a) for a in anchors) == 0:
                    for k in batch:
                        out[k] = AnchorTracks(np.zeros((0, length, 2), np.float32), np.zeros((0, length), bool),
                                              np.zeros((0, length), bool))
                    continue
                queries, counts = cotracker_queries(anchors, h, w, self.model_hw)
                video = np.stack([np.asarray(clips[k]["frames"]) for k in batch])          # (B, L, H, W, 3)
                coords, vis, conf = self._run(video, queries)
                for j, k in enumerate(batch):
                    out[k] = cotracker_anchor_outputs(coords[j], vis[j], conf[j], anchors[j], h, w, self.model_hw,
                                                      self.visibility_threshold, self.confidence_threshold)
        return out  # type: ignore[return-value]


    def _run(self, video: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model on ``video`` (B, L, H, W, 3) uint8 and ``queries`` (B, N, 3) (model pixels):
        coords (B, L, N, 2) in model pixels, visibility and confidence (B, L, N)."""
        import torch
        import torch.nn.functional as F

        b, length, h, w = video.shape[:4]
        if b > 1 and self.batched is False:
            parts = [self._run(video[j:j + 1], queries[j:j + 1]) for j in range(b)]
            return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
        with torch.no_grad():
            v = torch.from_numpy(np.ascontiguousarray(video)).to(self.device).permute(0, 1, 4, 2, 3).float()
            v = F.interpolate(v.reshape(-1, 3, h, w), self.model_hw, mode="bilinear", align_corners=True)
            v = v.reshape(b, length, 3, *self.model_hw)
            q = torch.from_numpy(queries).to(self.device)
            try:
                coords, vis, conf, *_ = self.predictor.model(video=v, queries=q, iters=self.iters)
            except RuntimeError as e:
                if b == 1 or "view size is not compatible" not in str(e):
                    raise
                self.batched = False          # this model takes one video per call (module docstring)
                return self._run(video, queries)
        if b > 1:
            self.batched = True
        return coords.float().cpu().numpy(), vis.float().cpu().numpy(), conf.float().cpu().numpy()


def make_cotracker(**options: Any) -> AnchorTracker:
    """The registry's factory: the forward-backward rule's options (``RULE_OPTIONS``) are not
    CoTracker's and are dropped; ``GENERIC_OPTIONS`` (checkpoint, device, batch_size) are its."""
    known = set(GENERIC_OPTIONS) | {"visibility_threshold", "confidence_threshold", "iters"}
    opts = {k: v for k, v in options.items() if k not in RULE_OPTIONS}
    extra = sorted(set(opts) - known)
    if extra:
        raise ValueError(f"unknown option(s) for anchor tracker 'cotracker': {', '.join(extra)}")
    return CoTrackerAnchorTracker(**opts)


make_cotracker.device_kind = CoTrackerAnchorTracker.device_kind   # ANCHOR_TRACKERS.device_kind reads it
