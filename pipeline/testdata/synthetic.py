"""Synthetic scenes with exactly known motion: ground truth for tests and the embedded sample.

Longer than 500 lines because the renderer and the ground truth it implies (flow, centers,
ids, VIPSeg/WebVid/VideoHD writers) must stay side by side to stay consistent.

A scene is a smooth random background texture (larger than the frame) that pans with a
constant velocity ``(vx, vy)`` px/frame, plus K textured shapes painted in z-order (later
shapes occlude earlier ones). Each shape is a ``"disc"`` (radius ``r``) or a ``"rect"``
(``w x h``) with its own texture, moving rigidly (translation only) along a known path:
``center + t * velocity``, or an explicit list of per-frame centers. Shapes may leave the
frame. Motion is "content motion": a surface point at ``p`` in frame t is at
``p + v`` in frame t+1.

Conventions (same as the shards): x right, y down, pixel centers at integer coordinates, so
pixel ``(row i, col j)`` is the point ``(x=j, y=i)``. A pixel belongs to a shape when its
center is inside it: disc ``|p - c| <= r``; rect ``c - size/2 <= p < c + size/2`` (half-open,
so an aligned ``w x h`` rect covers exactly ``w*h`` pixels). Textures are sampled with exact
bilinear interpolation (subpixel motion is rendered, not rounded); ids are not anti-aliased.

    scene = render_scene(320, 192, 8, [disc((100, 90), 30, velocity=(2.5, -1)),
                                       rect((200, 100), (60, 40), velocity=(-1.25, 0.5))],
                         background_velocity=(0.75, 0.25), seed=3)
    scene.frames   # (T, H, W, 3) uint8 RGB
    scene.ids      # (T, H, W) uint16: 0 background, shape k -> k + 1
    scene.centers  # (T, K, 2) float32 exact centers (may be outside the frame)
    scene.flow     # (T-1, 2, H, W) float32 exact forward flow of the visible surface
    write_mp4("scene.mp4", scene.frames, fps=24)
"""
from __future__ import annotations

import colorsys
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SHAPE_KINDS = ("disc", "rect")
_PAD = 3  # texture margin (px) beyond what a shape / the frame ever samples
# Noise octaves of the textures: (cell size px, weight). The finest one gives flow
# estimators detail to lock on to (and costs most of the mp4 size).
_OCTAVES = ((40, 1.0), (14, 0.6), (6, 0.35))


