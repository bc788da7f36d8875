"""Training-time augmentation applied identically to frames, flow, tracks, radii and masks.

One :class:`CropFlip` (a crop box in stored pixels, an output size, a horizontal flip) is
drawn per sample read (:func:`sample_crop_flip`, RandomResizedCrop semantics) and applied to
everything geometric in the sample, with one mapping of points (pixel centers at integers):

    x' = (x - x0 + 0.5) * sx - 0.5,   y' = (y - y0 + 0.5) * sy - 0.5,
    sx = out_w / w,  sy = out_h / h,  then, when flipped,  x' <- out_w - 1 - x'

- frames and flow: bilinear crop-resize of the box (``align_corners=False``, which is that
  same mapping; antialiased when shrinking), then mirrored; flow vectors are multiplied by
  ``(sx, sy)`` and dx is negated when flipped, so a frame-t point p moving by f(p) still
  lands on its frame t+1 position;
- tracks (anchor and entity): mapped point by point; a point counts as visible only where
  it was visible and lies inside ``[0, out_w-1] x [0, out_h-1]``;
- radii: ``(r * sx, r * sy)`` (equal unless the crop's aspect differs from the output's);
- id masks: nearest-neighbour crop-resize (half-pixel centers, ``nearest-exact``), mirrored.

Colour jitter (:func:`color_jitter`) touches the frames only; one set of factors per clip.

Defaults (:class:`AugmentConfig`) are the DragNUWA paper's (Table 1): RandomResizeCrop
scale (0.9, 1), ratio (5/3, 5/3); ColorJitter brightness 0.05, contrast 0.15, saturation
0.1 (the paper's saturation value is cut off in the text: "0." -- 0.1 is our choice).
Horizontal flip is **off** by default (``hflip=0``): the paper does not use it, and a
mirrored clip contradicts captions that say "left" or "right". With ``ratio=None`` the crop
keeps the output aspect (no anisotropic stretch; 576x320 is 1.8, not 5/3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "resolve_augment", "CropFlip", "sample_crop_flip", "color_jitter"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; see the module docstring for the defaults' sources.

    crop: draw a random crop (else the whole frame is only resized to the output size).
    scale: crop area as a fraction of the stored frame, uniform in this range.
    ratio: crop aspect w/h, log-uniform in this range; None = the output's aspect.
    hflip: probability of a horizontal flip.
    brightness / contrast / saturation: jitter strengths (factor uniform in
    ``[max(0, 1 - s), 1 + s]``); 0 disables.
    """

    crop: bool = True
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] | None = (5 / 3, 5 / 3)
    hflip: float = 0.0
    brightness: float = 0.05
    contrast: float = 0.15
    saturation: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.scale)
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale!r}")
        if self.ratio is not None:
            r0, r1 = (float(v) for v in self.ratio)
            if not (0 < r0 <= r1):
                raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio!r}")
        if not 0.0 <= float(self.hflip) <= 1.0:
            raise ValueError(f"hflip is a probability, got {self.hflip!r}")
        for name in ("brightness", "contrast", "saturation"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def jitter(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "paper": AugmentConfig(),
    "paper+flip": AugmentConfig(hflip=0.5),
    "geometry": AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0),
}


