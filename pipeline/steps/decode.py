"""Decode: the clip's frames at the training profile (``stages.decode``), round-tripped through
the JPEG codec the shard stores, so every later step sees exactly the stored frames; the
sample's geometry and provenance in its meta."""
from __future__ import annotations

import os

import numpy as np

from schemas.sample import Sample, decode_jpeg, encode_jpeg
from stages.decode import clip_rng, decode_frame_folder, decode_video
from stages.errors import ClipError, split_reason

from pipeline import storage
from pipeline.steps.base import Step


class DecodeStep(Step):
    name = "decode"
    stage = "decode"

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        d = cfg.decode
        self.profile = cfg.get_profile()
        self.seed = cfg.seed
        self.jpeg_quality = d.jpeg_quality
        self.max_source_pixels = d.max_source_pixels
        self.max_source_frames = d.max_source_frames

    def run(self, samples: list[Sample | None], rows: list[dict]) -> list[Sample]:
        return [self.decode(row) for row in rows]

    def decode(self, row: dict) -> Sample:
        if row.get("error"):  # a problem the adapter found while listing
            raise ClipError(*split_reason(row["error"]))
        p = self.profile
        rng = clip_rng(self.seed, row["clip_id"], "start")
        src = row["source"]
        if row.get("fps") and os.path.isdir(src):
            clip = decode_frame_folder(src, row["fps"], p.frames, p.fps, p.width, p.height, rng,
                                       self.max_source_pixels)
        else:
            with storage.local_path(src) as path:
                clip = decode_video(path, p.frames, p.fps, p.width, p.height, rng, self.max_source_pixels,
                                    self.max_source_frames)
        jpegs = [encode_jpeg(f, self.jpeg_quality) for f in clip.frames]
        frames = np.stack([decode_jpeg(j) for j in jpegs])
        meta = {
            "clip_id": row["clip_id"],
            "dataset": row["dataset"],
            "source_id": row["source_id"],
            "caption_empty": not (row.get("caption") or "").strip(),
            "profile": {"name": p.name, "frames": p.frames, "width": p.width, "height": p.height, "fps": p.fps},
            "coords": "x right, y down, profile pixels, pixel centers at integers",
            "frames_codec": {"format": "jpeg", "quality": self.jpeg_quality},
            "seed": self.seed,
            **clip.meta(),
        }
        return Sample(key=row["clip_id"], caption=row.get("caption") or "", meta=meta, frames_jpeg=jpegs,
                      frames=frames)
