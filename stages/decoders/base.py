"""The frame table every backend decodes from, and the interface a backend implements.

``read_frame_table(path)`` demuxes the video stream's packets with PyAV (a base
dependency: it bundles FFmpeg on every platform) without decoding a frame: the frame
size from the stream header, the average rate the header declares, and each frame's
presentation timestamp (pts, in the stream's time base) and key-frame flag, sorted in
presentation order. Frame ``i`` of every backend is row ``i`` of this table: the frame
selection (``stages.decode.select_source_frames``) runs on it once, whatever the backend,
so ``source_frame_indices`` cannot depend on the backend. Reading the table costs a packet
scan (no decoding): 6.5 CPU ms per clip on the benchmark's clips (120-250 frames, 4 % of an
HD decode; ``bench/decoders.py``), the kind of scan decord makes itself when it opens a file.

A backend (``FrameDecoder``) only turns table rows into pixels: ``read(path, table,
indices, size)`` returns the frames of those rows (repeats allowed, any order) as
``(len(indices), h, w, 3)`` uint8 RGB at ``size = (w, h)``, scaled in the decoder with
FFmpeg's bilinear swscale, or raises ``ClipError`` (``unreadable``: the file does not
open; ``decode_error``: a frame does not decode or is not where the table says).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ..errors import ClipError

__all__ = ["FrameTable", "FrameDecoder", "read_frame_table", "check_cpu_device", "missing_package", "first_line"]


def first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:limit]


def check_cpu_device(backend: str, device: str | None) -> None:
    """A CPU-only backend refuses any other ``decode.device``, pointing at torchcodec for CUDA."""
    if str(device or "cpu").lower() not in ("cpu", "auto"):
        raise ValueError(f"decoder {backend!r} decodes on the CPU only (decode.device {device!r}); "
                         f"use decode.backend torchcodec for CUDA")


def missing_package(backend: str, package: str, extra: str, e: BaseException) -> ImportError:
    """The ImportError a backend raises when its package does not import: what failed and
    how to install it (preflight shows it as the setup error)."""
    return ImportError(f"decoder {backend!r} needs the {package!r} package, which does not import here "
                       f"({type(e).__name__}: {first_line(e)}); install it with pip install -e '.[{extra}]', "
                       f"or set decode.backend to pyav (always installed) or auto")


@dataclass
class FrameTable:
    """The video stream of one file, as its packets describe it (no frame decoded).

    ``pts``: int64 presentation timestamps in ``time_base`` units, increasing (presentation
    order), or None when the packets carry none; ``keyframe``: bool per frame; ``duration``:
    int64 per frame (the gap to the next frame; the last frame's own packet duration)."""

    stream_index: int
    width: int
    height: int
    header_fps: float      # the average rate the container declares (0.0 when it declares none)
    time_base: Fraction
    num_frames: int
    pts: np.ndarray | None
    keyframe: np.ndarray
    duration: np.ndarray
    codec: str = ""

    @property
    def times(self) -> np.ndarray | None:
        """Seconds of each frame from the first frame (float64), or None without pts."""
        if self.pts is None or not len(self.pts):
            return None
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    def seconds(self, rows) -> np.ndarray:
        """Absolute presentation times (s) of table rows (the stream's own clock)."""
        return self.pts[np.asarray(rows, np.int64)].astype(np.float64) * float(self.time_base)


def _open_error(path: str, e: BaseException) -> ClipError:
    return ClipError("unreadable", f"{os.path.basename(path)} does not open as a video: {first_line(e)}")


def read_frame_table(path: str, max_frames: int = 10_000_000) -> FrameTable:
    """The frame table of ``path`` (module docstring). ``ClipError``: ``unreadable`` (not a
    container, no video stream, no frame in it), ``too_large`` (more than ``max_frames``
    frames: counted from the header first, then while scanning)."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise _open_error(path, e) from None
    with container:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise ClipError("unreadable", f"{os.path.basename(path)} has no video stream (audio only?): {kinds}")
        try:
            s = container.streams.best("video")
        except (av.error.FFmpegError, ValueError):
            s = None
        s = s or container.streams.video[0]
        cc = s.codec_context
        rate = s.average_rate or s.guessed_rate
        fps = float(rate) if rate else 0.0
        if s.frames and s.frames > max_frames:
            raise ClipError("too_large", f"{s.frames} frames (container header) exceed the cap of {max_frames}")
        pts, key, dur, missing = [], [], [], 0
        try:
            for p in container.demux(s):
                if not p.size:  # the demuxer's end-of-stream marker
                    continue
                t = p.pts if p.pts is not None else p.dts
                if t is None:
                    missing += 1
                    t = 0
                pts.append(t)
                key.append(p.is_keyframe)
                dur.append(p.duration or 0)
                if len(pts) > max_frames:
                    raise ClipError("too_large", f"more than {max_frames} frames (the cap)")
        except av.error.FFmpegError as e:
            if not pts:
                raise _open_error(path, e) from None
            # A damaged tail: the frames before it are listed; decoding past them fails later.
        if not pts:
            raise ClipError("unreadable", f"{os.path.basename(path)} has a video stream without frames")
        n = len(pts)
        order = np.argsort(np.asarray(pts, np.int64), kind="stable")
        p = np.asarray(pts, np.int64)[order]
        d = np.diff(p, append=p[-1] + (np.asarray(dur, np.int64)[order][-1] or (p[-1] - p[-2] if n > 1 else 1)))
        return FrameTable(stream_index=s.index, width=int(cc.width or 0), height=int(cc.height or 0),
                          header_fps=fps, time_base=Fraction(s.time_base) if s.time_base else Fraction(1, 1),
                          num_frames=n, pts=None if missing else p, keyframe=np.asarray(key, bool)[order],
                          duration=d, codec=str(cc.name or ""))


class FrameDecoder:
    """A decoder backend (module docstring). Subclasses set ``name``, import their package
    in ``__init__`` (an ImportError there, with ``missing_package``'s message, is what
    preflight reports) and implement ``read``. ``device_kind``: "cpu", or "torch" for one
    that decodes on a torch device (torchcodec on CUDA)."""

    name: ClassVar[str] = ""
    device_kind: str = "cpu"
    device: str = "cpu"

    def read(self, path: str, table: FrameTable, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "version": self.version()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def unique_rows(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct rows, position of each requested row among them)."""
    rows, inverse = np.unique(np.asarray(indices, np.int64), return_inverse=True)
    return rows, inverse
