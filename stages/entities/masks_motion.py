"""The motion mask source (``"motion"``): regions of frame 0 coherent in colour and flow.

CPU, no weights. ``MotionMaskSource(**params)`` runs ``segment_motion`` (the segmentation,
a pure function: superpixels of colour + flow, then merged; its docstring has the method and
``MOTION_DEFAULTS`` the parameters) on frame 0, its forward flow and, when the caller gives
it (``needs_backward_flow``), the backward flow for ``fb_reliability``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .masks import EntityMasks, MaskSource, from_label_map

__all__ = ["MotionMaskSource", "segment_motion", "fb_reliability", "MOTION_DEFAULTS"]


MOTION_DEFAULTS: dict[str, Any] = {
    "cell": 16,            # superpixel grid step (px)
    "iterations": 3,       # superpixel (k-means) iterations
    "color_weight": 10.0,  # superpixels: Lab distance that counts as one grid step
    "flow_weight": 0.5,    # superpixels: flow difference (px) that counts as one grid step
    "merge_color": 30.0,   # merging: Lab distance scale
    "merge_flow": 2.0,     # merging: flow difference scale (px/frame)
    "merge_threshold": 1.0,  # merge adjacent regions while their scaled distance is below this
    "min_region": 0.003,   # regions smaller than this fraction of the frame are merged into their closest neighbour
    "fb_threshold": 1.5,   # flow is trusted where |F(p) + B(p + F(p))| < this (px), when B is given
    "min_reliable": 0.25,  # a region's flow counts in merging when this fraction of its pixels is trusted
}


def _lab(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def fb_reliability(flow0: np.ndarray, backward0: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: forward-backward consistent pixels, ``|F(p) + B(p + F(p))| < threshold``
    (bilinear sampling of B; a target outside the frame is unreliable)."""
    import cv2

    h, w = flow0.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + flow0[0], ys + flow0[1]
    bx = cv2.remap(np.ascontiguousarray(backward0[0], np.float32), tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    by = cv2.remap(np.ascontiguousarray(backward0[1], np.float32), tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return inside & ((flow0[0] + bx) ** 2 + (flow0[1] + by) ** 2 < float(threshold) ** 2)


def _superpixels(color: np.ndarray, flow: np.ndarray, weight: np.ndarray, cell: int, iterations: int) -> np.ndarray:
    """SLIC-style clustering. ``color`` (H, W, 3) and ``flow`` (H, W, 2) are already scaled so
    that one unit weighs as one grid step; the flow term of a pixel counts only where
    ``weight`` (H, W) is 1 (trusted flow), and seeds average the flow of trusted pixels.
    Each pixel picks among the 3x3 seeds around its grid cell (the first of equal ones).

    The squared distance of pixel x to seed s, ``|xb - sb|^2 + w |xf - sf|^2``, is ranked as
    ``|sb|^2 + w |sf|^2 - 2 (xb.sb + w xf.sf)`` (the pixel's own norm is the same for all its
    candidates): one batched product per grid cell of its pixels by its 9 candidate seeds."""
    h, w = color.shape[:2]
    ny, nx = max(1, -(-h // cell)), max(1, -(-w // cell))
    ph, pw = ny * cell, nx * cell                                   # padded to whole cells
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.concatenate([color, np.stack([xs / cell, ys / cell], -1)], -1).astype(np.float64)
    fl = flow.astype(np.float64)
    wt = weight.astype(np.float64)
    k = ny * nx
    lab0 = (np.minimum(ys // cell, ny - 1) * nx + np.minimum(xs // cell, nx - 1)).ravel()

    def cells(a: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> (ny * nx, cell * cell, ...), padding with zeros."""
        pad = np.zeros((ph, pw) + a.shape[2:], a.dtype)
        pad[:h, :w] = a
        return pad.reshape((ny, cell, nx, cell) + a.shape[2:]).swapaxes(1, 2).reshape((k, cell * cell) + a.shape[2:])

    # per-pixel features [base, w * flow, 1, w] grouped by cell: their product with a seed's
    # [-2 sb, -2 sf, |sb|^2, |sf|^2] is the distance ranked
    xc = cells(np.concatenate([base, fl * wt[..., None], np.ones((h, w, 1)), wt[..., None]], -1))  # (k, c2, 9)
    # the 9 candidate seeds of each cell (-1: outside the grid)
    gy, gx = np.divmod(np.arange(k), nx)
    cand = np.full((k, 9), -1, np.int64)
    for n, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        cy, cx = gy + dy, gx + dx
        ok = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
        cand[ok, n] = (cy * nx + cx)[ok]
    valid = cand >= 0
    cj = np.maximum(cand, 0)
    flat_b = base.reshape(-1, 5)
    flat_f = fl.reshape(-1, 2)
    flat_w = wt.reshape(-1)

    def means(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.bincount(labels, minlength=k)
        b = np.stack([np.bincount(labels, weights=flat_b[:, j], minlength=k) for j in range(5)], 1)
        wsum = np.bincount(labels, weights=flat_w, minlength=k)
        f = np.stack([np.bincount(labels, weights=flat_f[:, j] * flat_w, minlength=k) for j in range(2)], 1)
        return b / np.maximum(counts, 1)[:, None], f / np.maximum(wsum, 1e-9)[:, None], counts

    sb, sf, _ = means(lab0)
    labels = lab0
    for _ in range(iterations):
        seeds = np.concatenate([-2.0 * sb, -2.0 * sf, (sb ** 2).sum(1, keepdims=True),
                                (sf ** 2).sum(1, keepdims=True)], 1)[cj]   # (k, 9 candidates, 9)
        seeds[:, :, 7][~valid] = np.inf                             # never pick a seed off the grid
        # The zero padding past the frame edge times an off-grid seed's inf is NaN: those
        # padded pixels are cut off below, so the NaN is expected there and nowhere else.
        with np.errstate(invalid="ignore"):
            d = np.matmul(xc, seeds.transpose(0, 2, 1))             # (k, c2, 9 candidates)
        pick = np.take_along_axis(cand[:, None, :], d.argmin(2)[:, :, None], 2)[:, :, 0]   # (k, c2)
        full = pick.reshape(ny, nx, cell, cell).swapaxes(1, 2).reshape(ph, pw)
        labels = full[:h, :w].ravel()
        mb, mf, counts = means(labels)
        live = (counts > 0)[:, None]
        sb, sf = np.where(live, mb, sb), np.where(live, mf, sf)
    return labels.reshape(h, w)


def _connected_fragments(labels: np.ndarray) -> np.ndarray:
    """Split every label into its 4-connected components: -> 0..n-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = labels.shape
    idx = np.arange(h * w).reshape(h, w)
    a = [idx[:, :-1][labels[:, :-1] == labels[:, 1:]], idx[:-1][labels[:-1] == labels[1:]]]
    b = [idx[:, 1:][labels[:, :-1] == labels[:, 1:]], idx[1:][labels[:-1] == labels[1:]]]
    a, b = np.concatenate(a), np.concatenate(b)
    g = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(h * w, h * w))
    _, comp = connected_components(g, directed=False)
    return comp.reshape(h, w)


def _pair_flow_term(pairs: np.ndarray, fs: np.ndarray, ws: np.ndarray, sz: np.ndarray,
                    min_reliable: float) -> np.ndarray:
    """Squared flow distance of each pair, 0 unless both regions have reliable flow."""
    a, b = pairs[:, 0], pairs[:, 1]
    ok = (ws[a] > 0) & (ws[b] > 0) & (ws[a] >= min_reliable * sz[a]) & (ws[b] >= min_reliable * sz[b])
    out = np.zeros(len(pairs))
    if ok.any():
        a, b = a[ok], b[ok]
        out[ok] = ((fs[a] / ws[a][:, None] - fs[b] / ws[b][:, None]) ** 2).sum(1)
    return out


def _merge_regions(frag: np.ndarray, color: np.ndarray, flow: np.ndarray, weight: np.ndarray,
                   threshold: float, min_region: int, min_reliable: float) -> np.ndarray:
    """Agglomerative merging of adjacent fragments by the distance of their mean features
    (already scaled): sqrt(|dcolor|^2 + |dflow|^2), where the flow term counts only when both
    regions have trusted flow on at least ``min_reliable`` of their pixels (their flow mean is
    over trusted pixels). Repeatedly merge the closest adjacent pair while its distance is
    below ``threshold`` (means updated after each merge), then merge every region smaller
    than ``min_region`` px into its closest neighbour. Returns labels 1..n numbered by
    decreasing area (ties: first pixel in row-major order)."""
    n = int(frag.max()) + 1
    flat = frag.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    wt = weight.reshape(-1).astype(np.float64)
    csum = np.stack([np.bincount(flat, weights=color.reshape(-1, 3)[:, j].astype(np.float64), minlength=n)
                     for j in range(3)], 1)
    fsum = np.stack([np.bincount(flat, weights=flow.reshape(-1, 2)[:, j].astype(np.float64) * wt, minlength=n)
                     for j in range(2)], 1)
    wsum = np.bincount(flat, weights=wt, minlength=n)
    pairs = np.concatenate([np.stack([frag[:, :-1].ravel(), frag[:, 1:].ravel()], 1),
                            np.stack([frag[:-1].ravel(), frag[1:].ravel()], 1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1)
    key = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])   # = np.unique(pairs, axis=0), faster
    pairs = np.stack([key // n, key % n], 1)
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for i, j in pairs:
        nbrs[int(i)].add(int(j))
        nbrs[int(j)].add(int(i))
    parent = list(range(n))
    sz, ws, cs, fs = size, wsum, csum, fsum   # region sums, updated in place on merges

    SMALL = 32  # up to this many neighbours, plain Python is faster than numpy
    # The same sums as Python lists: a region with few neighbours is searched faster in plain
    # Python (same operations in the same order as ``dists_np``, so the same floats).
    szl, wsl, csl, fsl = sz.tolist(), ws.tolist(), cs.tolist(), fs.tolist()

    def dists_py(i: int, ks: list[int]) -> list[float]:
        """Distances of region ``i`` to regions ``ks`` (few), in plain Python."""
        si, wi = szl[i], wsl[i]
        ci, fi = csl[i], fsl[i]
        c0, c1, c2 = ci[0] / si, ci[1] / si, ci[2] / si
        rel_i = wi > 0 and wi >= min_reliable * si
        out = []
        for k in ks:
            sk, wk = szl[k], wsl[k]
            ck = csl[k]
            a, b, c = c0 - ck[0] / sk, c1 - ck[1] / sk, c2 - ck[2] / sk
            d2 = a * a + b * b + c * c
            if rel_i and wk > 0 and wk >= min_reliable * sk:
                fk = fsl[k]
                a, b = fi[0] / wi - fk[0] / wk, fi[1] / wi - fk[1] / wk
                d2 += a * a + b * b
            out.append(math.sqrt(d2))
        return out

    def dists_np(i: int, ks: np.ndarray) -> np.ndarray:
        """Distances of region ``i`` to regions ``ks`` (many), vectorised."""
        si, sk = sz[i], sz[ks]
        d2 = ((cs[i] / si - cs[ks] / sk[:, None]) ** 2).sum(1)
        wi, wk = ws[i], ws[ks]
        if wi > 0 and wi >= min_reliable * si:
            both = (wk > 0) & (wk >= min_reliable * sk)
            if both.any():
                fd = fs[i] / wi - fs[ks[both]] / wk[both][:, None]
                d2[both] += (fd ** 2).sum(1)
        return np.sqrt(d2)

    def merge(i: int, j: int) -> int:
        """Merge j into i (both roots); returns i."""
        sz[i] += sz[j]
        ws[i] += ws[j]
        cs[i] += cs[j]
        fs[i] += fs[j]
        szl[i], wsl[i] = float(sz[i]), float(ws[i])
        csl[i], fsl[i] = cs[i].tolist(), fs[i].tolist()
        parent[j] = i
        for k in nbrs[j]:
            if k != i:
                nbrs[k].discard(j)
                nbrs[k].add(i)
                nbrs[i].add(k)
        nbrs[i].discard(j)
        nbrs[j] = set()
        return i

    # Closest pair first: every region keeps its closest neighbour under the threshold
    # (best_n, at best_d; inf: none), so the closest pair overall is an argmin; after a merge
    # only the merged region and the neighbours that pointed at its parts are searched again.
    best_d = np.full(n, np.inf)
    best_n = np.full(n, -1, np.int64)

    def search(i: int) -> tuple[list[int], list[float] | np.ndarray, int]:
        """Region ``i``'s neighbours (by index), their distances and the position of the
        closest (the first, i.e. lowest index, of equals; -1 without neighbours)."""
        ks = sorted(nbrs[i])
        if len(ks) <= SMALL:
            ds = dists_py(i, ks)
            return ks, ds, (min(range(len(ds)), key=ds.__getitem__) if ds else -1)
        ds = dists_np(i, np.array(ks, np.int64))
        return ks, ds, int(np.argmin(ds))

    def refresh(i: int) -> tuple[list[int], list[float] | np.ndarray]:
        ks, ds, m = search(i)
        best_d[i], best_n[i] = (ds[m], ks[m]) if m >= 0 and ds[m] < threshold else (np.inf, -1)
        return ks, ds

    if len(pairs):
        d0 = np.sqrt(((cs[pairs[:, 0]] / sz[pairs[:, 0], None] - cs[pairs[:, 1]] / sz[pairs[:, 1], None]) ** 2).sum(1)
                     + _pair_flow_term(pairs, fs, ws, sz, min_reliable))
        both = np.concatenate([pairs, pairs[:, ::-1]])
        dd = np.concatenate([d0, d0])
        order = np.lexsort((both[:, 1], dd, both[:, 0]))        # per region: closest, then lowest index
        first = order[np.r_[True, both[order[1:], 0] != both[order[:-1], 0]]]
        near = dd[first] < threshold
        best_d[both[first[near], 0]] = dd[first[near]]
        best_n[both[first[near], 0]] = both[first[near], 1]
    # A region whose closest neighbour moved away keeps its old distance as a lower bound
    # (``stale``) and is searched again only when that bound is the smallest of all.
    stale = np.zeros(n, bool)
    while True:
        i = int(np.argmin(best_d))
        if not best_d[i] < threshold:
            break
        if stale[i]:
            refresh(i)
            stale[i] = False
            continue
        j = int(best_n[i])
        merge(i, j)
        best_d[j], best_n[j], stale[j] = np.inf, -1, False
        ks, ds = refresh(i)
        if ks:
            ks, ds = np.array(ks, np.int64), np.asarray(ds, np.float64)
            bd, bn = best_d[ks], best_n[ks]
            pointed = (bn == i) | (bn == j)
            ok = ds < threshold
            # closer than the (exact or lower-bound) best: the new best, exact
            better = ok & ((ds < bd) | ((ds == bd) & ((i < bn) | pointed)))
            best_d[ks[better]] = ds[better]
            best_n[ks[better]] = i
            stale[ks[better]] = False
            # pointed at a part of the merged region that is now farther: search again later
            moved = pointed & ~better
            best_n[ks[moved]] = i
            stale[ks[moved]] = True
    # Small leftovers: smallest first, into the closest neighbour (ties: lower index).
    roots = [i for i in range(n) if parent[i] == i]
    for i in sorted(roots, key=lambda r: (sz[r], r)):
        if parent[i] != i or sz[i] >= min_region or not nbrs[i]:
            continue
        ks, _, m = search(i)
        merge(ks[m], i)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    root = np.array([find(i) for i in range(n)])
    lab = root[frag]
    uniq, first, counts = np.unique(lab.ravel(), return_index=True, return_counts=True)
    order = sorted(range(uniq.size), key=lambda k: (-counts[k], first[k]))
    lut = np.zeros(n, np.int64)
    lut[uniq[order]] = np.arange(1, uniq.size + 1)
    return lut[lab]


def segment_motion(frame: np.ndarray, flow0: np.ndarray, backward0: np.ndarray | None = None,
                   **params: Any) -> np.ndarray:
    """Segment a frame into regions that are coherent in colour and in motion.

    frame ``(H, W, 3)`` uint8 RGB, flow0 ``(2, H, W)`` its forward flow to the next frame,
    backward0 ``(2, H, W)`` (optional) the backward flow from the next frame to it.
    Returns labels ``(H, W)`` int64 in 1..n (every pixel labelled; 1 = largest region).

    Method (parameters in ``MOTION_DEFAULTS``):
    1. Features per pixel: CIE Lab colour (OpenCV, L in 0..100) of the frame after a 5x5
       Gaussian blur, and the flow after a 5x5 median filter. Trusted flow: with
       ``backward0``, pixels whose forward-backward error ``|F(p) + B(p + F(p))|`` is under
       ``fb_threshold`` px (the flow around a moving object's boundary, where the estimator
       smears the object's motion onto the background, fails this test); without it, all.
    2. Superpixels: SLIC-style k-means on (Lab / color_weight, flow / flow_weight,
       position / cell), the flow term only for trusted pixels, seeds on a ``cell`` grid,
       ``iterations`` rounds, each pixel choosing among the 3x3 nearest seeds; every
       superpixel is then split into its 4-connected pieces.
    3. Merging: adjacent pieces are merged greedily, closest first, while the distance of
       their means sqrt((dLab / merge_color)^2 + (dflow / merge_flow)^2) is below
       ``merge_threshold`` (region flow = mean over trusted pixels; the flow term is left out
       unless both regions have at least ``min_reliable`` trusted pixels); means are updated
       after each merge; regions smaller than ``min_region`` (a fraction of the frame area)
       are finally merged into their closest neighbour.
    So two regions stay apart when they differ clearly in colour *or* in trusted motion: a
    moving object of the background's colour is separated by its flow, a still object by its
    colour. Deterministic for its inputs.
    """
    import cv2

    p = {**MOTION_DEFAULTS, **params}
    unknown = sorted(set(params) - set(MOTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown motion segmentation parameter(s) {', '.join(unknown)}; valid: {', '.join(MOTION_DEFAULTS)}")
    frame = np.asarray(frame)
    flow0 = np.asarray(flow0, np.float32)
    if frame.ndim != 3 or flow0.shape != (2,) + frame.shape[:2]:
        raise ValueError(f"frame (H, W, 3) and flow (2, H, W) expected, got {frame.shape} and {flow0.shape}")
    if backward0 is not None:
        backward0 = np.asarray(backward0, np.float32)
        if backward0.shape != flow0.shape:
            raise ValueError(f"backward flow must be {flow0.shape}, got {backward0.shape}")
        trusted = fb_reliability(flow0, backward0, float(p["fb_threshold"]))
    else:
        trusted = np.ones(frame.shape[:2], bool)
    lab = _lab(cv2.GaussianBlur(frame, (5, 5), 0))
    fl = np.stack([cv2.medianBlur(np.ascontiguousarray(f), 5) for f in flow0], -1)
    cell = int(p["cell"])
    sp = _superpixels(lab / float(p["color_weight"]), fl / float(p["flow_weight"]), trusted, cell, int(p["iterations"]))
    frag = _connected_fragments(sp)
    min_px = int(round(float(p["min_region"]) * frame.shape[0] * frame.shape[1]))
    return _merge_regions(frag, lab / float(p["merge_color"]), fl / float(p["merge_flow"]), trusted,
                          float(p["merge_threshold"]), min_px, float(p["min_reliable"]))


class MotionMaskSource(MaskSource):
    """Regions of frame 0 coherent in colour and flow (``segment_motion``): CPU, no weights.

    Provenance: ``meta.entities.mask_source == "motion"`` and ``model == "motion-seg-v1"``;
    these are not SAM masks and not object masks (one object may span several regions, one
    region several touching objects of like colour and motion)."""

    name = "motion"
    MODEL = "motion-seg-v1"

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(MOTION_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown motion segmentation parameter(s) {', '.join(unknown)}")
        self.params = {**MOTION_DEFAULTS, **params}

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name, "model": self.MODEL, "params": dict(self.params),
                "note": "colour+flow regions, not SAM"}

    needs_backward_flow = True

    def masks(self, frames, flow, meta, row, backward_flow=None) -> EntityMasks:
        if flow is None or len(flow) == 0:
            raise ValueError("the motion mask source needs the forward flow")
        back0 = None if backward_flow is None else np.asarray(backward_flow[0])
        labels = segment_motion(np.asarray(frames[0]), np.asarray(flow[0]), back0, **self.params)
        return from_label_map(labels, "region", fb_checked=back0 is not None)

