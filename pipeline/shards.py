"""Shard output: atomic tar writing, per-shard status table, stats file (the completion mark), index.

Files of shard ``N`` for prefix ``P`` (= ``<dataset>-<profile>``) in OUT:

- ``P-N.tar``: the samples (``P-N_1.tar``, ``P-N_2.tar``... when ``max_shard_bytes`` overflows);
  written under ``.P-N.tar.tmp`` and renamed when complete, so a reader never sees a partial tar.
- ``P-N.parquet``: one status row per clip of the shard (ok / error / filtered + reason, message).
- ``P-N.stats.json``: counts, bytes, timings; written last: its presence marks the shard done.

``index.json`` (written at the end of a run) lists the shards with their sample counts.
``expand_urls`` turns what a reader is given (tar, brace pattern, folder) into shard URLs.

Reading: ``iter_samples`` (every sample of a tar, in order, optionally only some members) and
``tar_index`` / ``read_indexed`` (one sample's members without reading the others) are the
one tar reader of the project: stage caches, report, validation, preview and bench use them.
"""
from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from contextlib import contextmanager
from typing import BinaryIO, Callable, Container, Iterable, Iterator, Mapping, NamedTuple, Union

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.storage import join
from schemas.sample import SCHEMA_VERSION, member_rank
from schemas.status import STATUS_SCHEMA


def member_order(name: str) -> tuple[int, str]:
    """Member order inside a sample: text, frames, arrays, meta last (schemas.sample.MEMBERS;
    any order is valid to a reader)."""
    return (member_rank(name), name)


def shard_name(prefix: str, shard: int, part: int = 0) -> str:
    return f"{prefix}-{shard:06d}" + (f"_{part}" if part else "")


def atomic_write_bytes(path: str, data: bytes, tag: str | None = None) -> None:
    """Write via ``.NAME.tmp`` (``.NAME.TAG.tmp`` with a tag: writers that may overlap, such as
    a run's worker and an orphan of a killed run, then never share a temporary file). On an
    object store: one complete upload (``pipeline.storage``)."""
    storage.put_bytes(path, data, tag)


class TarShardWriter:
    """Writes samples to ``P-N.tar`` (rolling to ``P-N_k.tar`` past ``max_bytes``), atomically.

    Tar headers are deterministic (mtime 0, uid/gid 0, mode 0644) so identical samples give
    byte-identical shards.
    """

    def __init__(self, out_dir: str, prefix: str, shard: int, max_bytes: int = 2_000_000_000,
                 tmp_tag: str | None = None):
        self.out_dir, self.prefix, self.shard, self.max_bytes = out_dir, prefix, shard, max_bytes
        self.tmp_tag = tmp_tag  # temporary names .P-N.tar.TAG.tmp (see atomic_write_bytes)
        self.part = -1
        self.names: list[str] = []
        self.counts: list[int] = []
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._bytes = 0

    def _open_next(self) -> None:
        self._close_current()
        self.part += 1
        name = shard_name(self.prefix, self.shard, self.part) + ".tar"
        self.names.append(name)
        self.counts.append(0)
        self._final = join(self.out_dir, name)
        self._out = storage.AtomicFile(self._final, self.tmp_tag)  # local: .P-N.tar.TAG.tmp, renamed
        self._file = self._out.file
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self._bytes = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> str:
        """Add one sample; returns the tar file name it went to."""
        if "." in key or "/" in key or not key:
            raise ValueError(f"invalid sample key {key!r}: keys must be non-empty, without dots or slashes")
        size = sum(len(v) + 1024 for v in members.values())
        if self._tar is None or (self.counts[-1] > 0 and self._bytes + size > self.max_bytes):
            self._open_next()
        for name in sorted(members, key=member_order):
            data = members[name]
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._bytes += size
        self.counts[-1] += 1
        return self.names[-1]

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._out.commit()
            self._tar = self._file = None

    def close(self) -> list[str]:
        """Finish: renames the last tar into place. A shard with no ok sample writes no tar."""
        self._close_current()
        return list(self.names)

    def abort(self) -> None:
        if self._tar is not None:
            try:
                self._tar.close()
            finally:
                self._out.abort()
            self._tar = self._file = None


