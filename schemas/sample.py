"""The per-sample layout of a shard (versioned), with its encoder and decoder.

A sample is the tar members sharing one key (``KEY.EXT``; keys never contain dots). The
``MEMBERS`` table below is the one description of them (name, codec, and per array its
``Sample`` field, dtype and shape rule): ``encode_sample``, ``decode_sample`` and the shard
validator (``pipeline.tools.validate``) iterate over it; :class:`Sample` is the typed content.

==================  ==========================================================================
member              content
==================  ==========================================================================
``txt``             caption, UTF-8 (may be empty; ``meta.caption_empty`` says so)
``json``            meta: schema version, provenance, geometry, settings, statistics
``f000.jpg`` ...    the L profile frames, RGB JPEG. The flow and all tracks were computed on
                    exactly these decoded JPEG frames (the pipeline round-trips each frame
                    through the JPEG codec before any stage sees it).
``flow.pfz``        dense forward flow between consecutive frames, (L-1, 2, H, W) float px,
                    channel 0 = dx (right), 1 = dy (down); codec "pfz1" (see
                    :func:`encode_flow`: quantised to ``step`` px, lossless after that;
                    max error = step / 2). Read it with :func:`decode_flow`.
``anchors.npz``     ``tracks`` float32 (A, L, 2) xy, ``weights`` float32 (A,) = |f0| at the
                    anchor, ``visible`` bool (A, L) (inside the frame), ``reliable`` bool
                    (A, L) (schema 2: verified by the forward-backward checks, a prefix of
                    each track, implies ``visible``; docs/trajectories.md)
``entities.npz``    (when entities are extracted) ``ids`` int32 (K,), ``mask`` uint16 (H, W)
                    id map of frame 0 (0 = no entity), ``radii`` float32 (K,),
                    ``tracks`` float32 (K, L, 2), ``visibility`` bool (K, L)
==================  ==========================================================================

Coordinates: x right, y down, in profile pixels, pixel centers at integers. A profile point
maps back to the source video by ``src = (p + crop_offset + 0.5) / resize_scale - 0.5``
(``crop_offset`` and ``resize_scale`` are in the meta).

All arrays are stored with ``numpy.save`` semantics and read with ``allow_pickle=False``.

Schema versions: 1 = no ``anchors.npz:reliable``; 2 = ``reliable`` added (and
``meta.anchors.reliability`` / ``meta.anchors.trackability``). Both are read. A sample
without ``reliable`` (every version-1 shard) decodes with ``anchor_reliable`` None: its
anchors were never checked, and readers must decide what to do (the trainers' loader
refuses them unless told, see ``make_dataset(unverified_anchors=...)``); nothing here
pretends that visible means reliable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from .codecs import (DEFAULT_FLOW_STEP, FLOW_MAGIC, FlowEncoder, decode_flow, decode_jpeg,  # noqa: F401
                     dequantize_flow, encode_flow, encode_jpeg, flow_header, load_npz, npz_bytes, quantize_flow)

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)


# ---------------------------------------------------------------- the MEMBERS table
@dataclass(frozen=True)
class Array:
    """One array of a sample: the ``Sample`` field (and ``decode_sample`` key) that holds it,
    its name inside its member (``""`` for a member that is one array), dtype and shape rule.

    A shape rule is a tuple of sizes: an int is fixed; a name is a size of the sample, the same
    wherever it appears: ``L`` frames, ``L-1`` frame pairs, ``H``/``W`` profile height/width
    (``meta.profile``), ``A`` anchors, ``K`` entities (set by the first array that has them).
    ``within``: the array is stored as ``self & within`` (another array of the member), so it
    is never true where ``within`` is false. ``optional``: the array may be absent."""
    field: str
    key: str
    dtype: str
    shape: tuple
    optional: bool = False
    within: str | None = None

    def expected(self, sizes: Mapping[str, int | None]) -> tuple[int | None, ...]:
        """The shape rule with the known sizes filled in (None: any size)."""
        out = []
        for s in self.shape:
            if isinstance(s, int):
                out.append(s)
            elif s == "L-1":
                out.append(None if sizes.get("L") is None else sizes["L"] - 1)
            else:
                out.append(sizes.get(s))
        return tuple(out)

    def bind(self, sizes: dict[str, int | None], shape: tuple[int, ...]) -> None:
        """Learn the named sizes not known yet from an array that matched the rule."""
        for s, d in zip(self.shape, shape):
            if isinstance(s, str) and s != "L-1" and sizes.get(s) is None:
                sizes[s] = int(d)


@dataclass(frozen=True)
class Member:
    """One tar member of a sample (``KEY.NAME``): its codec and the ``Sample`` fields it holds.

    ``codec``: ``utf-8`` (text), ``json`` (the meta), ``jpeg`` (one member per frame,
    ``f000.jpg`` ..., named by :func:`frame_member`), ``pfz1`` (the flow codec) or ``npz``
    (named arrays, ``numpy.savez_compressed``, read without pickle). ``required``: every
    sample has it (frames: ``meta.profile.frames`` of them)."""
    name: str
    codec: str
    arrays: tuple[Array, ...] = ()
    text: str | None = None          # the Sample field of a utf-8 / json member
    required: bool = True

    def array(self, key: str) -> Array:
        return next(a for a in self.arrays if a.key == key)


FRAME_EXT = "jpg"
FRAME_PATTERN = "f{:03d}." + FRAME_EXT

TXT = Member("txt", "utf-8", text="caption")
FRAMES = Member(FRAME_PATTERN, "jpeg", (Array("frames", "", "uint8", ("L", "H", "W", 3)),))
FLOW = Member("flow.pfz", "pfz1", (Array("flow", "", "float32", ("L-1", 2, "H", "W")),))
ANCHORS = Member("anchors.npz", "npz", (
    Array("anchor_tracks", "tracks", "float32", ("A", "L", 2)),
    Array("anchor_weights", "weights", "float32", ("A",)),
    Array("anchor_visible", "visible", "bool", ("A", "L")),
    Array("anchor_reliable", "reliable", "bool", ("A", "L"), optional=True, within="visible"),  # schema 2
))
ENTITIES = Member("entities.npz", "npz", (
    Array("entity_ids", "ids", "int32", ("K",)),
    Array("entity_mask", "mask", "uint16", ("H", "W")),
    Array("entity_radii", "radii", "float32", ("K",)),
    Array("entity_tracks", "tracks", "float32", ("K", "L", 2)),
    Array("entity_visibility", "visibility", "bool", ("K", "L")),
), required=False)
JSON = Member("json", "json", text="meta")

# In tar order (the writer's: text, frames, arrays, meta last; any order is valid to a reader).
MEMBERS: tuple[Member, ...] = (TXT, FRAMES, FLOW, ANCHORS, ENTITIES, JSON)

FLOW_MEMBER = FLOW.name
ANCHORS_MEMBER = ANCHORS.name
ENTITIES_MEMBER = ENTITIES.name
REQUIRED_MEMBERS = tuple(m.name for m in MEMBERS if m.required and m is not FRAMES)   # frames: by count
KNOWN_MEMBERS = tuple(m.name for m in MEMBERS if m is not FRAMES)                     # and the frames


def frame_member(i: int) -> str:
    return FRAME_PATTERN.format(i)


def is_frame_member(name: str) -> bool:
    return name.startswith("f") and name.endswith("." + FRAME_EXT) and name[1:-4].isdigit()


def member_of(name: str) -> Member | None:
    """The MEMBERS entry of a member name (None: an unknown member)."""
    if is_frame_member(name):
        return FRAMES
    return next((m for m in MEMBERS if m.name == name), None)


def member_rank(name: str) -> int:
    """Position of a member in a sample's tar order (unknown members go with the frames)."""
    m = member_of(name)
    return MEMBERS.index(m if m is not None else FRAMES)