# --------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    """One moving textured shape. ``center``/``velocity`` in px and px/frame; with ``path``
    (per-frame centers, at least ``num_frames`` of them) ``center``/``velocity`` are ignored."""

    kind: str
    center: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)
    radius: float | None = None               # disc
    size: tuple[float, float] | None = None   # rect (w, h)
    path: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r}; known: {', '.join(SHAPE_KINDS)}")
        set_ = functools.partial(object.__setattr__, self)
        set_("center", _pair(self.center, "center"))
        set_("velocity", _pair(self.velocity, "velocity"))
        if self.path is not None:
            path = tuple(_pair(p, "path point") for p in self.path)
            if not path:
                raise ValueError("an explicit path needs at least one point")
            set_("path", path)
            set_("center", path[0])
        if self.kind == "disc":
            if self.radius is None or not (float(self.radius) > 0 and math.isfinite(self.radius)):
                raise ValueError(f"a disc needs a positive radius, got {self.radius!r}")
            set_("radius", float(self.radius))
        else:
            if self.size is None:
                raise ValueError("a rect needs size=(w, h)")
            w, h = _pair(self.size, "size")
            if not (w > 0 and h > 0):
                raise ValueError(f"a rect needs a positive size, got {self.size!r}")
            set_("size", (w, h))

    @property
    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the shape's bounding box."""
        if self.kind == "disc":
            return (self.radius, self.radius)
        return (self.size[0] / 2.0, self.size[1] / 2.0)

    @property
    def area(self) -> float:
        return math.pi * self.radius ** 2 if self.kind == "disc" else self.size[0] * self.size[1]

    def centers(self, num_frames: int) -> np.ndarray:
        """(num_frames, 2) float64 centers (x, y) per frame."""
        if self.path is not None:
            if len(self.path) < num_frames:
                raise ValueError(f"shape path has {len(self.path)} points, need {num_frames}")
            return np.asarray(self.path[:num_frames], dtype=np.float64)
        t = np.arange(num_frames, dtype=np.float64)[:, None]
        return np.asarray(self.center, np.float64)[None] + t * np.asarray(self.velocity, np.float64)[None]

    def contains(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Inside test for offsets (dx, dy) of pixel centers from the shape center."""
        if self.kind == "disc":
            return dx * dx + dy * dy <= self.radius * self.radius
        hw, hh = self.half_extent
        return (dx >= -hw) & (dx < hw) & (dy >= -hh) & (dy < hh)


def disc(center: Sequence[float], radius: float, velocity: Sequence[float] = (0.0, 0.0),
         path: Sequence[Sequence[float]] | None = None) -> Shape:
    return Shape("disc", center=tuple(center), velocity=tuple(velocity), radius=radius,
                 path=None if path is None else tuple(map(tuple, path)))


def rect(center: Sequence[float], size: Sequence[float], velocity: Sequence[float] = (0.0, 0.0),
         path: Sequence[Sequence[float]] | None = None) -> Shape:
    return Shape("rect", center=tuple(center), velocity=tuple(velocity), size=tuple(size),
                 path=None if path is None else tuple(map(tuple, path)))


def _pair(v: Any, what: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair of numbers, got {v!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return (a, b)


def _as_shape(s: Shape | Mapping[str, Any]) -> Shape:
    return s if isinstance(s, Shape) else Shape(**dict(s))


# --------------------------------------------------------------------------- textures
def smooth_texture(height: int, width: int, rng: np.random.Generator,
                   base_color: Sequence[float] = (128, 128, 128), contrast: float = 40.0) -> np.ndarray:
    """A smooth random RGB texture, float32 (H, W, 3) in [0, 255]: multi-scale
    bicubically upsampled noise (luminance plus weaker chroma) around ``base_color``."""
    import cv2

    lum = np.zeros((height, width), np.float32)
    chroma = np.zeros((height, width, 3), np.float32)
    for cell, weight in _OCTAVES:
        for target, ch, w in ((lum, 1, weight), (chroma, 3, 0.4 * weight)):
            gh, gw = height // cell + 4, width // cell + 4
            g = rng.standard_normal((gh, gw, ch)).astype(np.float32)
            up = cv2.resize(g, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
            up = up.reshape(gh * cell, gw * cell, ch)
            oy, ox = (int(v) for v in rng.integers(0, cell, size=2))
            crop = up[oy:oy + height, ox:ox + width]
            target += w * (crop[..., 0] if ch == 1 else crop)
    tex = lum[..., None] + chroma
    tex *= contrast / max(float(tex.std()), 1e-6)
    tex += np.asarray(base_color, np.float32)
    return np.clip(tex, 0.0, 255.0)


def _translate(tex: np.ndarray, sx: float, sy: float, width: int, height: int) -> np.ndarray:
    """``out[i, j] = bilinear(tex, x=j + sx, y=i + sy)`` (float64 weights, edge-clamped)."""
    ix, iy = math.floor(sx), math.floor(sy)
    fx, fy = sx - ix, sy - iy
    th, tw = tex.shape[:2]
    rows = np.clip(np.arange(iy, iy + height + 1), 0, th - 1)
    cols = np.clip(np.arange(ix, ix + width + 1), 0, tw - 1)
    sub = tex[rows[:, None], cols[None, :]]
    top = (1.0 - fx) * sub[:-1, :-1] + fx * sub[:-1, 1:]
    bot = (1.0 - fx) * sub[1:, :-1] + fx * sub[1:, 1:]
    return ((1.0 - fy) * top + fy * bot).astype(np.float32)


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def _shape_color(rng: np.random.Generator, against: np.ndarray, other_hues: Sequence[float],
                 min_diff: float = 70.0, min_hue_gap: float = 0.1) -> tuple[np.ndarray, float]:
    """A saturated color far from the background color and from the other shapes' hues."""
    best, best_score = None, -math.inf
    for _ in range(64):
        h, s, v = rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.45, 0.95)
        c = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
        diff = float(np.abs(c - against).mean())
        gap = min((_hue_distance(h, o) for o in other_hues), default=1.0)
        if diff >= min_diff and gap >= min_hue_gap:
            return c, h
        score = min(diff / min_diff, gap / min_hue_gap)
        if score > best_score:
            best, best_score = (c, h), score
    return best


