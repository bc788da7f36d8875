"""``ClipWork``: the sample (a typed ``Sample``) beside the run's bookkeeping, and its wire form
between operators: lossless, with the frames and the flow rebuilt from their stored encodings."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.clip.work import ClipWork
from schemas.sample import Sample, decode_jpeg, dequantize_flow, encode_flow, encode_jpeg

L, H, W = 3, 16, 24


def _sample(backward=True) -> Sample:
    rng = np.random.default_rng(0)
    jpegs = [encode_jpeg(f, 90) for f in rng.integers(0, 255, (L, H, W, 3), dtype=np.uint8)]
    step = 1 / 16
    return Sample(
        key="c1", caption="text", meta={"clip_id": "c1", "flow": {"step": step}, "stages_done": ["decode", "flow"]},
        frames_jpeg=jpegs, frames=np.stack([decode_jpeg(j) for j in jpegs]),
        flow=dequantize_flow(rng.normal(0, 2, (L - 1, 2, H, W)).astype(np.float32), step),
        anchor_tracks=rng.uniform(0, 10, (4, L, 2)).astype(np.float32), anchor_weights=np.ones(4, np.float32),
        anchor_visible=np.ones((4, L), bool), anchor_reliable=np.ones((4, L), bool),
        backward_flow=rng.normal(0, 1, (L - 1, 2, H, W)).astype(np.float32) if backward else None,
        backward_flow_backend={"backend": "cpu"} if backward else None,
        entity_masks=("motion", None, {"ids": [1]}, None),
    )


def _equal(a: Sample, b: Sample, skip=()) -> None:
    for f in dataclasses.fields(Sample):
        if f.name in skip:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
            assert x.dtype == y.dtype, f.name
        else:
            assert x == y, f.name


def test_wire_round_trip_is_lossless():
    w = ClipWork(row={"clip_id": "c1", "row": 7}, shard=1, sample=_sample(), timings={"decode": 0.5},
                 batches={"cpu": 4})
    back = ClipWork.from_wire(w.to_wire())
    _equal(w.sample, back.sample, skip=("flow_pfz",))
    assert back.sample.flow_pfz == encode_flow(w.sample.flow, 1 / 16)   # sent on again as is
    assert (back.row, back.shard, back.stages_done, back.timings, back.batches) == \
        (w.row, w.shard, ["decode", "flow"], w.timings, w.batches)
    again = ClipWork.from_wire(back.to_wire())
    _equal(back.sample, again.sample)
    assert w.sample.flow_pfz is None            # the sender's sample is not changed


def test_wire_drops_the_backward_flow_when_told():
    w = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0, sample=_sample())
    back = ClipWork.from_wire(w.to_wire(keep_backward=False))
    assert back.sample.backward_flow is None and back.sample.backward_flow_backend is None
    _equal(w.sample, back.sample, skip=("flow_pfz", "backward_flow", "backward_flow_backend"))


def test_wire_without_a_sample_or_with_only_meta():
    w = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0)
    assert ClipWork.from_wire(w.to_wire()).sample is None
    w.sample, w.members = Sample(key="c1", meta={"clip_id": "c1"}), {"json": b"{}"}
    back = ClipWork.from_wire(w.to_wire())
    assert back.sample.frames is None and back.sample.meta == {"clip_id": "c1"} and back.members == w.members


def test_finished_clips_drop_their_sample():
    w = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0, sample=_sample())
    w.ok({"json": b"{}"}, {"entities": {"mask_source": "motion", "count": 2}})
    assert w.sample is None and w.entities == {"mask_source": "motion", "count": 2}
    from stages.errors import ClipError

    e = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0, sample=_sample()).fail(ClipError("decode", "bad"))
    assert e.sample is None and e.members is None


def test_progress_is_kept_once_in_the_sample_and_outcomes_are_one_type():
    from stages.errors import ClipError, ClipFiltered, Outcome

    w = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0, sample=Sample(key="c1"))
    assert w.stages_done == [] and not w.done
    w.mark_done("decode")
    w.mark_done("decode")
    assert w.sample.meta["stages_done"] == ["decode"] == w.stages_done
    assert ClipWork(row={"clip_id": "c1", "row": 0}, shard=0).fail(ClipFiltered("low_motion", "m")).outcome == \
        Outcome("filtered", "low_motion", "m")
    err = ClipWork(row={"clip_id": "c1", "row": 0}, shard=0).fail(KeyError("x"))
    assert (err.status, err.reason, err.message) == ("error", "internal", "KeyError: 'x'") and err.sample is None
    assert Outcome.of(ClipError("too_short", "m")) == Outcome("error", "too_short", "m")
    back = ClipWork.from_wire(err.to_wire())
    assert back.outcome == err.outcome and back.status_row()["reason"] == "internal"
