"""The CPU flow backends: OpenCV DIS (``"dis"``) and Farneback (``"farneback"``).

Both work on grayscale frames, one pair at a time; they hold OpenCV state and are not
thread-safe: use one instance per thread/process. They ignore the generic options
(``stages.flow.base.GENERIC_OPTIONS``: device, batch_size, checkpoint, source).
``DIS_PRESETS`` lists the DIS presets (also the choices of ``entities.backward_flow``).
"""
from __future__ import annotations

from typing import Any, Iterator

import cv2
import numpy as np

from .base import DEFAULT_DIS_PRESET, GENERIC_OPTIONS, FlowBackend, check_frames, check_pairs

__all__ = ["DISFlow", "FarnebackFlow", "DIS_PRESETS", "DIS_OVERRIDES", "DEFAULT_DIS_PRESET", "make_dis",
           "make_farneback"]


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
        frames = check_frames(frames)
        g = self._gray(frames)
        return self._run(g[:-1], g[1:], frames.shape[1], frames.shape[2])

    def _forward_pairs(self, frames: np.ndarray) -> Iterator[np.ndarray]:
        frames = check_frames(frames)
        h, w = frames.shape[1:3]
        prev = cv2.cvtColor(np.ascontiguousarray(frames[0]), cv2.COLOR_RGB2GRAY)
        for t in range(1, len(frames)):
            cur = cv2.cvtColor(np.ascontiguousarray(frames[t]), cv2.COLOR_RGB2GRAY)
            f = self._flow_gray(prev, cur)
            pair = np.empty((2, h, w), np.float32)
            pair[0] = f[..., 0]
            pair[1] = f[..., 1]
            yield pair
            prev = cur

    def backward(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
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

# ---- factories of the registry (stages.flow.base.FLOW_BACKENDS) ------------------------------

def make_dis(preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    extra = sorted(k for k in kwargs if k not in GENERIC_OPTIONS)
    if extra:
        raise ValueError(f"unknown option(s) for flow backend 'dis': {', '.join(extra)}")
    return DISFlow(preset)


def make_farneback(preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    # ``preset`` is a DIS setting (FlowConfig always passes one): ignored here.
    return FarnebackFlow(**{k: v for k, v in kwargs.items() if k not in GENERIC_OPTIONS})
