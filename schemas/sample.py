"""The per-sample layout of a shard (versioned), with its encoder and decoder.

A sample is the tar members sharing one key (``KEY.EXT``; keys never contain dots):

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

import io
import json
import struct
from typing import Any, Mapping

import numpy as np

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)

DEFAULT_FLOW_STEP = 1.0 / 16.0
FRAME_EXT = "jpg"
FLOW_MEMBER = "flow.pfz"


def frame_member(i: int) -> str:
    return f"f{i:03d}.{FRAME_EXT}"


def is_frame_member(name: str) -> bool:
    return name.startswith("f") and name.endswith("." + FRAME_EXT) and name[1:-4].isdigit()


# ---------------------------------------------------------------- array containers
def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- flow
# Flow codec "pfz1": flow is quantised to integer multiples of ``step`` px, each (H, W) plane is
# replaced by its 2-D mixed difference (residual of the predictor left + up - up-left, zero
# padded), residuals are zigzag-mapped to uint32, byte-shuffled (4 planes) and zstd-compressed.
# Decoding is a zstd decompression and a double cumulative sum: exact, vectorised, fast.
# Layout: b"PFZ1" | uint32 n, c, h, w | float32 step | uint64 payload size | zstd payload.
FLOW_MAGIC = b"PFZ1"
_FLOW_HEADER = struct.Struct("<4s4IfQ")


def quantize_flow(flow: np.ndarray, step: float = DEFAULT_FLOW_STEP) -> np.ndarray:
    """Integer flow in units of ``step`` (what the codec stores)."""
    q = np.divide(np.asarray(flow, np.float32), np.float32(step))  # one temporary, rounded in place
    np.rint(q, out=q)
    np.clip(q, -(2 ** 30), 2 ** 30, out=q)
    return q.astype(np.int32)


def encode_flow(flow: np.ndarray, step: float = DEFAULT_FLOW_STEP) -> bytes:
    """Encode flow (N, 2, H, W) float px; max error = step / 2.

    Works one (H, W) plane at a time (the passes stay in the CPU cache), writing each plane's
    residual bytes into the four byte planes of the shuffled buffer."""
    import pyarrow as pa

    flow = np.asarray(flow, np.float32)
    if flow.ndim != 4:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {flow.shape}")
    n, c, h, w = flow.shape
    size = h * w
    shuffled = np.empty((4, n * c * size), np.uint8)
    q = np.empty((h, w), np.float32)
    d = np.empty((h, w), np.int32)
    up = np.empty((h - 1, w), np.int32) if h > 1 else None
    for k, plane in enumerate(flow.reshape(n * c, h, w)):
        np.divide(plane, np.float32(step), out=q)        # as quantize_flow
        np.rint(q, out=q)
        np.clip(q, -(2 ** 30), 2 ** 30, out=q)
        qi = q.astype(np.int32)
        d[:, 0] = qi[:, 0]
        np.subtract(qi[:, 1:], qi[:, :-1], out=d[:, 1:])
        if up is not None:
            up[...] = d[:-1]
            d[1:] -= up
        zz = np.bitwise_xor(np.left_shift(d, 1), np.right_shift(d, 31)).view(np.uint32)
        b = zz.astype("<u4", copy=False).view(np.uint8).reshape(size, 4)
        shuffled[:, k * size:(k + 1) * size] = b.T
    payload = pa.compress(shuffled, codec="zstd", asbytes=True)
    return _FLOW_HEADER.pack(FLOW_MAGIC, n, c, h, w, float(step), shuffled.nbytes) + payload


def decode_flow(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_flow`: float32 (N, 2, H, W) px."""
    import pyarrow as pa

    magic, n, c, h, w, step, size = _FLOW_HEADER.unpack_from(data)
    if magic != FLOW_MAGIC:
        raise ValueError(f"not a flow member (magic {magic!r})")
    raw = pa.decompress(memoryview(data)[_FLOW_HEADER.size:], decompressed_size=size, codec="zstd", asbytes=True)
    planes = np.frombuffer(raw, np.uint8).reshape(4, -1)
    zz = np.empty((planes.shape[1], 4), np.uint8)
    for k in range(4):  # un-shuffle plane by plane (faster than a transposed copy)
        zz[:, k] = planes[k]
    zz = zz.view("<u4").reshape(n, c, h, w)
    d = (zz >> 1).view(np.int32) ^ -(zz & 1).view(np.int32)
    # int32 sums: exact, since the encoder's residuals are int32 differences (wrap-around
    # arithmetic cancels) and every quantised value fits int32.
    q = np.cumsum(d, axis=-1, dtype=np.int32)
    np.cumsum(q, axis=-2, dtype=np.int32, out=q)
    out = q.astype(np.float32)
    out *= np.float32(step)
    return out