# ---------------------------------------------------------------- the typed sample
@dataclass(eq=False)
class Sample:
    """The content of one clip: what its shard members hold, decoded, plus the working arrays
    the stages pass on without storing. Bookkeeping (manifest row, stages done, timings) is
    not here: ``pipeline.clip.work.ClipWork`` holds it beside the sample.

    Fields of stored members are named as ``decode_sample``'s keys (the ``MEMBERS`` table maps
    each to its member). Stages read and write it by attribute (``sample.flow``); it has no
    item access (``as_dict()`` gives ``decode_sample``'s dict).
    """
    key: str | None = None                  # the clip id (the tar key)
    caption: str = ""                       # txt
    meta: dict = field(default_factory=dict)  # json
    frames: np.ndarray | None = None        # (L, H, W, 3) uint8: the decoded frames_jpeg
    frames_jpeg: list = field(default_factory=list)  # the stored JPEG bytes
    flow: np.ndarray | None = None          # flow.pfz, at the stored precision
    anchor_tracks: np.ndarray | None = None
    anchor_weights: np.ndarray | None = None
    anchor_visible: np.ndarray | None = None
    anchor_reliable: np.ndarray | None = None   # None: unverified (schema 1)
    entity_ids: np.ndarray | None = None
    entity_mask: np.ndarray | None = None
    entity_radii: np.ndarray | None = None
    entity_tracks: np.ndarray | None = None
    entity_visibility: np.ndarray | None = None
    # working data, never stored
    backward_flow: np.ndarray | None = None     # computed for the anchors' reliability, reused by entities
    backward_flow_backend: dict | None = None   # describe() of the backend that computed it
    flow_pfz: bytes | None = None               # the flow's pfz1 bytes (the flow step encodes them as
    #                                             it computes the pairs; kept between operators)
    entity_masks: Any = None                    # first-frame masks between the two entity halves

    def stored(self) -> Iterator[Member]:
        """The members this sample's content fills (what ``encode_sample`` writes)."""
        for m in MEMBERS:
            if m.text is not None or m is FRAMES or getattr(self, m.arrays[0].field) is not None:
                yield m

    def to_members(self) -> dict[str, bytes]:
        return encode_sample(self)

    @classmethod
    def from_members(cls, members: Mapping[str, bytes], key: str | None = None) -> "Sample":
        return cls(**decode_sample(members, key))

    def as_dict(self) -> dict[str, Any]:
        """``decode_sample``'s dict of this sample (the fields of its stored members)."""
        out: dict[str, Any] = {"key": self.key, "caption": self.caption, "meta": self.meta,
                               "frames": self.frames, "frames_jpeg": self.frames_jpeg, "flow": self.flow}
        for m in (ANCHORS, ENTITIES):
            if getattr(self, m.arrays[0].field) is not None:
                out.update({a.field: getattr(self, a.field) for a in m.arrays})
        return out


