"""Motion: per-clip motion statistics (``stages.motion.motion_stats``: flow magnitudes, camera
motion, shot change vs flow failure) into ``meta["motion"]``, and the run-time filters on them
(``filters``: --min-motion, --max-camera-motion, --drop-cuts), which raise ``ClipFiltered``."""
from __future__ import annotations

from schemas.sample import Sample
from stages.motion import check_filters, motion_stats

from pipeline.steps.base import Step


class MotionStep(Step):
    name = "motion"
    stage = "motion"
    light = True   # a few tens of ms of CPU: it runs in the operator of the flow before it

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        f = cfg.filters
        self.drop_cuts, self.min_motion, self.max_camera_motion = f.drop_cuts, f.min_motion, f.max_camera_motion

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        for sample in samples:
            sample.meta["motion"] = stats = motion_stats(sample.flow, sample.frames)
            check_filters(stats, self.drop_cuts, self.min_motion, self.max_camera_motion)
        return samples
