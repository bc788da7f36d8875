"""Dense optical flow (conventions in ``stages.flow.base``).

Modules: ``base`` (the ``FlowBackend`` interface, generic options, frame checks, the
``FLOW_BACKENDS`` registry and the rules that build a backend from the configuration),
``cpu`` (OpenCV DIS and Farneback), ``models`` (RAFT and UniMatch on torch, imported only
when chosen), ``ops`` (``warp``, ``endpoint_error``). The public names of ``base``, ``cpu``
and ``ops`` are re-exported here; torch is not imported by ``import stages.flow``.
"""
from __future__ import annotations

from .base import (DEFAULT_DIS_PRESET, FLOW_BACKENDS, GENERIC_OPTIONS, FlowBackend, check_frames, check_pairs,
                   make_backward_backend, make_flow_backend, make_flow_backend_from, register_flow_backend)
from .cpu import DIS_OVERRIDES, DIS_PRESETS, DISFlow, FarnebackFlow
from .ops import endpoint_error, warp

__all__ = [
    "FlowBackend",
    "DISFlow",
    "FarnebackFlow",
    "FLOW_BACKENDS",
    "GENERIC_OPTIONS",
    "DIS_PRESETS",
    "DIS_OVERRIDES",
    "DEFAULT_DIS_PRESET",
    "check_frames",
    "check_pairs",
    "register_flow_backend",
    "make_flow_backend",
    "make_flow_backend_from",
    "make_backward_backend",
    "warp",
    "endpoint_error",
]
