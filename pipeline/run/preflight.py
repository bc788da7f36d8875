"""Preflight: build every configured backend once in the driver, before any clip is scheduled.

A setup that cannot work (a bad weights path, a missing package, CUDA asked for where there
is none, an OUT that cannot be written) would otherwise turn every clip into an error and
still mark its shard done. ``preflight(cfg, out_dir)`` finds it first and raises
``SetupError`` with that backend's own message and what to fix; it writes nothing under OUT
(a probe file is written and removed; the folder is created when missing).

It asks the steps of the run (``pipeline.steps.steps_for``): the devices each one's backends
use (``Step.devices``: ``cuda`` / ``cuda:N`` / ``mps`` must exist here), then ``Step.setup()``,
which builds its backends through the same code the workers use and describes them. A new
step or backend needs nothing here.

``local_devices=False`` (a remote Ray cluster, whose workers may have GPUs the driver lacks)
builds the backends on the CPU and leaves the device check to the caller
(``devices_requested(cfg)`` lists them). With the default CPU configuration the whole
preflight takes a few milliseconds (DIS objects, the motion source, the flow tracker).
"""
import os
import time
import uuid

from pipeline.clip.runtime import import_plugins
from pipeline.steps import Backends, SetupError, setup_failure, steps_for

__all__ = ["SetupError", "preflight", "check_out_dir", "check_device", "devices_requested", "format_preflight"]


# ---- OUT ----------------------------------------------------------------------------------------

def check_out_dir(out_dir: str) -> str:
    """Create ``out_dir`` when missing and write and remove a probe file (a local folder or
    any location ``pipeline.storage`` writes; on an object store no marker object is left);
    ``SetupError`` when that fails."""
    from pipeline import storage

    out = storage.root(out_dir)
    probe = storage.join(out, f".preflight-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        storage.makedirs(out)
        storage.put_bytes(probe, b"preflight\n")
        storage.remove(probe)
    except Exception as e:  # noqa: BLE001 - OSError locally, pyarrow's or boto3's errors for URIs
        raise setup_failure(f"the output folder {storage.redact(out_dir)}", f"{type(e).__name__}: {e}",
                            "choose another --out, or make that folder writable") from e
    return f"{storage.redact(out_dir)} (writable)"


# ---- devices ------------------------------------------------------------------------------------

def devices_requested(cfg, stage: str = "shards") -> dict[str, str]:
    """``{dotted key: device}`` for the settings whose backends run on a device."""
    return {k: v for step in steps_for(cfg, stage) for k, v in step.devices(cfg).items()}


def check_device(device: str | None, key: str) -> str:
    """``device`` exists on this machine (auto and cpu always do); returns it."""
    d = str(device or "auto").lower()
    if d in ("auto", "cpu"):
        return d
    fix = f"set {key} to cpu or auto, or run where that device is"
    try:
        import torch
    except ImportError as e:
        raise setup_failure(f"{key}={d}", f"torch is not installed: {e}", "pip install -e '.[torch]'") from e
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise setup_failure(f"{key}={d}", "CUDA is not available on this machine", fix)
        index = int(d.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise setup_failure(f"{key}={d}", f"this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})", fix)
    elif d == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise setup_failure(f"{key}={d}", "MPS is not available on this machine", fix)
    return d


# ---- the steps' backends ------------------------------------------------------------------------

def _release_devices() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def preflight(cfg, out_dir: str, stage: str = "shards", local_devices: bool = True) -> dict[str, str]:
    """Check the run's setup before any clip is scheduled (module docstring); returns a short
    description per backend, for the run summary, plus ``seconds``. Raises ``SetupError``."""
    t0 = time.perf_counter()
    stage = "shards" if stage == "all" else stage
    out = {"out": check_out_dir(out_dir)}
    import_plugins(cfg.plugins)  # already imported when the config was checked
    steps = steps_for(cfg, stage)
    if local_devices:
        for key, device in devices_requested(cfg, stage).items():
            check_device(device, key)
    backends = Backends(device=None if local_devices else "cpu")
    try:
        for cls in steps:
            out.update(cls(cfg, backends).setup())
    finally:
        backends.release()
        _release_devices()
    out["seconds"] = f"{time.perf_counter() - t0:.3f}"
    return out


def format_preflight(desc: dict[str, str]) -> str:
    """One line for the console: ``setup ok (0.01 s): flow dis medium | masks.gt gt | ...``."""
    parts = [f"{k} {v}" for k, v in desc.items() if k not in ("out", "seconds")]
    return f"setup ok ({desc.get('seconds', '?')} s): " + " | ".join(parts)
