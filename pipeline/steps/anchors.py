"""Anchors (the clip stage ``trajectories``): every anchor of DragNUWA's perturbed grid tracked
through the flow (``stages.trajectories.compute_anchors``), with per-frame reliability from
forward-backward checks against the backward flow, the clip's trackability in
``meta["anchors"]``, and the ``--min-trackable`` filter.

The backward flow it computes stays on the sample (``Sample.backward_flow``) so the entity steps
reuse it; on a GPU cluster this step runs in the flow model's operator when that model makes
the backward flow.
"""
from __future__ import annotations

from schemas.sample import Sample
from stages.decode import clip_rng
from stages.errors import ClipFiltered
from stages.trajectories import compute_anchors, trackability

from pipeline.steps.base import CPU, Resources, Step
from pipeline.steps.flow import FlowStep, backward_backend, backward_flow, backward_kind, setup_backward

RULE = ("forward-backward: step FB error <= step_px + step_rel * |step| and the position chained back to "
        "frame 0 within roundtrip_px of the anchor; a prefix of each track (docs/trajectories.md)")


def check_trackable(track: dict, min_trackable: float | None) -> None:
    """``ClipFiltered("low_trackability")`` when the clip's share of in-frame anchors reliable
    through it (or, when no anchor stays in frame, of anchors reliable until they leave) is
    below ``min_trackable`` (None or 0: no filter)."""
    if not min_trackable:
        return
    share, what = track["reliable_through"], "in-frame anchors reliable through the clip"
    if share is None:        # no anchor stays in frame (a fast pan): followed until they leave
        share, what = track["reliable_while_visible"], "anchors reliable until they leave the frame"
    if share is None or share < float(min_trackable):
        shown = "no anchor" if share is None else f"{share:.3f}"
        raise ClipFiltered("low_trackability", f"share of {what}: {shown} < --min-trackable {min_trackable}")


class AnchorsStep(Step):
    name = "anchors"
    stage = "trajectories"
    operator = FlowStep.operator   # on a GPU cluster: beside the flow model that makes its backward flow

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        t = cfg.trajectories
        self.seed = cfg.seed
        self.interval, self.max_trajectories = int(t.interval), int(t.max_trajectories)
        self.reliability = t.reliability
        self.step_px, self.step_rel, self.roundtrip_px = t.reliable_step_px, t.reliable_step_rel, t.reliable_roundtrip_px
        self.min_trackable = cfg.filters.min_trackable

    @classmethod
    def resources(cls, cfg) -> Resources:
        kind = backward_kind(cfg)
        if not cfg.trajectories.reliability or kind == CPU:
            return Resources()
        return Resources(kind, cls.operator, 4)

    @classmethod
    def reads_backward_flow(cls, cfg) -> bool:
        return bool(cfg.trajectories.reliability)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        return {"flow.device": cfg.flow.device} if cls.resources(cfg).gpu else {}

    def setup(self) -> dict[str, str]:
        return setup_backward(self.cfg, self.backends) if self.reliability else {}

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        for sample in samples:
            self._anchors(sample)
        return samples

    def _anchors(self, sample: Sample) -> None:
        rng = clip_rng(self.seed, sample.key, "anchors")
        back, back_desc = None, None
        if self.reliability:
            back, back_desc = backward_flow(sample, backward_backend(self.cfg, self.backends))
        res = compute_anchors(sample.flow, interval=self.interval, rng=rng, backward_flow=back,
                              step_px=self.step_px, step_rel=self.step_rel, roundtrip_px=self.roundtrip_px)
        sample.anchor_tracks, sample.anchor_weights = res["anchor_tracks"], res["anchor_weights"]
        sample.anchor_visible, sample.anchor_reliable = res["anchor_visible"], res["anchor_reliable"]
        track = trackability(res["anchor_visible"], res["anchor_reliable"])
        sample.meta["anchors"] = {
            "interval": self.interval, "delta": [int(v) for v in res["delta"]],
            "count": int(len(res["anchor_weights"])), "max_trajectories": self.max_trajectories,
            "reliability": None if back is None else {
                "rule": RULE,
                "step_px": None if self.step_px is None else float(self.step_px), "step_rel": float(self.step_rel),
                "roundtrip_px": None if self.roundtrip_px is None else float(self.roundtrip_px),
                "backward_flow": back_desc,
            },
            "trackability": track,
        }
        if back is not None:
            check_trackable(track, self.min_trackable)
