"""Dense optical flow between frames: backend interface, CPU backends, and flow helpers.

Conventions (shared by every stage):

* frames are ``uint8`` RGB arrays shaped ``(L, H, W, 3)``;
* flow arrays are ``float32`` shaped ``(N, 2, H, W)`` in pixels, channel 0 = dx (x to the
  right), channel 1 = dy (y down);
* ``flow[t]`` is the *forward* flow from frame ``t`` to frame ``t + 1``: the content at pixel
  ``(x, y)`` of frame ``t`` is found at ``(x + flow[t, 0, y, x], y + flow[t, 1, y, x])`` in
  frame ``t + 1``. Pixel centers are at integer coordinates.

Backends are created once per worker (``make_flow_backend``) and reused for every clip.
The CPU backends here (OpenCV DIS and Farneback) hold OpenCV state and are not
thread-safe: use one instance per thread/process.

GPU backends ("raft", "unimatch") are registered in ``FLOW_BACKENDS`` by their own module;
they subclass ``FlowBackend`` and override ``pairs`` (batched on the device).
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

__all__ = [
    "FlowBackend",
    "DISFlow",
    "FarnebackFlow",
    "FLOW_BACKENDS",
    "register_flow_backend",
    "make_flow_backend",
    "make_flow_backend_from",
    "make_backward_backend",
    "warp",
    "endpoint_error",
]

# Options the worker passes to every backend (from FlowConfig). Backends that have no use
# for them (the CPU ones) ignore them.
GENERIC_OPTIONS = ("device", "batch_size", "checkpoint", "source")


def _check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be shaped (N, H, W, 3) RGB, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {frames.dtype}")
    return frames


def check_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the (src, dst) frame batches of ``FlowBackend.pairs``."""
    src = _check_frames(src, "src")
    dst = _check_frames(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst shapes differ: {src.shape} vs {dst.shape}")
    return src, dst


class FlowBackend:
    """Interface of a dense optical-flow estimator.

    Subclasses set ``name`` and implement ``pairs``; ``forward``/``backward`` are defined
    in terms of ``pairs`` (subclasses may override them to share per-frame work).
    """

    name: str = "base"

    def describe(self) -> dict[str, Any]:
        """Backend name and settings, stored in the sample metadata."""
        return {"backend": self.name}

    def pairs(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow from each ``src[i]`` to ``dst[i]``.

        src, dst: ``(N, H, W, 3)`` uint8 RGB. Returns ``(N, 2, H, W)`` float32.
        """
        raise NotImplementedError

    def forward(self, frames: np.ndarray) -> np.ndarray:
        """Forward flow of a clip: ``pairs(frames[:-1], frames[1:])`` -> ``(L-1, 2, H, W)``."""
        frames = _check_frames(frames)
        return self.pairs(frames[:-1], frames[1:])

    def backward(self, frames: np.ndarray) -> np.ndarray:
        """Backward flow of a clip: ``pairs(frames[1:], frames[:-1])`` -> ``(L-1, 2, H, W)``.

        ``backward(frames)[t]`` maps frame ``t + 1`` back to frame ``t`` (used for
        forward-backward consistency checks).
        """
        frames = _check_frames(frames)
        return self.pairs(frames[1:], frames[:-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class _GrayPairBackend(FlowBackend):
    """A CPU backend that computes flow one pair at a time on grayscale images.

    Each frame is converted to grayscale once per call (``forward``/``backward`` share the
    conversion between the two pairs a frame belongs to); the rest of the cost is the flow.
    """

    def _flow_gray(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 from gray image ``a`` to gray image ``b``."""
        raise NotImplementedError

    @staticmethod
    def _gray(frames: np.ndarray) -> list[np.ndarray]:
        return [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]

    def _run(self, gray_src: list[np.ndarray], gray_dst: list[np.ndarray], h: int, w: int) -> np.ndarray:
        out = np.empty((len(gray_src), 2, h, w), np.float32)
        for i, (a, b) in enumerate(zip(gray_src, gray_dst)):
            f = self._flow_gray(a, b)
            out[i, 0] = f[..., 0]
            out[i, 1] = f[..., 1]
        return out

    def pairs(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        src, dst = check_pairs(src, dst)
        return self._run(self._gray(src), self._gray(dst), src.shape[1], src.shape[2])

    def forward(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        g = self._gray(frames)
        return self._run(g[:-1], g[1:], frames.shape[1], frames.shape[2])

    def backward(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        g = self._gray(frames)
        return self._run(g[1:], g[:-1], frames.shape[1], frames.shape[2])


DIS_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST,
    "fast": cv2.DISOpticalFlow_PRESET_FAST,
    "balanced": cv2.DISOpticalFlow_PRESET_MEDIUM,  # + DIS_OVERRIDES["balanced"]
    "medium": cv2.DISOpticalFlow_PRESET_MEDIUM,
}
# Our own preset between OpenCV's fast and medium (docs/performance.md, "The CPU flow
# preset"): medium's finest scale (1, half resolution) with a sparser patch grid and fewer
# iterations. On the benchmark's clips of known motion at 576x320 it runs 2.0x medium's pairs/s
# for an end-point error of 0.36 px against medium's 0.34 (fast: 0.43, Farneback: 0.75), but
# it tracks worse near frame edges (see the doc). The default for the backward flow of the
# entity checks (``entities.backward_flow: auto``), and a throughput choice for the forward flow.
DIS_OVERRIDES: dict[str, dict[str, int]] = {
    "balanced": {"PatchStride": 4, "GradientDescentIterations": 8, "VariationalRefinementIterations": 2},
}
DEFAULT_DIS_PRESET = "medium"


class DISFlow(_GrayPairBackend):
    """OpenCV Dense Inverse Search flow (Kroeger et al. 2016) on grayscale frames.

    preset: "ultrafast" | "fast" | "medium" (OpenCV's presets; medium is the default) or
    "balanced" (ours: medium with ``DIS_OVERRIDES["balanced"]``). The OpenCV object is created once here
    and reused for every pair.
    """

    name = "dis"

    def __init__(self, preset: str = DEFAULT_DIS_PRESET):
        key = str(preset).lower()
        if key not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; valid presets: {', '.join(DIS_PRESETS)}")
        self.preset = key
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[key])
        for name, value in DIS_OVERRIDES.get(key, {}).items():
            getattr(self._dis, "set" + name)(value)

    def _flow_gray(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._dis.calc(a, b, None)

    def describe(self) -> dict[str, Any]:
        d = self._dis
        return {
            "backend": self.name,
            "preset": self.preset,
            "input": "gray",
            "opencv": cv2.__version__,
            "finest_scale": int(d.getFinestScale()),
            "patch_size": int(d.getPatchSize()),
            "patch_stride": int(d.getPatchStride()),
            "gradient_descent_iterations": int(d.getGradientDescentIterations()),
            "variational_refinement_iterations": int(d.getVariationalRefinementIterations()),
        }


class FarnebackFlow(_GrayPairBackend):
    """OpenCV Farneback polynomial-expansion flow on grayscale frames.

    Defaults (the values OpenCV's documentation uses as its example):
    pyr_scale 0.5 (each pyramid level half the size of the previous), levels 3,
    winsize 15 (averaging window), iterations 3 (per level), poly_n 5 (pixel neighbourhood
    of the polynomial expansion), poly_sigma 1.2 (Gaussian sigma for poly_n 5),
    flags 0 (or cv2.OPTFLOW_FARNEBACK_GAUSSIAN).
    """

    name = "farneback"
    DEFAULTS: dict[str, Any] = {
        "pyr_scale": 0.5,
        "levels": 3,
        "winsize": 15,
        "iterations": 3,
        "poly_n": 5,
        "poly_sigma": 1.2,
        "flags": 0,
    }

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"unknown Farneback parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(self.DEFAULTS)}")
        p = {**self.DEFAULTS, **params}
        if not 0.0 < float(p["pyr_scale"]) < 1.0:
            raise ValueError(f"pyr_scale must be in (0, 1), got {p['pyr_scale']}")
        self.params = {
            "pyr_scale": float(p["pyr_scale"]),
            "levels": int(p["levels"]),
            "winsize": int(p["winsize"]),
            "iterations": int(p["iterations"]),
            "poly_n": int(p["poly_n"]),
            "poly_sigma": float(p["poly_sigma"]),
            "flags": int(p["flags"]),
        }

    def _flow_gray(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.params
        return cv2.calcOpticalFlowFarneback(a, b, None, p["pyr_scale"], p["levels"], p["winsize"],
                                            p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "input": "gray", "opencv": cv2.__version__, **self.params}


# ---- registry --------------------------------------------------------------------------------

def _make_dis(preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    extra = sorted(k for k in kwargs if k not in GENERIC_OPTIONS)
    if extra:
        raise ValueError(f"unknown option(s) for flow backend 'dis': {', '.join(extra)}")
    return DISFlow(preset)


def _make_farneback(preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    # ``preset`` is a DIS setting (FlowConfig always passes one): ignored here.
    return FarnebackFlow(**{k: v for k, v in kwargs.items() if k not in GENERIC_OPTIONS})


def _lazy_factory(module: str, attr: str) -> Callable[..., FlowBackend]:
    """A factory that imports ``module`` (and so torch) only when a backend is created."""

    def factory(**kwargs: Any) -> FlowBackend:
        import importlib

        return getattr(importlib.import_module(module), attr)(**kwargs)

    factory.__name__ = f"lazy_{attr}"
    factory.__qualname__ = factory.__name__
    return factory


# name -> factory(preset=..., **kwargs) -> FlowBackend. Factories receive the generic
# options (device, batch_size, checkpoint, source) along with backend-specific ones.
# The torch backends live in stages/flow_torch.py, imported on first use.
FLOW_BACKENDS: dict[str, Callable[..., FlowBackend]] = {
    "dis": _make_dis,
    "farneback": _make_farneback,
    "raft": _lazy_factory("stages.flow_torch", "make_raft"),          # torchvision RAFT
    "unimatch": _lazy_factory("stages.flow_torch", "make_unimatch"),  # UniMatch from source
}


def register_flow_backend(name: str, factory: Callable[..., FlowBackend]) -> None:
    """Register (or replace) a backend factory under ``name``."""
    FLOW_BACKENDS[str(name).lower()] = factory


def make_flow_backend(name: str, preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    """Create the flow backend called ``name`` (see ``FLOW_BACKENDS``).

    ``preset`` applies to DIS; ``kwargs`` are passed to the backend's factory. The generic
    options ``device``, ``batch_size``, ``checkpoint`` and ``source`` are ignored by the CPU
    backends.
    """
    key = str(name).lower()
    try:
        factory = FLOW_BACKENDS[key]
    except KeyError:
        raise ValueError(f"unknown flow backend {name!r}; known: {', '.join(FLOW_BACKENDS)}") from None
    return factory(preset=preset, **kwargs)


def make_flow_backend_from(settings: Any, **overrides: Any) -> FlowBackend:
    """The backend a ``FlowConfig``-like object names: ``settings.backend`` and ``.preset``,
    with those of the ``GENERIC_OPTIONS`` it sets (not None); ``overrides`` replace options
    (e.g. ``device="cpu"``). The one way the worker and the driver's preflight build it."""
    opts = {k: getattr(settings, k, None) for k in GENERIC_OPTIONS}
    opts.update(overrides)
    return make_flow_backend(settings.backend, preset=settings.preset,
                             **{k: v for k, v in opts.items() if v is not None})
def make_backward_backend(choice: str, main: FlowBackend | None = None) -> FlowBackend:
    """The backend of the backward flow that feeds the forward-backward checks (it is not
    stored): ``choice`` is ``entities.backward_flow``. ``"auto"``: DIS balanced when the
    main flow backend ``main`` is a CPU one (dis, farneback) or unknown, else ``main``;
    ``"same"``: ``main``; or a DIS preset name. One rule for the entity checks and the
    anchors' reliability, so one backward flow serves both."""
    key = str(choice or "auto").lower()
    if key == "same" or (key == "auto" and main is not None and main.name not in ("dis", "farneback")):
        if main is None:
            raise ValueError("backward_flow 'same' needs the clip processor's flow backend")
        return main
    if key == "auto":
        return make_flow_backend("dis", preset="balanced")
    if key in DIS_PRESETS:
        return make_flow_backend("dis", preset=key)
    raise ValueError(f"unknown backward_flow {choice!r}; choose auto, same or a DIS preset ({', '.join(DIS_PRESETS)})")


# ---- helpers ---------------------------------------------------------------------------------

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
