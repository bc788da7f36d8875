"""The codecs of a sample's members: npz array containers, the flow codec "pfz1", JPEG frames.

``schemas.sample`` says which member uses which codec (its ``MEMBERS`` table); the functions
here only turn arrays into bytes and back.
"""
from __future__ import annotations

import io
import struct

import numpy as np

DEFAULT_FLOW_STEP = 1.0 / 16.0


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