def resolve_augment(spec: bool | str | AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig | None:
    """True / "paper" -> the paper's settings; a preset name; a config or dict; None/False -> off."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return AUGMENT_PRESETS["paper"]
    if isinstance(spec, AugmentConfig):
        return spec
    if isinstance(spec, str):
        try:
            return AUGMENT_PRESETS[spec]
        except KeyError:
            raise ValueError(f"unknown augmentation preset {spec!r}; known: {', '.join(AUGMENT_PRESETS)}") from None
    if isinstance(spec, Mapping):
        return AugmentConfig(**dict(spec))
    raise TypeError(f"cannot make an augmentation config from {spec!r}")


@dataclass(frozen=True)
class CropFlip:
    """A crop box ``(x0, y0, w, h)`` in stored pixels, resized to ``(out_h, out_w)``, then
    mirrored left-right when ``flip``. See the module docstring for the point mapping."""

    x0: int
    y0: int
    w: int
    h: int
    out_w: int
    out_h: int
    flip: bool = False

    @classmethod
    def identity(cls, height: int, width: int, out_h: int | None = None, out_w: int | None = None) -> "CropFlip":
        """The whole frame, resized to ``(out_h, out_w)`` (default: unchanged)."""
        return cls(0, 0, int(width), int(height), int(out_w or width), int(out_h or height), False)

    @property
    def sx(self) -> float:
        return self.out_w / self.w

    @property
    def sy(self) -> float:
        return self.out_h / self.h

    @property
    def resizes(self) -> bool:
        return self.w != self.out_w or self.h != self.out_h

    # ---- points and vectors (numpy or torch, (..., 2))
    def points(self, p):
        p = _float(p)
        x = (p[..., 0] - self.x0 + 0.5) * self.sx - 0.5
        y = (p[..., 1] - self.y0 + 0.5) * self.sy - 0.5
        if self.flip:
            x = (self.out_w - 1) - x
        return _stack(x, y, p)

    def vectors(self, v):
        v = _float(v)
        x = v[..., 0] * (-self.sx if self.flip else self.sx)
        return _stack(x, v[..., 1] * self.sy, v)

    def inside(self, p):
        """True where a mapped point lies in ``[0, out_w-1] x [0, out_h-1]``."""
        return (p[..., 0] >= 0) & (p[..., 0] <= self.out_w - 1) & (p[..., 1] >= 0) & (p[..., 1] <= self.out_h - 1)

    def radii(self, r):
        """``(K,)`` radii -> ``(K, 2)`` per-axis radii ``(r * sx, r * sy)``."""
        r = torch.as_tensor(r, dtype=torch.float32).reshape(-1)
        return torch.stack([r * self.sx, r * self.sy], -1)

    # ---- dense fields, torch (..., C, H, W)
    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Float images ``(N, C, H, W)`` -> ``(N, C, out_h, out_w)``, bilinear."""
        y = self._crop(x)
        if self.resizes:
            shrink = self.out_w < self.w or self.out_h < self.h
            y = F.interpolate(y, size=(self.out_h, self.out_w), mode="bilinear", align_corners=False,
                              antialias=shrink)
        if self.flip:
            y = torch.flip(y, dims=(-1,))
        return y.contiguous()

    def flow(self, f: torch.Tensor) -> torch.Tensor:
        """Flow ``(N, 2, H, W)`` px -> resampled, vectors scaled by ``(sx, sy)``, dx negated if flipped."""
        y = self.images(f)
        scale = torch.tensor([-self.sx if self.flip else self.sx, self.sy], dtype=y.dtype, device=y.device)
        if self.resizes or self.flip:
            y = y * scale.view(1, 2, 1, 1)
        return y

    def labels(self, m: torch.Tensor) -> torch.Tensor:
        """Integer id map ``(H, W)`` -> ``(out_h, out_w)``, nearest pixel center."""
        m = torch.as_tensor(m)
        y = self._crop(m)
        if self.resizes:
            dtype = y.dtype
            y = F.interpolate(y.to(torch.float32)[None, None], size=(self.out_h, self.out_w),
                              mode="nearest-exact")[0, 0].round().to(dtype)
        if self.flip:
            y = torch.flip(y, dims=(-1,))
        return y.contiguous()

    def as_tensor(self) -> torch.Tensor:
        """``[x0, y0, w, h]`` float32 (the crop box in stored pixels)."""
        return torch.tensor([self.x0, self.y0, self.w, self.h], dtype=torch.float32)


def _float(p):
    if isinstance(p, torch.Tensor):
        return p.to(torch.float32) if not p.is_floating_point() else p
    return np.asarray(p, dtype=np.float64)


def _stack(x, y, like):
    if isinstance(like, torch.Tensor):
        return torch.stack([x, y], -1)
    return np.stack([x, y], -1).astype(np.float32)


def sample_crop_flip(rng: np.random.Generator, height: int, width: int, out_h: int, out_w: int,
                     cfg: AugmentConfig) -> CropFlip:
    """Draw a crop (RandomResizedCrop semantics) and a flip for one sample.

    Up to 10 tries: area fraction ``~ U(scale)``, aspect ``~ logU(ratio)``; the first box that
    fits is placed uniformly. If none fits, the largest centered box with the aspect clamped
    to ``ratio`` is used. Without ``cfg.crop`` the box is the whole frame.
    """
    height, width = int(height), int(width)
    flip = bool(rng.random() < cfg.hflip) if cfg.hflip > 0 else False
    if not cfg.crop:
        return CropFlip(0, 0, width, height, int(out_w), int(out_h), flip)
    r0, r1 = cfg.ratio if cfg.ratio is not None else (out_w / out_h, out_w / out_h)
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(cfg.scale[0], cfg.scale[1])
        ar = math.exp(rng.uniform(math.log(r0), math.log(r1)))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w, endpoint=True))
            y0 = int(rng.integers(0, height - h, endpoint=True))
            return CropFlip(x0, y0, w, h, int(out_w), int(out_h), flip)
    in_ratio = width / height
    if in_ratio < r0:
        w, h = width, int(round(width / r0))
    elif in_ratio > r1:
        w, h = int(round(height * r1)), height
    else:
        w, h = width, height
    return CropFlip((width - w) // 2, (height - h) // 2, w, h, int(out_w), int(out_h), flip)


def color_jitter(video: torch.Tensor, rng: np.random.Generator, brightness: float = 0.05,
                 contrast: float = 0.15, saturation: float = 0.1, inplace: bool = False) -> torch.Tensor:
    """Brightness, contrast, saturation jitter of a clip ``(L, 3, H, W)`` in [0, 1].

    One factor of each kind per clip (no flicker), applied in that order, clamped to [0, 1]:
    brightness scales the values; contrast blends with the clip's mean gray level;
    saturation blends each pixel with its gray level (ITU-R 601 luma weights).
    ``inplace=True`` overwrites a float ``video`` (saves memory traffic).
    """
    def factor(s):
        return float(rng.uniform(max(0.0, 1.0 - s), 1.0 + s)) if s > 0 else 1.0

    fb, fc, fs = factor(brightness), factor(contrast), factor(saturation)
    if not video.is_floating_point():
        v = video.float()
    elif inplace:
        v = video
    else:
        v = video.clone()
    if fb != 1.0:
        v.mul_(fb).clamp_(0, 1)
    if fc != 1.0:
        mean = float(_gray(v).mean())
        v.mul_(fc).add_((1.0 - fc) * mean).clamp_(0, 1)
    if fs != 1.0:
        gray = _gray(v).mul_(1.0 - fs).unsqueeze(1)
        v.mul_(fs).add_(gray).clamp_(0, 1)
    return v


def _gray(v: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``(L, H, W)`` of ``(L, 3, H, W)`` RGB."""
    g = v[:, 0] * 0.299
    g.add_(v[:, 1], alpha=0.587)
    g.add_(v[:, 2], alpha=0.114)
    return g
