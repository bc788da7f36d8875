"""Decode exactly the frames a profile needs, at the profile size.

Frame selection: the profile samples ``L`` frames at ``profile.fps``; the start time is drawn
uniformly in ``[0, last_time - span]`` from a generator seeded by (seed, clip_id), so reruns
pick the same frames. Source index of profile frame i = round((start + i / fps) * source_fps)
for a constant-rate source; the nearest frame by timestamp for a variable-rate one
(``select_source_frames``). The rule runs on the frame table of the file
(``stages.decoders.read_frame_table``), not on what a decoder reports, so every decoder
backend (``stages.decoders``: decord, pyav, torchcodec) decodes the same source frames.

Geometry: scale the source so it covers the profile (the short side, relative to the
profile's aspect, matches), then center-crop to the profile size. ``resize_scale`` (sx, sy)
and ``crop_offset`` (x, y, in resized pixels) are recorded so that a profile point p maps
back to the source by ``(p + crop_offset + 0.5) / resize_scale - 0.5``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import ClipError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def clip_rng(seed: int, clip_id: str, purpose: str) -> np.random.Generator:
    """A generator that depends only on the run seed, the clip and what it is used for."""
    h = hashlib.blake2b(f"{seed}\x00{clip_id}\x00{purpose}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(h, "little"))


@dataclass
class Geometry:
    source_size: tuple[int, int]  # (w, h)
    resized_size: tuple[int, int]  # (w, h) after scaling
    crop_offset: tuple[int, int]  # (x, y) in resized pixels
    out_size: tuple[int, int]  # (w, h) = profile size

    @property
    def resize_scale(self) -> tuple[float, float]:
        return (self.resized_size[0] / self.source_size[0], self.resized_size[1] / self.source_size[1])

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64)
        return (xy + np.asarray(self.crop_offset) + 0.5) / np.asarray(self.resize_scale) - 0.5

    def as_meta(self) -> dict:
        return {
            "source_size": list(self.source_size),
            "resized_size": list(self.resized_size),
            "resize_scale": list(self.resize_scale),
            "crop_offset": list(self.crop_offset),
        }


def cover_geometry(src_w: int, src_h: int, out_w: int, out_h: int) -> Geometry:
    scale = max(out_w / src_w, out_h / src_h)
    rw = max(out_w, int(round(src_w * scale)))
    rh = max(out_h, int(round(src_h * scale)))
    return Geometry((src_w, src_h), (rw, rh), ((rw - out_w) // 2, (rh - out_h) // 2), (out_w, out_h))


def select_frames(num_frames: int, source_fps: float, frames: int, fps: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Source frame indices for ``frames`` samples at ``fps``; returns (indices, start_seconds)."""
    if not (source_fps > 0 and np.isfinite(source_fps)):
        raise ClipError("unreadable", f"invalid source frame rate {source_fps!r}")
    span = (frames - 1) / fps
    last_time = (num_frames - 1) / source_fps
    if num_frames < 1 or last_time + 1e-6 < span:
        raise ClipError(
            "too_short",
            f"{num_frames} frames at {source_fps:.3f} fps = {max(last_time, 0):.2f} s between first and "
            f"last frame; the profile needs {span:.2f} s ({frames} frames at {fps:g} fps)",
        )
    start = float(rng.uniform(0.0, max(0.0, last_time - span)))
    times = start + np.arange(frames) / fps
    idx = np.clip(np.rint(times * source_fps).astype(np.int64), 0, num_frames - 1)
    return idx, start


def variable_frame_times(times: np.ndarray, avg_fps: float) -> np.ndarray | None:
    """The frame start times (s, from the first frame) when they do not follow a constant
    rate (a variable-frame-rate source: index ``i`` is not at ``i / avg_fps``); else None.
    Timestamps that are not finite or not increasing are ignored (None)."""
    t = np.asarray(times, np.float64)
    if t.ndim != 1 or len(t) < 3 or not np.all(np.isfinite(t)) or not (avg_fps > 0):
        return None
    t = t - t[0]
    if np.any(np.diff(t) <= 0):
        return None
    # Constant rate: every frame within half a frame interval of i / fps (fps from the span).
    fps = (len(t) - 1) / t[-1]
    if np.abs(t - np.arange(len(t)) / fps).max() <= 0.5 / fps:
        return None
    return t


