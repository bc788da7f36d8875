"""Dataset adapters: list a dataset's clips into the manifest (``schemas.manifest``).

``build_manifest(dataset, data, **options)`` returns a pyarrow Table with MANIFEST_SCHEMA,
one row per listed clip, rows numbered 0..n-1 in a deterministic order. ``data`` is a local
folder or any URI ``pyarrow.fs`` opens (see ``pipeline.io``). Problems with a single clip
never raise and never drop the row: they go into its ``error`` column as
``"reason_class: message"`` and the run records the clip as failed. Problems with the whole
dataset (no CSV, a CSV missing required columns, unknown dataset or option) raise ValueError.

Layouts
-------
``webvid`` (and ``sample``, the embedded sample, which uses the same layout)::

    DATA/webvid.csv                    the WebVid CSV (or the only *.csv at the top of DATA,
                                       or csv=PATH: relative to DATA, absolute, or a URI)
    DATA/<page_dir>/<videoid>.mp4      videos, WebVid's own layout
    DATA/videos/<videoid>.mp4          accepted instead when the file above does not exist

  CSV columns: ``videoid`` and ``name`` (the caption) are required; ``page_dir`` (empty or
  absent: the file is looked for at ``DATA/<videoid>.mp4``), ``duration`` (ISO-8601 like
  ``PT00H00M11S``, fractional seconds allowed; also plain seconds or ``HH:MM:SS``) and
  ``contentUrl`` (unused) are optional. Rows keep CSV order. When no file exists the first
  candidate is kept as ``source`` and the decoder reports ``missing_file``.
  Per-row handling: a repeated videoid -> later rows get ``duplicate_id`` and clip_id
  ``<id>_dup1``, ``_dup2``...; a page_dir/videoid that is absolute or has ``..`` components
  -> ``unsafe_path`` (source left empty); an unparseable, non-positive or > 24 h duration
  -> duration null (the decoder reads the real one); a missing caption -> ``""``; control
  characters other than ``\\n`` and ``\\t`` in captions -> spaces (other unicode kept).

``videohd``::

    DATA/**/<name>.{mp4,mkv,webm,mov,avi}   videos at any depth (hidden files/folders skipped)
    DATA/captions.jsonl                     {"path": "<relative to DATA>", "caption": "..."}
    DATA/captions.csv                       columns path, caption (used if there is no .jsonl)

  or ``captions=PATH``. ``source_id`` is the ``/``-separated path relative to DATA. Rows:
  every video in sorted path order (caption ``""`` when it has none), then caption entries
  that matched no listed video in file order: a missing file -> ``missing_file``, a repeated
  path -> ``duplicate_id``, an unsafe path -> ``unsafe_path``, a malformed entry ->
  ``invalid_input``.

Adding an adapter: write ``fn(dataset, data, **options) -> list[dict]`` (dicts with the
manifest's fields except ``row``; ``fps``/``masks``/``error`` optional), or, for millions of
rows, ``-> dict[field, list | pyarrow.Array]`` (one column per field, as ``webvid_adapter``
returns: a dict per row costs about a kilobyte), and register it with
one line: ``ADAPTERS["vipseg"] = vipseg_adapter`` (or the ``@register_adapter("vipseg")``
decorator). ``unique_clip_ids`` and ``duplicate_error`` handle repeated source ids.
"""
from __future__ import annotations

import bisect
import csv
import functools
import hashlib
import json
import math
import os
import posixpath
import re
import sys
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from schemas.manifest import MANIFEST_SCHEMA

Adapter = Callable[..., "list[dict[str, Any]] | dict[str, Any]"]
ADAPTERS: dict[str, Adapter] = {}

MAX_DURATION_S = 24 * 3600.0
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi")
_MAX_KEY_LEN = 120


def register_adapter(name: str, fn: Adapter | None = None):
    """``register_adapter("x", fn)`` or ``@register_adapter("x")``."""
    if fn is not None:
        ADAPTERS[name] = fn
        return fn
    return lambda f: register_adapter(name, f)


# --------------------------------------------------------------------------- clip ids
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def make_clip_id(dataset: str, source_id: str) -> str:
    """A stable key of only ``[A-Za-z0-9_-]``: ``f"{dataset}_{sanitised id}"``. When
    sanitising changed the id (or it is empty or too long), a short hash of the original id
    is appended, so different ids never collide."""
    ds = _KEY_BAD.sub("_", dataset) or "dataset"
    clean = _KEY_BAD.sub("_", source_id)
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


