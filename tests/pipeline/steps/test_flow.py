"""The flow step computes the clip's flow pair by pair (issue 25): each pair is rounded to the
stored precision into one array and encoded into the ``pfz1`` member as it comes, with the same
values and bytes as the whole-clip computation, and without a second float32 copy of the flow."""
from __future__ import annotations

import tracemalloc

import numpy as np

from pipeline.clip.loop import ClipSteps
from pipeline.config import config_from_dict
from pipeline.steps import Backends
from schemas.sample import Sample, dequantize_flow, encode_flow, encode_sample
from stages.flow.cpu import DISFlow

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

SMALL = {"profiles": {"small": {"frames": 17, "width": 160, "height": 96, "fps": 8}}, "profile": "small"}


def _flow_step(backends=None):
    return ClipSteps(config_from_dict(SMALL), backends=backends)


def test_pair_by_pair_gives_the_whole_clip_computation():
    frames = ru.scene_frames(5, 160, 96, 17)
    s = _flow_step().apply(["flow"], Sample(key="k", meta={}, frames=frames))
    ref = dequantize_flow(DISFlow("medium").forward(frames), 1 / 16)
    assert s.flow.shape == (16, 2, 96, 160) and s.flow.tobytes() == ref.tobytes()
    assert s.flow_pfz == encode_flow(ref, 1 / 16)
    assert encode_sample(s)["flow.pfz"] is s.flow_pfz          # the shard stores the step's own bytes
    assert s.meta["flow"]["encoding"] == "pfz1" and s.meta["flow"]["step"] == 1 / 16


def test_batched_backends_keep_their_batch_across_clips():
    class Many(DISFlow):       # a backend that batches pairs across clips, as the torch ones do
        calls: list = []

        def forward_many(self, clips):
            self.calls.append(len(clips))
            return [self.forward(c) for c in clips]

    backends = Backends()
    backends.get("flow", lambda: Many("fast"))
    clips = [ru.scene_frames(seed, 160, 96, 17) for seed in (1, 2)]
    samples = [Sample(key=f"k{i}", meta={}, frames=f) for i, f in enumerate(clips)]
    _flow_step(backends)["flow"].run(samples, [{}, {}])
    assert Many.calls == [2]
    for s, f in zip(samples, clips):
        ref = dequantize_flow(DISFlow("fast").forward(f), 1 / 16)
        assert s.flow.tobytes() == ref.tobytes() and s.flow_pfz == encode_flow(ref, 1 / 16)


def test_the_flow_exists_once_in_float32():
    """Traced peak of the step: its flow array, the encoder's residual bytes (as large), the
    compressed member and a few pairs of temporaries. Rounding a whole-clip flow (what the
    step did before) needed three arrays of the flow's size at once."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, (140, 220, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(tex, 2, 0), 2, 1)            # 2 px blocks: a texture DIS follows
    frames = np.stack([tex[20 + t: 116 + t, 30 + 2 * t: 190 + 2 * t] for t in range(17)])   # a steady pan
    steps = _flow_step()
    steps["flow"].backend                                   # built before tracing
    tracemalloc.start()
    try:
        s = steps.apply(["flow"], Sample(key="k", meta={}, frames=frames))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    pair = s.flow[0].nbytes
    assert len(s.flow_pfz) < 0.1 * s.flow.nbytes           # a steady pan compresses well
    assert peak <= 2 * s.flow.nbytes + 2 * len(s.flow_pfz) + 8 * pair, (peak, s.flow.nbytes)
