"""Preflight: build every configured backend once in the driver, before any clip is scheduled.

A setup that cannot work (a bad weights path, a missing package, CUDA asked for where there
is none, an OUT that cannot be written) would otherwise turn every clip into an error and
still mark its shard done. ``preflight(cfg, out_dir)`` finds it first and raises
``SetupError`` with that backend's own message and what to fix; it writes nothing under OUT
(a probe file is written and removed; the folder is created when missing).

What is built, through the same factories the workers use:

* the video decoder (``stages.decoders.make_decoder(decode.backend, decode.device)``,
  ``auto`` resolved), which then decodes a 4-frame clip written on the spot: a missing
  package or a broken one is a setup error, with the install command;
* the flow backend (``stages.flow.base.make_flow_backend_from(cfg.flow)``): DIS preset, torch
  weights file, UniMatch source; unless the run stops at ``decode``;
* for the entity stage (``stages.entities.EntityStage``, unless entities are off or the run
  stops before them): each mask source the configuration can use
  (``EntityStage.mask_source_names``: gt, and sam or motion under ``auto``), the tracker,
  and the backward flow when a mask source or the tracker needs it;
* the devices those ask for (``flow.device`` for a model flow backend, ``entities.device``
  for SAM and CoTracker): ``cuda`` / ``cuda:N`` / ``mps`` must exist here.

``local_devices=False`` (a remote Ray cluster, whose workers may have GPUs the driver lacks)
builds the backends on the CPU and leaves the device check to the caller
(``devices_requested(cfg)`` lists them). With the default CPU configuration the whole
preflight takes a few milliseconds (DIS objects, the motion source, the flow tracker).

A new backend (a captioner) is one more ``_check_*`` function and one line in
``preflight``.
"""
import dataclasses
import os
import time
import uuid
from typing import Any, Callable

__all__ = ["SetupError", "preflight", "check_out_dir", "check_device", "devices_requested", "format_preflight"]

CPU_FLOW_BACKENDS = ("dis", "farneback")   # they ignore flow.device


class SetupError(ValueError):
    """The run's setup cannot work; the message names the backend, its error and the fix."""


def _message(e: BaseException) -> str:
    msg = getattr(e, "message", None)  # stages.errors.ClipError: reason + message
    return str(msg) if msg else (str(e) or type(e).__name__)


def _fail(what: str, e: BaseException | str, fix: str) -> SetupError:
    text = e if isinstance(e, str) else _message(e)
    return SetupError(f"cannot set up {what}: {text}\n  to fix: {fix}")


def _build(what: str, fix: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except SetupError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the backend raises is its own message
        raise _fail(what, e, fix) from e


def _short(desc: dict[str, Any], *keys: str) -> str:
    parts = [str(desc[k]) for k in keys if desc.get(k) not in (None, "")]
    if desc.get("device"):
        parts.append(f"on {desc['device']}")
    return " ".join(parts)


# ---- OUT ----------------------------------------------------------------------------------------

def check_out_dir(out_dir: str) -> str:
    """Create ``out_dir`` when missing and write and remove a probe file (local path or a
    ``pyarrow.fs`` URI); ``SetupError`` when that fails."""
    from pipeline.io import is_uri, resolve

    probe = f".preflight-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    fix = "choose another --out, or make that folder writable"
    try:
        if not is_uri(out_dir):
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, probe)
            with open(path, "wb") as f:
                f.write(b"preflight\n")
            os.remove(path)
        else:
            from pipeline import storage
            from pipeline.io import join

            fs, base = resolve(out_dir)
            if out_dir.partition("://")[0] in ("s3", "gs", "gcs"):  # no folders: leave no marker object
                storage.put_bytes(join(out_dir, probe), b"preflight\n")
                storage.remove(join(out_dir, probe))
            else:
                fs.create_dir(base, recursive=True)
                path = base.rstrip("/") + "/" + probe
                with fs.open_output_stream(path) as f:
                    f.write(b"preflight\n")
                fs.delete_file(path)
    except Exception as e:  # noqa: BLE001 - OSError locally, pyarrow's errors for URIs
        from pipeline.storage import redact

        raise _fail(f"the output folder {redact(out_dir)}", f"{type(e).__name__}: {e}", fix) from e
    from pipeline.storage import redact

    return f"{redact(out_dir)} (writable)"


# ---- devices ------------------------------------------------------------------------------------

def devices_requested(cfg, stage: str = "shards") -> dict[str, str]:
    """``{dotted key: device}`` for the settings whose backends run on a device."""
    out = {}
    if str(cfg.decode.device).lower() != "cpu":
        out["decode.device"] = cfg.decode.device
    if stage != "decode" and str(cfg.flow.backend).lower() not in CPU_FLOW_BACKENDS:
        out["flow.device"] = cfg.flow.device
    ent = _entity_stage_cfg(cfg, stage)
    if ent is not None:
        from stages.entities import EntityStage

        uses = set(EntityStage(ent).mask_source_names())
        if "sam" in uses or str(ent.tracker).lower() == "cotracker":
            out["entities.device"] = ent.device
    return out


