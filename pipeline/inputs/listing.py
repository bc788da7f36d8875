"""Listing helpers shared by the adapters: clip ids, caption and duration cleaning, safe
relative paths, directory indexes and CSV readers over local folders or pyarrow URIs."""
from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import re
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

from pipeline import storage


MAX_DURATION_S = 24 * 3600.0
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi")
_MAX_KEY_LEN = 120


# --------------------------------------------------------------------------- clip ids
KEY_BAD = re.compile(r"[^A-Za-z0-9_-]")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def make_clip_id(dataset: str, source_id: str) -> str:
    """A stable key of only ``[A-Za-z0-9_-]``: ``f"{dataset}_{sanitised id}"``. When
    sanitising changed the id (or it is empty or too long), a short hash of the original id
    is appended, so different ids never collide."""
    ds = KEY_BAD.sub("_", dataset) or "dataset"
    clean = KEY_BAD.sub("_", source_id)
    if clean != source_id or not clean or len(clean) > _MAX_KEY_LEN:
        clean = f"{clean[:_MAX_KEY_LEN]}_{short_hash(source_id)}" if clean else short_hash(source_id)
    return f"{ds}_{clean}"


def unique_clip_ids(dataset: str, source_ids: Sequence[str]) -> tuple[list[str], list[int | None]]:
    """Clip ids for rows in order, plus for each row the index of the first row with the same
    source id (None for first occurrences). First occurrences get ``make_clip_id``; repeats get
    ``<that>_dup1``, ``_dup2``... never colliding with any other row's id."""
    first: dict[str, int] = {}
    dup_of: list[int | None] = []
    for i, sid in enumerate(source_ids):
        dup_of.append(first.get(sid))
        first.setdefault(sid, i)
    ids: list[str | None] = [None] * len(source_ids)
    used: set[str] = set()
    for i, sid in enumerate(source_ids):  # first occurrences claim their natural ids
        if dup_of[i] is None:
            cid = make_clip_id(dataset, sid)
            if cid in used:  # only for crafted ids that mimic a sanitised+hashed one
                cid = f"{cid}_{short_hash('collision:' + sid)}"
                while cid in used:
                    cid += "_x"
            used.add(cid)
            ids[i] = cid
    counts: dict[str, int] = {}
    for i, sid in enumerate(source_ids):
        j = dup_of[i]
        if j is not None:
            k = counts.get(sid, 0)
            while True:
                k += 1
                cid = f"{ids[j]}_dup{k}"
                if cid not in used:
                    break
            counts[sid] = k
            used.add(cid)
            ids[i] = cid
    return ids, dup_of  # type: ignore[return-value]


def duplicate_error(what: str, source_id: str, first_row: int) -> str:
    return f"duplicate_id: {what} {source_id!r} already listed (first at entry {first_row})"


# --------------------------------------------------------------------------- field cleaning
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def clean_caption(value: Any) -> str:
    """Missing -> ""; control characters other than \\n and \\t -> spaces; the rest kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():  # the common case: nothing to clean
        return text
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    return _CONTROL.sub(" ", text)


def parse_duration(value: Any) -> float | None:
    """Seconds from ISO-8601 (``PT00H00M11S``, ``PT1M5.5S``, ``P1DT2H``), ``HH:MM:SS`` or a
    plain number; None when unparseable, not positive or longer than 24 h."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    else:
        text = str(value).strip()
        if not text:
            return None
        m = _ISO.match(text)
        if m and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
            f = {k: float(v.replace(",", ".")) if v else 0.0 for k, v in m.groupdict().items()}
            secs = f["d"] * 86400 + f["h"] * 3600 + f["m"] * 60 + f["s"]
        elif (c := _CLOCK.match(text)) is not None:
            secs = float(c.group(1) or 0) * 3600 + float(c.group(2)) * 60 + float(c.group(3))
        else:
            try:
                secs = float(text)
            except ValueError:
                return None
    if not math.isfinite(secs) or secs <= 0 or secs > MAX_DURATION_S:
        return None
    return secs


def format_duration(seconds: float) -> str:
    """ISO-8601 in WebVid's style: ``PT00H00M11S``, with fractional seconds when needed."""
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3600_000)
    m, rem = divmod(rem, 60_000)
    s, frac = divmod(rem, 1000)
    sec = f"{s:02d}" + (f".{frac:03d}".rstrip("0") if frac else "")
    return f"PT{h:02d}H{m:02d}M{sec}S"


