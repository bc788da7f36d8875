"""``decord``: decord 0.6.0 (wheels for Linux x86_64 only; the default where it imports).

One reader opened at the scaled size (decord scales in its decoder: bilinear swscale, the
same conversion the pyav backend's filter graph makes), ``get_batch`` of the rows. decord
indexes the file itself when it opens it; its frame ``i`` is checked against the table by
timestamp (decord reports them as float32 seconds), and when the two lists differ (a frame
decord does not count) the rows are mapped to decord's frames by nearest timestamp, so a
row is always the frame at the table's time or a ``decode_error``.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import ClipError
from .base import FrameDecoder, FrameTable, check_cpu_device, missing_package, unique_rows

# float32 seconds (decord's timestamps) are exact to 0.25 ms up to 1 hour
_TOLERANCE_S = 1e-3


def decord_message(e: BaseException) -> str:
    """decord's error text without its '[hh:mm:ss] /src/file.cc:123:' prefixes."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    return text.strip()[:300]


class DecordDecoder(FrameDecoder):
    name = "decord"

    def __init__(self, device: str = "cpu", threads: int = 1):
        check_cpu_device("decord", device)
        try:
            import decord
        except Exception as e:  # noqa: BLE001 - an ImportError or a broken shared library
            raise missing_package("decord", "decord", "decord", e) from e
        self._decord = decord
        self.threads = int(threads)

    def version(self) -> str:
        return str(getattr(self._decord, "__version__", ""))

    def read(self, path: str, table: FrameTable, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        decord = self._decord
        rows, inverse = unique_rows(indices)
        scaled = {} if size == (table.width, table.height) else {"width": size[0], "height": size[1]}
        try:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.threads, **scaled)
        except Exception as e:  # decord raises DECORDError / RuntimeError on bad containers
            msg = decord_message(e)
            if "cannot find video stream" in msg:
                raise ClipError("unreadable", f"{os.path.basename(path)} has no video stream (audio only?): {msg}")
            raise ClipError("unreadable", f"decord cannot open {os.path.basename(path)}: {msg}")
        frames = self._frames_of(vr, table, rows)
        try:
            batch = vr.get_batch([int(i) for i in frames]).asnumpy()
        except Exception as e:
            raise ClipError("decode_error", f"frames {rows.min()}..{rows.max()} do not decode: {decord_message(e)}")
        if batch.shape[1:3] != (size[1], size[0]):  # decord ignored the size (seen on odd sizes)
            import cv2

            batch = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in batch])
        return batch[inverse]

    @staticmethod
    def _frames_of(vr, table: FrameTable, rows: np.ndarray) -> np.ndarray:
        """decord's frame numbers of the table rows (module docstring)."""
        n = len(vr)
        want = table.times
        if want is None:
            if n != table.num_frames:
                raise ClipError("decode_error", f"decord counts {n} frames, the packets {table.num_frames}; "
                                                f"without timestamps the two cannot be matched")
            return rows
        try:
            ts = vr.get_frame_timestamp(range(n))[:, 0].astype(np.float64)
        except Exception as e:
            raise ClipError("decode_error", f"decord has no frame timestamps: {decord_message(e)}")
        ts = ts - ts[0] if n else ts
        if n == table.num_frames and np.abs(ts - want).max() <= _TOLERANCE_S:
            return rows
        j = np.clip(np.searchsorted(ts, want[rows]), 1, max(n - 1, 1))
        j = np.where(np.abs(ts[j - 1] - want[rows]) <= np.abs(ts[j] - want[rows]), j - 1, j) if n > 1 else j * 0
        bad = np.abs(ts[j] - want[rows]) > _TOLERANCE_S
        if bad.any():
            r = int(rows[np.argmax(bad)])
            raise ClipError("decode_error", f"frame {r} at {want[r]:.3f} s is not among decord's {n} frames")
        return j
