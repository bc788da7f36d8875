"""Entity tracks (the second half of the ``entities`` stage): each frame-0 entity's incircle
(center and radius), its id in the stored id map, and its center tracked through the clip with
visibility (``stages.entities.extract.extract_entities``; trackers ``stages.entities.tracking``:
the stored flow with a forward-backward check, or CoTracker3 from a checkpoint, a GPU model).
With entities off it records ``meta["entities"] = None``."""
from __future__ import annotations

from schemas.sample import Sample
from stages.entities.extract import extract_entities
from stages.entities.tracking import TRACKERS, CenterTracker, make_tracker

from pipeline.steps.base import CPU, Resources, Step, setting_up, short
from pipeline.steps.entity_masks import entities_on
from pipeline.steps.flow import backward_backend, backward_flow, backward_kind, setup_backward


def _tracker_needs_backward(cfg) -> bool:
    return bool(getattr(TRACKERS.get(cfg.entities.tracker), "needs_backward_flow", False))


class EntityTracksStep(Step):
    name = "entity_tracks"
    stage = "entities"
    operator = "tracks"

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        e = cfg.entities
        self.on = entities_on(cfg)
        self.requested = e.masks
        self.tracker_name = e.tracker
        self.tracker_options = dict(fb_threshold=e.fb_threshold, checkpoint=e.cotracker_checkpoint,
                                    device=backends.on(e.device))
        self.min_radius, self.min_area = float(e.min_radius), int(e.min_area)

    @classmethod
    def resources(cls, cfg) -> Resources:
        if not entities_on(cfg):
            return Resources()
        kind = TRACKERS.device_kind(cfg.entities.tracker)
        if kind == CPU and _tracker_needs_backward(cfg) and not cfg.trajectories.reliability:
            kind = backward_kind(cfg)   # no step before makes the backward flow: made here
        return Resources() if kind == CPU else Resources(kind, cls.operator, 4)

    @classmethod
    def reads_backward_flow(cls, cfg) -> bool:
        return entities_on(cfg) and _tracker_needs_backward(cfg)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        if not entities_on(cfg):
            return {}
        out = {}
        if TRACKERS.device_kind(cfg.entities.tracker) != CPU:
            out["entities.device"] = cfg.entities.device
        if _tracker_needs_backward(cfg) and backward_kind(cfg) != CPU:
            out["flow.device"] = cfg.flow.device
        return out

    @property
    def tracker(self) -> CenterTracker:
        return self.backends.get("tracker", lambda: make_tracker(self.tracker_name, **self.tracker_options))

    def setup(self) -> dict[str, str]:
        if not self.on:
            return {}
        if self.tracker_name == "cotracker":
            fix = "install the cotracker package (from its source) and pass --cotracker-checkpoint PATH, or use --tracker flow"
        else:
            fix = "check entities.tracker and entities.fb_threshold"
        with setting_up(f"the {self.tracker_name!r} tracker", fix):
            tracker = self.tracker
        out = {"tracker": short(tracker.describe(), "tracker", "model")}
        if tracker.needs_backward_flow:
            out.update(setup_backward(self.cfg, self.backends))
        return out

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        for sample in samples:
            if not self.on:
                sample.meta["entities"] = None
                continue
            chosen, sample.entity_masks = sample.entity_masks, None
            if chosen is None:
                raise RuntimeError("entity_tracks needs the masks of the entity_masks step (Sample.entity_masks)")
            extract_entities(sample, chosen, self.tracker,
                             lambda s=sample: backward_flow(s, backward_backend(self.cfg, self.backends)),
                             self.requested, self.min_radius, self.min_area)
        return samples
