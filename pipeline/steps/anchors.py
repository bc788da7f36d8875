"""Anchors (the clip stage ``trajectories``): every anchor of DragNUWA's perturbed grid followed
through the clip by the configured anchor tracker (``stages.anchors``: the dense flow chained,
``lk`` (the default: the flow refined, failing steps re-tracked by Lucas-Kanade), or CoTracker3),
with per-frame reliability (a prefix per anchor), the clip's trackability and the trainers'
draw coverage in ``meta["anchors"]``, and the ``--min-trackable`` filter.

The backward flow the checks use stays on the sample (``Sample.backward_flow``) so the entity
steps reuse it; on a GPU cluster this step runs in the flow model's operator when that model
makes the backward flow, or in an operator of its own with CoTracker (batched across clips).
"""
from __future__ import annotations

from schemas.sample import Sample
from stages.anchors import ANCHOR_TRACKERS, AnchorTracker, coverage, make_anchor_tracker, track_anchors_many
from stages.decode import clip_rng
from stages.errors import ClipFiltered
from stages.trajectories import trackability

from pipeline.steps.base import CPU, Resources, Step, setting_up, short
from pipeline.steps.flow import FlowStep, backward_backend, backward_flow, backward_kind, setup_backward

RULE = ("forward-backward: step FB error <= step_px + step_rel * |step| and the drift back to frame 0 "
        "within roundtrip_px; a prefix of each track (docs/trajectories.md)")


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


def _tracker_name(cfg) -> str:
    """The tracker that runs: the configured one, or the flow chained unchecked without reliability."""
    return cfg.trajectories.tracker if cfg.trajectories.reliability else "flow"


def _needs_backward(cfg) -> bool:
    t = ANCHOR_TRACKERS.get(_tracker_name(cfg))
    return bool(cfg.trajectories.reliability and getattr(t, "needs_backward_flow", True))


class AnchorsStep(Step):
    name = "anchors"
    stage = "trajectories"
    operator = "anchors"       # CoTracker's operator; with a flow-based tracker the flow model's

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        t = cfg.trajectories
        self.seed = cfg.seed
        self.interval, self.max_trajectories = int(t.interval), int(t.max_trajectories)
        self.reliability = t.reliability
        self.step_px, self.step_rel, self.roundtrip_px = t.reliable_step_px, t.reliable_step_rel, t.reliable_roundtrip_px
        self.min_trackable = cfg.filters.min_trackable
        self.tracker_name = _tracker_name(cfg)
        self.needs_backward = _needs_backward(cfg)
        self.options = dict(step_px=self.step_px, step_rel=self.step_rel, roundtrip_px=self.roundtrip_px,
                            checkpoint=t.cotracker_checkpoint, device=backends.on(t.device), batch_size=t.batch_size,
                            **dict(t.tracker_options))
        # a model tracker sees the clips of a batch in one call
        self.batched = ANCHOR_TRACKERS.device_kind(self.tracker_name) != CPU

    @classmethod
    def resources(cls, cfg) -> Resources:
        kind = ANCHOR_TRACKERS.device_kind(_tracker_name(cfg))
        if kind != CPU:
            return Resources(kind, cls.operator, cfg.trajectories.batch_size)
        if _needs_backward(cfg) and backward_kind(cfg) != CPU:
            return FlowStep.resources(cfg)   # beside the flow model that makes its backward flow
        return Resources()

    @classmethod
    def reads_backward_flow(cls, cfg) -> bool:
        return _needs_backward(cfg)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        out = {}
        if ANCHOR_TRACKERS.device_kind(_tracker_name(cfg)) != CPU:
            out["trajectories.device"] = cfg.trajectories.device
        if _needs_backward(cfg) and backward_kind(cfg) != CPU:
            out["flow.device"] = cfg.flow.device
        return out

    @property
    def tracker(self) -> AnchorTracker:
        return self.backends.get(f"anchors.{self.tracker_name}",
                                 lambda: make_anchor_tracker(self.tracker_name, **self.options))

    def setup(self) -> dict[str, str]:
        if self.tracker_name == "cotracker":
            fix = ("install the cotracker package (from its source) and set trajectories.cotracker_checkpoint, "
                   "or use trajectories.tracker lk")
        else:
            fix = "check trajectories.tracker, trajectories.tracker_options and the reliable_* thresholds"
        with setting_up(f"the {self.tracker_name!r} anchor tracker", fix):
            tracker = self.tracker
        out = {"anchors": short(tracker.describe(), "tracker", "model")}
        if self.needs_backward:
            out.update(setup_backward(self.cfg, self.backends))
        return out

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        backs = [backward_flow(s, backward_backend(self.cfg, self.backends)) if self.needs_backward else (None, None)
                 for s in samples]
        clips = [dict(frames=s.frames, flow=s.flow, backward_flow=back,
                      rng=clip_rng(self.seed, s.key, "anchors")) for s, (back, _) in zip(samples, backs)]
        for sample, res, (_, back_desc) in zip(samples, track_anchors_many(self.tracker, clips, self.interval), backs):
            self._record(sample, res, back_desc)
        self.backends.size_torch_threads()
        return samples

    def _record(self, sample: Sample, res: dict, back_desc: dict | None) -> None:
        sample.anchor_tracks, sample.anchor_weights = res["anchor_tracks"], res["anchor_weights"]
        sample.anchor_visible, sample.anchor_reliable = res["anchor_visible"], res["anchor_reliable"]
        track = trackability(res["anchor_visible"], res["anchor_reliable"])
        checked = res["anchor_reliable"] is not None
        sample.meta["anchors"] = {
            "interval": self.interval, "delta": [int(v) for v in res["delta"]],
            "count": int(len(res["anchor_weights"])), "max_trajectories": self.max_trajectories,
            "reliability": None if not checked else {
                "rule": RULE,
                "step_px": None if self.step_px is None else float(self.step_px), "step_rel": float(self.step_rel),
                "roundtrip_px": None if self.roundtrip_px is None else float(self.roundtrip_px),
                "backward_flow": back_desc, "tracker": res["tracker"], "tracker_stats": res["tracker_stats"],
            },
            "trackability": track,
            # what the trainers' draw keeps of the motion (stages.anchors.coverage; None unchecked)
            "coverage": None if not checked else {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in coverage(res["anchor_tracks"], res["anchor_visible"], res["anchor_reliable"],
                                     res["anchor_weights"]).items()},
        }
        if checked:
            check_trackable(track, self.min_trackable)
