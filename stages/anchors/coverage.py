"""How much of the motion the trainers' draw keeps: coverage of the anchors' reliable spans.

The trainers' draw (``pipeline/train/loader.py``, the paper's): anchors reliable at frames 0
and 1 are the candidates, drawn by a multinomial on ``||f0||`` (``anchor_weights``); a drawn
trajectory ends at its first unreliable frame. The paper's own draw (no checks) takes every
anchor and follows it while it is in frame. :func:`coverage` compares the two, with the same
weights, in three figures (docs/trajectories.md, issue 23):

``drawable_share``   the share of ``||f0||`` weight on anchors the draw can pick (reliable at
                     frames 0 and 1), of the weight of every anchor in frame at frame 0;
``mean_span``        the ``||f0||``-weighted mean number of reliable steps per anchor, as a
                     share of the clip's ``L - 1`` steps (an anchor that is not drawable: 0);
``drawn_path_share`` the ``||f0||``-weighted path length along the reliable spans over the
                     ``||f0||``-weighted path length of every anchor along its in-frame span
                     (the unfiltered draw). ``reference`` gives the unfiltered tracks when the
                     tracks under test come from another tracker (the paper's tracks are the
                     chained dense flow), so every tracker is compared with one denominator.

:func:`roundtrip_to_anchor` is the accuracy side (a measurement, independent of the checks):
each drawable anchor's position at its last reliable frame chained back to frame 0 through
a backward flow (the bench uses DIS medium on the reversed frames), distance to the anchor;
:func:`weighted_percentile` summarises it weighted like the draw.

Conventions: tracks ``(A, L, 2)`` float (x, y); ``visible``/``reliable`` ``(A, L)`` bool;
weights ``(A,)`` non-negative.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["reliable_prefix", "step_lengths", "coverage", "roundtrip_to_anchor", "weighted_percentile"]


def reliable_prefix(mask: np.ndarray) -> np.ndarray:
    """The leading run of True of each row of ``mask`` ``(A, L)``: the frames a span keeps."""
    m = np.asarray(mask, dtype=bool)
    return np.logical_and.accumulate(m, axis=1) if m.size else m.copy()


def step_lengths(tracks: np.ndarray) -> np.ndarray:
    """Length of every step of every track: ``(A, L-1)`` float64 px."""
    d = np.diff(np.asarray(tracks, np.float64), axis=1)
    return np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)


def _spans(tracks: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per track, the number of steps inside the span ``frames`` (a prefix) and its path length."""
    steps = frames[:, :-1] & frames[:, 1:]
    lengths = np.where(steps, step_lengths(tracks), 0.0)
    return steps.sum(axis=1), lengths.sum(axis=1)


def coverage(tracks: np.ndarray, visible: np.ndarray, reliable: np.ndarray, weights: np.ndarray,
             reference: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The three coverage figures of the module docstring (floats in [0, 1], None when the
    clip has no weight or no path) and the counts behind them.

    ``reliable`` is reduced to its prefix (and to ``visible``); ``reference`` = ``(tracks,
    visible)`` of the unfiltered draw, default ``(tracks, visible)`` themselves. Returns
    ``drawable_share``, ``mean_span``, ``drawn_path_share``, ``drawable`` (count),
    ``path_px`` / ``reference_path_px`` (the weighted path sums divided by the total weight:
    the expected path of one draw, px).
    """
    tracks = np.asarray(tracks, np.float64)
    visible = np.asarray(visible, dtype=bool)
    reliable = np.asarray(reliable, dtype=bool)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or visible.shape != tracks.shape[:2] or reliable.shape != visible.shape:
        raise ValueError(f"tracks (A, L, 2), visible and reliable (A, L) expected, got {tracks.shape}, "
                         f"{visible.shape}, {reliable.shape}")
    w = np.asarray(weights, np.float64).ravel()
    if w.shape[0] != tracks.shape[0] or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be (A,) finite and non-negative")
    ref_tracks, ref_visible = (tracks, visible) if reference is None else (
        np.asarray(reference[0], np.float64), np.asarray(reference[1], dtype=bool))
    if ref_tracks.shape != tracks.shape or ref_visible.shape != visible.shape:
        raise ValueError("the reference tracks must have the shape of the tracks")
    a, length = visible.shape
    rel = reliable_prefix(reliable & visible)
    drawable = rel[:, 0] & rel[:, 1] if length > 1 else np.zeros(a, bool)
    rel &= drawable[:, None]
    base = ref_visible[:, 0]
    total = float(w[base].sum())
    n_steps, path = _spans(tracks, rel)
    _, ref_path = _spans(ref_tracks, reliable_prefix(ref_visible))
    ref_sum = float((w * ref_path)[base].sum())
    return {
        "drawable_share": float(w[drawable].sum()) / total if total > 0 else None,
        "mean_span": float((w * n_steps).sum()) / total / (length - 1) if total > 0 and length > 1 else None,
        "drawn_path_share": float((w * path).sum()) / ref_sum if ref_sum > 0 else None,
        "drawable": int(drawable.sum()),
        "path_px": float((w * path).sum()) / total if total > 0 else None,
        "reference_path_px": ref_sum / total if total > 0 else None,
    }


def roundtrip_to_anchor(tracks: np.ndarray, reliable: np.ndarray,
                        backward_flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round trip of each drawable anchor from its last reliable frame: ``(err (A,) float64,
    drawable (A,) bool)``.

    For an anchor reliable at frames 0 and 1 whose reliable prefix ends at frame k, its
    position at k is chained back to frame 0 through ``backward_flow[k-1] .. backward_flow[0]``
    (``backward_flow[t]`` maps frame t+1 to t; bilinear, as ``track_points``); ``err`` is the
    distance to the anchor (``inf`` when the chain leaves the frame; NaN for anchors that are
    not drawable). Independent of the checks when ``backward_flow`` is not the checks' flow.
    """
    from ..trajectories import _inside, bilinear_sample

    tracks = np.asarray(tracks, np.float64)
    back = np.asarray(backward_flow)
    a, length = tracks.shape[:2]
    if back.ndim != 4 or back.shape[:2] != (length - 1, 2):
        raise ValueError(f"backward flow (L-1, 2, H, W) expected for L = {length}, got {back.shape}")
    _, _, h, w = back.shape
    rel = reliable_prefix(reliable)
    drawable = rel[:, 0] & rel[:, 1] if length > 1 else np.zeros(a, bool)
    last = rel.sum(axis=1) - 1
    err = np.full(a, np.nan)
    pos = tracks[np.arange(a), np.maximum(last, 0)].copy()
    inside = np.ones(a, bool)
    for s in range(length - 2, -1, -1):
        move = np.flatnonzero(drawable & (last > s))     # anchors whose chain passes frame s+1 -> s
        if move.size:
            pos[move] += bilinear_sample(back[s], pos[move]).astype(np.float64)
            inside[move] &= _inside(pos[move], h, w)
    d = pos - tracks[:, 0]
    err[drawable] = np.where(inside[drawable], np.sqrt(d[drawable, 0] ** 2 + d[drawable, 1] ** 2), np.inf)
    return err, drawable


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` under ``weights``: the smallest value whose
    cumulative weight reaches ``q`` % of the total (``inf`` values count; NaN ones and
    zero-weight ones are left out). None when nothing is left."""
    v = np.asarray(values, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    keep = ~np.isnan(v) & (w > 0)
    if not keep.any():
        return None
    v, w = v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, float(q) / 100.0 * cum[-1] * (1 - 1e-12), side="left"))
    return float(v[order][min(i, v.size - 1)])
