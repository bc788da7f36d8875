"""Fingerprint of the settings that determine sample content, and the resume check built on it.

``content_settings(cfg)`` is every setting of the configuration except those that do not
change what a sample holds: the sections marked runtime (``ray``, ``isolation``) and the
fields marked ``RUNTIME`` in ``pipeline.config`` (devices, batch sizes, timeouts,
``shards.max_shard_bytes``). So a setting added to a section counts as content unless its
author marks it. On top of that:

* ``profile``, ``frames`` and ``profiles`` become the resolved profile (name, frames, size, fps):
  a user profile's definition counts as the values it resolves to, and the profiles the run
  does not use do not count;
* weights files and source folders (``flow.checkpoint``, ``flow.source``,
  ``entities.sam_checkpoint``, ``entities.cotracker_checkpoint``,
  ``trajectories.cotracker_checkpoint``) count by their base name, as the samples' metadata
  records them: moving the weights to another folder is not a change of settings;
* ``entities`` is ``{"enabled": false}`` when the entity steps are off
  (``EntityMasksStep.enabled``: ``enabled`` false or ``masks: none``), whatever its other settings; ``entities.sam``'s batch size
  (``points_per_batch`` / ``batch_size``) is left out;
* ``decode.backend`` is the decoder ``auto`` resolves to here
  (``stages.decoders.decoder_identity``: ``decord``, ``pyav``, ``torchcodec``, with
  ``/cuda`` when it decodes on a CUDA device), so a resume never mixes two decoders;
* ``schema_version`` is the sample layout version (``schemas.sample.SCHEMA_VERSION``).

``fingerprint(cfg)`` is the first 16 hex digits of the SHA-256 of the canonical JSON of those
settings (sorted keys, no spaces). Each shard's stats and OUT/config.json carry it
(``config_record(cfg)`` is what the driver writes to OUT/config.json: the settings, loadable
again with ``--config``, plus the fingerprint and the content settings under
``RECORD_KEY``). ``check_resume`` refuses a run whose fingerprint differs from the done
shards', naming the settings that differ.
"""
import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable

from pipeline.config import RECORD_KEY, Config, ConfigError, config_from_dict, is_runtime
from pipeline.steps import SetupError
from pipeline.steps.entity_masks import EntityMasksStep

__all__ = ["content_settings", "fingerprint", "diff_settings", "config_record", "recorded_settings", "check_resume"]

FILE_SETTINGS = {("flow", "checkpoint"), ("flow", "source"), ("entities", "sam_checkpoint"),
                 ("entities", "cotracker_checkpoint"), ("trajectories", "cotracker_checkpoint")}
SAM_BATCH_KEYS = ("points_per_batch", "batch_size")


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def content_settings(cfg: Config) -> dict[str, Any]:
    """The settings that determine sample content (module docstring), as plain JSON values."""
    from schemas.sample import SCHEMA_VERSION

    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "profile": cfg.get_profile().as_meta()}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("profile", "frames", "profiles"):
            continue
        if not dataclasses.is_dataclass(value):
            out[f.name] = _plain(value)
            continue
        cls = type(value)
        if is_runtime(cls):
            continue
        sec = {}
        for sf in dataclasses.fields(value):
            if is_runtime(cls, sf.name):
                continue
            v = getattr(value, sf.name)
            if (f.name, sf.name) in FILE_SETTINGS and v:
                v = os.path.basename(os.path.normpath(str(v)))
            sec[sf.name] = _plain(v)
        out[f.name] = sec
    dec = out.get("decode")
    if isinstance(dec, dict) and "backend" in dec:
        from stages.decoders import decoder_identity

        dec["backend"] = decoder_identity(dec["backend"], cfg.decode.device)
    ent = out.get("entities")
    if ent is not None:
        if not EntityMasksStep.enabled(cfg):  # the entity steps say whether entities are on
            out["entities"] = {"enabled": False}
        elif isinstance(ent.get("sam"), dict):
            ent["sam"] = {k: v for k, v in ent["sam"].items() if k not in SAM_BATCH_KEYS}
    return out


