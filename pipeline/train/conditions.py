"""Condition builders for the trainers (pure torch, CPU or GPU): DragNUWA and DragEntity.

Everything here takes tensors/arrays that are already in the training frame (after any
augmentation, see :mod:`pipeline.train.augment`) and returns float32 tensors; nothing reads files.
Conventions as in the shards: x right, y down, pixel centers at integers, flow channel 0 =
dx, 1 = dy, ``flow[t]`` maps frame t to t+1.

DragNUWA (paper Sec. 3.1 / 3.3)
-------------------------------
- :func:`dense_flow_condition`: the stage-1 (Adaptive Training) condition, the dense flow
  ``(L-1, 2, H, W)`` with a zero frame prepended -> ``(L, 2, H, W)``; no filtering.
- :func:`trajectory_map`: the stage-2 condition. The drawn tracks' displacements
  ``x[t+1] - x[t]`` are written at the rounded pixel of frame t
  (:func:`stages.trajectories.rasterize_displacements`, zero frame first) and then
  Gaussian-filtered with one of the named settings in :data:`GAUSSIAN_PRESETS`:

  ==============  ===========  =======  ==================================================
  name            kernel size  sigma    normalisation
  ==============  ===========  =======  ==================================================
  ``paper``       99           10       center weight 1 (a lone displacement d keeps its
                                        value d at its pixel)  -- DragNUWA paper, Table 1
  ``release``     199          20       center weight 1 -- DragNUWA's released code
  ``motionctrl``  99           10       kernel sums to 1 (a lone displacement d spreads a
                                        total of d over the map) -- MotionCtrl
  ==============  ===========  =======  ==================================================

  Kernel size and sigma are in training-frame pixels: the presets were set for 576x320
  frames. At other sizes ``scale_gaussian`` (``make_dataset(gaussian_scale=...)``) keeps them
  in pixels (``"none"``, the default) or scales them with the frame width (``"width"``: the
  paper preset at 832x480 becomes 143 taps, sigma 14.4).

  Custom settings: ``GaussianFilter(kernel_size, sigma, normalize="peak"|"sum")`` or a dict
  with those keys. The 2D kernel is the outer product of a 1D Gaussian truncated to
  ``kernel_size`` taps (odd), so filtering is separable; the map is zero-padded (nothing is
  mirrored in at the borders). Three exact implementations: ``"sparse"`` (default for the
  trajectory map: a sum of separable kernels placed at the <= N non-zero pixels of each
  frame, one batched matmul), ``"separable"`` (two 1D convolutions) and ``"fft"``.

  Reliable spans (whatever the preset): the ``visible`` mask passed to
  :func:`trajectory_map` is, in the trainers' loader, each anchor's *usable* frames
  (``pipeline.train.loader.usable_spans``: reliable per ``anchors.npz:reliable`` and inside the
  crop, cut at the first frame that is not). A displacement ``x[t+1] - x[t]`` is written
  only when both t and t+1 are usable, so a drawn trajectory ends at its first unreliable
  frame and the filter never spreads a displacement from past that frame. Only anchors
  reliable in frames 0 and 1 are drawn, weighted by their own ``||f0||``
  (docs/trajectories.md).

DragEntity (paper Sec. 3.3)
---------------------------
Per entity k: tracked center ``c_k[t]``, visibility ``v_k[t]``, radius ``r_k`` (the incircle
radius of its frame-0 mask, in training pixels; ``(rx, ry)`` per axis when a crop was
resized with a different aspect, see :mod:`pipeline.train.augment`).

- :func:`entity_gaussian_map` ``(L, 1, H, W)``: per frame, ``max_k exp(-(dx^2 / 2 sx^2 +
  dy^2 / 2 sy^2))`` over the entities visible at t, with the **radius rule**
  ``sigma = max(sigma_ratio * r, 0.5)`` per axis, ``sigma_ratio = 1/3`` by default: the
  three-sigma rule, so the Gaussian is essentially contained in the entity's incircle
  (value exp(-4.5) ~ 0.011 on the circle). Peak 1 at each center; overlapping entities
  combine by max (never above 1). Values beyond 5 sigma (< 4e-6) are set to 0.
- :func:`entity_index_map` ``(L, H, W)`` int64: each visible entity's id painted in its
  circle (ellipse ``(dx/rx)^2 + (dy/ry)^2 <= 1``) at its tracked center, 0 elsewhere; larger
  entities are painted first so a smaller one on top stays visible. The trainer paints each
  id's embedding (pooled from the frame-0 entity mask) at those pixels.
- :func:`entity_loss_mask` ``(L, 1, H, W)`` float {0, 1}: the loss mask M of the entity
  regions. ``"shift"`` (default): each visible entity's frame-0 mask region moved by the
  rounded displacement of its tracked center since frame 0; ``"circle"``: the painted
  circles; ``"first"``: the frame-0 regions in every frame (for entities visible at t).

Invisible points contribute nothing: an entity (or trajectory) with ``visible[t]`` false adds
nothing to frame t of any map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "GaussianFilter", "GAUSSIAN_PRESETS", "GAUSSIAN_SCALES", "resolve_gaussian", "scale_gaussian",
    "gaussian_kernel_1d", "gaussian_filter",
    "dense_flow_condition", "trajectory_map", "sparse_gaussian_splat",
    "entity_sigma", "entity_gaussian_map", "entity_index_map", "entity_loss_mask", "LOSS_MASK_MODES",
]

NORMALIZATIONS = ("peak", "sum")
FILTER_METHODS = ("auto", "sparse", "separable", "fft")
LOSS_MASK_MODES = ("shift", "circle", "first")


@dataclass(frozen=True)
class GaussianFilter:
    """Gaussian filter settings: odd ``kernel_size`` taps, ``sigma`` px, ``normalize``:
    ``"peak"`` (center weight 1) or ``"sum"`` (the 2D kernel sums to 1)."""

    kernel_size: int
    sigma: float
    normalize: str = "peak"

    def __post_init__(self) -> None:
        k = int(self.kernel_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size!r}")
        if not (float(self.sigma) > 0 and math.isfinite(float(self.sigma))):
            raise ValueError(f"sigma must be positive, got {self.sigma!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "sigma", float(self.sigma))


GAUSSIAN_PRESETS: dict[str, GaussianFilter] = {
    "paper": GaussianFilter(99, 10.0, "peak"),
    "release": GaussianFilter(199, 20.0, "peak"),
    "motionctrl": GaussianFilter(99, 10.0, "sum"),
}


def resolve_gaussian(spec: str | GaussianFilter | Mapping[str, Any] | tuple | None) -> GaussianFilter | None:
    """A preset name, a :class:`GaussianFilter`, a dict/tuple of its fields, or None (no filter)."""
    if spec is None or isinstance(spec, GaussianFilter):
        return spec
    if isinstance(spec, str):
        try:
            return GAUSSIAN_PRESETS[spec]
        except KeyError:
            raise ValueError(f"unknown Gaussian preset {spec!r}; known: {', '.join(GAUSSIAN_PRESETS)} "
                             "(or pass GaussianFilter(kernel_size, sigma, normalize))") from None
    if isinstance(spec, Mapping):
        return GaussianFilter(**dict(spec))
    if isinstance(spec, (tuple, list)):
        return GaussianFilter(*spec)
    raise TypeError(f"cannot make a Gaussian filter from {spec!r}")


# The width the presets' pixel sizes belong to: DragNUWA's HD frames (576x320).
GAUSSIAN_REFERENCE_WIDTH = 576
GAUSSIAN_SCALES = ("none", "width")


def scale_gaussian(filt: GaussianFilter | None, width: int, scale: str | float = "none",
                   reference_width: int = GAUSSIAN_REFERENCE_WIDTH) -> GaussianFilter | None:
    """The filter used on a ``width``-px training frame. ``scale``: ``"none"`` keeps sigma and
    kernel size in pixels whatever the frame size (a paper sigma of 10 px is 1.7 % of a 576 px
    frame's width and 1.2 % of an 832 px one's); ``"width"`` scales both by ``width /
    reference_width``, so the Gaussian covers the same share of the frame (paper at 832x480:
    sigma 14.4, 143 taps; at 720x480: 12.5, 123 taps); a number is that factor. The kernel
    keeps its truncation in sigmas: ``half = round(half * factor)``, at least 1 tap."""
    if isinstance(scale, str):
        if scale not in GAUSSIAN_SCALES:
            raise ValueError(f"gaussian_scale must be one of {GAUSSIAN_SCALES} or a positive number, got {scale!r}")
        factor = 1.0 if scale == "none" else int(width) / float(reference_width)
    else:
        factor = float(scale)
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"gaussian_scale must be positive, got {scale!r}")
    if filt is None or factor == 1.0:
        return filt
    half = max(0, int(round(filt.kernel_size // 2 * factor)))
    return GaussianFilter(2 * half + 1, filt.sigma * factor, filt.normalize)


def gaussian_kernel_1d(filt: GaussianFilter, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 1D factor ``g`` (``kernel_size`` taps) of the separable 2D kernel ``outer(g, g)``:
    ``g[center] = 1`` for ``"peak"``; ``g / sum(g)`` for ``"sum"``."""
    half = filt.kernel_size // 2
    d = torch.arange(-half, half + 1, dtype=torch.float64)
    g = torch.exp(-(d * d) / (2.0 * filt.sigma ** 2))
    if filt.normalize == "sum":
        g = g / g.sum()
    return g.to(dtype=dtype, device=device)


