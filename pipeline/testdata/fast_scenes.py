"""Fast-motion synthetic scenes with exact ground-truth point tracks (issue 23).

Beside ``synthetic.py`` (translation only, ids and dense flow) this renders what loses anchors
on real footage: 5-30 px per profile frame at HD, rotation and scale, occlusion and
disocclusion, textureless regions. Every layer moves by a similarity transform, so the
position and the visibility of any surface point are known exactly at any time:
:meth:`FastScene.ground_truth` gives an anchor's ground-truth track.

A scene is a stack of layers, bottom to top: a background ``plane`` (covers the frame:
the camera's motion is its motion) and ``disc`` / ``rect`` shapes. Layer k's pose at time t
(source frames, float) is ``c(t) = center + velocity * t + acceleration * t**2 / 2``, angle
``angle + spin * t`` (rad) and scale ``scale * exp(zoom * t)``; a point ``u`` of the layer
(local coordinates, px at scale 1) is at ``c + s * R(angle) u`` in the image. A layer is
``flat`` (one colour, no texture) or textured (``synthetic.smooth_texture``); the plane may
hold a flat rectangle (``flat_box``, local coordinates: a textureless sky).

The clip is rendered at the source rate: ``source_frames`` (``num_frames - 1) * stride + 1``
frames; the profile keeps every ``stride``-th one (``frames``; 24 fps sources, 4 fps profile:
``stride`` 6), so trackers that follow the source frames between two profile frames can be
measured too. Speeds in :data:`FAST_SCENES` are quoted per profile frame.

Conventions: x right, y down, pixel centers at integers; a pixel shows the topmost layer
containing its center (disc ``|u| <= r``, rect ``-size/2 <= u < size/2``); textures are
sampled bilinearly (``cv2.remap``), edges are not anti-aliased.

    scene = render_fast_scene(FAST_SCENES["translate"]())
    scene.frames                                  # (16, 320, 576, 3) uint8, the profile frames
    tracks, visible, layer, textured = scene.ground_truth(anchor_points)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .synthetic import smooth_texture

LAYER_KINDS = ("plane", "disc", "rect")

__all__ = ["Layer", "FastSceneSpec", "FastScene", "render_fast_scene", "FAST_SCENES", "LAYER_KINDS",
           "HD", "LD"]

# Profile geometry: (num_frames, width, height, stride) with 24 fps sources and 4 fps profiles.
HD = (16, 576, 320, 6)
LD = (8, 320, 192, 6)


@dataclass(frozen=True)
class Layer:
    """One layer of a scene; see the module docstring for the pose. ``radius`` (disc),
    ``size`` (rect, (w, h)) in local px; ``flat_box`` (plane) = (x0, y0, x1, y1) local px."""

    kind: str
    center: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)       # px per source frame
    acceleration: tuple[float, float] = (0.0, 0.0)   # px per source frame^2
    angle: float = 0.0
    spin: float = 0.0                                # rad per source frame
    scale: float = 1.0
    zoom: float = 0.0                                # log-scale per source frame
    radius: float | None = None
    size: tuple[float, float] | None = None
    flat: bool = False
    flat_box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; known: {', '.join(LAYER_KINDS)}")
        if self.kind == "disc" and not (self.radius and self.radius > 0):
            raise ValueError("a disc needs a positive radius")
        if self.kind == "rect" and not (self.size and min(self.size) > 0):
            raise ValueError("a rect needs a positive size (w, h)")
        if not self.scale > 0:
            raise ValueError("scale must be positive")

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """(center (2,), angle, scale) at time ``t`` (source frames)."""
        c = np.asarray(self.center, np.float64) + np.asarray(self.velocity, np.float64) * t \
            + 0.5 * np.asarray(self.acceleration, np.float64) * t * t
        return c, self.angle + self.spin * t, self.scale * math.exp(self.zoom * t)

    def to_image(self, u: np.ndarray, t: float) -> np.ndarray:
        """Local points ``u`` (N, 2) -> image points at time t."""
        c, a, s = self.pose(t)
        ca, sa = math.cos(a), math.sin(a)
        return c + s * np.stack([ca * u[:, 0] - sa * u[:, 1], sa * u[:, 0] + ca * u[:, 1]], 1)

    def to_local(self, p: np.ndarray, t: float) -> np.ndarray:
        """Image points ``p`` (..., 2) -> local points at time t."""
        c, a, s = self.pose(t)
        ca, sa = math.cos(a), math.sin(a)
        d = (np.asarray(p, np.float64) - c) / s
        return np.stack([ca * d[..., 0] + sa * d[..., 1], -sa * d[..., 0] + ca * d[..., 1]], -1)

    def contains(self, u: np.ndarray) -> np.ndarray:
        """Inside test of local points ``u`` (..., 2)."""
        if self.kind == "plane":
            return np.ones(u.shape[:-1], bool)
        if self.kind == "disc":
            return u[..., 0] ** 2 + u[..., 1] ** 2 <= self.radius ** 2
        hw, hh = self.size[0] / 2.0, self.size[1] / 2.0
        return (u[..., 0] >= -hw) & (u[..., 0] < hw) & (u[..., 1] >= -hh) & (u[..., 1] < hh)

    def is_flat(self, u: np.ndarray) -> np.ndarray:
        """Local points ``u`` (N, 2) on a textureless part of the layer."""
        if self.flat:
            return np.ones(len(u), bool)
        if self.flat_box is None:
            return np.zeros(len(u), bool)
        x0, y0, x1, y1 = self.flat_box
        return (u[:, 0] >= x0) & (u[:, 0] < x1) & (u[:, 1] >= y0) & (u[:, 1] < y1)


@dataclass(frozen=True)
class FastSceneSpec:
    """What :func:`render_fast_scene` renders: layers bottom to top, the profile geometry."""

    name: str
    layers: tuple[Layer, ...]
    num_frames: int = HD[0]
    width: int = HD[1]
    height: int = HD[2]
    stride: int = HD[3]
    seed: int = 0


@dataclass
class FastScene:
    """A scene ready to render: ``frames`` (the profile's, every ``stride``-th source frame)
    and ``source_frames`` (all of them) are rendered on first use; the ground truth needs
    no rendering."""

    spec: FastSceneSpec
    textures: list = field(repr=False, default_factory=list)

    @functools.cached_property
    def frames(self) -> np.ndarray:
        """(num_frames, H, W, 3) uint8 RGB: the profile frames."""
        return self.render(self.times)

    @functools.cached_property
    def source_frames(self) -> np.ndarray:
        """((num_frames - 1) * stride + 1, H, W, 3) uint8 RGB: every source frame."""
        return self.render(np.arange((self.spec.num_frames - 1) * self.spec.stride + 1, dtype=np.float64))

    @property
    def times(self) -> np.ndarray:
        """Source time (frames) of each profile frame."""
        return np.arange(self.spec.num_frames, dtype=np.float64) * self.spec.stride

    def render(self, times: np.ndarray) -> np.ndarray:
        """The frames at source times ``times``: (len(times), H, W, 3) uint8 RGB."""
        import cv2

        spec = self.spec
        gx, gy = np.meshgrid(np.arange(spec.width, dtype=np.float64), np.arange(spec.height, dtype=np.float64))
        grid = np.stack([gx, gy], -1)
        out = np.empty((len(times), spec.height, spec.width, 3), np.uint8)
        for i, t in enumerate(times):
            img = np.zeros((spec.height, spec.width, 3), np.float32)
            for layer, (tex, lo) in zip(spec.layers, self.textures):
                u = layer.to_local(grid, float(t))
                mask = layer.contains(u)
                if not mask.any():
                    continue
                mx = (u[..., 0] - lo[0]).astype(np.float32)
                my = (u[..., 1] - lo[1]).astype(np.float32)
                patch = cv2.remap(tex, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                img[mask] = patch[mask]
            out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return out

    def top_layer(self, p: np.ndarray, t: float) -> np.ndarray:
        """Index of the topmost layer containing each image point ``p`` (N, 2) at time t."""
        top = np.zeros(len(p), np.int64)
        for k, layer in enumerate(self.spec.layers):
            top[layer.contains(layer.to_local(p, t))] = k
        return top

    def ground_truth(self, points: np.ndarray, times: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground truth of the surface points at ``points`` (N, 2) in the first frame.

        Returns ``tracks`` (N, T, 2) float64 (positions at ``times``, default the profile
        frames; exact, also where hidden), ``visible`` (N, T) bool (inside
        ``[0, W-1] x [0, H-1]`` and not covered by a layer above its own), ``layer`` (N,)
        (the layer each point lies on) and ``textured`` (N,) bool (not on a flat layer or a
        flat box: points an appearance-based tracker can be asked to follow)."""
        p0 = np.asarray(points, np.float64).reshape(-1, 2)
        times = self.times if times is None else np.asarray(times, np.float64)
        layer = self.top_layer(p0, 0.0)
        u = np.zeros_like(p0)
        textured = np.ones(len(p0), bool)
        for k, lay in enumerate(self.spec.layers):
            sel = layer == k
            if sel.any():
                u[sel] = lay.to_local(p0[sel], 0.0)
                textured[sel] = ~lay.is_flat(u[sel])
        tracks = np.zeros((len(p0), len(times), 2))
        visible = np.zeros((len(p0), len(times)), bool)
        w, h = self.spec.width, self.spec.height
        for j, t in enumerate(times):
            for k, lay in enumerate(self.spec.layers):
                sel = np.flatnonzero(layer == k)
                if sel.size:
                    tracks[sel, j] = lay.to_image(u[sel], float(t))
            p = tracks[:, j]
            inside = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
            visible[:, j] = inside & (self.top_layer(p, float(t)) == layer)
        return tracks, visible, layer, textured


def _texture_for(layer: Layer, spec: FastSceneSpec, rng: np.random.Generator, color, times) -> tuple:
    """(texture (h, w, 3) float32, local coordinate of texture pixel (0, 0))."""
    if layer.kind == "plane":
        # the local area the frame ever shows, with a margin
        corners = np.array([[0, 0], [spec.width - 1, 0], [0, spec.height - 1], [spec.width - 1, spec.height - 1]],
                           np.float64)
        u = np.concatenate([layer.to_local(corners, float(t)) for t in times])
        lo, hi = np.floor(u.min(0)) - 4, np.ceil(u.max(0)) + 4
    else:
        half = np.array([layer.radius] * 2) if layer.kind == "disc" else np.asarray(layer.size, np.float64) / 2
        lo, hi = -np.ceil(half) - 4, np.ceil(half) + 4
    th, tw = int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1
    if layer.flat:
        tex = np.broadcast_to(np.asarray(color, np.float32), (th, tw, 3)).copy()
    else:
        tex = smooth_texture(th, tw, rng, color, contrast=36.0)
        if layer.flat_box is not None:
            x0, y0, x1, y1 = layer.flat_box
            c0, c1 = int(max(0, math.ceil(x0 - lo[0]))), int(min(tw, math.ceil(x1 - lo[0])))
            r0, r1 = int(max(0, math.ceil(y0 - lo[1]))), int(min(th, math.ceil(y1 - lo[1])))
            tex[r0:r1, c0:c1] = np.asarray(color, np.float32) * 1.15
    return tex, lo


def render_fast_scene(spec: FastSceneSpec) -> FastScene:
    """The scene of ``spec`` with its textures drawn (deterministic for the spec); frames
    are rendered on first use (``FastScene.frames``, ``FastScene.source_frames``)."""
    s_frames = (spec.num_frames - 1) * spec.stride + 1
    times = np.arange(s_frames, dtype=np.float64)
    rng = np.random.default_rng([int(spec.seed), 23])
    textures = []
    for k, layer in enumerate(spec.layers):
        color = rng.uniform(50, 205, size=3)
        textures.append(_texture_for(layer, spec, np.random.default_rng([int(spec.seed), 23, k]), color, times))
    return FastScene(spec, textures)


# --------------------------------------------------------------------------- the scenes
def _per_frame(v: tuple[float, float], stride: int) -> tuple[float, float]:
    return (v[0] / stride, v[1] / stride)


def translate(num_frames: int = HD[0], width: int = HD[1], height: int = HD[2], stride: int = HD[3],
              seed: int = 1) -> FastSceneSpec:
    """Fast translation: the camera pans 10 px per profile frame; a textured disc crosses at
    30 px, a textured rect at 18 px diagonally, a flat (textureless) disc at 12 px; the
    background has a flat band (a sky)."""
    k = width / 576.0
    return FastSceneSpec("translate", (
        Layer("plane", center=(width / 2, height / 2), velocity=_per_frame((10 * k, 0), stride),
              flat_box=(-width, -height, width, -0.3 * height)),
        Layer("disc", center=(0.85 * width, 0.55 * height), velocity=_per_frame((-30 * k, 2 * k), stride),
              radius=48 * k),
        Layer("rect", center=(0.2 * width, 0.3 * height), velocity=_per_frame((18 * k, 7 * k), stride),
              size=(110 * k, 70 * k)),
        Layer("disc", center=(0.35 * width, 0.75 * height), velocity=_per_frame((12 * k, -3 * k), stride),
              radius=34 * k, flat=True),
    ), num_frames, width, height, stride, seed)


def rotate_scale(num_frames: int = HD[0], width: int = HD[1], height: int = HD[2], stride: int = HD[3],
                 seed: int = 2) -> FastSceneSpec:
    """Rotation and scale: the camera zooms in (x1.35 over 4 s) while panning 5 px per profile
    frame; a rect spins 5 deg per profile frame while moving 15 px; a disc grows x1.6 while
    moving 20 px; a second rect shrinks and spins the other way."""
    k = width / 576.0
    n = (num_frames - 1) * stride
    return FastSceneSpec("rotate_scale", (
        Layer("plane", center=(width / 2, height / 2), velocity=_per_frame((-5 * k, 1 * k), stride),
              zoom=math.log(1.35) / n),
        Layer("rect", center=(0.3 * width, 0.45 * height), velocity=_per_frame((15 * k, 3 * k), stride),
              spin=math.radians(5) / stride, size=(130 * k, 90 * k)),
        Layer("disc", center=(0.75 * width, 0.35 * height), velocity=_per_frame((-20 * k, 6 * k), stride),
              zoom=math.log(1.6) / n, radius=40 * k),
        Layer("rect", center=(0.6 * width, 0.8 * height), velocity=_per_frame((-8 * k, -4 * k), stride),
              spin=-math.radians(3) / stride, zoom=math.log(0.7) / n, size=(90 * k, 60 * k)),
    ), num_frames, width, height, stride, seed)


def occlusion(num_frames: int = HD[0], width: int = HD[1], height: int = HD[2], stride: int = HD[3],
              seed: int = 3) -> FastSceneSpec:
    """Occlusion and disocclusion: a large textured rect sweeps across the frame at 25 px per
    profile frame over two discs (5 and 12 px), which come out behind it; the camera pans
    8 px."""
    k = width / 576.0
    return FastSceneSpec("occlusion", (
        Layer("plane", center=(width / 2, height / 2), velocity=_per_frame((0, 8 * k), stride)),
        Layer("disc", center=(0.4 * width, 0.4 * height), velocity=_per_frame((5 * k, 0), stride), radius=45 * k),
        Layer("disc", center=(0.65 * width, 0.6 * height), velocity=_per_frame((-12 * k, -2 * k), stride),
              radius=38 * k),
        Layer("rect", center=(-0.05 * width, 0.5 * height), velocity=_per_frame((25 * k, 0), stride),
              size=(150 * k, 0.8 * height)),
    ), num_frames, width, height, stride, seed)


def shake(num_frames: int = HD[0], width: int = HD[1], height: int = HD[2], stride: int = HD[3],
          seed: int = 4) -> FastSceneSpec:
    """Hand-held: the camera accelerates from 5 to 30 px per profile frame and rolls 1 deg per
    profile frame; a textured disc moves against it at 15 px."""
    k = width / 576.0
    n = (num_frames - 1) * stride
    acc = (25 * k / stride) / n
    return FastSceneSpec("shake", (
        Layer("plane", center=(width / 2, height / 2), velocity=_per_frame((-5 * k, 0), stride),
              acceleration=(-acc, 0.2 * acc), spin=math.radians(1) / stride),
        Layer("disc", center=(0.3 * width, 0.5 * height), velocity=_per_frame((15 * k, -2 * k), stride),
              radius=42 * k),
    ), num_frames, width, height, stride, seed)


# name -> spec builder (num_frames, width, height, stride, seed): HD by default; ``*LD`` for LD.
FAST_SCENES: dict[str, Callable[..., FastSceneSpec]] = {
    "translate": translate, "rotate_scale": rotate_scale, "occlusion": occlusion, "shake": shake,
}