def scene_colors(seed: int, num_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    """(background base color (3,), shape base colors (K, 3)) float64 RGB, as render_scene
    draws them for ``seed`` (cheap: no texture is generated). Shapes get distinct hues."""
    bg_color = np.random.default_rng([int(seed), 0, 1]).uniform(60, 190, size=3)
    colors, hues = [], []
    for k in range(num_shapes):
        c, h = _shape_color(np.random.default_rng([int(seed), k + 1, 1]), bg_color, hues)
        colors.append(c)
        hues.append(h)
    return bg_color, np.asarray(colors, np.float64).reshape(num_shapes, 3)


# --------------------------------------------------------------------------- rendering
@dataclass
class SceneResult:
    """A rendered scene and its exact ground truth (see the module docstring)."""

    frames: np.ndarray            # (T, H, W, 3) uint8 RGB
    ids: np.ndarray               # (T, H, W) uint16, 0 = background, shape k -> k + 1
    centers: np.ndarray           # (T, K, 2) float32 (x, y)
    width: int
    height: int
    num_frames: int
    shapes: tuple[Shape, ...]
    background_velocity: tuple[float, float]
    seed: int
    shape_colors: np.ndarray      # (K, 3) uint8 base color of each shape's texture
    background_color: np.ndarray  # (3,) uint8
    # Optional per-shape motion labels (random_scene: "linear" | "wavy" | "bounce"), for captions.
    motions: tuple[str, ...] | None = None
    _centers64: np.ndarray = field(repr=False, default=None)

    @property
    def num_shapes(self) -> int:
        return len(self.shapes)

    @functools.cached_property
    def velocities(self) -> np.ndarray:
        """(T-1, K, 2) float32 per-shape displacement from frame t to t+1."""
        return np.diff(self._centers64, axis=0).astype(np.float32)

    def _velocity_table(self, t: int) -> np.ndarray:
        table = np.empty((self.num_shapes + 1, 2), np.float64)
        table[0] = self.background_velocity
        table[1:] = self._centers64[t + 1] - self._centers64[t]
        return table.astype(np.float32)

    def flow_at(self, t: int) -> np.ndarray:
        """(2, H, W) float32 exact forward flow from frame t to t+1."""
        if not 0 <= t < self.num_frames - 1:
            raise IndexError(f"flow index {t} out of range for {self.num_frames} frames")
        return np.moveaxis(self._velocity_table(t)[self.ids[t]], -1, 0)

    @functools.cached_property
    def flow(self) -> np.ndarray:
        """(T-1, 2, H, W) float32 exact forward flow (computed on first access)."""
        out = np.empty((max(self.num_frames - 1, 0), 2, self.height, self.width), np.float32)
        for t in range(self.num_frames - 1):
            out[t] = self.flow_at(t)
        return out

    @functools.cached_property
    def visible(self) -> np.ndarray:
        """(T, K) bool: the shape covers at least one pixel of the frame."""
        out = np.zeros((self.num_frames, self.num_shapes), bool)
        for t in range(self.num_frames):
            present = np.unique(self.ids[t])
            present = present[present > 0].astype(np.int64) - 1
            out[t, present] = True
        return out

    def shape_mask(self, t: int, k: int) -> np.ndarray:
        """(H, W) bool: pixels of frame t where shape k is visible."""
        return self.ids[t] == k + 1


def render_scene(width: int, height: int, num_frames: int,
                 shapes: Iterable[Shape | Mapping[str, Any]],
                 background_velocity: Sequence[float] = (0.0, 0.0), seed: int = 0) -> SceneResult:
    """Render a scene; deterministic for given arguments. See the module docstring."""
    width, height, num_frames = int(width), int(height), int(num_frames)
    if width < 1 or height < 1 or num_frames < 1:
        raise ValueError("width, height and num_frames must be positive")
    shapes = tuple(_as_shape(s) for s in shapes)
    if len(shapes) > 65534:
        raise ValueError("too many shapes for a uint16 id map")
    vx, vy = _pair(background_velocity, "background_velocity")
    T, K = num_frames, len(shapes)

    # Background: frame t at pixel x shows texture point x - t*v + offset.
    bg_color, colors = scene_colors(seed, K)
    bg_rng = np.random.default_rng([int(seed), 0])
    span_x, span_y = abs(vx) * (T - 1), abs(vy) * (T - 1)
    off_x, off_y = _PAD + (span_x if vx > 0 else 0.0), _PAD + (span_y if vy > 0 else 0.0)
    bg_tex = smooth_texture(int(math.ceil(height + span_y)) + 2 * _PAD + 1,
                            int(math.ceil(width + span_x)) + 2 * _PAD + 1, bg_rng, bg_color, contrast=38.0)

    # Shape textures: in shape-local coordinates, shape center at texture point (tc, tc).
    textures = []
    for k, s in enumerate(shapes):
        rng = np.random.default_rng([int(seed), k + 1])
        hw, hh = s.half_extent
        tw, th = 2 * (int(math.ceil(hw)) + _PAD) + 1, 2 * (int(math.ceil(hh)) + _PAD) + 1
        textures.append((smooth_texture(th, tw, rng, colors[k], contrast=30.0), (tw - 1) / 2.0, (th - 1) / 2.0))

    centers = np.stack([s.centers(T) for s in shapes], axis=1) if K else np.zeros((T, 0, 2))
    frames = np.empty((T, height, width, 3), np.uint8)
    ids = np.zeros((T, height, width), np.uint16)
    for t in range(T):
        img = _translate(bg_tex, off_x - t * vx, off_y - t * vy, width, height)
        for k, s in enumerate(shapes):
            cx, cy = centers[t, k]
            hw, hh = s.half_extent
            x0, x1 = max(0, math.floor(cx - hw)), min(width, math.ceil(cx + hw) + 1)
            y0, y1 = max(0, math.floor(cy - hh)), min(height, math.ceil(cy + hh) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
            dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
            mask = s.contains(dx, dy)
            if not mask.any():
                continue
            tex, tcx, tcy = textures[k]
            patch = _translate(tex, x0 - cx + tcx, y0 - cy + tcy, x1 - x0, y1 - y0)
            img[y0:y1, x0:x1][mask] = patch[mask]
            ids[t, y0:y1, x0:x1][mask] = k + 1
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    return SceneResult(
        frames=frames, ids=ids, centers=centers.astype(np.float32), width=width, height=height,
        num_frames=T, shapes=shapes, background_velocity=(vx, vy), seed=int(seed),
        shape_colors=np.rint(colors).astype(np.uint8).reshape(K, 3),
        background_color=np.rint(bg_color).astype(np.uint8), _centers64=centers,
    )


# --------------------------------------------------------------------------- random scenes
def random_scene(seed: int, width: int = 640, height: int = 360, num_frames: int = 48,
                 num_shapes: int | None = None, max_pan: float = 2.0) -> SceneResult:
    """A plausible random scene: 2-4 discs/rects (unless ``num_shapes``) over a background
    panning at up to ``max_pan`` px/frame. Shapes move linearly, along a wavy path, or
    bounce inside the frame; speeds scale with the frame size and clip length.
    Deterministic for its arguments; ``scene.motions`` labels each shape's motion."""
    params = random_scene_params(seed, width, height, num_frames, num_shapes, max_pan)
    motions = params.pop("motions")
    scene = render_scene(**params)
    scene.motions = motions
    return scene


def random_scene_params(seed: int, width: int = 640, height: int = 360, num_frames: int = 48,
                        num_shapes: int | None = None, max_pan: float = 2.0) -> dict[str, Any]:
    """The parameters ``random_scene`` renders: render_scene's keyword arguments plus
    ``motions`` (one label per shape)."""
    rng = np.random.default_rng([int(seed), 1_000_003])
    T = int(num_frames)
    K = int(rng.integers(2, 5)) if num_shapes is None else int(num_shapes)
    ang = rng.uniform(0, 2 * math.pi)
    pan = rng.uniform(0.2, 1.0) * max_pan
    bg_v = (round(pan * math.cos(ang), 3), round(pan * math.sin(ang), 3))
    m = min(width, height)
    max_speed = max(0.5, min(4.0, 0.7 * width / max(T - 1, 1)))
    shapes, motions = [], []
    for _ in range(K):
        kind = "disc" if rng.uniform() < 0.5 else "rect"
        if kind == "disc":
            r = float(rng.uniform(0.07, 0.15) * m)
            hw = hh = r
        else:
            w, h = (float(v) for v in rng.uniform(0.12, 0.35, size=2) * m)
            hw, hh = w / 2, h / 2
        c0 = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.2, 0.8) * height])
        a = rng.uniform(0, 2 * math.pi)
        v = rng.uniform(0.3, 1.0) * max_speed * np.array([math.cos(a), math.sin(a)])
        mode = rng.choice(["linear", "wavy", "bounce"])
        path = None
        motions.append(str(mode))
        t = np.arange(T, dtype=np.float64)[:, None]
        if mode == "wavy":
            normal = np.array([-v[1], v[0]]) / max(np.linalg.norm(v), 1e-9)
            amp, period = rng.uniform(0.05, 0.12) * m, rng.uniform(0.5, 1.0) * T
            path = c0 + t * v + amp * np.sin(2 * math.pi * t / period) * normal
        elif mode == "bounce":
            lo, hi = np.array([hw, hh]), np.array([width - 1 - hw, height - 1 - hh])
            if np.all(hi > lo):
                c0 = np.clip(c0, lo, hi)
                path = lo + _reflect(c0 - lo + t * v, hi - lo)
            else:
                motions[-1] = "linear"
        if path is None:
            s = Shape(kind, center=tuple(c0), velocity=tuple(v), radius=r if kind == "disc" else None,
                      size=(w, h) if kind == "rect" else None)
        else:
            s = Shape(kind, path=tuple(map(tuple, path)), radius=r if kind == "disc" else None,
                      size=(w, h) if kind == "rect" else None)
        shapes.append(s)
    return dict(width=width, height=height, num_frames=T, shapes=tuple(shapes),
                background_velocity=bg_v, seed=seed, motions=tuple(motions))


