"""Test videos in the containers and codecs the decoder backends must agree on, written
with PyAV (no ffmpeg binary needed), and the damaged files of the reliability corpus.

* ``write_video(path, frames, fps, codec, times)``: H.264 in .mp4/.mkv, VP9 or VP8 in
  .webm, MPEG-4 in .avi...; ``times`` (seconds per frame) makes a variable frame rate;
* ``index_frames(n, width, height)``: frames that show their own index (a white bar at
  x = 8 + 4 i and a gray level per index), so a test reads back which source frame a
  decoder returned (``bar_x``, ``bar_index``);
* ``set_declared_duration(path, factor)``: an .mp4 whose headers (mvhd, tkhd, mdhd)
  declare ``factor`` times its real duration, so its declared average frame rate is wrong;
* ``decoder_test_clips(folder)``: the clip set the decoder tests and ``bench/decoders.py``
  use (written in a fresh Python process: once decord is imported, its bundled libvpx
  makes PyAV's ``libvpx-vp9`` encoder fail to open, measured with decord 0.6.0 and PyAV
  18.1.0);
* ``write_audio_only``, ``write_no_frames`` (a video stream without a single frame),
  ``corrupt_header`` (random bytes over the moov box), ``truncate``.
"""
from __future__ import annotations

import fractions
import os
import struct
from typing import Sequence

import numpy as np

__all__ = ["decoder_test_clips", "DECODER_TEST_CLIPS", "VFR_TIMES", "write_video", "index_frames", "bar_x", "bar_index", "set_declared_duration", "write_audio_only",
           "write_no_frames", "corrupt_header", "truncate"]


def index_frames(n: int, width: int = 320, height: int = 192) -> np.ndarray:
    """(n, height, width, 3) uint8 RGB; frame i: dark background, a 4-px white bar at
    x = 8 + 4 i (needs 8 + 4 n <= width), green level 40 + 2 i."""
    if 8 + 4 * n > width:
        raise ValueError(f"{n} index frames need a width of at least {8 + 4 * n}")
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 1] = 40 + (2 * i) % 160
        frames[i, :, 8 + 4 * i:12 + 4 * i] = 255
    return frames


def bar_x(frame: np.ndarray) -> float:
    """The x (pixel centers at integers) of an ``index_frames`` bar in a decoded frame."""
    col = frame[..., 0].astype(np.float64).mean(0)
    w = np.clip(col - 0.5 * (col.max() + col.min()), 0, None)
    return float((w * np.arange(len(col))).sum() / w.sum())


def bar_index(x_source: float) -> float:
    """The frame index an ``index_frames`` bar at ``x_source`` (source pixels) shows."""
    return (x_source - 9.5) / 4


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


INDEX_CLIP_FRAMES = 60
VFR_TIMES = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(INDEX_CLIP_FRAMES - 30)]  # 30 fps, then 5
# name -> (fps, codec, times, declared-duration factor); ``index_frames`` content, 320x192
DECODER_TEST_CLIPS = {
    "mp4v_25.mp4": (25, "mp4v", None, None),           # OpenCV's writer, as the synthetic scenes
    "h264_24.mp4": (24, "libx264", None, None),
    "h264_2997.mkv": (30000 / 1001, "libx264", None, None),
    "vp9_30.webm": (30, "libvpx-vp9", None, None),
    "vfr.mp4": (30, "libx264", VFR_TIMES, None),
    "vfr.mkv": (30, "libx264", VFR_TIMES, None),
    "vfr.webm": (30, "libvpx-vp9", VFR_TIMES, None),
    # declares 30 fps (the track's default duration), its frames are 1/25 s apart
    "wrong_rate.mkv": (30, "libx264", [i / 25 for i in range(INDEX_CLIP_FRAMES)], None),
    # mvhd/tkhd/mdhd declare twice the real duration
    "long_header.mp4": (25, "libx264", None, 2.0),
}


def decoder_test_clips(folder: str | os.PathLike, fresh_process: bool = True) -> dict[str, str]:
    """Write ``DECODER_TEST_CLIPS`` into ``folder``; name -> path (module docstring)."""
    folder = os.fspath(folder)
    if fresh_process:
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = "import sys; from pipeline.testdata.videos import decoder_test_clips as f; f(sys.argv[1], False)"
        subprocess.run([sys.executable, "-c", code, folder], check=True, cwd=root, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])})
        return {name: os.path.join(folder, name) for name in DECODER_TEST_CLIPS}
    from .synthetic import write_mp4

    os.makedirs(folder, exist_ok=True)
    frames = index_frames(INDEX_CLIP_FRAMES)
    out = {}
    for name, (fps, codec, times, factor) in DECODER_TEST_CLIPS.items():
        path = os.path.join(folder, name)
        if codec == "mp4v":
            write_mp4(path, frames, fps)
        else:
            write_video(path, frames, fps, codec, times)
        if factor:
            set_declared_duration(path, factor)
        out[name] = path
    return out


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
    """A container with a video stream (header and codec parameters) but no frame: in an
    .avi (measured with PyAV 18.1.0: the .mp4/.mov muxer drops the empty track, and an
    empty .mkv does not open at all)."""
    import av

    path = os.fspath(path)
    with av.open(path, "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        c.start_encoding()
    return path


def corrupt_header(path: str | os.PathLike, nbytes: int = 64, seed: int = 0) -> str:
    """Random bytes over the first ``nbytes`` of an .mp4's moov box (after its 8-byte box
    header): the container header that lists the streams and their samples is damaged, the
    frames are intact. (Damaging the first bytes of the file instead leaves a file FFmpeg
    still probes as a raw MPEG-4 stream.)"""
    path = os.fspath(path)
    data = bytearray(open(path, "rb").read())
    moov = [off for kind, off, _ in _boxes(bytes(data), 0, len(data)) if kind == "moov"]
    if not moov:
        raise ValueError(f"{path}: no moov box")
    at = moov[0] + 8
    data[at:at + nbytes] = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    open(path, "wb").write(bytes(data))
    return path


def truncate(path: str | os.PathLike, keep: float = 0.5) -> str:
    """Cut the file to ``keep`` of its bytes."""
    path = os.fspath(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])
    return path