def _canonical(settings: dict[str, Any]) -> bytes:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def fingerprint(cfg: Config | dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``content_settings(cfg)`` (or of a
    settings dict already computed)."""
    settings = cfg if isinstance(cfg, dict) else content_settings(cfg)
    return hashlib.sha256(_canonical(settings)).hexdigest()[:16]


_ABSENT = object()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):  # an empty mapping sets nothing
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _show(v: Any) -> str:
    return "(not set)" if v is _ABSENT else repr(v)


def diff_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["flow.preset: 'medium' -> 'fast'", ...]``: the dotted keys whose values differ
    (nested dicts compared key by key; a key only on one side shows ``(not set)``)."""
    a, b = _flatten(old or {}), _flatten(new or {})
    keys = list(b) + [k for k in a if k not in b]
    return [f"{k}: {_show(a.get(k, _ABSENT))} -> {_show(b.get(k, _ABSENT))}"
            for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def config_record(cfg: Config) -> dict[str, Any]:
    """What the driver writes to OUT/config.json: ``cfg.to_dict()`` (``--config`` loads it
    again; ``RECORD_KEY`` is ignored there) with ``decode.backend`` resolved, plus
    ``RECORD_KEY: {value, settings}``."""
    settings = content_settings(cfg)
    record = cfg.to_dict()
    # the decoder auto chose, so that --config OUT/config.json resumes with it on any machine
    record["decode"]["backend"] = settings["decode"]["backend"].partition("/")[0]
    return {**record, RECORD_KEY: {"value": fingerprint(settings), "settings": settings}}


def recorded_settings(config_json: dict[str, Any] | None) -> tuple[str | None, dict[str, Any] | None]:
    """``(fingerprint, content settings)`` recorded in a parsed OUT/config.json: its
    ``RECORD_KEY``, else computed from the settings it holds (a folder written before
    fingerprints); ``(None, None)`` when neither can be read."""
    if not isinstance(config_json, dict):
        return None, None
    rec = config_json.get(RECORD_KEY)
    if isinstance(rec, dict) and isinstance(rec.get("settings"), dict):
        return str(rec.get("value") or fingerprint(rec["settings"])), rec["settings"]
    try:
        settings = content_settings(config_from_dict(config_json))
    except (ConfigError, ValueError, TypeError):
        return None, None
    return fingerprint(settings), settings


def check_resume(out_dir_config_json: dict[str, Any] | None, done_shard_fingerprints: Iterable[str | None],
                 cfg: Config, out_dir: str = "OUT") -> None:
    """Refuse (``SetupError``) to resume a folder whose done shards were made with other
    content settings than ``cfg``'s.

    ``out_dir_config_json``: the parsed OUT/config.json of the earlier run (None if absent);
    ``done_shard_fingerprints``: the ``fingerprint`` of each done shard's stats (a list counts
    shards; None for a shard written before fingerprints existed, which is taken to have the
    fingerprint OUT/config.json records, and is accepted when that is unknown too).
    The message lists the differing settings (against OUT/config.json's when that is the
    done shards' fingerprint) and the ways out: --force, a new --out, or the old config."""
    new_settings = content_settings(cfg)
    new_fp = fingerprint(new_settings)
    old_fp, old_settings = recorded_settings(out_dir_config_json)
    done = [f if f else old_fp for f in done_shard_fingerprints]
    other = [f for f in done if f is not None and f != new_fp]
    if not other:
        return
    kinds = sorted(set(other))
    head = (f"{out_dir} has {len(other)} done shard(s) made with other settings than this run's "
            f"(fingerprint {', '.join(kinds)}; this run: {new_fp})")
    if old_settings is not None and old_fp in kinds:
        lines = diff_settings(old_settings, new_settings) or ["(the settings differ only in how they are fingerprinted)"]
        what = ":\n" + "\n".join(f"  {line}" for line in lines)
        if len(kinds) > 1:
            what += f"\n  (and {len(kinds) - 1} other set(s) of settings that {out_dir}/config.json does not record)"
    else:
        what = f"; {out_dir}/config.json does not record those settings"
    config_json = os.path.join(out_dir, "config.json")
    raise SetupError(
        f"{head}{what}\n"
        f"Resuming would mix two kinds of samples in one dataset. Either:\n"
        f"  rerun with the settings the output was made with: --config {config_json} "
        f"(without the options that change them),\n"
        f"  write this run to a new folder: --out NEW_FOLDER,\n"
        f"  or redo every shard with the new settings: --force")
