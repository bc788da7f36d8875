"""Check shards against the sample schema: ``python -m pipeline validate URL``.

Every sample of every shard is read member by member (``pipeline.shards.iter_samples``, no
webdataset grouping, so a broken member is named precisely) and checked against the
``MEMBERS`` table of schemas/sample.py (presence, dtypes, shapes) and the value rules below:

- tar: readable, regular files only, each key's members contiguous, no duplicate member;
- members present: ``txt``, ``json``, ``flow.pfz``, ``anchors.npz`` and the frames
  ``f000.jpg`` .. ``f{L-1}.jpg`` (contiguous, L = ``meta.profile.frames``);
- ``json``: an object, ``schema_version`` known, ``clip_id`` equal to the key, profile
  frames/width/height positive integers, every number finite;
- ``txt``: UTF-8;
- frames: decodable JPEG of ``(H, W, 3)``;
- ``flow.pfz``: decodable, ``(L-1, 2, H, W)`` float32, finite;
- ``anchors.npz``: loads without pickle; ``tracks`` float32 (A, L, 2), ``weights`` float32
  (A,) >= 0, ``visible`` bool (A, L); all finite; every visible point inside
  ``[0, W-1] x [0, H-1]``; A equal to ``meta.anchors.count``; ``reliable`` (schema 2,
  optional) bool (A, L), never true where ``visible`` is false (``within`` in the table);
- ``entities.npz`` (when present, required when ``meta.entities`` is an object):
  ``ids`` int32 (K,) unique, ``mask`` uint16 (H, W) with values in ids or 0,
  ``radii`` float32 (K,) finite >= 0, ``tracks`` float32 (K, L, 2) finite,
  ``visibility`` bool (K, L), visible points inside the frame;
- an output folder's ``index.json``: each listed tar holds the listed number of samples.

Unknown members are reported as warnings (newer writers may add members). Any violation
makes the command exit with status 1.
"""
from __future__ import annotations

import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from schemas.sample import (ANCHORS, ENTITIES, FLOW, FRAMES, JSON, KNOWN_SCHEMA_VERSIONS,
                            REQUIRED_MEMBERS, TXT, Array, Member, decode_flow, decode_jpeg, frame_member,
                            is_frame_member, load_npz, member_of)

from pipeline.shards import TarProblem, iter_samples