def select_frames_by_time(times: np.ndarray, frames: int, fps: float,
                          rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Like :func:`select_frames` for a source whose frame ``i`` starts at ``times[i]`` s
    (increasing, from 0): each profile time takes the frame whose start is nearest."""
    times = np.asarray(times, np.float64)
    span = (frames - 1) / fps
    last_time = float(times[-1]) if len(times) else 0.0
    if len(times) < 1 or last_time + 1e-6 < span:
        raise ClipError(
            "too_short",
            f"{len(times)} frames (variable rate) = {max(last_time, 0):.2f} s between first and last "
            f"frame; the profile needs {span:.2f} s ({frames} frames at {fps:g} fps)",
        )
    start = float(rng.uniform(0.0, max(0.0, last_time - span)))
    want = start + np.arange(frames) / fps
    hi = np.clip(np.searchsorted(times, want), 1, len(times) - 1)
    lo = hi - 1
    idx = np.where(np.abs(times[lo] - want) <= np.abs(times[hi] - want), lo, hi)
    return idx.astype(np.int64), start


@dataclass
class DecodedClip:
    frames: np.ndarray  # (L, H, W, 3) uint8 RGB at the profile size
    indices: np.ndarray  # source frame indices
    source_fps: float
    source_frames: int
    start_seconds: float
    geometry: Geometry
    extra: dict = field(default_factory=dict)

    def meta(self) -> dict:
        return {
            "source_frame_indices": [int(i) for i in self.indices],
            "source_fps": float(self.source_fps),
            "source_frames": int(self.source_frames),
            "start_seconds": float(self.start_seconds),
            **self.geometry.as_meta(),
            **self.extra,
        }


def _crop(frames: np.ndarray, g: Geometry) -> np.ndarray:
    x, y = g.crop_offset
    w, h = g.out_size
    return np.ascontiguousarray(frames[:, y:y + h, x:x + w])


def _check_size(w: int, h: int, out_w: int, out_h: int, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ClipError("unreadable", f"no video stream with a valid frame size ({w}x{h})")
    if w * h > max_pixels:
        raise ClipError("too_large", f"source frames {w}x{h} exceed the cap of {max_pixels} pixels")
    if min(w, h) < 32:
        raise ClipError("too_small", f"source frames {w}x{h} are below 32 px on a side")


def constant_rate(times: np.ndarray, header_fps: float) -> float | None:
    """The frame rate of a constant-rate source whose frame ``i`` starts at ``times[i]`` s
    (from 0): the container's declared rate when every frame lies within half an interval
    of ``i / header_fps``, else the rate of the timestamps' span when they are constant at
    that one (a container whose duration, hence average rate, is wrong), else None (a
    variable-rate source, or timestamps that are not finite and increasing)."""
    t = np.asarray(times, np.float64)
    if t.ndim != 1 or len(t) < 2 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        return None
    i = np.arange(len(t))
    if header_fps > 0 and np.isfinite(header_fps) and np.abs(t - i / header_fps).max() <= 0.5 / header_fps:
        return float(header_fps)
    fps = (len(t) - 1) / float(t[-1])
    return fps if np.abs(t - i / fps).max() <= 0.5 / fps else None


def select_source_frames(num_frames: int, header_fps: float, times: np.ndarray | None, frames: int, fps: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, float, float, dict]:
    """The source frames of a profile: ``(indices, start_seconds, source_fps, extra meta)``.

    The one selection rule of every decoder backend (its inputs come from the frame table,
    ``stages.decoders.read_frame_table``, not from the backend): a constant-rate source
    (``constant_rate``) by :func:`select_frames` at its rate; a variable-rate one by
    timestamp (:func:`select_frames_by_time`, meta ``variable_frame_rate``,
    ``source_frame_times``); without usable timestamps by the container's rate. ``source_fps``
    is the rate used (the declared one for a variable-rate source); when the timestamps
    overrule a declared rate, meta ``declared_fps`` keeps it."""
    rate = constant_rate(times, header_fps) if times is not None and num_frames > 2 else None
    if rate is not None:
        idx, start = select_frames(num_frames, rate, frames, fps, rng)
        extra = {} if rate == header_fps else {"declared_fps": float(header_fps)}
        return idx, start, rate, extra
    t = variable_frame_times(times, header_fps or 1.0) if times is not None and num_frames > 2 else None
    if t is None:
        idx, start = select_frames(num_frames, header_fps, frames, fps, rng)
        return idx, start, float(header_fps), {}
    idx, start = select_frames_by_time(t, frames, fps, rng)
    return idx, start, float(header_fps), {"variable_frame_rate": True,
                                            "source_frame_times": [round(float(t[i]), 4) for i in idx]}


def _open_video(path: str, decoder, max_frames: int):
    """``(decoder, frame table)`` of a video file: ``ClipError`` for a missing or empty file;
    ``decoder`` a ``stages.decoders.FrameDecoder``, a backend name, or None for ``auto``."""
    from .decoders import make_decoder, read_frame_table

    if not os.path.exists(path):
        raise ClipError("missing_file", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise ClipError("unreadable", f"{path} is empty (0 bytes)")
    if decoder is None or isinstance(decoder, str):
        decoder = make_decoder(decoder or "auto")
    return decoder, read_frame_table(path, max_frames)


def decode_video(path: str, frames: int, fps: float, width: int, height: int, rng: np.random.Generator,
                 max_pixels: int = 8192 * 8192, max_frames: int = 10_000_000, decoder=None) -> DecodedClip:
    """Decode the profile's frames of a video file, scaled in the decoder to cover the profile
    and center-cropped. ``decoder``: a ``stages.decoders.FrameDecoder`` (built once per
    worker), a backend name, or None for ``auto``. The frame table is read first
    (``stages.decoders.read_frame_table``: size and frame count caps before any frame is
    decoded), the rows chosen by :func:`select_source_frames`, then only those decoded.
    Meta ``decoder``: the backend and its device."""
    decoder, table = _open_video(path, decoder, max_frames)
    _check_size(table.width, table.height, width, height, max_pixels)
    n = table.num_frames
    idx, start, src_fps, extra = select_source_frames(n, table.header_fps, table.times, frames, fps, rng)
    g = cover_geometry(table.width, table.height, width, height)
    batch = decoder.read(path, table, idx, g.resized_size)
    if batch.shape[1:3] != (g.resized_size[1], g.resized_size[0]):
        raise ClipError("decode_error", f"decoder {decoder.name} returned {batch.shape[2]}x{batch.shape[1]} "
                                        f"frames, not {g.resized_size[0]}x{g.resized_size[1]}")
    out = _crop(batch, g)
    extra["decoder"] = {"backend": decoder.name, "device": decoder.device}
    return DecodedClip(out, idx, src_fps, n, start, g, extra=extra)


def decode_all_frames(path: str, max_frames: int = 10_000, max_pixels: int = 8192 * 8192,
                      decoder=None) -> tuple[np.ndarray, float]:
    """Every frame of a video file at its own size (no frame selection, no resizing):
    ``(frames (N, H, W, 3) uint8 RGB, average fps)``. For videos that are already a clip (a
    generated video to evaluate), where :func:`decode_video`'s sampling at a profile rate would
    be wrong. ``decoder`` as for :func:`decode_video`.

    A file that is missing, empty, not a video or does not decode raises ``ClipError``
    (``missing_file``, ``unreadable``, ``decode_error``); more than ``max_frames`` frames or
    ``max_pixels`` pixels per frame is ``too_large``."""
    decoder, table = _open_video(path, decoder, max_frames)
    if table.width * table.height > max_pixels:
        raise ClipError("too_large", f"frames {table.width}x{table.height} exceed the cap of {max_pixels} pixels")
    n = table.num_frames
    if n < 1:
        raise ClipError("unreadable", f"{os.path.basename(path)} has no frames")
    frames = decoder.read(path, table, np.arange(n), (table.width, table.height))
    times = table.times
    fps = float(table.header_fps) if table.header_fps > 0 else (
        (n - 1) / float(times[-1]) if times is not None and n > 1 and times[-1] > 0 else 0.0)
    return np.ascontiguousarray(frames), fps


def list_frame_files(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    stems = [os.path.splitext(n)[0] for n in names]
    if not all(s.isdigit() for s in stems):
        bad = [n for n, s in zip(names, stems) if not s.isdigit()][:3]
        raise ClipError("unreadable", f"frame names must be numeric, found {bad}")
    return [n for _, n in sorted(zip((int(s) for s in stems), names))]


def decode_frame_folder(folder: str, source_fps: float, frames: int, fps: float, width: int, height: int,
                        rng: np.random.Generator, max_pixels: int = 8192 * 8192) -> DecodedClip:
    """A folder of numerically named images is a video at ``source_fps``."""
    import cv2

    if not os.path.isdir(folder):
        raise ClipError("missing_file", f"{folder} is not a folder")
    names = list_frame_files(folder)
    if not names:
        raise ClipError("unreadable", f"{folder} holds no image frames")
    idx, start = select_frames(len(names), source_fps, frames, fps, rng)
    imgs = []
    g = None
    for i in idx:
        img = cv2.imread(os.path.join(folder, names[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise ClipError("decode_error", f"frame {names[i]} does not decode")
        if g is None:
            _check_size(img.shape[1], img.shape[0], width, height, max_pixels)
            g = cover_geometry(img.shape[1], img.shape[0], width, height)
        if (img.shape[1], img.shape[0]) != g.source_size:
            raise ClipError("decode_error", f"frame {names[i]} has size {img.shape[1]}x{img.shape[0]}, "
                                            f"expected {g.source_size[0]}x{g.source_size[1]}")
        imgs.append(cv2.resize(img, g.resized_size, interpolation=cv2.INTER_AREA)[..., ::-1])
    out = _crop(np.stack(imgs), g)
    return DecodedClip(out, idx, float(source_fps), len(names), start, g,
                       extra={"source_frame_names": [names[i] for i in idx]})