class _DirIndex:
    """Answers 'does DATA/<rel> exist?' with one directory listing per folder (cheap on
    object stores, where one HEAD request per clip would not be)."""

    def __init__(self, root: str):
        self.root = root
        self._cache: dict[str, frozenset[str]] = {}

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")  # rel is normalised (safe_relpath): no "//"
        if parent not in self._cache:
            try:
                names = io.list_dir(io.join(self.root, *parent.split("/")) if parent else self.root)
            except (FileNotFoundError, NotADirectoryError, OSError):
                names = []
            self._cache[parent] = frozenset(names)
        return name in self._cache[parent]


def _root(data: str | os.PathLike[str]) -> str:
    data = os.fspath(data)
    if not io.is_uri(data):
        return os.path.abspath(data)
    return data.rstrip("/") if not data.endswith("://") else data


def _source(root: str, rel: str) -> str:
    return io.join(root, *rel.split("/"))


def _sourcer(root: str) -> Callable[[str], str]:
    """``_source`` bound to ``root``: the same strings, with no per-call URI parsing for a
    local root (a manifest of 10M rows calls it 10M times)."""
    if io.is_uri(root):
        return lambda rel: _source(root, rel)
    head = os.path.join(root, "")
    if os.sep == "/":
        return lambda rel: head + rel
    return lambda rel: head + rel.replace("/", os.sep)


def _resolve_option_path(root: str, path: str) -> str:
    path = os.fspath(path)
    if io.is_uri(path) or os.path.isabs(path):
        return path
    return io.join(root, *re.split(r"[/\\]", path))


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


