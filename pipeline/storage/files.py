"""Reading and listing locations (``pipeline.storage.location``): a local path or any URI
``pyarrow.fs`` opens. Local paths map to :class:`pyarrow.fs.LocalFileSystem` with an absolute
path; a remote file system is made once per process and location (scheme, host, query)."""
from __future__ import annotations

import contextlib
import io as _stdio
import json
import os
import posixpath
import shutil
import tempfile
from typing import Any, BinaryIO, Iterator

import pyarrow.fs as pafs

from .location import fs_key, fs_path, is_remote, is_uri, redact, scheme

__all__ = ["resolve", "exists", "is_dir", "read_bytes", "read_text", "open_text", "listdir", "walk_files",
           "local_path", "open_input", "open_stream", "read_json", "read_parquet"]

_FS: dict[tuple[int, str], pafs.FileSystem] = {}


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or URI. A remote filesystem is made once per
    process and location (a forked DataLoader worker makes its own)."""
    uri = os.fspath(uri)
    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if scheme(uri) == "file":
        return pafs.FileSystem.from_uri(uri)
    key = (os.getpid(), fs_key(uri))
    fs = _FS.get(key)
    if fs is None:
        fs, path = pafs.FileSystem.from_uri(uri)
        _FS[key] = fs
        return fs, path
    return fs, fs_path(uri)


def exists(uri: str | os.PathLike[str]) -> bool:
    if not is_uri(uri):
        return os.path.exists(uri)
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str | os.PathLike[str]) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole file; FileNotFoundError (naming the location without its query) when missing."""
    if not is_uri(uri):
        with open(uri, "rb") as f:
            return f.read()
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(redact(uri)) from None
        raise


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bytes(uri).decode(encoding, errors)


@contextlib.contextmanager
def open_text(uri: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict",
              newline: str | None = None) -> Iterator[_stdio.TextIOWrapper]:
    """A text stream over a local file or URI, decoded as it is read (a 2 GB CSV is not held
    in memory, as ``read_text`` would hold it)."""
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as raw:
        yield _stdio.TextIOWrapper(raw, encoding=encoding, errors=errors, newline=newline)


def listdir(uri: str | os.PathLike[str], missing_ok: bool = True) -> list[str]:
    """Sorted names (files and folders) directly inside a folder. A folder that does not
    exist gives [] (``missing_ok``) or FileNotFoundError."""
    uri = os.fspath(uri)
    if not is_remote(uri) and not is_uri(uri):
        try:
            return sorted(os.listdir(uri))
        except FileNotFoundError:
            if missing_ok:
                return []
            raise
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=missing_ok, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def walk_files(uri: str | os.PathLike[str]) -> list[str]:
    """Sorted ``/``-separated paths, relative to the folder, of all files below it."""
    fs, path = resolve(uri)
    top = path.rstrip("/").replace(os.sep, "/")
    out = []
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        p = info.path.replace(os.sep, "/")
        out.append(p[len(top):].lstrip("/") if p.startswith(top) else p)
    return sorted(out)


@contextlib.contextmanager
def local_path(uri: str | os.PathLike[str]) -> Iterator[str]:
    """A local filesystem path for ``uri``: the path itself for local files, else a download
    into a temporary file (same extension) that is removed afterwards."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        yield path
        return
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="pipeline-")
    try:
        with os.fdopen(fd, "wb") as dst, fs.open_input_stream(path) as src:
            shutil.copyfileobj(src, dst, length=1 << 22)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def open_input(uri: str) -> BinaryIO:
    """A seekable binary file (``tarfile.open(fileobj=...)``, ``f.seek(offset)``)."""
    if not is_remote(uri):
        return open(uri, "rb")
    fs, path = resolve(uri)
    return fs.open_input_file(path)


def open_stream(uri: str) -> BinaryIO:
    """A sequential binary stream (a shard read front to back)."""
    if not is_remote(uri):
        return open(uri, "rb")
    fs, path = resolve(uri)
    return fs.open_input_stream(path)


def read_json(uri: str) -> Any | None:
    """The parsed JSON object, or None when it is missing or not (yet) valid JSON."""
    try:
        return json.loads(read_bytes(uri))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_parquet(uri: str, **kw):
    """``pyarrow.parquet.read_table`` of a local path or URI."""
    import pyarrow.parquet as pq

    if not is_remote(uri):
        return pq.read_table(uri, **kw)
    fs, path = resolve(uri)
    return pq.read_table(path, filesystem=fs, **kw)