def _reflect(x: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Fold positions into [0, span] (a bouncing path)."""
    p = np.mod(x, 2 * span)
    return np.where(p > span, 2 * span - p, p)


_COLOR_NAMES = ((0, "red"), (30, "orange"), (60, "yellow"), (120, "green"), (180, "teal"),
                (230, "blue"), (275, "purple"), (320, "pink"), (360, "red"))


def color_name(rgb: Sequence[float]) -> str:
    r, g, b = (float(c) / 255.0 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.2:
        return "white" if v > 0.85 else "gray"
    deg = h * 360.0
    return min(_COLOR_NAMES, key=lambda hn: min(abs(deg - hn[0]), 360 - abs(deg - hn[0])))[1]


def _direction(v: Sequence[float], still: float = 0.1) -> str:
    vx, vy = v
    if math.hypot(vx, vy) < still:
        return "stays still"
    names = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")
    return names[int(round(math.atan2(vy, vx) / (math.pi / 4))) % 8]


def describe_scene(scene: SceneResult | Mapping[str, Any]) -> str:
    """A one-sentence caption naming the shapes, their colors and motions, and the pan.
    Takes a rendered scene, or render_scene's keyword arguments (e.g. ``random_scene_params``
    output) to caption without rendering."""
    if isinstance(scene, SceneResult):
        shapes, T, pan_v, motions = scene.shapes, scene.num_frames, scene.background_velocity, scene.motions
        colors = scene.shape_colors
    else:
        shapes = tuple(_as_shape(s) for s in scene["shapes"])
        T, pan_v, motions = int(scene["num_frames"]), scene.get("background_velocity", (0.0, 0.0)), scene.get("motions")
        colors = np.rint(scene_colors(scene.get("seed", 0), len(shapes))[1])
    parts = []
    for k, s in enumerate(shapes):
        noun = "disc" if s.kind == "disc" else "rectangle"
        c = s.centers(T)
        v = (c[-1] - c[0]) / (T - 1) if T > 1 else (0.0, 0.0)
        where = _direction(v)
        label = motions[k] if motions else ("path" if s.path is not None else "linear")
        if label == "bounce":
            motion = "bouncing around the frame"
        elif where == "stays still":
            motion = "standing still" if label == "linear" else "moving along a curved path"
        elif label == "wavy":
            motion = f"weaving {where}"
        elif label == "linear":
            motion = f"moving {where}"
        else:
            motion = f"drifting {where} along a curved path"
        color = color_name(colors[k])
        parts.append(f"{'an' if color[0] in 'aeiou' else 'a'} {color} textured {noun} {motion}")
    pan = _direction(pan_v)
    bg = "a static textured background" if pan == "stays still" else f"a textured background that pans {pan}"
    if not parts:
        return f"Synthetic scene: {bg}."
    shapes = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Synthetic scene: {shapes}, over {bg}."


# --------------------------------------------------------------------------- video files
def write_mp4(path: str | os.PathLike[str], frames: np.ndarray | Iterable[np.ndarray], fps: float) -> str:
    """Write RGB uint8 frames (T, H, W, 3) to an MPEG-4 Part 2 ('mp4v') file; returns the path.
    Width and height must be even (the encoder would silently crop odd ones)."""
    import cv2

    path = os.fspath(path)
    writer = None
    n = 0
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
            if writer is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"mp4v needs even frame sizes, got {w}x{h}")
                writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"cv2.VideoWriter cannot open {path!r} for {w}x{h} mp4v")
            elif frame.shape[:2] != (h, w):
                raise ValueError(f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, expected {w}x{h}")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        raise ValueError("write_mp4 needs at least one frame")
    return path


# --------------------------------------------------------------------------- VIPSeg layout
def vipseg_ids(scene: SceneResult, background_id: int = 1, thing_category: int = 61) -> np.ndarray:
    """``scene.ids`` as VIPSeg panoptic values (issue 3): the background -> the stuff id
    ``background_id`` (1..124), shape k -> ``thing_category * 100 + k`` (VIPSeg's thing
    encoding, category * 100 + instance). Returns (T, H, W) uint16."""
    if not 0 <= int(background_id) <= 124:
        raise ValueError(f"background_id must be a VIPSeg stuff id (0..124), got {background_id}")
    if not 2 <= int(thing_category) <= 655 or scene.num_shapes > 100:
        raise ValueError("thing ids must fit VIPSeg's category*100+instance in uint16 (<= 100 shapes)")
    lut = np.array([int(background_id)] + [int(thing_category) * 100 + k for k in range(scene.num_shapes)], np.uint16)
    return lut[scene.ids]


def write_vipseg(root: str | os.PathLike[str], name: str, scene: SceneResult, *, background_id: int = 1,
                 thing_category: int = 61, jpeg_quality: int = 95, first_index: int = 0,
                 index_step: int = 1, digits: int = 8) -> dict[str, Any]:
    """Write a scene in VIPSeg's layout (issue 3)::

        root/imgs/<name>/<frame>.jpg         RGB frames (JPEG, ``jpeg_quality``)
        root/panomasks/<name>/<frame>.png    single-channel uint16 PNG id maps (vipseg_ids)

    Frame names are ``first_index + t * index_step`` zero-padded to ``digits``. Returns
    ``{"imgs": folder, "panomasks": folder, "frames": [names], "ids": {scene id: written id}}``.
    """
    import cv2

    root = os.fspath(root)
    img_dir = os.path.join(root, "imgs", name)
    mask_dir = os.path.join(root, "panomasks", name)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    ids = vipseg_ids(scene, background_id, thing_category)
    names = []
    for t in range(scene.num_frames):
        stem = f"{first_index + t * index_step:0{digits}d}"
        ok = cv2.imwrite(os.path.join(img_dir, stem + ".jpg"), np.ascontiguousarray(scene.frames[t][..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ok = ok and cv2.imwrite(os.path.join(mask_dir, stem + ".png"), ids[t])
        if not ok:
            raise RuntimeError(f"cannot write VIPSeg frame {stem} under {root}")
        names.append(stem)
    mapping = {0: int(background_id), **{k + 1: int(thing_category) * 100 + k for k in range(scene.num_shapes)}}
    return {"imgs": img_dir, "panomasks": mask_dir, "frames": names, "ids": mapping}
