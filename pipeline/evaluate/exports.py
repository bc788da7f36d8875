"""The set's conditions in the layouts public inference code reads (``evalset --export NAME``).

``draganything`` (DragAnything, showlab/DragAnything ``demo.py`` and ``utils/Eval_ObjMC/ObjMC.py``):
    ``SET/exports/draganything/<key>/demo.json`` = ``{"<i>": {"mask_name": "mask_<id>.png",
    "trajectory": [[x, y] per frame], "visible": [bool per frame]}}`` with the binary masks
    ``mask_<id>.png`` (0 / 255, profile size) and ``frame0.png`` beside it: the entity
    conditions (demo.py reads ``mask_name`` and ``trajectory``; ``visible`` is ours, ignored
    there). ``SET/exports/draganything/trajectories/<key>.json`` = ``{"<id>": [[x, y] per
    frame]}``: the ground-truth layout ObjMC.py compares with. Samples without entities are
    left out. DragAnything's format has no visibility: coordinates of invisible centers are
    the tracker's estimates (they may lie outside the frame), as in DragAnything's own files.
``wan-move`` (ali-vilab/Wan-Move ``generate.py --track --track_visibility``):
    ``SET/exports/wan-move/<key>_tracks.npy`` float32 (1, L, N, 2) and
    ``<key>_visibility.npy`` bool (1, L, N): the trajectories in the pixels of
    ``<key>.png`` (the first frame; Wan-Move rescales tracks by its output size over the
    image size), visibility = the conditioning span; ``<key>.txt`` the caption. The frame
    count and rate are the set's (Wan-Move generates 81 frames at 16 fps: resample the tracks
    in time before generating, and the video back to the set's L frames before evaluating).
    ATI's own inputs are a different layout (a torch file of tracks quantised x8); not written.

Coordinates are the set's: x right, y down, profile pixels, pixel centers at integers.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

import numpy as np

EXPORTS = ("draganything", "wan-move")


def _round(a: np.ndarray) -> list:
    return np.round(np.asarray(a, np.float64), 3).tolist()


def _write_mask(path: str, mask: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(path, np.where(mask, 255, 0).astype(np.uint8)):
        raise OSError(f"cannot write {path}")


def export_draganything(root: str, s) -> list[str]:
    """One sample's DragAnything files (none without entities; ``s``: an ``evalset.SetSample``);
    returns the paths written."""
    c = s.conditions()
    if "entity_ids" not in c or len(c["entity_ids"]) == 0:
        return []
    folder = os.path.join(root, "exports", "draganything", s.key)
    traj_dir = os.path.join(root, "exports", "draganything", "trajectories")
    os.makedirs(folder, exist_ok=True)
    os.makedirs(traj_dir, exist_ok=True)
    demo, gt, paths = {}, {}, []
    for i, eid in enumerate(np.asarray(c["entity_ids"]).tolist()):
        name = f"mask_{eid}.png"
        _write_mask(os.path.join(folder, name), c["entity_mask"] == eid)
        paths.append(os.path.join(folder, name))
        demo[str(i)] = {"mask_name": name, "trajectory": _round(c["entity_tracks"][i]),
                        "visible": np.asarray(c["entity_visibility"][i], bool).tolist()}
        gt[str(eid)] = _round(c["entity_tracks"][i])
    shutil.copyfile(os.path.join(s.folder, "frame0.png"), os.path.join(folder, "frame0.png"))
    for path, obj in ((os.path.join(folder, "demo.json"), demo), (os.path.join(traj_dir, f"{s.key}.json"), gt)):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        paths.append(path)
    return paths + [os.path.join(folder, "frame0.png")]


def export_wan_move(root: str, s) -> list[str]:
    """One sample's Wan-Move files (``s``: an ``evalset.SetSample``); returns the paths written."""
    c = s.conditions()
    folder = os.path.join(root, "exports", "wan-move")
    os.makedirs(folder, exist_ok=True)
    tracks = np.ascontiguousarray(np.asarray(c["tracks"], np.float32).transpose(1, 0, 2)[None])   # (1, L, N, 2)
    vis = np.ascontiguousarray(np.asarray(c["span"], bool).T[None])                              # (1, L, N)
    paths = [os.path.join(folder, f"{s.key}_tracks.npy"), os.path.join(folder, f"{s.key}_visibility.npy"),
             os.path.join(folder, f"{s.key}.png"), os.path.join(folder, f"{s.key}.txt")]
    np.save(paths[0], tracks)
    np.save(paths[1], vis)
    shutil.copyfile(os.path.join(s.folder, "frame0.png"), paths[2])
    shutil.copyfile(os.path.join(s.folder, "caption.txt"), paths[3])
    return paths


def write_exports(root: str, samples: Sequence, exports: Sequence[str]) -> dict[str, int]:
    """Every asked-for export of every sample (``evalset.SetSample``); returns the number of
    files per export."""
    writers = {"draganything": export_draganything, "wan-move": export_wan_move}
    out = {}
    for name in exports:
        out[name] = sum(len(writers[name](root, s)) for s in samples)
    return out
