"""The incircle of an entity mask: center and radius from the exact Euclidean distance transform.

Public API
----------
``incircle(mask, subpixel=True) -> (center_xy, radius)``
    One boolean mask ``(H, W)``: ``center_xy`` float ``(x, y)`` and ``radius`` float px.
``incircles(id_map, ids, subpixel=True) -> (centers (K, 2) float32, radii (K,) float32)``
    Every id of an integer id map at once (one distance transform per id, on its bounding box).

Rules (docs/entities.md)
------------------------
* Distance: ``scipy.ndimage.distance_transform_edt`` (exact Euclidean, not a chamfer
  approximation) of the mask, where every pixel outside the mask *and outside the frame*
  is background: the mask is padded by one background pixel on every side, so a mask cut
  by the frame border has its incircle inside the visible part. The value at a mask pixel is
  the distance from its center to the nearest pixel center that is not in the mask.
* Radius: the maximum of that distance (float, px). A disc of this radius around the
  center contains no pixel center outside the mask (its interior is free of background). For
  a rasterised disc of radius r it is r plus at most ~0.5 px; for an axis-aligned w x h
  rectangle it is min(w, h) / 2 (see tests/stages/entities/test_extract.py for measured values).
* Center, with the tie rule: the pixels where the distance equals its maximum (exactly:
  the values are square roots of integers, computed identically) form the plateau. Take
  the 8-connected component of the plateau that contains the first maximum in row-major
  order (smallest y, then smallest x: ``numpy.argmax``); the center is the mean (x, y) of
  that component's pixels. So a symmetric plateau (the middle rows of a rectangle, two
  pixels of a disc straddling its center) gives its exact middle, and several separate
  plateaus (two equal discs joined by a thin neck) never average into the neck. When the
  mean is farther than 0.5 px (Chebyshev) from every pixel of the component (a bent,
  non-convex plateau), the component pixel nearest to the mean is used instead (ties:
  row-major order), so the center always lies on the plateau (within half a pixel).
* Sub-pixel maximum (``subpixel=True``, the default): when the plateau component is a
  single pixel, the maximum is located to sub-pixel precision by a parabola through the
  distance at that pixel and its two neighbours, separately along x and along y; each
  shift is clipped to +-0.5 px, so the center stays inside the pixel of the maximum. This
  matters for shapes whose true center is off the pixel grid: on 400 rasterised discs at
  random sub-pixel centers (radius 8-60 px) the center error is max 0.67 / mean 0.35 px
  without it and max 0.46 / mean 0.10 px with it. The radius is always the maximum of the
  distance at pixel centers (not the parabola's peak).
"""
from __future__ import annotations

import numpy as np

__all__ = ["incircle", "incircles", "distance_map"]


def distance_map(mask: np.ndarray) -> np.ndarray:
    """Exact EDT of ``mask`` (H, W) with the frame border counted as background, float64."""
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {m.shape}")
    padded = np.pad(m, 1, constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def _parabola_vertex(a: float, b: float, c: float) -> float:
    """Offset of the vertex of the parabola through (-1, a), (0, b), (1, c), clipped to +-0.5."""
    den = a - 2.0 * b + c
    if not den < 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def _plateau_center(dist: np.ndarray, peak: float, subpixel: bool = True) -> tuple[float, float]:
    """Center (x, y) in ``dist`` coordinates; ``dist`` is the EDT with a zero border (padded)."""
    from scipy.ndimage import label

    first = int(np.argmax(dist))                              # row-major first maximum
    fy, fx = divmod(first, dist.shape[1])
    plateau = dist == peak
    comps, _ = label(plateau, structure=np.ones((3, 3), bool))
    ys, xs = np.nonzero(comps == comps[fy, fx])
    if xs.size == 1:
        if not subpixel:
            return float(fx), float(fy)
        # the zero border guarantees the neighbours exist (the peak is never on the border)
        dx = _parabola_vertex(dist[fy, fx - 1], peak, dist[fy, fx + 1])
        dy = _parabola_vertex(dist[fy - 1, fx], peak, dist[fy + 1, fx])
        return fx + dx, fy + dy
    cx, cy = float(xs.mean()), float(ys.mean())
    cheb = np.maximum(np.abs(xs - cx), np.abs(ys - cy))
    if cheb.min() <= 0.5 + 1e-9:
        return cx, cy
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    i = int(np.argmin(d2))                                    # nonzero() is row-major: ties -> first
    return float(xs[i]), float(ys[i])


def incircle(mask: np.ndarray, subpixel: bool = True) -> tuple[tuple[float, float], float]:
    """``((x, y), radius)`` of a boolean mask (see the module rules); ``((nan, nan), 0.0)``
    for an empty mask."""
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {m.shape}")
    if not m.any():
        return (float("nan"), float("nan")), 0.0
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # Pixels outside the bounding box are background or outside the frame: one padded
    # background pixel stands in for all of them.
    dist = distance_transform_edt(np.pad(m[y0:y1, x0:x1], 1, constant_values=False))
    peak = float(dist.max())
    cx, cy = _plateau_center(dist, peak, subpixel)
    return (cx - 1.0 + float(x0), cy - 1.0 + float(y0)), peak


def incircles(id_map: np.ndarray, ids, subpixel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Centers ``(K, 2)`` float32 (x, y) and radii ``(K,)`` float32 of ``id_map == ids[k]``."""
    id_map = np.asarray(id_map)
    ids = np.asarray(ids).ravel()
    centers = np.full((ids.size, 2), np.nan, np.float64)
    radii = np.zeros(ids.size, np.float64)
    if ids.size:
        from scipy.ndimage import find_objects

        # One pass for all bounding boxes: relabel ids to 1..K first.
        lut_ids, inverse = np.unique(id_map, return_inverse=True)
        inverse = inverse.reshape(id_map.shape)
        slices = find_objects(inverse + 1)
        pos = {int(v): i for i, v in enumerate(lut_ids)}
        for k, v in enumerate(ids):
            j = pos.get(int(v))
            if j is None or slices[j] is None:
                continue
            sl = slices[j]
            (cx, cy), r = incircle(id_map[sl] == v, subpixel)
            centers[k] = (cx + sl[1].start, cy + sl[0].start)
            radii[k] = r
    return centers.astype(np.float32), radii.astype(np.float32)
