"""Dense optical flow between frames: the backend interface, its registry, and the rules
that build a backend from the configuration.

Conventions (shared by every stage):

* frames are ``uint8`` RGB arrays shaped ``(L, H, W, 3)``;
* flow arrays are ``float32`` shaped ``(N, 2, H, W)`` in pixels, channel 0 = dx (x to the
  right), channel 1 = dy (y down);
* ``flow[t]`` is the *forward* flow from frame ``t`` to frame ``t + 1``: the content at pixel
  ``(x, y)`` of frame ``t`` is found at ``(x + flow[t, 0, y, x], y + flow[t, 1, y, x])`` in
  frame ``t + 1``. Pixel centers are at integer coordinates.

Backends are created once per worker (``make_flow_backend``) and reused for every clip.
``FLOW_BACKENDS`` (a ``stages.registry.Registry``) names them: the CPU ones ("dis",
"farneback", ``stages.flow.cpu``) and the torch ones ("raft", "unimatch",
``stages.flow.models``, imported with torch only when chosen). A plugin adds one with
``register_flow_backend(name, factory)``; a factory takes ``preset=...`` and the generic
options (``GENERIC_OPTIONS``) along with its own, and declares ``device_kind = "torch"`` when
it is a model (``FLOW_BACKENDS.device_kind(name)``). The torch backends subclass
``FlowBackend`` and override ``pairs`` (batched on the device).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from ..registry import Registry

__all__ = [
    "FlowBackend",
    "GENERIC_OPTIONS",
    "DEFAULT_DIS_PRESET",
    "FLOW_BACKENDS",
    "check_frames",
    "check_pairs",
    "register_flow_backend",
    "make_flow_backend",
    "make_flow_backend_from",
]

# Options the worker passes to every backend (from FlowConfig). Backends that have no use
# for them (the CPU ones) ignore them.
GENERIC_OPTIONS = ("device", "batch_size", "checkpoint", "source")
# The DIS preset (stages.flow.cpu.DIS_PRESETS) when none is given.
DEFAULT_DIS_PRESET = "medium"


def check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be shaped (N, H, W, 3) RGB, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {frames.dtype}")
    return frames


def check_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the (src, dst) frame batches of ``FlowBackend.pairs``."""
    src = check_frames(src, "src")
    dst = check_frames(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst shapes differ: {src.shape} vs {dst.shape}")
    return src, dst


class FlowBackend:
    """Interface of a dense optical-flow estimator.

    Subclasses set ``name`` and implement ``pairs``; ``forward``/``backward`` are defined
    in terms of ``pairs`` (subclasses may override them to share per-frame work).
    """

    name: str = "base"
    # what it runs on: "cpu" or "torch" (a model that gets its own GPU operator on a GPU
    # cluster: pipeline.run.groups places steps by this, never by a backend's name)
    device_kind: str = "cpu"

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
        frames = check_frames(frames)
        return self.pairs(frames[:-1], frames[1:])

    # pairs per ``pairs`` call of the default ``_forward_pairs`` (a torch backend batches them)
    PAIRS_PER_CALL = 8

    def forward_pairs(self, frames: np.ndarray) -> Iterator[np.ndarray]:
        """The forward flow of a clip pair by pair: ``(2, H, W)`` float32 for t = 0 .. L-2, the
        same values as ``forward(frames)[t]``. A caller that keeps each pair in its own form
        (the flow step rounds and encodes it) never holds a second float32 copy of the whole
        flow (244 MB at 81 frames of 832x480). Backends implement ``_forward_pairs``; a
        subclass that overrides ``forward`` below the class whose ``_forward_pairs`` it
        inherits (a plugin that wraps ``forward``) is served by its ``forward``, so its own
        way of computing a clip is kept."""
        mro = type(self).__mro__
        definer = {n: next(i for i, c in enumerate(mro) if n in c.__dict__) for n in ("forward", "_forward_pairs")}
        if definer["forward"] < definer["_forward_pairs"]:
            yield from self.forward(frames)
        else:
            yield from self._forward_pairs(frames)

    def _forward_pairs(self, frames: np.ndarray) -> Iterator[np.ndarray]:
        """Here: ``pairs`` on ``PAIRS_PER_CALL`` pairs at a time (the CPU backends compute one
        pair at a time, the torch ones in their batches)."""
        frames = check_frames(frames)
        n = max(1, int(getattr(self, "batch_size", None) or self.PAIRS_PER_CALL))
        for i in range(0, len(frames) - 1, n):
            j = min(i + n, len(frames) - 1)
            yield from self.pairs(frames[i:j], frames[i + 1:j + 1])

    def backward(self, frames: np.ndarray) -> np.ndarray:
        """Backward flow of a clip: ``pairs(frames[1:], frames[:-1])`` -> ``(L-1, 2, H, W)``.

        ``backward(frames)[t]`` maps frame ``t + 1`` back to frame ``t`` (used for
        forward-backward consistency checks).
        """
        frames = check_frames(frames)
        return self.pairs(frames[1:], frames[:-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


# ---- registry --------------------------------------------------------------------------------

# name -> factory(preset=..., **kwargs) -> FlowBackend. Factories receive the generic
# options (device, batch_size, checkpoint, source) along with backend-specific ones.
# Entries are imported on first use: the torch backends (stages/flow/models.py) only then.
FLOW_BACKENDS = Registry("flow backend", {
    "dis": "stages.flow.cpu:make_dis",
    "farneback": "stages.flow.cpu:make_farneback",
    "raft": "stages.flow.models:make_raft",          # torchvision RAFT
    "unimatch": "stages.flow.models:make_unimatch",  # UniMatch from source
})


def register_flow_backend(name: str, factory: Callable[..., FlowBackend], device_kind: str | None = None) -> None:
    """Register (or replace) a backend factory under ``name`` (``FLOW_BACKENDS.register``);
    ``device_kind="torch"`` for a model whose factory does not carry the attribute."""
    FLOW_BACKENDS.register(name, factory, device_kind=device_kind)


def make_flow_backend(name: str, preset: str = DEFAULT_DIS_PRESET, **kwargs: Any) -> FlowBackend:
    """Create the flow backend called ``name`` (see ``FLOW_BACKENDS``).

    ``preset`` applies to DIS; ``kwargs`` are passed to the backend's factory. The generic
    options ``device``, ``batch_size``, ``checkpoint`` and ``source`` are ignored by the CPU
    backends.
    """
    return FLOW_BACKENDS.create(name, preset=preset, **kwargs)


def make_flow_backend_from(settings: Any, **overrides: Any) -> FlowBackend:
    """The backend a ``FlowConfig``-like object names: ``settings.backend`` and ``.preset``,
    with those of the ``GENERIC_OPTIONS`` it sets (not None); ``overrides`` replace options
    (e.g. ``device="cpu"``). The one way the worker and the driver's preflight build it."""
    opts = {k: getattr(settings, k, None) for k in GENERIC_OPTIONS}
    opts.update(overrides)
    return make_flow_backend(settings.backend, preset=settings.preset,
                             **{k: v for k, v in opts.items() if v is not None})
