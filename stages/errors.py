"""A clip's outcome: the exceptions a step raises for one clip, and the one record of how a clip
ended that the run passes along (isolation pipe, parts, status tables, executors).

* ``ClipError(reason, message)``: the clip failed (error table). Reason classes: missing_file,
  unreadable (not a video / no video stream / corrupt), decode_error, too_short, too_small,
  too_large, unsafe_path, duplicate_id, timeout, crashed (worker died), internal (a bug: an
  unexpected exception), backend_unavailable, plus adapter-reported ones.
* ``ClipFiltered(reason, message)``: a deliberate filter rejected the clip (filtered table):
  scene_cut, low_motion, camera_motion, low_trackability.
* ``Outcome(status, reason, message)``: ``ok``, or the error/filter above; ``Outcome.of(exc)``
  turns any exception into one (an unexpected exception is ``error``/``internal``).
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.status import STATUS_ERROR, STATUS_FILTERED, STATUS_OK

__all__ = ["ClipStopped", "ClipError", "ClipFiltered", "Outcome", "split_reason", "INTERNAL"]

INTERNAL = "internal"
MAX_MESSAGE = 2000


class ClipStopped(Exception):
    """A clip that ends here without becoming a sample: ``status``, ``reason``, ``message``."""

    status = STATUS_ERROR

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ClipError(ClipStopped):
    """A clip-level failure with a stable reason class (module docstring)."""

    status = STATUS_ERROR


class ClipFiltered(ClipStopped):
    """A deliberate filter rejected the clip (recorded in the filtered table)."""

    status = STATUS_FILTERED


@dataclass(frozen=True)
class Outcome:
    """How a clip ended: ``status`` ok | error | filtered, with the reason and message of a
    clip that did not become a sample."""

    status: str
    reason: str | None = None
    message: str | None = None

    @classmethod
    def ok(cls) -> "Outcome":
        return cls(STATUS_OK)

    @classmethod
    def of(cls, exc: BaseException) -> "Outcome":
        """The outcome an exception raised while processing a clip stands for."""
        if isinstance(exc, ClipStopped):
            return cls(exc.status, exc.reason, exc.message)
        return cls(STATUS_ERROR, INTERNAL, f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE])

    def raise_(self) -> None:
        """Raise the exception this outcome stands for (nothing for ok)."""
        if self.status == STATUS_FILTERED:
            raise ClipFiltered(self.reason or "", self.message or "")
        if self.status != STATUS_OK:
            raise ClipError(self.reason or INTERNAL, self.message or "")


def split_reason(text: str) -> tuple[str, str]:
    """Split 'reason_class: message' as written by adapters into its parts."""
    head, sep, tail = text.partition(":")
    if sep and head and head.replace("_", "").isalnum() and head == head.strip():
        return head, tail.strip()
    return "invalid_input", text