def _factor(filt: GaussianFilter, offsets: torch.Tensor) -> torch.Tensor:
    """``g`` evaluated at integer ``offsets`` (float tensor, any shape), zero outside the kernel."""
    half = filt.kernel_size // 2
    g = torch.exp(offsets * offsets * (-0.5 / filt.sigma ** 2))
    g = torch.where(offsets.abs() <= half, g, torch.zeros((), dtype=g.dtype, device=g.device))
    if filt.normalize == "sum":
        g = g / float(gaussian_kernel_1d(GaussianFilter(filt.kernel_size, filt.sigma, "peak"), torch.float64).sum())
    return g


def gaussian_filter(x: torch.Tensor, filt: GaussianFilter | str, method: str = "auto") -> torch.Tensor:
    """Filter the last two dims of ``x`` (``(..., H, W)``) with the 2D kernel, zero padding.

    ``method``: ``"separable"`` (two 1D convolutions), ``"fft"`` (zero-padded FFT
    convolution), ``"sparse"`` (sum of kernels at the non-zero pixels; fast for sparse maps)
    or ``"auto"`` (sparse when under 1% of the pixels are non-zero, else separable for
    kernels up to 63 taps and fft above). All give the same result up to float rounding.
    """
    filt = resolve_gaussian(filt)
    if method not in FILTER_METHODS:
        raise ValueError(f"method must be one of {FILTER_METHODS}, got {method!r}")
    if not x.is_floating_point():
        x = x.float()
    shape = x.shape
    h, w = shape[-2:]
    flat = x.reshape(-1, h, w)
    if method == "auto":
        nnz = int(torch.count_nonzero(flat))
        if nnz <= 0.01 * flat.numel():
            method = "sparse"
        else:
            method = "separable" if filt.kernel_size <= 63 else "fft"
    if method == "sparse":
        out = _sparse_filter(flat, filt)
    elif method == "separable":
        out = _separable_filter(flat, filt)
    else:
        out = _fft_filter(flat, filt)
    return out.reshape(shape)


