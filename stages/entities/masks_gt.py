"""The ground-truth mask source (``"gt"``): the dataset's own first-frame ids.

``GtMaskSource(void_ids=(0,), keep_background=True, stuff_max_id=124)`` reads the clip's
per-frame id maps (``row["masks"]``, a folder: VIPSeg panomasks) and maps frame 0's to the
profile geometry by nearest neighbour (``map_ids_to_profile``); ``read_id_map(path)`` reads
one map.

Rules (also in docs/entities.md): every id present in frame 0 is a candidate entity; ids in
``void_ids`` never are (VIPSeg: 0 = VOID). VIPSeg ids are ``category`` for "stuff" (1..124)
and ``category * 100 + instance`` for "thing"; ids ``1..stuff_max_id`` are stuff
(background: sky, road, wall...). ``keep_background=False`` drops them.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..errors import ClipError
from .masks import NO_ENTITY, EntityMasks, MaskSource

__all__ = ["GtMaskSource", "read_id_map", "map_ids_to_profile", "VIPSEG_STUFF_MAX_ID"]

# VIPSeg: ids 1..124 are stuff categories, larger ids are category * 100 + instance.
VIPSEG_STUFF_MAX_ID = 124
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")


def read_id_map(path: str) -> np.ndarray:
    """A single-channel id map (8- or 16-bit PNG, as VIPSeg's panomasks) -> (H, W) int64."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ClipError("unreadable", f"mask {os.path.basename(path)} does not decode")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ClipError("invalid_input", f"mask {os.path.basename(path)} has {img.shape[2]} channels; "
                                         "a single-channel id map is expected")
    if not np.issubdtype(img.dtype, np.integer):
        raise ClipError("invalid_input", f"mask {os.path.basename(path)} is {img.dtype}, not an integer id map")
    return img.astype(np.int64)


def map_ids_to_profile(ids_src: np.ndarray, meta: dict) -> np.ndarray:
    """Map a source-size id map to the profile frame with the frames' geometry (from meta).

    Profile pixel (x, y) is the source point ``((x + crop_x + 0.5) / sx - 0.5, ...)``; it takes
    the id of the source pixel whose center is nearest (``floor((x + crop_x + 0.5) / sx)``,
    clipped to the image): nearest neighbour, no id is ever blended or invented.
    """
    h_src, w_src = ids_src.shape
    sw, sh = (int(v) for v in meta["source_size"])
    if (w_src, h_src) != (sw, sh):
        raise ClipError("decode_error", f"mask is {w_src}x{h_src}, the frames are {sw}x{sh}")
    sx, sy = (float(v) for v in meta["resize_scale"])
    cx, cy = (int(v) for v in meta["crop_offset"])
    h = int(meta["profile"]["height"])
    w = int(meta["profile"]["width"])
    xs = np.clip(np.floor((np.arange(w) + cx + 0.5) / sx), 0, w_src - 1).astype(np.intp)
    ys = np.clip(np.floor((np.arange(h) + cy + 0.5) / sy), 0, h_src - 1).astype(np.intp)
    return ids_src[ys[:, None], xs[None, :]]


def _mask_file(folder: str, meta: dict) -> str:
    if not folder or not os.path.isdir(folder):
        raise ClipError("missing_masks", f"mask folder {folder!r} does not exist")
    names = [n for n in os.listdir(folder) if n.lower().endswith(MASK_EXTS)]
    by_stem = {os.path.splitext(n)[0]: n for n in names}
    frame_names = meta.get("source_frame_names")
    if frame_names:
        stem = os.path.splitext(frame_names[0])[0]
        if stem not in by_stem:
            raise ClipError("missing_masks", f"no mask for frame {frame_names[0]} in {folder}")
        return os.path.join(folder, by_stem[stem])
    # A video file with a mask folder: the i-th mask in numeric order is frame i.
    stems = sorted((s for s in by_stem if s.isdigit()), key=int)
    idx = int(meta["source_frame_indices"][0])
    if idx >= len(stems):
        raise ClipError("missing_masks", f"no mask for frame index {idx} in {folder} ({len(stems)} masks)")
    return os.path.join(folder, by_stem[stems[idx]])


class GtMaskSource(MaskSource):
    """The dataset's own first-frame ids (``row["masks"]``: a folder of per-frame id maps)."""

    name = "gt"

    def __init__(self, void_ids: Sequence[int] = (0,), keep_background: bool = True,
                 stuff_max_id: int = VIPSEG_STUFF_MAX_ID):
        self.void_ids = tuple(int(v) for v in (void_ids or ()))
        self.keep_background = bool(keep_background)
        self.stuff_max_id = int(stuff_max_id)

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name, "model": None, "void_ids": list(self.void_ids),
                "keep_background": self.keep_background, "stuff_ids": f"1..{self.stuff_max_id}"}

    def kind(self, v: int) -> str:
        return "stuff" if 1 <= v <= self.stuff_max_id else "thing"

    def masks(self, frames, flow, meta, row, backward_flow=None) -> EntityMasks:
        path = _mask_file(row.get("masks") or "", meta)
        ids_p = map_ids_to_profile(read_id_map(path), meta)
        present = np.unique(ids_p)
        void = np.isin(present, self.void_ids)
        kinds = np.array([self.kind(int(v)) for v in present], dtype=object)
        background = (kinds == "stuff") & ~void & (not self.keep_background)
        keep = present[~void & ~background]
        id_map = np.where(np.isin(ids_p, keep), ids_p, NO_ENTITY)
        return EntityMasks(id_map.astype(np.int64), keep.astype(np.int64), [self.kind(int(v)) for v in keep],
                           {"void": int(void.sum()), "background": int(background.sum())},
                           {"mask_file": os.path.basename(path)})

