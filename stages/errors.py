"""Per-clip failures. A stage raises ClipError(reason, message); the run records it and goes on."""
from __future__ import annotations


class ClipError(Exception):
    """A clip-level failure with a stable reason class (used in the error table).

    Reason classes: missing_file, unreadable (not a video / no video stream / corrupt),
    decode_error, too_short, too_small, too_large, unsafe_path, duplicate_id, timeout,
    crashed (worker died), internal (a bug: unexpected exception), plus adapter-reported ones.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def split_reason(text: str) -> tuple[str, str]:
    """Split 'reason_class: message' as written by adapters into its parts."""
    head, sep, tail = text.partition(":")
    if sep and head and head.replace("_", "").isalnum() and head == head.strip():
        return head, tail.strip()
    return "invalid_input", text
