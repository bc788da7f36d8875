"""Decode: the clip's frames at the training profile (``stages.decode``: one frame-selection
rule, then the configured decoder of ``stages.decoders``: decord, PyAV or torchcodec),
round-tripped through the JPEG codec the shard stores, so every later step sees exactly the
stored frames; the sample's geometry, provenance and decoder in its meta."""
from __future__ import annotations

import os

import numpy as np

from schemas.sample import Sample, decode_jpeg, encode_jpeg
from stages.decode import clip_rng, decode_frame_folder, decode_video
from stages.decoders import FrameDecoder, auto_reason, check_decoder, decoder_identity, make_decoder
from stages.errors import ClipError, split_reason

from pipeline import storage
from pipeline.steps.base import CPU, TORCH, Resources, Step, setting_up

FIX = ("install the decoder's package (pip install -e '.[decord]' or '.[torchcodec]'), or set "
       "decode.backend to pyav or auto (--config file)")


def decodes_on_cuda(cfg) -> bool:
    """The configured decoder decodes on a CUDA device (torchcodec with decode.device cuda)."""
    return decoder_identity(cfg.decode.backend, cfg.decode.device).endswith("/cuda")


class DecodeStep(Step):
    name = "decode"
    stage = "decode"
    operator = "decode"   # only a decoder on a CUDA device (torchcodec) needs a GPU operator

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        d = cfg.decode
        self.profile = cfg.get_profile()
        self.seed = cfg.seed
        self.backend, self.device = d.backend, backends.on(d.device)
        self.jpeg_quality = d.jpeg_quality
        self.max_source_pixels = d.max_source_pixels
        self.max_source_frames = d.max_source_frames

    @classmethod
    def resources(cls, cfg) -> Resources:
        return Resources(TORCH, cls.operator, 4) if decodes_on_cuda(cfg) else Resources()

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        return {} if str(cfg.decode.device) == CPU else {"decode.device": cfg.decode.device}

    @property
    def decoder(self) -> FrameDecoder:
        """The video decoder (``decode.backend`` on ``decode.device``, ``auto`` resolved), built
        once per process."""
        return self.backends.get("decoder", lambda: make_decoder(self.backend, self.device))

    def setup(self) -> dict[str, str]:
        """Builds the decoder and decodes a 4-frame clip with it: a missing or broken package is a
        setup error with the install command; the line says which decoder ``auto`` chose and why."""
        with setting_up(f"the decoder {self.backend!r}", FIX):
            dec = self.decoder
            check_decoder(dec)
        text = f"{dec.name} {dec.version()}".strip() + (f" on {dec.device}" if dec.device != CPU else "")
        why = auto_reason() if self.backend == "auto" and dec.name != "decord" else ""
        return {"decode": text + (f" (auto: {why})" if why else "")}

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
                                    self.max_source_frames, decoder=self.decoder)
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
