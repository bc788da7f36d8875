"""The anchors step (clip stage ``trajectories``): reliability, trackability meta, the
--min-trackable filter and one backward flow shared with the entity steps."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.testdata.synthetic import disc, render_scene
from pipeline.clip.loop import ClipSteps
from pipeline.steps.flow import backward_backend
from schemas.sample import Sample, decode_jpeg, encode_jpeg
from stages.errors import ClipFiltered
from stages.trajectories import FB_ROUNDTRIP_PX, FB_STEP_PX, FB_STEP_REL

W, H, L = 160, 96, 6


ROW = {"clip_id": "c", "dataset": "x"}


def _step(proc, name, sample):
    return proc[name].run([sample], [ROW])[0]


def _state(proc, frames):
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in frames])
    meta = {"profile": {"width": W, "height": H}, "source_size": [W, H], "resized_size": [W, H],
            "resize_scale": [1.0, 1.0], "crop_offset": [0, 0], "source_frame_indices": list(range(L))}
    return _step(proc, "flow", Sample(key="c", frames=frames, meta=meta))


def _scene():
    return render_scene(W, H, L, [disc((60, 50), 18, velocity=(2.0, 1.0))], background_velocity=(1.0, -0.5),
                        seed=3).frames


def _counting(backend):
    calls = []
    orig = backend.backward

    def backward(frames):
        calls.append(1)
        return orig(frames)

    backend.backward = backward
    return calls


def test_reliability_meta_and_one_backward_flow_for_anchors_and_entities():
    cfg = Config(profile="dragnuwa-ld", frames=L).replace(**{"entities.masks": "motion"})
    proc = ClipSteps(cfg)
    calls = _counting(backward_backend(cfg, proc.backends))
    s = _step(proc, "anchors", _state(proc, _scene()))
    a = s.meta["anchors"]
    assert s.anchor_reliable.shape == s.anchor_visible.shape
    assert (a["reliability"]["step_px"], a["reliability"]["step_rel"], a["reliability"]["roundtrip_px"]) == \
        (FB_STEP_PX, FB_STEP_REL, FB_ROUNDTRIP_PX)
    assert a["reliability"]["tracker"]["tracker"] == "lk" and "lk_rescued_steps" in a["reliability"]["tracker_stats"]
    assert a["reliability"]["backward_flow"]["preset"] == "balanced"
    assert a["trackability"]["reliable_through"] >= 0.8
    cov = a["coverage"]                 # what the trainers' draw keeps of the motion
    assert 0.8 <= cov["drawable_share"] <= 1 and 0 < cov["mean_span"] <= 1 and 0.5 <= cov["drawn_path_share"] <= 1
    assert len(a["trackability"]["reliable_per_frame"]) == L
    s = _step(proc, "entity_tracks", _step(proc, "entity_masks", s))
    assert len(calls) == 1, "the entity steps must reuse the anchors step's backward flow"
    e = s.meta["entities"]
    assert e["count"] >= 1 and 0 < e["visible_fraction"] <= 1 and len(e["visible_per_frame"]) == L


def test_entities_off_computes_the_backward_flow_in_the_step():
    cfg = Config(profile="dragnuwa-ld", frames=L).replace(**{"entities.enabled": False})
    proc = ClipSteps(cfg)
    s = _step(proc, "anchors", _state(proc, _scene()))
    assert s.anchor_reliable is not None and s.backward_flow.shape == s.flow.shape
    off = ClipSteps(Config(profile="dragnuwa-ld", frames=L).replace(**{"trajectories.reliability": False}))
    s = _step(off, "anchors", _state(off, _scene()))
    assert s.anchor_reliable is None and s.meta["anchors"]["reliability"] is None
    assert s.meta["anchors"]["trackability"]["reliable_through"] is None


def test_min_trackable_filters_untrackable_clips():
    noise = np.random.default_rng(0).integers(0, 256, (L, H, W, 3), dtype=np.uint8)
    cfg = Config(profile="dragnuwa-ld", frames=L).replace(**{"entities.enabled": False,
                                                              "filters.min_trackable": 0.05})
    proc = ClipSteps(cfg)
    with pytest.raises(ClipFiltered) as e:
        _step(proc, "anchors", _state(proc, noise))
    assert e.value.reason == "low_trackability"
    assert _step(proc, "anchors", _state(proc, _scene())).meta["anchors"]["trackability"]["reliable_through"] > 0.05
