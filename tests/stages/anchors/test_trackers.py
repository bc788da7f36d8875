"""Anchor trackers (stages/anchors/): the interface every backend fills, the registry, the flow
backend against ``compute_anchors``, and what the LK backend rescues and refuses."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.testdata.synthetic import smooth_texture
from stages.anchors.base import (ANCHOR_TRACKERS, AnchorTracker, FlowAnchorTracker, anchor_setup, make_anchor_tracker,
                                 track_anchors)
from stages.anchors.lk import LKAnchorTracker, patch_ncc
from stages.trajectories import FB_ROUNDTRIP_PX, FB_STEP_PX, FB_STEP_REL, compute_anchors

H, W, L, DX = 96, 160, 5, 12


def shifted_clip(dx: int = DX, flat: bool = False, seed: int = 0) -> np.ndarray:
    """Frames of a texture moving ``dx`` px right per frame (integer shifts: exact): smooth
    colour plus fine detail (blurred noise), what LK needs above its eigenvalue floor."""
    import cv2

    rng = np.random.default_rng(seed)
    tex = smooth_texture(H, W + dx * L, rng, (120, 110, 100), 20.0)
    detail = cv2.GaussianBlur(rng.uniform(0, 255, (H, W + dx * L)).astype(np.float32), (0, 0), 1.5)
    tex += (40.0 * (detail - detail.mean()) / detail.std())[..., None]
    if flat:
        tex[:] = 128.0
    frames = [tex[:, dx * (L - 1 - t): dx * (L - 1 - t) + W] for t in range(L)]
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)


def const_flow(dx: float, dy: float = 0.0) -> np.ndarray:
    f = np.zeros((L - 1, 2, H, W), np.float32)
    f[:, 0], f[:, 1] = dx, dy
    return f


def check_interface(out, a: int) -> None:
    assert out.tracks.shape == (a, L, 2) and out.tracks.dtype == np.float32
    assert out.visible.shape == (a, L) and out.visible.dtype == bool
    rel = out.reliable
    assert rel.shape == (a, L) and rel.dtype == bool
    assert not (rel & ~out.visible).any()                                    # reliable implies visible
    np.testing.assert_array_equal(rel, np.logical_and.accumulate(rel, axis=1))                 # a prefix
    np.testing.assert_array_equal(rel[:, 0], rel[:, 1])                      # frame 0 only with frame 1


def test_registry_kinds_and_options():
    assert ANCHOR_TRACKERS.choices() == ("flow", "lk", "cotracker")
    from stages.anchors.cotracker import CoTrackerAnchorTracker

    assert (FlowAnchorTracker.device_kind, LKAnchorTracker.device_kind, CoTrackerAnchorTracker.device_kind) == \
        ("cpu", "cpu", "torch")
    # the generic options (the step passes them to every backend) are dropped by the CPU ones
    t = make_anchor_tracker("lk", step_px=0.5, checkpoint=None, device="cuda", batch_size=8, window=15)
    assert isinstance(t, LKAnchorTracker) and t.window == 15 and t.step_px == 0.5
    d = make_anchor_tracker("flow").describe()
    assert d["tracker"] == "flow" and (d["step_px"], d["step_rel"], d["roundtrip_px"]) == \
        (FB_STEP_PX, FB_STEP_REL, FB_ROUNDTRIP_PX)
    with pytest.raises(TypeError):
        make_anchor_tracker("flow", window=3)
    with pytest.raises(ValueError, match="unknown anchor tracker"):
        make_anchor_tracker("raft")
    with pytest.raises(ValueError):
        make_anchor_tracker("lk", window=20)
    with pytest.raises(ValueError):
        make_anchor_tracker("flow", roundtrip_px=0)


def test_flow_backend_is_compute_anchors():
    frames = shifted_clip()
    fwd, back = const_flow(DX), const_flow(-DX)
    back[2, :, :, 80:] += 3.0
    ref = compute_anchors(fwd, 16, delta=(2, -3), backward_flow=back)
    out = track_anchors(make_anchor_tracker("flow"), frames, fwd, back, 16, delta=(2, -3))
    for k in ("anchor_tracks", "anchor_weights", "anchor_visible", "anchor_reliable"):
        np.testing.assert_array_equal(out[k], ref[k])
    assert out["delta"] == (2, -3) and out["tracker"]["tracker"] == "flow"
    check_interface(make_anchor_tracker("flow").track(frames, anchor_setup(fwd, 16, delta=(2, -3))[0], fwd, back),
                    len(ref["anchor_weights"]))
    # without a backward flow: no checks (trajectories.reliability false)
    assert track_anchors(make_anchor_tracker("flow"), None, fwd, None, 16, delta=(0, 0))["anchor_reliable"] is None


def test_lk_equals_flow_where_the_dense_checks_hold():
    frames = shifted_clip()
    fwd, back = const_flow(DX), const_flow(-DX)
    anchors, _, _ = anchor_setup(fwd, 16, delta=(0, 0))
    a = FlowAnchorTracker().track(frames, anchors, fwd, back)
    b = LKAnchorTracker().track(frames, anchors, fwd, back)
    check_interface(b, len(anchors))
    np.testing.assert_array_equal(a.tracks, b.tracks)
    np.testing.assert_array_equal(a.reliable, b.reliable)
    assert b.stats["lk_tried_steps"] == 0


def test_lk_rescues_a_good_track_whose_backward_flow_failed():
    """The forward flow is right, the checks' backward flow is wrong (zero, as DIS's can be on
    a fast object): the flow backend drops every anchor at the first step; LK tracks the
    texture back to where it started and keeps the anchors in frame reliable."""
    frames = shifted_clip()
    fwd, back = const_flow(DX), const_flow(0.0)
    anchors, _, _ = anchor_setup(fwd, 16, delta=(0, 0))
    inner = (anchors[:, 0] >= 16) & (anchors[:, 0] <= W - 1 - DX * (L - 1) - 16) & \
        (anchors[:, 1] >= 16) & (anchors[:, 1] <= H - 17)
    assert inner.sum() >= 6
    flow_out = FlowAnchorTracker().track(frames, anchors, fwd, back)
    assert not flow_out.reliable.any()
    out = LKAnchorTracker().track(frames, anchors, fwd, back)
    check_interface(out, len(anchors))
    assert out.reliable[inner].all()
    truth = anchors[:, None, :] + np.arange(L)[None, :, None] * np.array([DX, 0.0])
    err = np.hypot(*(out.tracks - truth).transpose(2, 0, 1))
    assert err[inner].max() < 0.3 and err[out.reliable].max() < 1.0     # LK is less sure at the border
    assert out.stats["lk_rescued_steps"] >= inner.sum() * (L - 1)


def test_lk_refuses_flat_and_mismatched_patches():
    fwd, back = const_flow(DX), const_flow(0.0)
    anchors, _, _ = anchor_setup(fwd, 16, delta=(0, 0))
    flat = LKAnchorTracker().track(shifted_clip(flat=True), anchors, fwd, back)
    assert not flat.reliable.any()                       # nothing to track on: LK's eigenvalue floor
    frames = shifted_clip()
    frames[1:] = shifted_clip(seed=7)[1:]                # frame 1 shows another surface (a cut, an occluder)
    cut = LKAnchorTracker().track(frames, anchors, fwd, back)
    assert not cut.reliable.any()
    tex = frames[0].mean(-1)
    pts = anchors[:4].astype(np.float64)
    np.testing.assert_allclose(patch_ncc(tex, tex, pts, pts), 1.0, atol=1e-6)
    assert (patch_ncc(np.full((H, W), 9.0), tex, pts, pts) == -1.0).all()


def test_lk_round_trip_bounds_the_drift():
    """Each step 0.4 px off the forward flow in the same direction: every step passes, the
    summed residual crosses roundtrip_px and ends the span there."""
    frames = shifted_clip()
    fwd, back = const_flow(DX), const_flow(-DX + 0.4)
    anchors, _, _ = anchor_setup(fwd, 16, delta=(0, 0))
    out = LKAnchorTracker(roundtrip_px=1.0).track(frames, anchors, fwd, back)
    inner = out.visible.all(1)
    np.testing.assert_array_equal(out.reliable[inner], np.tile([True, True, True, False, False], (inner.sum(), 1)))
    assert LKAnchorTracker(roundtrip_px=None).track(frames, anchors, fwd, back).reliable[inner].all()


def test_interface_defaults():
    class Dummy(AnchorTracker):
        name = "dummy"

        def track(self, frames, anchors, flow=None, backward_flow=None):
            from stages.anchors.base import AnchorTracks

            n = len(anchors)
            return AnchorTracks(np.zeros((n, 2, 2), np.float32), np.ones((n, 2), bool), np.ones((n, 2), bool))

    d = Dummy()
    assert d.device_kind == "cpu" and d.describe() == {"tracker": "dummy"}
    outs = d.track_many([{"anchors": np.zeros((3, 2))}, {"anchors": np.zeros((1, 2))}])
    assert [o.tracks.shape[0] for o in outs] == [3, 1]