def _read_csv_rows(uri: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and one dict per record (a short record gives "" for the missing fields)."""
    with io.open_text(uri, encoding="utf-8-sig", errors="replace", newline="") as f:
        header, records = _csv_records(f)
        rows = [{h: (rec[i] if i < len(rec) else "") for i, h in enumerate(header)} for rec in records]
    return header, rows


def _read_csv_columns(uri: str, wanted: Sequence[str], convert: Mapping[str, Callable[[str], Any]] | None = None,
                      ) -> tuple[list[str], dict[str, list[Any]]]:
    """The header and, for each wanted column the header has, its values in record order;
    the same values as ``_read_csv_rows`` (a repeated header name: the last column of that
    name), streamed into one list per column, not a dict per record (WebVid-10M's CSV is
    about 2 GB). ``convert[column]`` is applied to each value as it is read."""
    with io.open_text(uri, encoding="utf-8-sig", errors="replace", newline="") as f:
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


# --------------------------------------------------------------------------- webvid
def _find_webvid_csv(root: str, csv_opt: str | None) -> str:
    if csv_opt:
        uri = _resolve_option_path(root, csv_opt)
        if not io.exists(uri):
            raise ValueError(f"CSV {uri} does not exist")
        return uri
    default = io.join(root, "webvid.csv")
    if io.exists(default):
        return default
    try:
        names = io.list_dir(root)
    except (FileNotFoundError, NotADirectoryError, OSError) as e:
        raise ValueError(f"data root {root} is not a readable folder ({e})") from None
    csvs = [n for n in names if n.lower().endswith(".csv")]
    if len(csvs) == 1:
        return io.join(root, csvs[0])
    if not csvs:
        raise ValueError(f"no webvid.csv or other *.csv at the top of {root} (pass csv=PATH)")
    raise ValueError(f"{root} has no webvid.csv and several CSVs ({', '.join(csvs)}); pass csv=PATH")


WEBVID_REQUIRED = ("videoid", "name")


def webvid_adapter(dataset: str, data: str, *, csv: str | None = None) -> dict[str, Any]:
    """WebVid CSV + videos (layout in the module docstring). Returns the manifest columns
    (a list or Arrow array per field), not a dict per row: WebVid-10M has 10.7M rows."""
    root = _root(data)
    csv_uri = _find_webvid_csv(root, csv)
    # Converted as read, so that the raw strings do not pile up: page_dir values interned (a
    # page_dir holds thousands of clips), durations parsed once per distinct value.
    header, cols = _read_csv_columns(csv_uri, ("videoid", "page_dir", "name", "duration"), convert={
        "videoid": str.strip, "page_dir": lambda v: sys.intern(v.strip()),
        "duration": functools.lru_cache(maxsize=None)(parse_duration)})
    missing = [c for c in WEBVID_REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{csv_uri} lacks required column(s) {', '.join(missing)} (has: {', '.join(header) or 'none'})")

    index = _DirIndex(root)
    source_of = _sourcer(root)
    vids = cols.pop("videoid")
    n = len(vids)
    captions = pa.array([clean_caption(c) for c in cols.pop("name")], pa.string())
    durations = pa.array(cols.pop("duration", None) or [None] * n, pa.float64())
    page_dirs = cols.pop("page_dir", None) or [""] * n
    clip_ids, dup_of = unique_clip_ids(dataset, vids)
    sources, errors = [""] * n, [None] * n
    for i, vid in enumerate(vids):
        page_dir = page_dirs[i]
        if not vid:
            errors[i] = "invalid_input: empty videoid"
            continue
        try:
            rel = safe_relpath(page_dir, vid + ".mp4")
        except ValueError as e:
            errors[i] = f"unsafe_path: page_dir {page_dir!r} / videoid {vid!r}: {e}"
            continue
        if not index.exists(rel):  # the flat layout, for a videoid that is itself safe
            flat = safe_relpath("videos", vid + ".mp4")  # cannot raise: vid passed above
            if index.exists(flat):
                rel = flat
        sources[i] = source_of(rel)
        if dup_of[i] is not None:
            errors[i] = duplicate_error("videoid", vid, dup_of[i])
    del page_dirs, dup_of
    return {
        "clip_id": clip_ids,
        "dataset": [dataset] * n,
        "source": sources,
        "source_id": vids,
        "caption": captions,
        "duration": durations,
        "error": errors,
    }


# --------------------------------------------------------------------------- videohd
def _read_captions(uri: str) -> list[tuple[str, Any, str | None]]:
    """Entries (path, caption, problem) in file order from a .jsonl or .csv captions file."""
    entries: list[tuple[str, Any, str | None]] = []
    name = posixpath.basename(uri.split("?")[0])
    if name.lower().endswith(".csv"):
        header, rows = _read_csv_rows(uri)
        missing = [c for c in ("path", "caption") if c not in header]
        if missing:
            raise ValueError(f"{uri} lacks required column(s) {', '.join(missing)}")
        for n, r in enumerate(rows, start=2):
            p = (r.get("path") or "").strip()
            entries.append((p, r.get("caption"), None if p else f"{name} line {n}: empty path"))
        return entries
    text = io.read_text(uri, encoding="utf-8-sig", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            entries.append((f"{name}:{n}", None, f"{name} line {n}: not JSON ({e})"))
            continue
        p = obj.get("path") if isinstance(obj, dict) else None
        if not isinstance(p, str) or not p.strip():
            entries.append((f"{name}:{n}", None, f"{name} line {n}: no 'path' string"))
            continue
        entries.append((p.strip(), obj.get("caption"), None))
    return entries


def videohd_adapter(dataset: str, data: str, *, captions: str | None = None) -> list[dict[str, Any]]:
    """A folder of videos plus a captions file (layout in the module docstring)."""
    root = _root(data)
    if not io.is_dir(root):
        raise ValueError(f"data root {root} is not a folder")
    if captions:
        cap_uri = _resolve_option_path(root, captions)
        if not io.exists(cap_uri):
            raise ValueError(f"captions file {cap_uri} does not exist")
    else:
        cands = [io.join(root, "captions.jsonl"), io.join(root, "captions.csv")]
        cap_uri = next((c for c in cands if io.exists(c)), None)

    videos = [p for p in io.walk_files(root)
              if posixpath.splitext(p)[1][1:].lower() in VIDEO_EXTENSIONS
              and not any(c.startswith(".") for c in p.split("/"))]
    video_set = set(videos)
    entries = _read_captions(cap_uri) if cap_uri else []

    caption_of: dict[str, Any] = {}
    extra: list[tuple[str, Any, str]] = []  # (source_id, caption, error) for unmatched entries
    seen_at: dict[str, int] = {}
    for n, (path, cap, problem) in enumerate(entries):
        if problem:
            extra.append((path, None, f"invalid_input: {problem}"))
            continue
        try:
            rel = safe_relpath(path)
        except ValueError as e:
            extra.append((path, cap, f"unsafe_path: caption path {path!r}: {e}"))
            continue
        if rel in seen_at:
            extra.append((rel, cap, duplicate_error("caption path", rel, seen_at[rel])))
            continue
        seen_at[rel] = n
        if rel in video_set:
            caption_of[rel] = cap
        elif io.exists(_source(root, rel)):  # captioned file with another extension: keep it
            caption_of[rel] = cap
            videos.append(rel)
        else:
            extra.append((rel, cap, f"missing_file: {rel} (listed in the captions file) does not exist"))

    listed = [(v, caption_of.get(v), None) for v in videos] + extra
    clip_ids, _ = unique_clip_ids(dataset, [sid for sid, _, _ in listed])
    out = []
    for cid, (sid, cap, err) in zip(clip_ids, listed):
        unsafe = err is not None and (err.startswith("unsafe_path") or err.startswith("invalid_input"))
        out.append({
            "clip_id": cid,
            "dataset": dataset,
            "source": "" if unsafe else _source(root, sid),
            "source_id": sid,
            "caption": clean_caption(cap),
            "duration": None,
            "error": err,
        })
    return out


# --------------------------------------------------------------------------- vipseg
# VIPSeg ships frames, not videos, and states no frame rate; its frames were extracted from
# the source videos at a reduced rate. 5 fps is our default (override with -o fps=...):
# docs/entities.md explains the choice.
VIPSEG_DEFAULT_FPS = 5.0


def vipseg_adapter(dataset: str, data: str, *, fps: float | str | None = None, captions: str | None = None,
                   imgs: str = "imgs", masks: str = "panomasks") -> list[dict[str, Any]]:
    """VIPSeg (issue 3): ``DATA/imgs/<video>/<frame>.jpg`` (numeric frame names) and
    ``DATA/panomasks/<video>/<frame>.png`` (single-channel id maps, same stems).

    Every folder under ``imgs`` (sorted, hidden ones skipped) is one clip: a video at ``fps``
    (default ``VIPSEG_DEFAULT_FPS``). ``masks`` is the video's panomasks folder, or null
    when it has none (then ``--masks auto`` falls back to SAM or motion for that clip).
    Captions (optional): ``captions=PATH`` or ``DATA/captions.jsonl`` / ``DATA/captions.csv``,
    entries ``{"path": "<video>", "caption": "..."}`` (csv: columns path, caption); a video
    without one gets ``""`` (recorded as ``caption_empty`` in the sample meta); entries for
    videos not under ``imgs`` are ignored. Local folders only (frames are read with OpenCV).
    """
    root = _root(data)
    if io.is_uri(root):
        raise ValueError("the vipseg adapter reads local folders only (frame folders are decoded with OpenCV)")
    try:
        rate = VIPSEG_DEFAULT_FPS if fps in (None, "") else float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"vipseg: fps must be a number, got {fps!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"vipseg: fps must be positive, got {fps!r}")
    img_root = os.path.join(root, imgs)
    if not os.path.isdir(img_root):
        raise ValueError(f"{img_root} is not a folder (VIPSeg layout: DATA/{imgs}/<video>/<frame>.jpg)")
    mask_root = os.path.join(root, masks)
    videos = sorted(n for n in os.listdir(img_root)
                    if not n.startswith(".") and os.path.isdir(os.path.join(img_root, n)))
    if captions:
        cap_uri = _resolve_option_path(root, captions)
        if not io.exists(cap_uri):
            raise ValueError(f"captions file {cap_uri} does not exist")
    else:
        cap_uri = next((c for c in (os.path.join(root, "captions.jsonl"), os.path.join(root, "captions.csv"))
                        if os.path.exists(c)), None)
    caption_of: dict[str, Any] = {}
    for path, cap, problem in (_read_captions(cap_uri) if cap_uri else []):
        if not problem:
            caption_of.setdefault(path.strip("/"), cap)
    clip_ids, _ = unique_clip_ids(dataset, videos)
    out = []
    for cid, vid in zip(clip_ids, videos):
        mdir = os.path.join(mask_root, vid)
        out.append({
            "clip_id": cid,
            "dataset": dataset,
            "source": os.path.join(img_root, vid),
            "source_id": vid,
            "caption": clean_caption(caption_of.get(vid)),
            "duration": None,
            "fps": rate,
            "masks": mdir if os.path.isdir(mdir) else None,
            "error": None,
        })
    return out


register_adapter("webvid", webvid_adapter)
register_adapter("sample", webvid_adapter)
register_adapter("videohd", videohd_adapter)
register_adapter("vipseg", vipseg_adapter)


# --------------------------------------------------------------------------- manifest
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
        if not cid or not isinstance(cid, str) or _KEY_BAD.search(cid):
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
    try:
        rows = adapter(dataset, os.fspath(data), **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ValueError(f"dataset {dataset!r}: {e}") from None
        raise
    return rows_to_table(rows)


def write_manifest(table: pa.Table, path: str | os.PathLike[str], row_group_size: int | None = None) -> str:
    """Write the manifest as parquet (via a temporary name, then renamed); returns the path.
    ``row_group_size``: rows per row group (the run aligns them with its shards, so that a
    worker reading one shard's rows decodes one small row group: ``ManifestRows``)."""
    table = table.cast(MANIFEST_SCHEMA) if table.schema != MANIFEST_SCHEMA else table
    fs, p = io.resolve(path)
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
    fs, p = io.resolve(path)
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
        fs, p = io.resolve(path)
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