def split_member_name(name: str) -> tuple[str, str]:
    """``(key, member)`` of a tar entry name ``[DIR/]KEY.MEMBER`` (keys never contain dots)."""
    key, _, ext = os.path.basename(name).partition(".")
    return key, ext


TarSource = Union[str, "os.PathLike[str]", BinaryIO]


class TarProblem(NamedTuple):
    """Something wrong with a tar's structure, as ``iter_samples`` meets it."""
    key: str | None
    member: str | None
    problem: str


@contextmanager
def _open_tar(src: TarSource) -> Iterator[tarfile.TarFile]:
    if isinstance(src, (str, os.PathLike)) and storage.is_remote(os.fspath(src)):
        # an object store: one sequential GET, read front to back (not one request per header)
        with storage.open_stream(os.fspath(src)) as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            yield tf
        return
    if isinstance(src, (str, os.PathLike)):
        with tarfile.open(os.fspath(src)) as tf:
            yield tf
        return
    seekable = getattr(src, "seekable", lambda: False)()
    # a stream (an object-storage body) is read once, front to back
    with tarfile.open(fileobj=src, mode="r:*" if seekable else "r|*") as tf:
        yield tf


def iter_samples(src: TarSource, members: Container[str] | Callable[[str], bool] | None = None,
                 on_problem: Callable[[TarProblem], None] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {member: bytes})`` for each sample of a tar, in tar order.

    ``src``: a path or object-store URI, or an open binary file object (seekable or a stream read front to back).
    ``members``: the member names to read (a collection, or a predicate on the name); the
    others are skipped without being read, and a sample whose members are all skipped is still
    yielded (with an empty dict). Entries that are not regular files, or not named
    ``KEY.MEMBER``, are skipped; a key whose members are not contiguous is yielded once per
    run; a duplicated member keeps the last copy. ``on_problem`` is told each of these
    (``TarProblem``). Tar errors (truncated, not a tar) propagate from the iteration."""
    want = members if members is None or callable(members) else members.__contains__
    report = on_problem or (lambda p: None)
    seen: set[str] = set()
    cur_key, cur, names = None, {}, set()
    with _open_tar(src) as tf:
        for info in tf:
            key, ext = split_member_name(info.name)
            if not info.isfile():
                if not info.isdir():
                    report(TarProblem(key or None, ext or None, "not a regular file"))
                continue
            if not ext or not key:
                report(TarProblem(os.path.basename(info.name), None, "tar member without KEY.EXT name"))
                continue
            if key != cur_key:
                if cur_key is not None:
                    yield cur_key, cur
                if key in seen:
                    report(TarProblem(key, None, "key's members are not contiguous in the tar (split sample)"))
                seen.add(key)
                cur_key, cur, names = key, {}, set()
            if ext in names:
                report(TarProblem(key, ext, "duplicate member"))
            names.add(ext)
            if want is None or want(ext):
                cur[ext] = tf.extractfile(info).read()
    if cur_key is not None:
        yield cur_key, cur


def tar_index(paths: Iterable[str]) -> dict[str, dict[str, tuple[str, int, int]]]:
    """key -> {ext: (tar path, data offset, size)} over the tars of a shard: headers only, so
    one sample's members can be read later without reading the others."""
    index: dict[str, dict[str, tuple[str, int, int]]] = {}
    for path in paths:
        remote = storage.is_remote(path)  # an object store: one sequential GET, not one per header
        with (storage.open_stream(path) if remote else storage.open_input(path)) as f, \
                tarfile.open(fileobj=f, mode="r|" if remote else "r") as tf:
            for m in tf:
                key, ext = split_member_name(m.name)
                index.setdefault(key, {})[ext] = (path, m.offset_data, m.size)
    return index


def read_indexed(where: Mapping[str, tuple[str, int, int]]) -> dict[str, bytes]:
    """The members of one sample from its ``tar_index`` entry (each tar opened once)."""
    members: dict[str, bytes] = {}
    by_path: dict[str, list[tuple[str, int, int]]] = {}
    for ext, (path, off, size) in where.items():
        by_path.setdefault(path, []).append((ext, off, size))
    for path, entries in by_path.items():
        with storage.open_input(path) as f:
            for ext, off, size in sorted(entries, key=lambda e: e[1]):
                f.seek(off)
                members[ext] = f.read(size)
    return members


