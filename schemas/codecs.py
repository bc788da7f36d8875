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


class FlowEncoder:
    """The ``pfz1`` member of an ``(n, c, h, w)`` flow, built pair by pair as the flow is computed
    (``add(i, pair)``, in any order, then ``finish()``): the same bytes as :func:`encode_flow`
    of the whole array, without the whole float32 flow having to exist at once.

    It holds the shuffled residual bytes (4 bytes per value: as large as the float32 flow, 244 MB
    at 81 frames of 832x480) until ``finish`` compresses them; each ``add`` quantises one pair
    plane by plane (the passes stay in the CPU cache)."""

    def __init__(self, n: int, c: int, h: int, w: int, step: float = DEFAULT_FLOW_STEP):
        self.n, self.c, self.h, self.w, self.step = int(n), int(c), int(h), int(w), float(step)
        self.size = self.h * self.w
        self.shuffled = np.empty((4, self.n * self.c * self.size), np.uint8)
        self._q = np.empty((self.h, self.w), np.float32)
        self._d = np.empty((self.h, self.w), np.int32)
        self._up = np.empty((self.h - 1, self.w), np.int32) if self.h > 1 else None
        self._added = np.zeros(self.n, bool)

    def add(self, i: int, pair: np.ndarray) -> None:
        """Pair ``i`` (``(c, h, w)`` float px) of the flow."""
        pair = np.asarray(pair, np.float32)
        if pair.shape != (self.c, self.h, self.w):
            raise ValueError(f"flow pair must be {(self.c, self.h, self.w)}, got {pair.shape}")
        q, d, up, size, step = self._q, self._d, self._up, self.size, self.step
        for j, plane in enumerate(pair):
            k = i * self.c + j
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
            self.shuffled[:, k * size:(k + 1) * size] = b.T
        self._added[i] = True

    def finish(self) -> bytes:
        """The member's bytes (every pair must have been added); frees the buffer."""
        import pyarrow as pa

        if not self._added.all():
            raise ValueError(f"flow pairs {np.flatnonzero(~self._added).tolist()} were never added")
        shuffled, self.shuffled = self.shuffled, None
        # into an Arrow buffer, then copied: asbytes=True would allocate a bytes object of zstd's
        # bound (as large as the input) before shrinking it
        payload = pa.compress(shuffled, codec="zstd", asbytes=False).to_pybytes()
        return _FLOW_HEADER.pack(FLOW_MAGIC, self.n, self.c, self.h, self.w, self.step, shuffled.nbytes) + payload


def encode_flow(flow: np.ndarray, step: float = DEFAULT_FLOW_STEP) -> bytes:
    """Encode flow (N, 2, H, W) float px; max error = step / 2 (:class:`FlowEncoder`, all pairs)."""
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 4:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {flow.shape}")
    enc = FlowEncoder(*flow.shape, step=step)
    for i, pair in enumerate(flow):
        enc.add(i, pair)
    return enc.finish()


def flow_header(data: bytes) -> tuple[tuple[int, int, int, int], float]:
    """``((n, c, h, w), step)`` of a ``pfz1`` member, from its header alone."""
    magic, n, c, h, w, step, _ = _FLOW_HEADER.unpack_from(data)
    if magic != FLOW_MAGIC:
        raise ValueError(f"not a flow member (magic {magic!r})")
    return (n, c, h, w), step


def decode_flow(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_flow`: float32 (N, 2, H, W) px.

    One (H, W) plane at a time (its four byte planes gathered, un-zigzagged, summed, scaled
    into the output): besides the decompressed bytes and the output, only one plane's
    temporaries exist, and the passes stay in the CPU cache: a wan sample's flow (80 x 2 planes
    of 832x480) decodes in 0.7 s instead of 2.8-3.4 s with whole-array passes (loaded 2-core
    development machine), which was a third of the trainers' loader time per wan sample."""
    import pyarrow as pa

    magic, n, c, h, w, step, size = _FLOW_HEADER.unpack_from(data)
    if magic != FLOW_MAGIC:
        raise ValueError(f"not a flow member (magic {magic!r})")
    raw = pa.decompress(memoryview(data)[_FLOW_HEADER.size:], decompressed_size=size, codec="zstd", asbytes=False)
    planes = np.frombuffer(raw, np.uint8).reshape(4, -1)
    out = np.empty((n, c, h, w), np.float32)
    area = h * w
    zz = np.empty((area, 4), np.uint8)
    d = np.empty((h, w), np.int32)
    one = np.empty((h, w), np.int32)
    q = np.empty((h, w), np.int32)
    scale = np.float32(step)
    for k, plane in enumerate(out.reshape(n * c, h, w)):
        for b in range(4):  # un-shuffle: byte b of every value of this plane
            zz[:, b] = planes[b, k * area:(k + 1) * area]
        u = zz.view("<u4").reshape(h, w)
        np.right_shift(u, 1, out=d.view(np.uint32))
        np.bitwise_and(u, 1, out=one.view(np.uint32))
        np.negative(one, out=one)
        np.bitwise_xor(d, one, out=d)
        # int32 sums: exact, since the encoder's residuals are int32 differences (wrap-around
        # arithmetic cancels) and every quantised value fits int32.
        np.cumsum(d, axis=-1, dtype=np.int32, out=q)
        np.cumsum(q, axis=-2, dtype=np.int32, out=q)
        np.multiply(q, scale, out=plane, dtype=np.float32, casting="unsafe")   # = q.astype(float32) * step
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
