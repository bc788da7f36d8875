"""Optical flow as colour, with the standard colour wheel of Baker et al. (Middlebury).

The wheel is 55 colours around the hue circle, built from six ramps between the primary
and secondary colours with the Middlebury segment lengths: red->yellow 15, yellow->green 6,
green->cyan 4, cyan->blue 11, blue->magenta 13, magenta->red 6. A flow vector's direction
picks a position on the wheel (linear interpolation between neighbouring colours), its
length (divided by ``max_magnitude``) the saturation: zero flow is white, a vector of
length ``max_magnitude`` the full colour; longer vectors are darkened (x 0.75).

Directions in image coordinates (y down): flow to the right is red, down is greenish
yellow... exactly as the Middlebury code renders ``(u, v)``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["color_wheel", "flow_to_color", "wheel_legend"]

# (ramp length, start colour, end colour)
_RAMPS = (
    (15, (255, 0, 0), (255, 255, 0)),      # red -> yellow
    (6, (255, 255, 0), (0, 255, 0)),       # yellow -> green
    (4, (0, 255, 0), (0, 255, 255)),       # green -> cyan
    (11, (0, 255, 255), (0, 0, 255)),      # cyan -> blue
    (13, (0, 0, 255), (255, 0, 255)),      # blue -> magenta
    (6, (255, 0, 255), (255, 0, 0)),       # magenta -> red
)


def color_wheel() -> np.ndarray:
    """The (55, 3) float64 RGB colour wheel, values in [0, 255]."""
    parts = []
    for n, a, b in _RAMPS:
        f = np.arange(n, dtype=np.float64)[:, None] / n
        parts.append(np.asarray(a, np.float64) * (1 - f) + np.asarray(b, np.float64) * f)
    return np.concatenate(parts, 0)


_WHEEL = color_wheel()
_WHEEL01 = (_WHEEL / 255.0).astype(np.float32)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(2, H, W) flow (dx, dy) -> (H, W, 3) uint8 RGB.

    ``max_magnitude`` (px) is the length drawn at full saturation; None uses this field's
    largest finite magnitude (at least 1e-6). Non-finite vectors are drawn black.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be shaped (2, H, W), got {flow.shape}")
    u, v = flow[0], flow[1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0.0, u), np.where(bad, 0.0, v)
    rad = np.sqrt(u * u + v * v)
    if max_magnitude is None:
        max_magnitude = float(rad.max()) if rad.size else 0.0
    max_magnitude = max(float(max_magnitude), 1e-6)
    rad = rad / np.float32(max_magnitude)
    ncols = len(_WHEEL)
    a = np.arctan2(-v, -u) / np.float32(np.pi)      # in [-1, 1]
    fk = (a + 1.0) / 2.0 * (ncols - 1)               # position on the wheel
    k0 = np.minimum(np.floor(fk).astype(np.intp), ncols - 1)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = (1.0 - f) * _WHEEL01[k0] + f * _WHEEL01[k1]   # (H, W, 3) in [0, 1]
    r = rad[..., None]
    inside = r <= 1.0
    col = np.where(inside, 1.0 - r * (1.0 - col), col * 0.75)
    col[bad] = 0.0
    return np.clip(np.floor(255.0 * col), 0, 255).astype(np.uint8)


def wheel_legend(size: int = 64) -> np.ndarray:
    """A (size, size, 3) uint8 key: the colour of every direction and length up to the
    radius (the disc), white outside."""
    c = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([x - c, y - c])
    img = flow_to_color(flow, max_magnitude=c)
    img[np.hypot(x - c, y - c) > c] = 255
    return img
