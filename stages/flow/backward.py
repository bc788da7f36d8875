"""The backward flow that feeds the forward-backward checks (anchor reliability, motion masks,
the flow tracker): it is never stored, so its backend may differ from the stored flow's.

``make_backward_backend(choice, main)``: ``choice`` is ``entities.backward_flow``; ``main`` the
run's flow backend. ``"auto"``: DIS balanced when ``main`` runs on the CPU (or is unknown),
else ``main`` itself (a model: its backward flow is as good as its forward one); ``"same"``:
``main``; or a DIS preset name. One rule, so one backward flow serves every check of a clip.
On CPU ``auto`` takes DIS balanced: the same visibility and tracks as a medium backward flow on
the test scenes at half its cost; coarser presets (fast, ultrafast) make the checks reject good
steps (docs/performance.md).
"""
from __future__ import annotations

from .base import FlowBackend, make_flow_backend
from .cpu import DIS_PRESETS

__all__ = ["BACKWARD_CHOICES", "AUTO_PRESET", "backward_choices", "backward_device_kind", "make_backward_backend"]

AUTO_PRESET = "balanced"


def backward_choices() -> tuple[str, ...]:
    """The valid ``entities.backward_flow`` values."""
    return ("auto", "same", *DIS_PRESETS)


BACKWARD_CHOICES = backward_choices()


def _uses_main(choice: str, main_kind: str) -> bool:
    key = str(choice or "auto").lower()
    return key == "same" or (key == "auto" and main_kind != "cpu")


def backward_device_kind(choice: str, main_kind: str) -> str:
    """What the backward flow runs on, from the choice and the main backend's ``device_kind``
    (without building anything: the planner asks it)."""
    return main_kind if _uses_main(choice, main_kind) else "cpu"


def make_backward_backend(choice: str, main: FlowBackend | None = None) -> FlowBackend:
    """The backend of the backward flow (module docstring)."""
    key = str(choice or "auto").lower()
    if key not in BACKWARD_CHOICES:
        raise ValueError(f"unknown backward_flow {choice!r}; choose {', '.join(BACKWARD_CHOICES)}")
    if _uses_main(key, main.device_kind if main is not None else "cpu"):
        if main is None:
            raise ValueError("backward_flow 'same' needs the run's flow backend")
        return main
    return make_flow_backend("dis", preset=AUTO_PRESET if key == "auto" else key)