def _separable_filter(x: torch.Tensor, filt: GaussianFilter) -> torch.Tensor:
    g = gaussian_kernel_1d(filt, dtype=x.dtype, device=x.device)
    k, half = filt.kernel_size, filt.kernel_size // 2
    y = F.conv2d(x[:, None], g.view(1, 1, 1, k), padding=(0, half))
    y = F.conv2d(y, g.view(1, 1, k, 1), padding=(half, 0))
    return y[:, 0]


def _fft_filter(x: torch.Tensor, filt: GaussianFilter) -> torch.Tensor:
    n, h, w = x.shape
    k, half = filt.kernel_size, filt.kernel_size // 2
    ph, pw = h + k - 1, w + k - 1
    g = gaussian_kernel_1d(filt, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
    # The kernel is separable, so its 2D spectrum is the outer product of two 1D spectra.
    gy = torch.fft.fft(g, n=ph)
    gx = torch.fft.rfft(g, n=pw)
    spec = torch.fft.rfft2(x, s=(ph, pw)) * (gy[:, None] * gx[None, :])
    full = torch.fft.irfft2(spec, s=(ph, pw))
    return full[:, half:half + h, half:half + w].to(x.dtype).contiguous()


def sparse_gaussian_splat(frame_idx: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, values: torch.Tensor,
                          num_frames: int, height: int, width: int, filt: GaussianFilter) -> torch.Tensor:
    """Filtered map of point impulses, computed as a sum of separable kernels.

    Point i puts ``values[i]`` ``(C,)`` at integer pixel ``(xs[i], ys[i])`` of frame
    ``frame_idx[i]``; returns ``(num_frames, C, H, W)`` = the zero-padded convolution of that
    impulse map with ``outer(g, g)``. Per frame and channel it is ``A @ B`` with
    ``A[y, i] = g(y - y_i)`` and ``B[i, x] = v_i * g(x - x_i)``: one batched matmul.
    """
    if values.ndim == 1:
        values = values[:, None]
    p, c = values.shape[0], values.shape[1]
    dev, dt = values.device, values.dtype if values.is_floating_point() else torch.float32
    out_shape = (num_frames, c, height, width)
    if p == 0:
        return torch.zeros(out_shape, dtype=dt, device=dev)
    frame_idx = frame_idx.long().to(dev)
    order = torch.argsort(frame_idx, stable=True)
    frame_idx, ys, xs, values = frame_idx[order], ys[order].to(dev), xs[order].to(dev), values[order].to(dt)
    counts = torch.bincount(frame_idx, minlength=num_frames)
    n = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(p, device=dev) - starts[frame_idx]            # position within its frame
    yy = torch.arange(height, device=dev, dtype=dt)
    xx = torch.arange(width, device=dev, dtype=dt)
    a = torch.zeros(num_frames, 1, height, n, dtype=dt, device=dev)
    b = torch.zeros(num_frames, c, n, width, dtype=dt, device=dev)
    a[frame_idx, 0, :, slot] = _factor(filt, yy[None, :] - ys.to(dt)[:, None])       # (P, H)
    gxv = _factor(filt, xx[None, :] - xs.to(dt)[:, None])                             # (P, W)
    b[frame_idx, :, slot] = values[:, :, None] * gxv[:, None, :]                      # (P, C, W)
    return torch.matmul(a, b)                                                         # (L, C, H, W)


def _sparse_filter(x: torch.Tensor, filt: GaussianFilter) -> torch.Tensor:
    n, h, w = x.shape
    nz = torch.nonzero(x, as_tuple=True)
    return sparse_gaussian_splat(nz[0], nz[1], nz[2], x[nz][:, None], n, h, w, filt)[:, 0]


# ------------------------------------------------------------------------------ DragNUWA
def dense_flow_condition(flow: torch.Tensor) -> torch.Tensor:
    """``(L-1, 2, H, W)`` forward flow -> ``(L, 2, H, W)`` with a zero frame first."""
    flow = torch.as_tensor(flow)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (L-1, 2, H, W), got {tuple(flow.shape)}")
    return torch.cat([torch.zeros_like(flow[:1]), flow], 0)


def trajectory_map(tracks, visible, indices, height: int, width: int,
                   filt: GaussianFilter | str | None = "paper", method: str = "sparse") -> torch.Tensor:
    """DragNUWA's trajectory condition ``(L, 2, H, W)`` float32 for the drawn tracks.

    ``tracks`` ``(A, L, 2)``, ``visible`` ``(A, L)`` (numpy or torch), ``indices`` the drawn
    track indices (:func:`stages.trajectories.draw_trajectories`). The displacements are
    rasterised by :func:`stages.trajectories.rasterize_displacements` (frame 0 zero; a
    displacement counts only where the track is visible at t and t+1), then filtered with
    ``filt`` (a preset name, :class:`GaussianFilter`, or None for the raw sparse map).
    """
    from stages.trajectories import rasterize_displacements

    tracks = _np(tracks).astype(np.float32, copy=False)
    visible = _np(visible).astype(bool, copy=False)
    indices = _np(indices).astype(np.int64).ravel()
    h, w = int(height), int(width)
    raw = rasterize_displacements(tracks, visible, indices, h, w)
    filt = resolve_gaussian(filt)
    if filt is None:
        return torch.from_numpy(raw)
    if method in ("sparse", "auto"):
        # The only pixels rasterize_displacements can have written: each drawn track's rounded
        # (clipped) position at frame t, in frame t+1. Read the values back from there, so
        # its rules (visibility, the later track winning a shared pixel) hold as they are.
        length = raw.shape[0]
        if indices.size == 0 or length < 2:
            return torch.from_numpy(raw)
        pos = tracks[indices, :-1].astype(np.float64)                          # (n, L-1, 2)
        px = np.clip(np.floor(pos[..., 0] + 0.5), 0, w - 1).astype(np.int64)
        py = np.clip(np.floor(pos[..., 1] + 0.5), 0, h - 1).astype(np.int64)
        t = np.broadcast_to(np.arange(1, length), px.shape)
        cells = np.unique(np.stack([t.ravel(), py.ravel(), px.ravel()], 1), axis=0)
        t, yy, xx = cells[:, 0], cells[:, 1], cells[:, 2]
        vals = raw[t, :, yy, xx]                                              # (P, 2)
        keep = np.any(vals != 0, axis=1)
        t, yy, xx, vals = t[keep], yy[keep], xx[keep], vals[keep]
        return sparse_gaussian_splat(torch.from_numpy(t), torch.from_numpy(yy), torch.from_numpy(xx),
                                     torch.from_numpy(np.ascontiguousarray(vals)), length, h, w, filt)
    return gaussian_filter(torch.from_numpy(raw), filt, method=method)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------------------------ DragEntity
def _radii2(radii: torch.Tensor) -> torch.Tensor:
    radii = torch.as_tensor(radii, dtype=torch.float32)
    if radii.ndim == 1:
        radii = torch.stack([radii, radii], -1)
    if radii.ndim != 2 or radii.shape[1] != 2:
        raise ValueError(f"radii must be (K,) or (K, 2), got {tuple(radii.shape)}")
    return radii


def entity_sigma(radii, sigma_ratio: float = 1.0 / 3.0) -> torch.Tensor:
    """The radius rule: ``sigma = max(sigma_ratio * r, 0.5)`` px, per axis -> ``(K, 2)``."""
    return torch.clamp(_radii2(radii) * float(sigma_ratio), min=0.5)


def _check_entities(centers, visible, k_expected=None):
    centers = torch.as_tensor(centers, dtype=torch.float32)
    visible = torch.as_tensor(visible, dtype=torch.bool)
    if centers.ndim != 3 or centers.shape[2] != 2 or tuple(visible.shape) != tuple(centers.shape[:2]):
        raise ValueError(f"centers (K, L, 2) and visible (K, L) expected, got {tuple(centers.shape)} "
                         f"and {tuple(visible.shape)}")
    if k_expected is not None and centers.shape[0] != k_expected:
        raise ValueError(f"{centers.shape[0]} tracks for {k_expected} entities")
    return centers, visible


def _boxes(cx: float, cy: float, ex: float, ey: float, h: int, w: int):
    x0, x1 = max(0, math.ceil(cx - ex)), min(w, math.floor(cx + ex) + 1)
    y0, y1 = max(0, math.ceil(cy - ey)), min(h, math.floor(cy + ey) + 1)
    return x0, x1, y0, y1


def entity_gaussian_map(centers, radii, visible, height: int, width: int,
                        sigma_ratio: float = 1.0 / 3.0) -> torch.Tensor:
    """DragEntity's 2D Gaussian condition ``(L, 1, H, W)`` (see the module docstring)."""
    centers, visible = _check_entities(centers, visible)
    sig = entity_sigma(radii, sigma_ratio)
    k_n, length = visible.shape
    h, w = int(height), int(width)
    out = torch.zeros(length, 1, h, w)
    c_np, v_np, s_np = centers.numpy(), visible.numpy(), sig.numpy()
    for k in range(k_n):
        sx, sy = float(s_np[k, 0]), float(s_np[k, 1])
        for t in np.flatnonzero(v_np[k]):
            cx, cy = float(c_np[k, t, 0]), float(c_np[k, t, 1])
            x0, x1, y0, y1 = _boxes(cx, cy, 5 * sx, 5 * sy, h, w)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = torch.exp(-((torch.arange(x0, x1, dtype=torch.float32) - cx) ** 2) / (2 * sx * sx))
            gy = torch.exp(-((torch.arange(y0, y1, dtype=torch.float32) - cy) ** 2) / (2 * sy * sy))
            patch = out[t, 0, y0:y1, x0:x1]
            torch.maximum(patch, gy[:, None] * gx[None, :], out=patch)
    return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, h: int, w: int):
    x0, x1, y0, y1 = _boxes(cx, cy, rx, ry, h, w)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (torch.arange(x0, x1, dtype=torch.float32) - cx) / rx
    dy = (torch.arange(y0, y1, dtype=torch.float32) - cy) / ry
    return (slice(y0, y1), slice(x0, x1)), (dy[:, None] ** 2 + dx[None, :] ** 2) <= 1.0


