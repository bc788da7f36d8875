"""Generated videos: finding ``DIR/<key>.<ext>``, decoding every frame (``stages.decode``), the
size check and resize to the profile, and a writer for clips (H.264 through PyAV)."""
from __future__ import annotations

import os

import numpy as np

from stages.errors import ClipError

# Looked for in this order; decord opens any container FFmpeg reads, so other names work too
# when given exactly (DIR/<key>.<ext> with an extension below).
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif")


def find_video(folder: str, key: str) -> str | None:
    """The generated video of ``key`` in ``folder``: ``<key>.mp4``, else the first of
    ``VIDEO_EXTS`` present; None when there is none."""
    for ext in VIDEO_EXTS:
        p = os.path.join(folder, key + ext)
        if os.path.isfile(p):
            return p
    return None


def fit_to_profile(frames: np.ndarray, width: int, height: int) -> tuple[np.ndarray, str | None]:
    """Frames of another size but the profile's aspect (within ``ASPECT_TOLERANCE``) resized to
    the profile size (area interpolation when shrinking, bilinear when enlarging); returns the
    frames and a note (None when the size already matched). Another aspect is a ClipError
    ``size_mismatch``: stretching would move every point."""
    import cv2

    from pipeline.evaluate.protocols import ASPECT_TOLERANCE

    h, w = frames.shape[1:3]
    if (w, h) == (width, height):
        return frames, None
    if abs((w / h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
        raise ClipError("size_mismatch", f"the video is {w}x{h}, the set {width}x{height} (another aspect ratio)")
    interp = cv2.INTER_AREA if w > width else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])
    return out, f"resized from {w}x{h}"


def write_video(path: str, frames: np.ndarray, fps: float = 4.0, crf: int = 12) -> str:
    """Write RGB uint8 frames (T, H, W, 3), even sizes, as H.264 (libx264, yuv420p, constant
    quality ``crf``; 12 is close to visually lossless) through PyAV, the same bytes on every
    run. Returns the path."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs even sizes, got {w}x{h}")
    from fractions import Fraction

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread and no macroblock-tree rate control: with either, this libx264 build gave other
        # bytes for the same frames in another process (decoded pixels off by 0.7 levels on average,
        # and the tracked points with them); with both off, 6 runs in 2-3 concurrent processes
        # gave identical files.
        stream.options = {"crf": str(int(crf)), "preset": "medium", "x264-params": "threads=1:no-mbtree=1"}
        stream.codec_context.thread_count = 1
        stream.codec_context.thread_type = "NONE"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def load_video(path: str, sample) -> tuple[np.ndarray, str | None]:
    """Every frame of a video, fitted to the set sample's profile size (``fit_to_profile``)."""
    from stages.decode import decode_all_frames

    frames, _ = decode_all_frames(path)
    w, h = sample.size
    return fit_to_profile(frames, w, h)
