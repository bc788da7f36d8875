"""Dense optical flow (conventions in ``stages.flow.base``).

Modules: ``base`` (the ``FlowBackend`` interface, generic options, frame checks, the
``FLOW_BACKENDS`` registry and the rules that build a backend from the configuration),
``cpu`` (OpenCV DIS and Farneback), ``backward`` (the backend of the backward flow of the
forward-backward checks), ``models`` (RAFT and UniMatch on torch, imported only
when chosen), ``ops`` (``warp``, ``endpoint_error``). The public names of ``base``, ``cpu``
and ``ops`` are re-exported here; torch is not imported by ``import stages.flow``.
"""
from __future__ import annotations

from .backward import backward_choices, backward_device_kind, make_backward_backend
from .base import (DEFAULT_DIS_PRESET, FLOW_BACKENDS, GENERIC_OPTIONS, FlowBackend, check_frames, check_pairs,
                   make_flow_backend, make_flow_backend_from, register_flow_backend)
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
    "backward_choices",
    "backward_device_kind",
    "warp",
    "endpoint_error",
]