def write_status(path: str, rows: Iterable[dict], tag: str | None = None) -> None:
    table = pa.Table.from_pylist(list(rows), schema=STATUS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue(), tag)


def write_stats(path: str, stats: dict, tag: str | None = None) -> None:
    atomic_write_bytes(path, json.dumps(stats, indent=1, sort_keys=True).encode(), tag)


def remove_temp_files(d: str) -> list[str]:
    """Remove every ``.*.tmp`` file directly in ``d`` (left by killed writers). Call it only
    while holding the folder's run lock (no live writer of this run exists then)."""
    removed = []
    for n in storage.listdir(d):
        if n.startswith(".") and n.endswith(".tmp"):
            try:
                if storage.remove(join(d, n)):
                    removed.append(n)
            except (FileNotFoundError, IsADirectoryError):
                pass
    return removed


def read_stats(path: str) -> dict | None:
    """A shard's stats (its done mark), or None when missing or not complete JSON."""
    return storage.read_json(path)


def shard_paths(out_dir: str, prefix: str, shard: int) -> dict[str, str]:
    name = shard_name(prefix, shard)  # join keeps a URI's query at the end
    return {"status": join(out_dir, name + ".parquet"), "stats": join(out_dir, name + ".stats.json")}


def write_index(out_dir: str, prefix: str, stats_list: list[dict], extra: dict) -> dict:
    shards = []
    for st in sorted(stats_list, key=lambda s: s["shard"]):
        for name, n in zip(st["tars"], st["tar_counts"]):
            shards.append({"url": name, "samples": n})
    total = sum(s["samples"] for s in shards)
    names = [s["url"] for s in shards]
    brace = None
    if names and all("_" not in n[len(prefix):] for n in names):
        nums = [int(n[len(prefix) + 1:-4]) for n in names]
        if nums == list(range(nums[0], nums[0] + len(nums))):
            brace = f"{prefix}-{{{nums[0]:06d}..{nums[-1]:06d}}}.tar"
    index = {
        "schema_version": SCHEMA_VERSION,
        "prefix": prefix,
        "shards": shards,
        "samples": total,
        "url": brace,
        **extra,
    }
    atomic_write_bytes(join(out_dir, "index.json"), json.dumps(index, indent=1, sort_keys=True).encode())
    return index


def expand_urls(url: str | Iterable[str]) -> list[str]:
    """The shard URLs of ``url``: a tar path, a brace pattern (``out/x-{000000..000009}.tar``),
    a glob, a list of those, or an output folder (its ``index.json`` lists the shards)."""
    if not isinstance(url, str):
        out = []
        for u in url:
            out.extend(expand_urls(u))
        return out
    if storage.is_remote(url):
        return _expand_remote(url)
    if os.path.isdir(url):
        index = os.path.join(url, "index.json")
        if os.path.exists(index):
            with open(index) as f:
                shards = json.load(f)["shards"]
            return [os.path.join(url, s["url"]) for s in shards]
        return sorted(glob.glob(os.path.join(url, "*.tar")))
    from braceexpand import braceexpand

    urls = list(braceexpand(url))
    if any(ch in url for ch in "*?[") and "://" not in url:
        urls = sorted(p for u in urls for p in glob.glob(u))
    if not urls:
        raise FileNotFoundError(f"no shards match {url!r}")
    return urls


def _expand_remote(url: str) -> list[str]:
    """``expand_urls`` for an object-store URI (its query is kept on every shard URL): a
    folder is read through its ``index.json``; braces are expanded; no globbing."""
    from braceexpand import braceexpand

    head, sep, query = url.partition("?")
    if not head.endswith(".tar") and "{" not in head:
        index = storage.read_json(join(url, "index.json"))
        if index is not None:
            return [join(url, s["url"]) for s in index["shards"]]
        names = sorted(n for n in storage.listdir(url) if n.endswith(".tar") and not n.startswith("."))
        if names:
            return [join(url, n) for n in names]
        raise FileNotFoundError(f"no index.json and no shard under {storage.redact(url)}")
    return [u + sep + query for u in braceexpand(head)]
