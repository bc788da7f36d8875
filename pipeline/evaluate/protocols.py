"""Named ObjMC protocols: which points are queried, which frames count, what the distance is
measured against, and how it is averaged (docs/evaluation.md compares them).

``objmc`` (default, ours)
    The conditioning trajectories of the set; queries = their frame-0 points (sub-pixel); the
    distance between the tracked and the conditioning position at every frame t >= 1 inside the
    point's span (frame 0 is the query: its error is 0 by construction, so it is not counted);
    tracked positions the tracker could not verify are counted where it puts them (never
    skipped); the video must have exactly L frames; the mean over every (point, frame) pair
    of every evaluated sample.
``draganything`` (showlab/DragAnything ``utils/Eval_ObjMC/ObjMC.py`` with
``utils/cotracker/Generate_Trajectory_for_VIPSeg.py``)
    The entities; each entity center is replaced by the nearest point of CoTracker's 100 x 100
    grid (the grid track nearest the center); tracked coordinates truncated to integers; every
    frame counted, frame 0 included, no visibility; frames paired up to the shorter of the
    video and the set (``zip``); pooled over every (entity, frame) pair.
``motionpro`` (HiDream-ai/MotionPro ``tools/eval_co_tracker_acc.py``)
    The conditioning trajectories; queries = an 8 x 8 block around the integer start of each
    trajectory (the block is tracked, its point at the start is scored); frames 1 .. L-1 (our
    trajectories' spans); the first L frames of the video; the mean per video, then over videos.
``ino`` (Frame In-N-Out ``evaluation/evaluate_INO_Traj.py``)
    The same tracker with the same queries (the trajectories' integer frame-0 points) on the
    generated video and on the real clip; the distance between the two tracks (coordinates
    truncated to integers) at every frame, frame 0 included, spans ignored; both videos
    resampled to L frames by ``linspace(0, n-1, L)`` (integer indices); mean per frame over
    points, per video over frames, then over videos.

Every protocol resizes a video of another size but the same aspect to the profile size
(recorded per sample); another aspect is an error row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# CoTracker's working resolution (H, W) and the margin of its query grids (W / 64):
# cotracker.models.core.model_utils.get_points_on_a_grid at the predictor's interp_shape.
COTRACKER_INTERP = (384, 512)
FRAME_RULES = ("exact", "truncate", "prefix", "linspace")
ASPECT_TOLERANCE = 0.01     # relative difference of W/H accepted for a resize to the profile


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    conditions: str = "trajectories"   # "trajectories" | "entities": what is queried and scored
    queries: str = "points"            # "points" | "grid" (nearest grid point) | "block" (block x block)
    query_int: bool = False            # queries truncated to integer pixels
    grid_size: int = 0
    block: int = 0
    reference: str = "conditions"      # "conditions" | "tracker_on_real"
    frame0: bool = False               # frame 0 counted
    span_only: bool = True             # only frames inside the span (entities: visible)
    track_int: bool = False            # tracked coordinates truncated to integers
    frames: str = "exact"              # FRAME_RULES: how a video with another frame count is handled
    aggregate: str = "pooled"          # "pooled" over (point, frame) pairs | "per_video" means, then their mean
    resize: str = "profile"            # a video of another size (same aspect) is resized to the profile size

    def params(self) -> dict:
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("objmc", "trajshards (docs/evaluation.md)"),
    Protocol("draganything", "showlab/DragAnything utils/Eval_ObjMC/ObjMC.py + utils/cotracker/"
             "Generate_Trajectory_for_VIPSeg.py (grid_size 100)", conditions="entities", queries="grid",
             grid_size=100, frame0=True, span_only=False, track_int=True, frames="truncate"),
    Protocol("motionpro", "HiDream-ai/MotionPro tools/eval_co_tracker_acc.py", queries="block", block=8,
             query_int=True, frames="prefix", aggregate="per_video"),
    Protocol("ino", "Frame In-N-Out evaluation/evaluate_INO_Traj.py", query_int=True, reference="tracker_on_real",
             frame0=True, span_only=False, track_int=True, frames="linspace", aggregate="per_video"),
)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def cotracker_grid(size: int, width: int, height: int) -> np.ndarray:
    """CoTracker's ``size`` x ``size`` query grid (``get_points_on_a_grid`` at its 384 x 512
    working size, margin 512/64 = 8 px there), in the pixels of a ``width`` x ``height`` video
    (its tracks are scaled back by (W-1)/511, (H-1)/383): (size*size, 2) float64, row-major."""
    ih, iw = COTRACKER_INTERP
    margin = iw / 64.0
    ys = np.linspace(margin, ih - margin, size)
    xs = np.linspace(margin, iw - margin, size)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([gx.ravel() * (width - 1) / (iw - 1), gy.ravel() * (height - 1) / (ih - 1)], 1)
    return pts


def make_queries(p: Protocol, starts: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The points to track from frame 0 for conditions starting at ``starts`` (N, 2):
    ``(queries (Q, 2) float64, scored (N,) int)``, ``queries[scored[i]]`` being condition i's."""
    starts = np.asarray(starts, np.float64).reshape(-1, 2)
    n = len(starts)
    if p.queries == "points":
        q = np.trunc(starts) if p.query_int else starts.copy()
        return q, np.arange(n)
    if p.queries == "grid":
        grid = cotracker_grid(p.grid_size, width, height)
        d = ((starts[:, None, :] - grid[None]) ** 2).sum(-1)
        return grid[np.argmin(d, axis=1)], np.arange(n)
    if p.queries == "block":
        half = p.block // 2
        qs, scored = [], []
        for x, y in np.trunc(starts).astype(np.int64):
            xs = np.arange(max(x - half, 0), x + half)
            ys = np.arange(max(y - half, 0), y + half)
            gx, gy = np.meshgrid(xs, ys, indexing="ij")                 # x outer, y inner: the script's order
            block = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
            scored.append(sum(len(b) for b in qs) + int(np.flatnonzero((block[:, 0] == x) & (block[:, 1] == y))[0]))
            qs.append(block)
        return (np.concatenate(qs) if qs else np.zeros((0, 2))), np.asarray(scored, np.int64)
    raise ValueError(f"unknown query rule {p.queries!r}")