def entity_index_map(centers, radii, visible, ids, height: int, width: int) -> torch.Tensor:
    """Entity ids painted in their circles at the tracked centers: ``(L, H, W)`` int64."""
    ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
    centers, visible = _check_entities(centers, visible, ids.numel())
    r = torch.clamp(_radii2(radii), min=1e-3)
    length = visible.shape[1]
    h, w = int(height), int(width)
    out = torch.zeros(length, h, w, dtype=torch.int64)
    order = torch.argsort(r.prod(1), descending=True, stable=True).tolist()     # large first
    c_np, v_np, r_np = centers.numpy(), visible.numpy(), r.numpy()
    for k in order:
        for t in np.flatnonzero(v_np[k]):
            e = _ellipse(float(c_np[k, t, 0]), float(c_np[k, t, 1]), float(r_np[k, 0]), float(r_np[k, 1]), h, w)
            if e is not None:
                (sy, sx), inside = e
                out[t, sy, sx][inside] = ids[k]
    return out


def entity_loss_mask(mask0, ids, centers, visible, radii=None, mode: str = "shift") -> torch.Tensor:
    """The loss mask M ``(L, 1, H, W)`` float32 in {0, 1} (see the module docstring).

    ``mask0`` ``(H, W)`` int: the frame-0 entity id map (0 = none); ``ids`` ``(K,)``;
    ``centers`` ``(K, L, 2)``; ``visible`` ``(K, L)``; ``radii`` needed for ``"circle"``.
    """
    if mode not in LOSS_MASK_MODES:
        raise ValueError(f"loss mask mode must be one of {LOSS_MASK_MODES}, got {mode!r}")
    mask0 = torch.as_tensor(mask0).to(torch.int64)
    h, w = mask0.shape
    ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
    centers, visible = _check_entities(centers, visible, ids.numel())
    length = visible.shape[1]
    if mode == "circle":
        if radii is None:
            raise ValueError("loss mask mode 'circle' needs radii")
        return (entity_index_map(centers, radii, visible, ids, h, w) > 0).float()[:, None]
    out = torch.zeros(length, h, w, dtype=torch.bool)
    c_np, v_np = centers.numpy().astype(np.float64), visible.numpy()
    for k in range(ids.numel()):
        region = mask0 == ids[k]
        if not bool(region.any()):
            continue
        rows = torch.nonzero(region.any(1)).flatten()
        cols = torch.nonzero(region.any(0)).flatten()
        ry0, ry1, rx0, rx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        patch = region[ry0:ry1, rx0:rx1]
        for t in np.flatnonzero(v_np[k]):
            if mode == "first":
                sx = sy = 0
            else:
                sx, sy = (int(math.floor(v + 0.5)) for v in (c_np[k, t] - c_np[k, 0]))
            y0, x0 = ry0 + sy, rx0 + sx
            cy0, cy1 = max(0, y0), min(h, y0 + patch.shape[0])
            cx0, cx1 = max(0, x0), min(w, x0 + patch.shape[1])
            if cy0 >= cy1 or cx0 >= cx1:
                continue
            out[t, cy0:cy1, cx0:cx1] |= patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out.float()[:, None]
