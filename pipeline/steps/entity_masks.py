"""Entity masks: the frame-0 candidate entities of each clip from a mask source
(``stages.entities.masks``: the dataset's ids (``gt``), SAM, or the CPU motion/colour
segmentation), chosen per clip by the ``auto`` rule (``stages.entities.extract``). The result
waits on the sample (``Sample.entity_masks``) for the entity tracks step. A model source (SAM)
sees all of its clips in one call (image embeddings batched across clips) and, on a GPU
cluster, gets an operator of its own."""
from __future__ import annotations

import numpy as np

from schemas.sample import Sample
from stages.entities.extract import ChosenMasks, choose_mask_source, mask_source_names
from stages.entities.masks import MASK_SOURCES, MaskSource, make_mask_source

from pipeline.steps.base import CPU, Resources, Step, setting_up, short
from pipeline.steps.flow import backward_backend, backward_flow, backward_kind, setup_backward

FIX = {
    "gt": "check entities.void_ids and entities.stuff_max_id",
    "sam": "check --sam-checkpoint and --sam-model (the checkpoint must fit the model type), or choose --masks motion",
    "motion": "check entities.motion (stages.entities.masks_motion.segment_motion parameters)",
}


def entities_on(cfg) -> bool:
    """Whether the run extracts entities (``entities.enabled`` and ``entities.masks`` not none)."""
    return bool(cfg.entities.enabled) and cfg.entities.masks != "none"


def _sources(cfg) -> tuple[str, ...]:
    e = cfg.entities
    return mask_source_names(e.masks, bool(e.sam_checkpoint))


def needs_backward(cfg, names=None) -> bool:
    """A mask source of the run wants the backward flow (the motion segmentation)."""
    return any(getattr(MASK_SOURCES.get(n), "needs_backward_flow", False) for n in (names or _sources(cfg)))


class EntityMasksStep(Step):
    name = "entity_masks"
    stage = None          # the first half of the entities stage
    operator = "masks"
    batched = True

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        e = cfg.entities
        self.requested = e.masks
        self.sam_configured = bool(e.sam_checkpoint)
        sam = dict(e.sam or {})
        sam_batch = sam.pop("batch_size", None)
        self.options = {
            "gt": dict(void_ids=tuple(e.void_ids), keep_background=bool(e.keep_background), stuff_max_id=int(e.stuff_max_id)),
            "sam": dict(model_type=e.sam_model, checkpoint=e.sam_checkpoint, device=backends.on(e.device),
                        batch_size=sam_batch, params=sam),
            "motion": dict(e.motion or {}),
        }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return entities_on(cfg)

    @classmethod
    def resources(cls, cfg) -> Resources:
        names = _sources(cfg)
        kinds = [MASK_SOURCES.device_kind(n) for n in names]
        model = next((k for k in kinds if k != CPU), None)
        if model is None and needs_backward(cfg, names) and not cfg.trajectories.reliability:
            model = None if backward_kind(cfg) == CPU else backward_kind(cfg)   # no step before makes it
        return Resources() if model is None else Resources(model, cls.operator, 8)

    @classmethod
    def reads_backward_flow(cls, cfg) -> bool:
        return entities_on(cfg) and needs_backward(cfg)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        out = {}
        if any(MASK_SOURCES.device_kind(n) != CPU for n in _sources(cfg)):
            out["entities.device"] = cfg.entities.device
        if needs_backward(cfg) and backward_kind(cfg) != CPU:
            out["flow.device"] = cfg.flow.device
        return out

    def source(self, name: str) -> MaskSource:
        """The mask source called ``name``, built once per process (a plugin's with no option)."""
        return self.backends.get(f"masks.{name}", lambda: make_mask_source(name, **self.options.get(name, {})))

    def setup(self) -> dict[str, str]:
        out = {}
        names = _sources(self.cfg)
        for name in names:
            with setting_up(f"the {name!r} mask source", FIX.get(name, "check entities.masks")):
                src = self.source(name)
            out[f"masks.{name}"] = short(src.describe(), "model") or name
        if needs_backward(self.cfg, names):
            out.update(setup_backward(self.cfg, self.backends))
        return out

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        chosen = [choose_mask_source(self.requested, row or {}, self.sam_configured) for row in rows]
        batches: dict[str, list[int]] = {}
        for i, (name, reason) in enumerate(chosen):
            src = self.source(name)
            if hasattr(src, "masks_many") and not src.needs_backward_flow:
                batches.setdefault(name, []).append(i)
                continue
            back, back_desc = None, None
            if src.needs_backward_flow:
                back, back_desc = backward_flow(samples[i], backward_backend(self.cfg, self.backends))
            s = samples[i]
            em = src.masks(np.asarray(s.frames), s.flow, s.meta, rows[i] or {}, backward_flow=back)
            s.entity_masks = ChosenMasks(name, reason, em, src.describe(), back, back_desc)
        for name, idx in batches.items():   # one model call for the clips of a batched source
            src = self.source(name)
            items = [(np.asarray(samples[i].frames), samples[i].flow, samples[i].meta, rows[i] or {}) for i in idx]
            for i, em in zip(idx, src.masks_many(items)):
                samples[i].entity_masks = ChosenMasks(name, chosen[i][1], em, src.describe())
        self.backends.size_torch_threads()
        return samples
