"""Storage URIs: a DATA or OUT location is a local path or any URI ``pyarrow.fs`` opens
(``file://``, ``s3://``, ``gs://``, ``hdfs://`` ...).

Local paths (anything without ``://``) map to :class:`pyarrow.fs.LocalFileSystem` with an
absolute path. URIs are joined with ``/`` and keep their query string (``s3://b/x?region=..``).
"""
from __future__ import annotations

import contextlib
import io as _stdio
import os
import posixpath
import shutil
import tempfile
from typing import Iterator
from urllib.parse import urlsplit

import pyarrow.fs as pafs

def is_uri(uri: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(uri)


def _split_query(uri: str) -> tuple[str, str]:
    base, sep, query = uri.partition("?")
    return base, sep + query


_FS: dict[tuple[int, str], pafs.FileSystem] = {}


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or URI. A remote filesystem is made once per
    process and location (scheme, host and query; a forked DataLoader worker makes its own)."""
    uri = os.fspath(uri)
    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if uri.startswith("file://"):
        return pafs.FileSystem.from_uri(uri)
    key = (os.getpid(), fs_key(uri))
    fs = _FS.get(key)
    if fs is None:
        fs, path = pafs.FileSystem.from_uri(uri)
        _FS[key] = fs
        return fs, path
    return fs, fs_path(uri)


def fs_key(uri: str) -> str:
    """What identifies a remote filesystem (and its client) in a URI: scheme, host, query."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}?{parts.query}"


def fs_path(uri: str) -> str:
    """The filesystem path of a remote URI (``bucket/key`` on object stores), without its query."""
    parts = urlsplit(uri)
    return (parts.netloc + parts.path).rstrip("/") if parts.scheme in ("s3", "gs", "gcs") else parts.path


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or a URI (parts use ``/``; empty parts are skipped)."""
    base = os.fspath(base)
    parts = tuple(p for p in (os.fspath(p) for p in parts) if p)
    if not is_uri(base):
        return os.path.join(base, *parts)
    head, query = _split_query(base)
    scheme, _, rest = head.partition("://")
    rest = rest.rstrip("/")
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if tail:
        rest = f"{rest}/{tail}" if rest else tail
    return f"{scheme}://{rest}{query}"


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
            from pipeline.storage import redact

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


def list_dir(uri: str | os.PathLike[str]) -> list[str]:
    """Sorted names (files and folders) directly inside a folder. Raises if it is not one."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def walk_files(uri: str | os.PathLike[str]) -> list[str]:
    """Sorted ``/``-separated paths, relative to the folder, of all files below it."""
    fs, path = resolve(uri)
    root = path.rstrip("/").replace(os.sep, "/")
    out = []
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        p = info.path.replace(os.sep, "/")
        out.append(p[len(root):].lstrip("/") if p.startswith(root) else p)
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