def check_device(device: str | None, key: str) -> str:
    """``device`` exists on this machine (auto and cpu always do); returns it."""
    d = str(device or "auto").lower()
    if d in ("auto", "cpu"):
        return d
    fix = f"set {key} to cpu or auto, or run where that device is"
    try:
        import torch
    except ImportError as e:
        raise _fail(f"{key}={d}", f"torch is not installed: {e}", "pip install -e '.[torch]'") from e
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise _fail(f"{key}={d}", "CUDA is not available on this machine", fix)
        index = int(d.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise _fail(f"{key}={d}", f"this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})", fix)
    elif d == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _fail(f"{key}={d}", "MPS is not available on this machine", fix)
    return d


# ---- backends -----------------------------------------------------------------------------------

def _entity_stage_cfg(cfg, stage: str):
    ent = cfg.entities
    if stage not in ("entities", "shards") or not ent.enabled or str(ent.masks).lower() == "none":
        return None
    return ent


def _check_decoder(d, device: str | None) -> str:
    """The decoder ``decode.backend`` names, built and tried on a 4-frame clip; its line in
    the setup summary says which one ``auto`` chose and why."""
    from stages.decoders import auto_reason, check_decoder, make_decoder

    fix = ("install the decoder's package (pip install -e '.[decord]' or '.[torchcodec]'), or set "
           "decode.backend to pyav or auto (--config file)")
    dec = _build(f"the decoder {d.backend!r}", fix, lambda: make_decoder(d.backend, device or d.device))
    _build(f"the decoder {dec.name!r}", fix, lambda: check_decoder(dec))
    text = f"{dec.name} {dec.version()}".strip() + (f" on {dec.device}" if dec.device != "cpu" else "")
    why = auto_reason() if d.backend == "auto" and dec.name != "decord" else ""
    return text + (f" (auto: {why})" if why else "")


def _check_flow(cfg, device: str | None):
    from stages.flow.base import make_flow_backend_from

    f = cfg.flow
    if f.backend in ("raft", "unimatch"):
        fix = (f"set flow.checkpoint (and flow.source for unimatch) to local files in the --config "
               f"file, or choose a CPU backend (--flow dis)")
    else:
        fix = "check flow.backend and its settings (--flow, --flow-preset)"
    over = {} if device is None else {"device": device}
    backend = _build(f"the flow backend {f.backend!r}", fix, lambda: make_flow_backend_from(f, **over))
    return backend, _short(backend.describe(), "backend", "preset", "model")


_MASK_FIX = {
    "gt": "check entities.void_ids and entities.stuff_max_id",
    "sam": "check --sam-checkpoint and --sam-model (the checkpoint must fit the model type), "
           "or choose --masks motion",
    "motion": "check entities.motion (stages.entities.masks_motion.segment_motion parameters)",
}


def _check_entities(cfg, flow_backend, device: str | None) -> dict[str, str]:
    from stages.entities import EntityStage

    ent = cfg.entities
    if device is not None:
        ent = dataclasses.replace(ent, device=device)
    stage = EntityStage(ent, cfg.get_profile(), lambda: flow_backend)
    out, needs_back = {}, False
    for name in stage.mask_source_names():
        src = _build(f"the {name!r} mask source", _MASK_FIX.get(name, "check entities.masks"),
                     lambda: stage.mask_source(name))
        out[f"masks.{name}"] = _short(src.describe(), "model") or name
        needs_back = needs_back or bool(getattr(src, "needs_backward_flow", False))
    fix = ("install the cotracker package (from its source) and pass --cotracker-checkpoint PATH, "
           "or use --tracker flow") if ent.tracker == "cotracker" else "check entities.tracker and entities.fb_threshold"
    tracker = _build(f"the {ent.tracker!r} tracker", fix, lambda: stage.tracker)
    out["tracker"] = _short(tracker.describe(), "tracker", "model")
    if needs_back or getattr(tracker, "needs_backward_flow", False):
        back = _build("the backward flow of the entity checks", "check entities.backward_flow",
                      stage.backward_backend)
        out["backward_flow"] = _short(back.describe(), "backend", "preset", "model")
    return out


def _check_captions(c) -> str:
    """The caption source and its BLIP-2 folder (complete, transformers importable); the
    model itself is loaded by the workers that caption."""
    from stages.captions import check_caption_settings

    try:
        check_caption_settings(c.source, c.model)
    except (ValueError, OSError, ImportError) as e:
        raise _fail("captions", e, "pass --caption-model DIR (a local BLIP-2 folder) or --captions dataset|none")
    return f"{c.source}" + (f" ({os.path.basename(str(c.model).rstrip('/'))})" if c.model else "")


def _release_devices() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def preflight(cfg, out_dir: str, stage: str = "shards", local_devices: bool = True) -> dict[str, str]:
    """Check the run's setup before any clip is scheduled (module docstring); returns a short
    description per backend, for the run summary, plus ``seconds``. Raises ``SetupError``."""
    from pipeline.clip.runtime import import_plugins

    t0 = time.perf_counter()
    stage = "shards" if stage == "all" else stage
    out = {"out": check_out_dir(out_dir)}
    import_plugins(getattr(cfg, "plugins", ()))  # already imported when the config was checked
    requested = devices_requested(cfg, stage)
    if local_devices:
        for key, device in requested.items():
            check_device(device, key)
    build_on = None if local_devices else "cpu"
    flow = None
    try:
        out["decode"] = _check_decoder(cfg.decode, build_on if "decode.device" in requested else None)
        if stage != "decode":
            flow, out["flow"] = _check_flow(cfg, build_on if "flow.device" in requested else None)
        if _entity_stage_cfg(cfg, stage) is not None:
            out.update(_check_entities(cfg, flow, build_on if "entities.device" in requested else None))
        captions = getattr(cfg, "captions", None)
        if captions is not None and stage != "decode":
            out["captions"] = _check_captions(captions)
    finally:
        del flow
        _release_devices()
    out["seconds"] = f"{time.perf_counter() - t0:.3f}"
    return out


def format_preflight(desc: dict[str, str]) -> str:
    """One line for the console: ``setup ok (0.01 s): flow dis medium | masks.gt gt | ...``."""
    parts = [f"{k} {v}" for k, v in desc.items() if k not in ("out", "seconds")]
    return f"setup ok ({desc.get('seconds', '?')} s): " + " | ".join(parts)
