"""``resolve_device``: the one rule turning a configured device name into a torch device.

``"auto"`` (or None / "") is CUDA when torch sees a CUDA device, else the CPU; any other
name is ``torch.device(name)`` ("cpu", "cuda", "cuda:1", "mps"). With ``check`` (the
default), a CUDA device on a host where CUDA is not available is a ``ValueError`` that
names the setting (``what``) and the fix; ``check=False`` leaves that to the model's
``.to(device)`` (the mask and tracker models, whose failures the driver's preflight checks
first with ``pipeline.run.preflight.check_device``). torch is imported here, on first call.
"""
from __future__ import annotations

from typing import Any

__all__ = ["resolve_device"]


def resolve_device(device: str | None = "auto", what: str = "device", check: bool = True,
                   fix: str = "device='cpu' or 'auto'") -> Any:
    """The ``torch.device`` for ``device`` (see the module docstring). ``what`` and ``fix``
    word the error: ``f"{what} {device!r} requested but CUDA is not available (use {fix})"``."""
    import torch

    d = "auto" if device in (None, "") else str(device)
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(d)
    if check and dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {d!r} requested but CUDA is not available (use {fix})")
    return dev
