"""Locations: what a DATA or OUT string names, decided in one place.

A location is a plain string, so that any process (a Ray worker on another node) can open it
from the string alone: a local path (anything without ``://``) or a URI. ``SCHEMES`` is the
one list of the URI schemes the project opens itself, each with its family:

* ``local``: ``file://`` URIs (and plain paths);
* ``object_store``: ``s3://``, ``gs://``, ``gcs://``: ``bucket/key`` names, no folders, no
  rename; writes are single uploads (``pipeline.storage.writes``);
* ``filesystem``: ``hdfs://``, ``viewfs://``: remote file systems with folders.

Any other URI (``http://``) is ``other``: pyarrow may open it, the trainers' reader hands it to
webdataset's opener. A URI keeps its query (pyarrow's options:
``s3://bucket/run?endpoint_override=127.0.0.1:9000&scheme=http``) through ``join``;
``redact`` strips it (and user info) wherever a location is shown or recorded.

Nothing here touches a file system: these are rules on strings (``Location`` wraps them).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["LOCAL", "OBJECT_STORE", "FILESYSTEM", "OTHER", "SCHEMES", "Location", "scheme", "family", "is_uri",
           "is_remote", "opened_by_pyarrow", "root", "join", "redact", "redact_text", "fs_key", "fs_path",
           "bucket_key", "temp_name"]

LOCAL, OBJECT_STORE, FILESYSTEM, OTHER = "local", "object_store", "filesystem", "other"
SCHEMES = {"file": LOCAL, "s3": OBJECT_STORE, "gs": OBJECT_STORE, "gcs": OBJECT_STORE,
           "hdfs": FILESYSTEM, "viewfs": FILESYSTEM}


def is_uri(uri: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(uri)


def scheme(uri: str | os.PathLike[str]) -> str:
    """The URI's scheme, lower-case; "" for a local path."""
    uri = os.fspath(uri)
    return uri.partition("://")[0].lower() if is_uri(uri) else ""


def family(uri: str | os.PathLike[str]) -> str:
    """``local``, ``object_store``, ``filesystem`` or ``other`` (module docstring)."""
    s = scheme(uri)
    return LOCAL if not s else SCHEMES.get(s, OTHER)


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """A URI that is not a local file (``file://`` counts as local)."""
    return family(uri) != LOCAL


def opened_by_pyarrow(uri: str) -> bool:
    """Object stores and remote file systems: read through ``pyarrow.fs`` (credentials from
    the environment, options from the query), not by webdataset's own opener."""
    return family(uri) in (OBJECT_STORE, FILESYSTEM)


def root(out: str | os.PathLike[str]) -> str:
    """OUT as the run names it: an absolute local path, else the URI as given."""
    out = os.fspath(out)
    if scheme(out) == "file":
        out = urlsplit(out).path
    return out if is_remote(out) else os.path.abspath(out)


def _split_query(uri: str) -> tuple[str, str]:
    base, sep, query = uri.partition("?")
    return base, sep + query


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or a URI (parts use ``/``; empty parts are skipped;
    a URI's query stays last)."""
    base = os.fspath(base)
    parts = tuple(p for p in (os.fspath(p) for p in parts) if p)
    if not is_uri(base):
        return os.path.join(base, *parts)
    head, query = _split_query(base)
    sch, _, rest = head.partition("://")
    rest = rest.rstrip("/")
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if tail:
        rest = f"{rest}/{tail}" if rest else tail
    return f"{sch}://{rest}{query}"


def redact(uri: str | os.PathLike[str]) -> str:
    """The location without its query (endpoints, options) nor user info: what is shown in
    messages and recorded in files."""
    uri = os.fspath(uri)
    if not is_uri(uri):
        return uri
    base = uri.partition("?")[0]
    sch, _, rest = base.partition("://")
    if "@" in rest.partition("/")[0]:
        rest = rest.split("@", 1)[1]
    return f"{sch}://{rest}"


_URI_QUERY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\"]*")


def redact_text(text: str) -> str:
    """``text`` (a command line) with every URI's query removed."""
    return _URI_QUERY.sub(lambda m: m.group(1), text)


def fs_key(uri: str) -> str:
    """What identifies a remote file system (and its client) in a URI: scheme, host, query."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}?{parts.query}"


def fs_path(uri: str) -> str:
    """The file system path of a URI (``bucket/key`` on object stores), without its query."""
    parts = urlsplit(uri)
    return (parts.netloc + parts.path).rstrip("/") if family(uri) == OBJECT_STORE else parts.path


def bucket_key(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of an object-store URI."""
    bucket, _, key = fs_path(uri).partition("/")
    return bucket, key


def temp_name(uri: str, tag: str | None) -> str:
    """``.NAME[.TAG].tmp`` beside ``uri`` (the run's temporary-file convention)."""
    if not is_remote(uri):
        d, name = os.path.split(uri)
        return os.path.join(d or ".", f".{name}" + (f".{tag}" if tag else "") + ".tmp")
    base, sep, query = uri.partition("?")
    d, _, name = base.rpartition("/")
    return f"{d}/.{name}" + (f".{tag}" if tag else "") + ".tmp" + sep + query


@dataclass(frozen=True)
class Location:
    """A location string with its rules as attributes: ``Location(out).family``,
    ``.remote``, ``.redacted``, ``.join("a", "b")`` (a ``Location``), ``str(loc)``."""

    uri: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", os.fspath(self.uri))

    @property
    def scheme(self) -> str:
        return scheme(self.uri)

    @property
    def family(self) -> str:
        return family(self.uri)

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    @property
    def redacted(self) -> str:
        return redact(self.uri)

    def join(self, *parts: str) -> "Location":
        return Location(join(self.uri, *parts))

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        return self.uri
