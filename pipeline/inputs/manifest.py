"""The manifest: rows -> a pyarrow Table with MANIFEST_SCHEMA (``schemas.manifest``), checked; built by
an adapter (``build_manifest``), written once per run to ``OUT/manifest.parquet`` and read by
workers in row groups (``ManifestRows``)."""
from __future__ import annotations

import bisect
import inspect
import os
import posixpath
import uuid
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from schemas.manifest import MANIFEST_SCHEMA
from pipeline.inputs.listing import KEY_BAD
from pipeline.inputs.adapters import ADAPTERS

_FIELDS = [f.name for f in MANIFEST_SCHEMA]


def rows_to_table(rows: Iterable[dict[str, Any]] | Mapping[str, Sequence[Any]]) -> pa.Table:
    """An adapter's rows -> manifest Table: numbered 0..n-1, absent optional fields null,
    clip ids checked (valid and unique). ``rows`` is an iterable of dicts, one per row, or a
    mapping of field -> column (a list or a pyarrow Array; equal lengths), which a large
    dataset's adapter returns."""
    if isinstance(rows, Mapping):
        cols = {k: rows[k] for k in _FIELDS if k in rows and k != "row"}
        n = len(cols.get("clip_id", ()))
        bad = sorted(k for k, v in cols.items() if len(v) != n)
        if bad:
            raise ValueError(f"adapter produced columns of unequal length ({', '.join(bad)} vs clip_id)")
    else:
        recs = list(rows)
        n = len(recs)
        cols = {k: [r.get(k) for r in recs] for k in _FIELDS if k != "row"}
        del recs
    ids = cols.get("clip_id", [])
    _check_clip_ids(ids.to_pylist() if isinstance(ids, pa.Array) else ids)
    arrays = []
    for f in MANIFEST_SCHEMA:
        if f.name == "row":
            arrays.append(pa.array(range(n), pa.int64()))
        elif f.name in cols:
            col = cols[f.name]
            arrays.append(col.cast(f.type) if isinstance(col, pa.Array) else pa.array(col, f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)


def _check_clip_ids(ids: Sequence[Any]) -> None:
    """Raise for the first row (in order) whose clip id is empty, has characters outside
    ``[A-Za-z0-9_-]`` or repeats an earlier row's."""
    seen: set[str] = set()
    for cid in ids:
        if not cid or not isinstance(cid, str) or KEY_BAD.search(cid):
            raise ValueError(f"adapter produced an invalid clip_id {cid!r}")
        if cid in seen:
            raise ValueError(f"adapter produced a repeated clip_id {cid!r}")
        seen.add(cid)


def build_manifest(dataset: str, data: str | os.PathLike[str], **options: Any) -> pa.Table:
    """The manifest of ``dataset`` stored at ``data``. Raises ValueError for run-level
    problems (unknown dataset or option, no CSV, missing columns)."""
    try:
        adapter = ADAPTERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    params = inspect.signature(adapter).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        known = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
        bad = sorted(set(options) - set(known))
        if bad:
            raise ValueError(f"dataset {dataset!r} has no option {', '.join(bad)} (-o KEY=VALUE); "
                             f"its options: {', '.join(known) or 'none'}")
    return rows_to_table(adapter(dataset, os.fspath(data), **options))


def write_manifest(table: pa.Table, path: str | os.PathLike[str], row_group_size: int | None = None) -> str:
    """Write the manifest as parquet (via a temporary name, then renamed); returns the path.
    ``row_group_size``: rows per row group (the run aligns them with its shards, so that a
    worker reading one shard's rows decodes one small row group: ``ManifestRows``)."""
    table = table.cast(MANIFEST_SCHEMA) if table.schema != MANIFEST_SCHEMA else table

    if storage.is_remote(path):  # an object store: one complete upload (pipeline.storage)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, row_group_size=row_group_size)
        storage.put_bytes(os.fspath(path), buf.getvalue().to_pybytes())
        return os.fspath(path)
    fs, p = storage.resolve(path)
    parent = posixpath.dirname(p.replace(os.sep, "/"))
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp, filesystem=fs, row_group_size=row_group_size)
    try:
        fs.move(tmp, p)
    except Exception:
        fs.delete_file(tmp)
        raise
    return os.fspath(path)


def read_manifest(path: str | os.PathLike[str]) -> pa.Table:
    """Read a manifest written by ``write_manifest``, checked against MANIFEST_SCHEMA."""
    fs, p = storage.resolve(path)
    table = pq.read_table(p, filesystem=fs)
    _check_manifest_columns(table.column_names, path)
    return table.select(_FIELDS).cast(MANIFEST_SCHEMA)


def _check_manifest_columns(names: Sequence[str], path: Any) -> None:
    missing = [n for n in _FIELDS if n not in names]
    if missing:
        raise ValueError(f"{path} is not a manifest: missing column(s) {', '.join(missing)}")


class ManifestRows:
    """Rows ``[start, stop)`` of a manifest parquet file as dicts (``Table.to_pylist`` of
    MANIFEST_SCHEMA), reading only the row groups that hold them. A shard worker keeps one
    per run and asks for its shards' rows; the driver then never holds every row as Python
    objects, nor ships them (10M clips: gigabytes)."""

    def __init__(self, path: str | os.PathLike[str]):
        fs, p = storage.resolve(path)
        self.path = os.fspath(path)
        self._file = pq.ParquetFile(fs.open_input_file(p))
        meta = self._file.metadata
        self.num_rows = meta.num_rows
        self._starts = [0]
        for g in range(meta.num_row_groups):
            self._starts.append(self._starts[-1] + meta.row_group(g).num_rows)
        _check_manifest_columns(self._file.schema_arrow.names, path)
        self._cached: tuple[int, pa.Table] | None = None  # the last row group read

    def _group(self, g: int) -> pa.Table:
        if self._cached is None or self._cached[0] != g:
            t = self._file.read_row_group(g).select(_FIELDS).cast(MANIFEST_SCHEMA)
            self._cached = (g, t)
        return self._cached[1]

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows [{start}, {stop}) outside {self.path} ({self.num_rows} rows)")
        out: list[dict[str, Any]] = []
        g = max(0, bisect.bisect_right(self._starts, start) - 1)
        while start < stop:
            t = self._group(g)
            lo = start - self._starts[g]
            n = min(stop, self._starts[g + 1]) - start
            out.extend(t.slice(lo, n).to_pylist())
            start += n
            g += 1
        return out

    def close(self) -> None:
        self._cached = None
        self._file.close()