@dataclass
class Violation:
    shard: str
    key: str | None
    member: str | None
    problem: str

    @property
    def where(self) -> str:
        if self.key is None:
            return self.shard
        return f"{self.shard}: {self.key}" + (f".{self.member}" if self.member else "")

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class ValidationReport:
    shards: int = 0
    samples: int = 0
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)   # samples read per shard path

    @property
    def ok(self) -> bool:
        return not self.violations

    def broken_samples(self) -> int:
        return len({(v.shard, v.key) for v in self.violations if v.key is not None})

    def format(self, max_lines: int = 200) -> str:
        lines = [f"VIOLATION {v}" for v in self.violations[:max_lines]]
        if len(self.violations) > max_lines:
            lines.append(f"... and {len(self.violations) - max_lines} more violations")
        lines += [f"warning {w}" for w in self.warnings[:max_lines]]
        verdict = ("OK" if self.ok else
                   f"FAILED: {len(self.violations)} violation(s) in {self.broken_samples()} sample(s)")
        lines.append(f"{self.shards} shard(s), {self.samples} sample(s): {verdict}"
                     + (f", {len(self.warnings)} warning(s)" if self.warnings else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------- checks
def _non_finite_paths(obj: Any, path: str = "") -> list[str]:
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "<root>"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _non_finite_paths(v, f"{path}[{i}]")]
    return []


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_array(out: list, member: str, spec: Array, a: np.ndarray, sizes: dict, label: str | None = None,
                 shape_rule: tuple | None = None) -> np.ndarray | None:
    """dtype and shape of one array against its ``MEMBERS`` entry; learns the sizes it sets.
    ``None`` when the shape is wrong (the array is not checked further)."""
    label = (spec.key + ": " if spec.key else "") if label is None else label
    if a.dtype != np.dtype(spec.dtype):
        out.append((member, f"{label}dtype {a.dtype}, expected {np.dtype(spec.dtype)}"))
    rule = Array(spec.field, spec.key, spec.dtype, shape_rule) if shape_rule is not None else spec
    shape = rule.expected(sizes)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        out.append((member, f"{label}shape {a.shape}, expected {want}"))
        return None
    rule.bind(sizes, a.shape)
    return a


def _check_npz(bad: list, warn: list, m: Member, data: bytes, sizes: dict) -> dict[str, np.ndarray] | None:
    """Load an npz member and check each of its arrays (presence, dtype, shape, ``within``);
    returns the arrays that passed, by key (None: not loadable)."""
    try:
        arrays = load_npz(data)
    except Exception as e:  # noqa: BLE001
        bad.append((m.name, f"not a loadable npz: {type(e).__name__}: {e}"))
        return None
    ok: dict[str, np.ndarray] = {}
    for spec in m.arrays:
        if spec.key not in arrays:
            if not spec.optional:
                bad.append((m.name, f"array {spec.key!r} missing (has {sorted(arrays)})"))
            continue
        a = _check_array(bad, m.name, spec, arrays[spec.key], sizes)
        if a is None:
            continue
        ok[spec.key] = a
        inner = ok.get(spec.within) if spec.within is not None else None
        if inner is not None and a.shape == inner.shape:
            n = int((a.astype(bool) & ~inner.astype(bool)).sum())
            if n:
                bad.append((m.name, f"{spec.key}: {n} element(s) true where {spec.within} is false "
                                    f"(must be stored within {spec.within})"))
    for extra in sorted(set(arrays) - {spec.key for spec in m.arrays}):
        warn.append((m.name, f"unknown array {extra!r}"))
    return ok


def _check_points(out: list, member: str, name: str, tracks: np.ndarray, visible: np.ndarray,
                  w: int, h: int) -> None:
    fin = np.isfinite(tracks).all(-1)
    if not fin.all():
        i, t = np.argwhere(~fin)[0]
        out.append((member, f"{name}: {int((~fin).sum())} non-finite point(s), first track {i} frame {t}"))
    x, y = tracks[..., 0], tracks[..., 1]
    with np.errstate(invalid="ignore"):
        outside = visible & fin & ((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1))
    if outside.any():
        i, t = np.argwhere(outside)[0]
        out.append((member, f"{name}: {int(outside.sum())} visible point(s) outside the {w}x{h} frame, first "
                            f"track {i} frame {t} at ({x[i, t]:.2f}, {y[i, t]:.2f})"))


def _check_finite_nonneg(bad: list, member: str, name: str, a: np.ndarray | None) -> None:
    """``a`` (when present) finite and >= 0: the first rule it breaks is named."""
    if a is None:
        return
    if not np.isfinite(a).all():
        bad.append((member, f"{name}: {int((~np.isfinite(a)).sum())} non-finite value(s)"))
    elif (a < 0).any():
        bad.append((member, f"{name}: {int((a < 0).sum())} negative value(s)"))


def check_sample(key: str, members: dict[str, bytes]) -> tuple[list[tuple[str | None, str]], list[tuple[str | None, str]]]:
    """(violations, warnings) of one sample, each ``(member or None, problem)``.

    Presence, dtypes and shapes come from ``schemas.sample.MEMBERS``; the value rules
    (finite, inside the frame, ids) are checked here, member by member."""
    bad: list[tuple[str | None, str]] = []
    warn: list[tuple[str | None, str]] = []
    if not key or "." in key or "/" in key:
        bad.append((None, f"invalid key {key!r}"))
    for m in REQUIRED_MEMBERS:
        if m not in members:
            bad.append((m, "member missing"))
    for m in members:
        if member_of(m) is None:
            warn.append((m, "unknown member"))

    # meta
    meta: dict = {}
    if JSON.name in members:
        try:
            meta = json.loads(members[JSON.name].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            bad.append((JSON.name, f"not valid JSON: {e}"))
            meta = {}
        if not isinstance(meta, dict):
            bad.append((JSON.name, f"not a JSON object ({type(meta).__name__})"))
            meta = {}
        elif meta:
            v = meta.get("schema_version")
            if v not in KNOWN_SCHEMA_VERSIONS:
                bad.append((JSON.name, f"schema_version {v!r} unknown (known: {list(KNOWN_SCHEMA_VERSIONS)})"))
            if meta.get("clip_id") != key:
                bad.append((JSON.name, f"clip_id {meta.get('clip_id')!r} differs from the key"))
            for p in _non_finite_paths(meta):
                bad.append((JSON.name, f"non-finite number at {p}"))
    if TXT.name in members:
        try:
            members[TXT.name].decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append((TXT.name, f"not UTF-8: {e}"))

    prof = meta.get("profile") if isinstance(meta.get("profile"), dict) else {}
    L, W, H = prof.get("frames"), prof.get("width"), prof.get("height")
    if meta and not all(_pos_int(v) for v in (L, W, H)):
        bad.append((JSON.name, f"profile frames/width/height must be positive integers, got {L!r}/{W!r}/{H!r}"))
        L = W = H = None
    sizes: dict[str, int | None] = {"L": L, "H": H, "W": W}   # the shape rules' sizes; A and K are learnt

    # frames
    frame_names = sorted(m for m in members if is_frame_member(m))
    if L is not None:
        for i in range(L):
            if frame_member(i) not in members:
                bad.append((frame_member(i), "member missing"))
        for n in frame_names:
            if int(n[1:-4]) >= L:
                bad.append((n, f"frame index beyond the profile's {L} frames"))
    spec = FRAMES.arrays[0]
    for n in frame_names:
        try:
            img = decode_jpeg(members[n])
        except Exception as e:  # noqa: BLE001 - any decoder failure is a violation
            bad.append((n, f"not a decodable JPEG: {e}"))
            continue
        if H is not None:  # each frame is one (H, W, 3) slice of the frames array
            _check_array(bad, n, spec, img, sizes, label="decoded ", shape_rule=spec.shape[1:])

    # flow
    if FLOW.name in members:
        try:
            flow = decode_flow(members[FLOW.name])
        except Exception as e:  # noqa: BLE001
            bad.append((FLOW.name, f"not decodable: {type(e).__name__}: {e}"))
        else:
            _check_array(bad, FLOW.name, FLOW.arrays[0], flow, sizes)
            if not np.isfinite(flow).all():
                bad.append((FLOW.name, f"{int((~np.isfinite(flow)).sum())} non-finite value(s)"))

    # anchors
    a = _check_npz(bad, warn, ANCHORS, members[ANCHORS.name], sizes) if ANCHORS.name in members else None
    if a is not None:
        m = ANCHORS.name
        tracks, weights, visible = a.get("tracks"), a.get("weights"), a.get("visible")
        _check_finite_nonneg(bad, m, "weights", weights)
        if tracks is not None and visible is not None and W is not None:
            _check_points(bad, m, "tracks", tracks, visible.astype(bool), W, H)
        count = (meta.get("anchors") or {}).get("count") if isinstance(meta.get("anchors"), dict) else None
        if tracks is not None and count is not None and count != tracks.shape[0]:
            bad.append((m, f"{tracks.shape[0]} anchors but meta.anchors.count = {count}"))

    # entities
    e = _check_npz(bad, warn, ENTITIES, members[ENTITIES.name], sizes) if ENTITIES.name in members else None
    if e is not None:
        m = ENTITIES.name
        ids, mask, radii, tracks, vis = (e.get(k) for k in ("ids", "mask", "radii", "tracks", "visibility"))
        if ids is not None and len(np.unique(ids)) != len(ids):
            bad.append((m, "ids: duplicate ids"))
        if ids is not None and mask is not None:
            stray = np.setdiff1d(np.unique(mask), np.append(ids.astype(np.int64), 0))
            if stray.size:
                bad.append((m, f"mask: values {stray[:8].tolist()} are not entity ids"))
        _check_finite_nonneg(bad, m, "radii", radii)
        if tracks is not None and vis is not None and W is not None:
            _check_points(bad, m, "tracks", tracks, vis.astype(bool), W, H)
    elif ENTITIES.name not in members and isinstance(meta.get("entities"), dict) and meta["entities"].get("count"):
        bad.append((ENTITIES.name, f"member missing but meta.entities lists {meta['entities'].get('count')} entities"))
    return bad, warn


# --------------------------------------------------------------------------- shards
def validate_shard(path: str, report: ValidationReport | None = None) -> ValidationReport:
    from pipeline.storage import redact

    report = report or ValidationReport()
    shard = os.path.basename(redact(path))
    report.shards += 1
    n = 0
    try:
        def problem(p: TarProblem) -> None:
            report.violations.append(Violation(shard, p.key, p.member, p.problem))

        for key, members in iter_samples(path, on_problem=problem):
            n += 1
            report.samples += 1
            bad, warn = check_sample(key, members)
            report.violations += [Violation(shard, key, m, p) for m, p in bad]
            report.warnings += [Violation(shard, key, m, p) for m, p in warn]
    except (tarfile.TarError, OSError, EOFError) as e:
        report.violations.append(Violation(shard, None, None, f"unreadable tar after {n} sample(s): "
                                                              f"{type(e).__name__}: {e}"))
    report.counts[path] = n
    return report


def validate(url: str | Iterable[str]) -> ValidationReport:
    """Validate every shard at ``url`` (tar, brace pattern, list, or output folder)."""
    from pipeline import storage
    from pipeline.storage import join
    from pipeline.shards import expand_urls

    report = ValidationReport()
    urls = expand_urls(url)
    for u in urls:
        if not storage.exists(u):
            report.shards += 1
            report.violations.append(Violation(os.path.basename(storage.redact(u)), None, None, "shard file missing"))
            continue
        validate_shard(u, report)
    folder = isinstance(url, str) and (
        storage.is_remote(url) and not url.partition("?")[0].endswith(".tar") and "{" not in url or os.path.isdir(url))
    index = storage.read_json(join(url, "index.json")) if folder else None
    if folder and index is None and storage.exists(join(url, "index.json")):
        report.violations.append(Violation("index.json", None, None, "not valid JSON"))
    if index is not None:
        counts = report.counts
        for s in index.get("shards", []):
            p = join(url, s["url"])
            if p in counts and counts[p] != s.get("samples"):
                report.violations.append(Violation("index.json", None, None,
                                                   f"{s['url']} holds {counts[p]} samples, index says {s.get('samples')}"))
        v = index.get("schema_version")
        if v not in KNOWN_SCHEMA_VERSIONS:
            report.violations.append(Violation("index.json", None, None, f"schema_version {v!r} unknown"))
    return report
