"""Test videos in the containers and codecs the decoder backends must agree on, written
with PyAV (no ffmpeg binary needed), and the damaged files of the reliability corpus.

* ``write_video(path, frames, fps, codec, times)``: H.264 in .mp4/.mkv, VP9 or VP8 in
  .webm, MPEG-4 in .avi...; ``times`` (seconds per frame) makes a variable frame rate;
* ``index_frames(n, width, height)``: frames that show their own index (a white bar at
  x = 8 + 4 i and a gray level per index), so a test reads back which source frame a
  decoder returned;
* ``set_declared_duration(path, factor)``: an .mp4 whose headers (mvhd, tkhd, mdhd)
  declare ``factor`` times its real duration, so its declared average frame rate is wrong;
* ``write_audio_only``, ``write_no_frames`` (a video stream without a single frame),
  ``corrupt_header`` (random bytes over the first container boxes), ``truncate``.
"""
from __future__ import annotations

import fractions
import os
import struct
from typing import Sequence

import numpy as np

__all__ = ["write_video", "index_frames", "bar_index", "set_declared_duration", "write_audio_only",
           "write_no_frames", "corrupt_header", "truncate"]


def index_frames(n: int, width: int = 320, height: int = 192) -> np.ndarray:
    """(n, height, width, 3) uint8 RGB; frame i: dark background, a 4-px white bar at
    x = 8 + 4 i (needs 8 + 4 n <= width), green level 40 + 2 i (read back: ``bar_index``)."""
    if 8 + 4 * n > width:
        raise ValueError(f"{n} index frames need a width of at least {8 + 4 * n}")
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 1] = 40 + (2 * i) % 160
        frames[i, :, 8 + 4 * i:12 + 4 * i] = 255
    return frames


def bar_index(frame: np.ndarray, width: int | None = None) -> float:
    """The index an ``index_frames`` frame shows (fractional after scaling): from the bar's
    column in a frame of the source ``width`` (default: the frame's own width)."""
    col = frame[..., 0].astype(np.float64).mean(0)
    w = np.clip(col - 0.5 * (col.max() + col.min()), 0, None)
    x = (float((w * np.arange(len(col))).sum() / w.sum()) + 0.5) * ((width or frame.shape[1]) / frame.shape[1]) - 0.5
    return (x - 9.5) / 4


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str = "libx264",
                times: Sequence[float] | None = None, pix_fmt: str = "yuv420p") -> str:
    """Encode RGB uint8 frames with PyAV; the container follows the file extension.
    ``times``: the presentation time (s) of each frame (a variable frame rate)."""
    import av

    path = os.fspath(path)
    tb = fractions.Fraction(1, 1000)
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if times is not None:
            s.codec_context.time_base = tb
            s.time_base = tb
        for i, img in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times is not None:
                fr.pts, fr.time_base = int(round(times[i] * 1000)), tb
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _boxes(data: bytes, start: int, end: int):
    """(type, offset, size) of the ISO-BMFF boxes in data[start:end]."""
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
        if size < 8:
            break
        yield kind.decode("latin-1"), i, size
        i += size


def set_declared_duration(path: str | os.PathLike, factor: float) -> str:
    """Multiply the durations the .mp4 headers declare (mvhd, every tkhd and mdhd) by
    ``factor`` in place; the sample table (each frame's timestamp) is left as it is."""
    path = os.fspath(path)
    data = bytearray(open(path, "rb").read())
    # version 0 boxes: duration is a uint32 at these offsets from the box start
    offsets = {"mvhd": 24, "tkhd": 28, "mdhd": 24}
    changed = 0

    def walk(start, end):
        nonlocal changed
        for kind, off, size in _boxes(bytes(data), start, end):
            if kind in ("moov", "trak", "mdia"):
                walk(off + 8, off + size)
            elif kind in offsets:
                if data[off + 8] != 0:
                    raise ValueError(f"{path}: {kind} version {data[off + 8]} is not handled")
                at = off + offsets[kind]
                (dur,) = struct.unpack(">I", data[at:at + 4])
                data[at:at + 4] = struct.pack(">I", int(round(dur * factor)))
                changed += 1

    walk(0, len(data))
    if not changed:
        raise ValueError(f"{path}: no mvhd/tkhd/mdhd box found")
    open(path, "wb").write(bytes(data))
    return path


def write_audio_only(path: str | os.PathLike, seconds: float = 3.0) -> str:
    """AAC in the container of ``path``'s extension, no video stream."""
    import av

    path = os.fspath(path)
    with av.open(path, "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        t = np.arange(int(16000 * seconds)) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for i in range(0, samples.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp",
                                            layout="mono")
            fr.sample_rate, fr.pts = 16000, i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_no_frames(path: str | os.PathLike, width: int = 320, height: int = 192) -> str:
    """A container with a video stream (header and codec parameters) but no frame."""
    import av

    path = os.fspath(path)
    with av.open(path, "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        c.start_encoding()
    return path


def corrupt_header(path: str | os.PathLike, nbytes: int = 64, seed: int = 0) -> str:
    """Random bytes over the first ``nbytes`` of the file (the container's first boxes)."""
    path = os.fspath(path)
    data = bytearray(open(path, "rb").read())
    data[:nbytes] = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    open(path, "wb").write(bytes(data))
    return path


def truncate(path: str | os.PathLike, keep: float = 0.5) -> str:
    """Cut the file to ``keep`` of its bytes."""
    path = os.fspath(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])
    return path