def frame_selection(p: Protocol, n: int, length: int) -> tuple[np.ndarray | None, str | None, str | None]:
    """Which of a video's ``n`` frames are evaluated against the set's ``length``:
    ``(indices, note, error)``: indices into the video (None with an error), a note when the
    video was not taken as is, an error message when the protocol refuses it."""
    if n == length:
        return np.arange(n), None, None
    if p.frames == "exact":
        return None, None, f"the video has {n} frames, the set {length} (protocol {p.name} needs exactly {length})"
    if p.frames == "truncate":
        m = min(n, length)
        if m < 2:
            return None, None, f"the video has {n} frame(s)"
        return np.arange(m), f"{n} frames, paired up to {m} (zip)", None
    if p.frames == "prefix":
        if n < length:
            return None, None, f"the video has {n} frames, protocol {p.name} needs at least {length}"
        return np.arange(length), f"{n} frames, the first {length} used", None
    if p.frames == "linspace":
        if n < 1:
            return None, None, "the video has no frame"
        return np.linspace(0, n - 1, length).astype(np.int64), f"{n} frames resampled to {length} (linspace)", None
    raise ValueError(f"unknown frame rule {p.frames!r}")


def score(p: Protocol, reference: np.ndarray, ref_mask: np.ndarray, tracked: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-(condition, frame) distances ``(N, L)`` float64 and the mask of those counted.

    ``reference`` (N, L, 2): what the tracked points should be at (the conditions, or the
    tracker on the real clip); ``ref_mask`` (N, L): where the reference holds (span,
    visibility); ``tracked`` (N, Lu, 2) with Lu <= L frames of the video."""
    ref = np.asarray(reference, np.float64)
    tr = np.asarray(tracked, np.float64)
    n, length = ref.shape[:2]
    lu = tr.shape[1]
    if p.track_int:
        tr = np.trunc(tr)
        if p.reference == "tracker_on_real":
            ref = np.trunc(ref)
    err = np.zeros((n, length))
    err[:, :lu] = np.sqrt(((tr - ref[:, :lu]) ** 2).sum(-1))
    mask = np.zeros((n, length), bool)
    mask[:, :lu] = True
    if p.span_only:
        mask &= np.asarray(ref_mask, bool)
    if not p.frame0:
        mask[:, 0] = False
    err[~mask] = 0.0
    return err, mask