def dequantize_flow(flow: np.ndarray, step: float = DEFAULT_FLOW_STEP) -> np.ndarray:
    """The flow a reader will get back: ``flow`` rounded to the stored precision."""
    out = quantize_flow(flow, step).astype(np.float32)
    out *= np.float32(step)
    return out


# ---------------------------------------------------------------- frames
def encode_jpeg(frame_rgb: np.ndarray, quality: int) -> bytes:
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR)  # same bytes as [..., ::-1], faster
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if rgb_flag is not None:  # OpenCV >= 4.11 decodes straight to RGB (no channel-swap copy)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), rgb_flag)
        if img is None:
            raise ValueError("not a decodable JPEG")
        return img
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable JPEG")
    return np.ascontiguousarray(img[..., ::-1])


# ---------------------------------------------------------------- whole samples
def encode_sample(sample: Mapping[str, Any]) -> dict[str, bytes]:
    """Encode a processed clip into tar members (without the key).

    Members whose data is absent (a partial state, as kept by ``--stage``) are left out.

    ``sample`` holds: ``caption`` (str), ``meta`` (dict), ``frames_jpeg`` (list of bytes),
    ``flow`` (float32 array), ``anchor_tracks``/``anchor_weights``/``anchor_visible``,
    ``anchor_reliable`` (None or absent: no ``reliable`` array is written, and the sample
    reads back as unverified) and, optionally, ``entity_*`` arrays.
    """
    meta = dict(sample["meta"])
    meta["schema_version"] = SCHEMA_VERSION
    members: dict[str, bytes] = {
        "txt": (sample.get("caption") or "").encode("utf-8"),
    }
    for i, jpg in enumerate(sample["frames_jpeg"]):
        members[frame_member(i)] = jpg
    if sample.get("flow") is not None:
        step = float(meta.get("flow", {}).get("step", DEFAULT_FLOW_STEP))
        members[FLOW_MEMBER] = encode_flow(sample["flow"], step)
    if sample.get("anchor_tracks") is not None:
        arrays = dict(
            tracks=np.asarray(sample["anchor_tracks"], np.float32),
            weights=np.asarray(sample["anchor_weights"], np.float32),
            visible=np.asarray(sample["anchor_visible"], bool),
        )
        if sample.get("anchor_reliable") is not None:
            reliable = np.asarray(sample["anchor_reliable"], bool)
            if reliable.shape != arrays["visible"].shape:
                raise ValueError(f"anchor_reliable {reliable.shape} must match anchor_visible "
                                 f"{arrays['visible'].shape}")
            arrays["reliable"] = reliable & arrays["visible"]
        members["anchors.npz"] = npz_bytes(**arrays)
    if sample.get("entity_ids") is not None:
        members["entities.npz"] = npz_bytes(
            ids=np.asarray(sample["entity_ids"], np.int32),
            mask=np.asarray(sample["entity_mask"], np.uint16),
            radii=np.asarray(sample["entity_radii"], np.float32),
            tracks=np.asarray(sample["entity_tracks"], np.float32),
            visibility=np.asarray(sample["entity_visibility"], bool),
        )
    members["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return members


REQUIRED_MEMBERS = ("txt", "json", FLOW_MEMBER, "anchors.npz")


def decode_sample(members: Mapping[str, bytes], key: str | None = None) -> dict[str, Any]:
    """Decode tar members of one sample into arrays (inverse of :func:`encode_sample`).

    Also returns ``frames_jpeg`` (the stored JPEG bytes) so a sample can be re-encoded as is.
    ``anchor_reliable`` is None when the sample has no ``reliable`` array (schema 1).
    """
    meta = json.loads(members["json"])
    version = meta.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(f"unknown sample schema version {version!r} (known: {KNOWN_SCHEMA_VERSIONS})")
    names = sorted(n for n in members if is_frame_member(n))
    frames = np.stack([decode_jpeg(members[n]) for n in names]) if names else None
    out: dict[str, Any] = {
        "key": key if key is not None else meta.get("clip_id"),
        "caption": members.get("txt", b"").decode("utf-8"),
        "meta": meta,
        "frames": frames,
        "frames_jpeg": [members[n] for n in names],
        "flow": decode_flow(members[FLOW_MEMBER]) if FLOW_MEMBER in members else None,
    }
    if "anchors.npz" in members:
        a = load_npz(members["anchors.npz"])
        out["anchor_tracks"], out["anchor_weights"], out["anchor_visible"] = a["tracks"], a["weights"], a["visible"]
        out["anchor_reliable"] = a["reliable"] & a["visible"] if "reliable" in a else None
    if "entities.npz" in members:
        e = load_npz(members["entities.npz"])
        out.update(
            entity_ids=e["ids"], entity_mask=e["mask"], entity_radii=e["radii"],
            entity_tracks=e["tracks"], entity_visibility=e["visibility"],
        )
    return out
