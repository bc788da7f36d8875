"""The CoTracker anchor tracker (stages/anchors/cotracker.py): the pure halves around the model,
the install message, and a random-weight CoTracker3 loaded through the package's own loader
(when the package is installed; it is source-only)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stages.anchors.base import make_anchor_tracker, track_anchors
from stages.anchors.cotracker import (ANCHOR_COTRACKER_INSTALL_HINT, CoTrackerAnchorTracker, cotracker_anchor_outputs,
                                      cotracker_queries)
from stages.errors import ClipError

HAVE_COTRACKER = importlib.util.find_spec("cotracker") is not None


def test_queries_scale_with_aligned_corners_and_pad():
    a = np.array([[0.0, 0.0], [99.0, 49.0], [49.5, 24.5]])
    q, counts = cotracker_queries([a, a[:1]], 50, 100, (384, 512))
    assert q.shape == (2, 3, 3) and q.dtype == np.float32 and counts == [3, 1]
    np.testing.assert_allclose(q[0], [[0, 0, 0], [0, 511, 383], [0, 255.5, 191.5]], atol=1e-4)
    np.testing.assert_allclose(q[1], [[0, 0, 0]] * 3)              # padded with the clip's first anchor
    assert (q[:, :, 0] == 0).all()                                   # every query at frame 0


def test_outputs_to_our_arrays():
    anchors = np.array([[10.0, 10.0], [20.0, 5.0], [30.0, 30.0]])
    model_hw = (64, 80)                                              # a 40x32 clip: scale 2
    L = 4
    coords = np.zeros((L, 4, 2), np.float32)                          # one padded query at the end
    for t in range(L):
        coords[t, :3] = (anchors + [t, 0]) * [(80 - 1) / 39, (64 - 1) / 31]
    coords[2:, 1, 0] = 1e3                                           # anchor 1 leaves the frame at t=2
    vis = np.full((L, 4), 0.95, np.float32)
    vis[1, 2] = 0.5                                                  # anchor 2 hidden at t=1, back at t=2
    conf = np.full((L, 4), 0.9, np.float32)
    conf[3, 0] = 0.1                                                 # anchor 0 unsure at t=3
    out = cotracker_anchor_outputs(coords, vis, conf, anchors, 32, 40, model_hw)
    assert out.tracks.shape == (3, L, 2) and out.tracks.dtype == np.float32
    np.testing.assert_allclose(out.tracks[0, :, 0], [10, 11, 12, 13], atol=1e-4)
    np.testing.assert_array_equal(out.tracks[:, 0], anchors)          # frame 0 is the anchor
    np.testing.assert_array_equal(out.visible, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]])
    np.testing.assert_array_equal(out.reliable, [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    strict = cotracker_anchor_outputs(coords, vis, conf, anchors, 32, 40, model_hw, confidence_threshold=0.95)
    assert not strict.reliable.any()


@pytest.mark.skipif(HAVE_COTRACKER, reason="cotracker is installed here")
def test_missing_cotracker_says_how_to_install(tmp_path):
    with pytest.raises(ClipError) as e:
        make_anchor_tracker("cotracker", checkpoint=str(tmp_path / "scaled_offline.pth"), step_px=0.7)
    assert e.value.reason == "backend_unavailable"
    msg = e.value.message
    assert msg.startswith(ANCHOR_COTRACKER_INSTALL_HINT)
    assert "pip install git+https://github.com/facebookresearch/co-tracker" in msg and "CC BY-NC" in msg
    assert "trajectories.cotracker_checkpoint" in msg and "trajectories.tracker lk" in msg
    assert CoTrackerAnchorTracker.device_kind == "torch" and not CoTrackerAnchorTracker.needs_flow
    with pytest.raises(ValueError, match="unknown option"):
        make_anchor_tracker("cotracker", window=21)
    with pytest.raises(ValueError):
        make_anchor_tracker("cotracker", visibility_threshold=1.5)


@pytest.mark.skipif(not HAVE_COTRACKER, reason="the cotracker package (source only) is not installed")
def test_random_weight_cotracker_through_the_packages_loader(tmp_path):
    import torch
    from cotracker.models.core.cotracker.cotracker3_offline import CoTrackerThreeOffline

    torch.manual_seed(0)
    ckpt = tmp_path / "scaled_offline.pth"
    torch.save(CoTrackerThreeOffline(stride=4, corr_radius=3, window_len=60).state_dict(), ckpt)
    with pytest.raises(ClipError, match="does not exist"):
        make_anchor_tracker("cotracker", checkpoint=str(tmp_path / "missing.pth"))
    tracker = make_anchor_tracker("cotracker", checkpoint=str(ckpt), device="cpu", batch_size=2,
                                  step_px=0.7, step_rel=0.14, roundtrip_px=3.0)   # the CPU rule: ignored
    d = tracker.describe()
    assert d["tracker"] == "cotracker" and d["checkpoint"] == "scaled_offline.pth"
    assert d["model_resolution"] == [384, 512]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 48, 80, 3), dtype=np.uint8)
    flow = np.zeros((2, 2, 48, 80), np.float32)                       # the weights' ||f0|| only
    res = track_anchors(tracker, frames, flow, None, 16, delta=(0, 0))
    a = len(res["anchor_weights"])
    assert res["anchor_tracks"].shape == (a, 3, 2) and res["anchor_visible"].shape == (a, 3)
    rel = res["anchor_reliable"]
    np.testing.assert_array_equal(rel, np.logical_and.accumulate(rel, axis=1))
    np.testing.assert_array_equal(rel[:, 0], rel[:, 1])
    assert not (rel & ~res["anchor_visible"]).any()
    # several clips: same-size ones together (the model takes one video per call: fallback)
    outs = tracker.track_many([{"frames": frames, "anchors": res["anchor_tracks"][:, 0]},
                               {"frames": frames[::-1].copy(), "anchors": res["anchor_tracks"][:2, 0]},
                               {"frames": frames[:, :32], "anchors": res["anchor_tracks"][:1, 0]}])
    assert [o.tracks.shape for o in outs] == [(a, 3, 2), (2, 3, 2), (1, 3, 2)]
    np.testing.assert_allclose(outs[0].tracks, res["anchor_tracks"], atol=1e-3)
    assert tracker.describe()["batched"] in (True, False)
