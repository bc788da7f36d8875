"""Captions: the sample's text by the caption rule (``stages.captions.choose_caption``): the
dataset's, BLIP-2's from a local model folder (a GPU model, batched across clips), or none."""
from __future__ import annotations

import os

from schemas.sample import Sample
from stages.captions import CAPTIONERS, check_caption_settings, choose_caption, make_captioner

from pipeline.steps.base import CPU, Resources, Step, setup_failure

_FIX = "pass --caption-model DIR (a local BLIP-2 folder) or --captions dataset|none"


def _uses_model(c) -> bool:
    return bool(c.model) and c.source in ("auto", "blip2")


class CaptionsStep(Step):
    name = "captions"
    stage = "captions"
    operator = "captions"
    batched = True

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        c = cfg.captions
        self.source = c.source
        self.model_dir = c.model if _uses_model(c) else None
        self.options = dict(device=backends.on(c.device), batch_size=c.batch_size, prompt=c.prompt,
                            max_new_tokens=c.max_new_tokens, frames=c.frames, dtype=c.dtype)

    @classmethod
    def resources(cls, cfg) -> Resources:
        if not _uses_model(cfg.captions) or CAPTIONERS.device_kind("blip2") == CPU:
            return Resources()
        return Resources(CAPTIONERS.device_kind("blip2"), cls.operator, 8)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        return {"captions.device": cfg.captions.device} if cls.resources(cfg).gpu else {}

    def setup(self) -> dict[str, str]:
        """The caption source and its BLIP-2 folder (complete, transformers importable); the
        model itself is loaded by the workers that caption."""
        try:
            check_caption_settings(self.source, self.model_dir or self.cfg.captions.model)
        except (ValueError, OSError, ImportError) as e:
            raise setup_failure("captions", e, _FIX) from e
        name = f" ({os.path.basename(str(self.model_dir).rstrip('/'))})" if self.model_dir else ""
        return {"captions": f"{self.source}{name}"}

    @property
    def captioner(self):
        """The BLIP-2 captioner (``"blip2"`` of ``stages.captions.CAPTIONERS``), or None when the
        caption source does not use one; its model is loaded when a clip first needs it."""
        if self.model_dir is None:
            return None
        return self.backends.get("captioner", lambda: make_captioner("blip2", self.model_dir, **self.options))

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        """Sets ``caption`` (the ``.txt`` member), ``meta["caption"] = {source, model, prompt,
        frames, max_new_tokens}`` (``frames``: the captioned frame indices; all but ``source``
        None for ``dataset`` / ``none``) and ``meta["caption_empty"]``. Dataset captions are
        replaced only with ``source: blip2``."""
        captioner = self.captioner if self.source not in ("dataset", "none") else None
        chosen = [choose_caption(self.source, s.caption, captioner is not None) for s in samples]
        todo = [k for k, how in enumerate(chosen) if how == "blip2"]
        texts = captioner.caption_many([samples[k].frames for k in todo]) if todo else []
        self.backends.size_torch_threads()
        generated = dict(zip(todo, texts))
        for k, (sample, how) in enumerate(zip(samples, chosen)):
            info = {"source": how, "model": None, "prompt": None, "frames": None, "max_new_tokens": None}
            if how == "blip2":
                d = captioner.describe()
                sample.caption = generated[k]
                info.update(model=d["model"], prompt=d["prompt"], max_new_tokens=d["max_new_tokens"],
                            frames=captioner.frame_indices(len(sample.frames)))
            elif how == "none":
                sample.caption = ""
            sample.meta["caption"] = info
            sample.meta["caption_empty"] = not (sample.caption or "").strip()
        return samples
