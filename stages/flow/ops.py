"""Helpers on flow fields: ``warp`` (backward warping by a flow, ``cv2.remap``) and
``endpoint_error`` (mean end-point error of two flows). Conventions: ``stages.flow.base``."""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["warp", "endpoint_error"]


def warp(image: np.ndarray, flow_t: np.ndarray, border_mode: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Backward-warp ``image`` by the flow field ``flow_t`` (bilinear, ``cv2.remap``).

    ``out[y, x] = image[y + flow_t[1, y, x], x + flow_t[0, y, x]]``, i.e. ``image`` is sampled
    at ``(x, y) + flow``. With the forward flow ``flow[t]`` (frame t -> t+1),
    ``warp(frames[t + 1], flow[t])`` approximates ``frames[t]`` wherever the content of
    frame t is visible in frame t+1 (not at occlusions, nor where ``x + flow`` leaves the
    frame: there the border is extended by ``border_mode``, replicate by default).

    image: ``(H, W)`` or ``(H, W, C)`` of any dtype cv2.remap supports (uint8, float32, ...);
    flow_t: ``(2, H, W)``. Returns an array with the shape and dtype of ``image``.
    """
    image = np.asarray(image)
    flow_t = np.asarray(flow_t)
    h, w = image.shape[:2]
    if flow_t.shape != (2, h, w):
        raise ValueError(f"flow must be shaped (2, {h}, {w}) for an image {image.shape}, got {flow_t.shape}")
    gx = np.arange(w, dtype=np.float32)[None, :]
    gy = np.arange(h, dtype=np.float32)[:, None]
    map_x = (flow_t[0] + gx).astype(np.float32, copy=False)
    map_y = (flow_t[1] + gy).astype(np.float32, copy=False)

    def _remap(img: np.ndarray) -> np.ndarray:
        return cv2.remap(np.ascontiguousarray(img), map_x, map_y, cv2.INTER_LINEAR, borderMode=border_mode)

    if image.ndim == 2 or image.shape[2] <= 4:
        out = _remap(image)
        if image.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
            out = out[..., None]
        return out
    # cv2.remap handles at most 4 channels: warp in chunks
    parts = [_remap(image[..., c:c + 4]) for c in range(0, image.shape[2], 4)]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=-1)


def endpoint_error(a: np.ndarray, b: np.ndarray, margin: int = 0) -> float:
    """Mean end-point error ``mean(||a - b||_2)`` of two flows shaped ``(..., 2, H, W)``.

    ``margin`` pixels at each border of the ``H x W`` grid are left out.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 3 or a.shape[-3] != 2:
        raise ValueError(f"flows must have the same shape (..., 2, H, W), got {a.shape} and {b.shape}")
    m = int(margin)
    h, w = a.shape[-2:]
    if m < 0 or 2 * m >= h or 2 * m >= w:
        raise ValueError(f"margin {margin} leaves no pixels of a {h}x{w} flow")
    if m:
        a = a[..., m:h - m, m:w - m]
        b = b[..., m:h - m, m:w - m]
    d = a - b
    return float(np.mean(np.sqrt(d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2)))
