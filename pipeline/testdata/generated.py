"""Stand-ins for generated videos with a known trajectory error, made from a set's real frames:
the evaluation's tests and its demo (bench/evaluate_demo.py) write them as real video files.

- ``translated(frames, dx, dy)``: frames 1..L-1 moved by (dx, dy) px (content at p goes to
  p + (dx, dy); borders repeat the edge), frame 0 untouched: every tracked point is off by
  exactly (dx, dy) from frame 1 on, so ObjMC = |(dx, dy)| up to the tracker's own error;
- ``frozen(frames)``: frame 0 repeated L times: nothing moves, ObjMC = the mean distance of the
  conditioning points from their start;
- ``reversed_clip(frames)``: the clip played backwards (frame 0 is the real last frame).
"""
from __future__ import annotations

import numpy as np


def translated(frames: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    out = frames.copy()
    for t in range(1, len(frames)):
        out[t] = cv2.warpAffine(frames[t], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def frozen(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    return np.repeat(frames[:1], len(frames), axis=0)


def reversed_clip(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(frames)[::-1])