_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPS = re.compile(r"[/\\]")


@functools.lru_cache(maxsize=1 << 16)
def _path_part(part: str) -> tuple[str, ...] | str:
    """The components of one relative path part, or (a str) why it is unsafe. Cached: a
    WebVid CSV repeats each page_dir thousands of times."""
    if "\x00" in part:
        return f"{part!r} contains a NUL byte"
    if part.startswith(("/", "\\")) or _DRIVE.match(part) or "://" in part:
        return f"{part!r} is an absolute path"
    comps = _SEPS.split(part)
    if ".." in comps:
        return f"{part!r} has a '..' component"
    return tuple(c for c in comps if c and c != ".")


def safe_relpath(*parts: str) -> str:
    """Join relative path parts with ``/``; raise ValueError when the result would leave the
    data root (absolute path, drive or URI, ``..`` component, NUL byte)."""
    comps: list[str] = []
    for part in parts:
        if not part:
            continue
        r = _path_part(part)
        if isinstance(r, str):
            raise ValueError(r)
        comps.extend(r)
    if not comps:
        raise ValueError("empty path")
    return "/".join(comps)


class DirIndex:
    """Answers 'does DATA/<rel> exist?' with one directory listing per folder (cheap on
    object stores, where one HEAD request per clip would not be)."""

    def __init__(self, root: str):
        self.root = root
        self._cache: dict[str, frozenset[str]] = {}

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")  # rel is normalised (safe_relpath): no "//"
        if parent not in self._cache:
            try:
                names = storage.listdir(storage.join(self.root, *parent.split("/")) if parent else self.root)
            except (FileNotFoundError, NotADirectoryError, OSError):
                names = []
            self._cache[parent] = frozenset(names)
        return name in self._cache[parent]


def dataset_root(data: str | os.PathLike[str]) -> str:
    data = os.fspath(data)
    if not storage.is_uri(data):
        return os.path.abspath(data)
    return data.rstrip("/") if not data.endswith("://") else data


def source_uri(root: str, rel: str) -> str:
    return storage.join(root, *rel.split("/"))


def sourcer(root: str) -> Callable[[str], str]:
    """``source_uri`` bound to ``root``: the same strings, with no per-call URI parsing for a
    local root (a manifest of 10M rows calls it 10M times)."""
    if storage.is_uri(root):
        return lambda rel: source_uri(root, rel)
    head = os.path.join(root, "")
    if os.sep == "/":
        return lambda rel: head + rel
    return lambda rel: head + rel.replace("/", os.sep)


def resolve_option_path(root: str, path: str) -> str:
    path = os.fspath(path)
    if storage.is_uri(path) or os.path.isabs(path):
        return path
    return storage.join(root, *re.split(r"[/\\]", path))


def _csv_records(f) -> tuple[list[str], Iterator[list[str]]]:
    """The stripped header and an iterator over the non-blank records of a CSV text stream."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(f)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], iter(())
    blank = lambda rec: not rec or (len(rec) == 1 and not rec[0].strip())  # noqa: E731
    return header, (rec for rec in reader if not blank(rec))


def read_csv_rows(uri: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and one dict per record (a short record gives "" for the missing fields)."""
    with storage.open_text(uri, encoding="utf-8-sig", errors="replace", newline="") as f:
        header, records = _csv_records(f)
        rows = [{h: (rec[i] if i < len(rec) else "") for i, h in enumerate(header)} for rec in records]
    return header, rows


def read_csv_columns(uri: str, wanted: Sequence[str], convert: Mapping[str, Callable[[str], Any]] | None = None,
                      ) -> tuple[list[str], dict[str, list[Any]]]:
    """The header and, for each wanted column the header has, its values in record order;
    the same values as ``read_csv_rows`` (a repeated header name: the last column of that
    name), streamed into one list per column, not a dict per record (WebVid-10M's CSV is
    about 2 GB). ``convert[column]`` is applied to each value as it is read."""
    with storage.open_text(uri, encoding="utf-8-sig", errors="replace", newline="") as f:
        header, records = _csv_records(f)
        pos = {h: i for i, h in enumerate(header)}
        cols: dict[str, list[str]] = {c: [] for c in wanted if c in pos}
        conv = convert or {}
        take = [(cols[c].append, pos[c], conv.get(c)) for c in cols]
        for rec in records:
            n = len(rec)
            for append, i, fn in take:
                v = rec[i] if i < n else ""
                append(v if fn is None else fn(v))
    return header, cols