# ---------------------------------------------------------------- whole samples
def _value(sample: Any, name: str) -> Any:
    return getattr(sample, name) if isinstance(sample, Sample) else sample.get(name)


def _encode_npz(m: Member, sample: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for a in m.arrays:
        v = _value(sample, a.field)
        if v is None:
            if a.optional:
                continue
            raise ValueError(f"{a.field} missing: {m.name} needs {', '.join(x.field for x in m.arrays)}")
        arr = np.asarray(v, np.dtype(a.dtype))
        if a.within is not None:
            inner = arrays[a.within]
            if arr.shape != inner.shape:
                raise ValueError(f"{a.field} {arr.shape} must match {m.array(a.within).field} {inner.shape}")
            arr = arr & inner
        arrays[a.key] = arr
    return npz_bytes(**arrays)


def _flow_member(sample: Any, flow: np.ndarray, step: float) -> bytes:
    """The ``pfz1`` bytes of ``flow``: the sample's ``flow_pfz`` when the flow step (or an
    operator before) encoded it already, as the flow was computed, else encoded now."""
    pfz = sample.flow_pfz if isinstance(sample, Sample) else None
    if pfz is not None and flow_header(pfz) == (tuple(np.shape(flow)), np.float32(step)):
        return pfz
    return encode_flow(flow, step)


def encode_sample(sample: Sample | Mapping[str, Any]) -> dict[str, bytes]:
    """Encode a processed clip into tar members (without the key), member by member of ``MEMBERS``.

    Members whose data is absent (a partial state, as kept by ``--stage``) are left out.

    ``sample``: a :class:`Sample`, or a dict with its field names: ``caption`` (str), ``meta``
    (dict), ``frames_jpeg`` (list of bytes), ``flow`` (float32 array),
    ``anchor_tracks``/``anchor_weights``/``anchor_visible``, ``anchor_reliable`` (None or
    absent: no ``reliable`` array is written, and the sample reads back as unverified) and,
    optionally, ``entity_*`` arrays.
    """
    meta = dict(_value(sample, "meta"))
    meta["schema_version"] = SCHEMA_VERSION
    members: dict[str, bytes] = {}
    for m in MEMBERS:
        if m.codec == "utf-8":
            members[m.name] = (_value(sample, m.text) or "").encode("utf-8")
        elif m.codec == "json":
            members[m.name] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
        elif m.codec == "jpeg":
            jpegs = sample.frames_jpeg if isinstance(sample, Sample) else sample["frames_jpeg"]
            for i, jpg in enumerate(jpegs):
                members[frame_member(i)] = jpg
        elif _value(sample, m.arrays[0].field) is None:
            continue
        elif m.codec == "pfz1":
            step = float(meta.get("flow", {}).get("step", DEFAULT_FLOW_STEP))
            members[m.name] = _flow_member(sample, _value(sample, m.arrays[0].field), step)
        elif m.codec == "npz":
            members[m.name] = _encode_npz(m, sample)
        else:
            raise ValueError(f"unknown codec {m.codec!r} of member {m.name}")
    return members


def decode_sample(members: Mapping[str, bytes], key: str | None = None) -> dict[str, Any]:
    """Decode tar members of one sample into arrays (inverse of :func:`encode_sample`).

    Returns a dict keyed as the :class:`Sample` fields (``Sample.from_members`` gives the
    typed object): ``key``, ``caption``, ``meta``, ``frames``, ``frames_jpeg`` (the stored
    JPEG bytes, so a sample can be re-encoded as is), ``flow`` and the arrays of the npz
    members present. ``anchor_reliable`` is None when the sample has no ``reliable`` array
    (schema 1).
    """
    meta = json.loads(members[JSON.name])
    version = meta.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(f"unknown sample schema version {version!r} (known: {KNOWN_SCHEMA_VERSIONS})")
    out: dict[str, Any] = {"key": key if key is not None else meta.get("clip_id")}
    for m in MEMBERS:
        if m.codec == "utf-8":
            out[m.text] = members.get(m.name, b"").decode("utf-8")
        elif m.codec == "json":
            out[m.text] = meta
        elif m.codec == "jpeg":
            names = sorted(n for n in members if is_frame_member(n))
            out[m.arrays[0].field] = np.stack([decode_jpeg(members[n]) for n in names]) if names else None
            out["frames_jpeg"] = [members[n] for n in names]
        elif m.codec == "pfz1":
            out[m.arrays[0].field] = decode_flow(members[m.name]) if m.name in members else None
        elif m.name in members:
            z = load_npz(members[m.name])
            for a in m.arrays:
                if a.key not in z and a.optional:
                    out[a.field] = None
                elif a.within is not None:
                    out[a.field] = z[a.key] & z[a.within]
                else:
                    out[a.field] = z[a.key]
    return out
