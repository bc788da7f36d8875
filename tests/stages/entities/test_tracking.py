"""Center trackers: the flow tracker on synthetic scenes with known paths; CoTracker's input
preparation (a pure function) and its missing-package message."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pipeline.config import EntityConfig
from pipeline.testdata.synthetic import disc, rect, render_scene
from schemas.sample import Sample, decode_jpeg, dequantize_flow, encode_jpeg
from pipeline.clip.loop import ClipSteps
from pipeline.config import Config
from stages.entities.incircle import incircles
from stages.errors import ClipError
from stages.flow.base import make_flow_backend
from stages.entities.tracking import (
    COTRACKER_INSTALL_HINT, CoTrackerTracker, FlowTracker, cotracker_inputs, cotracker_outputs, make_tracker,
)

W, H = 576, 320


def exact_backward(scene):
    """Exact backward flow: at frame t+1 every pixel goes back by its surface's velocity."""
    out = np.empty_like(scene.flow)
    for t in range(scene.num_frames - 1):
        table = scene._velocity_table(t)
        out[t] = -np.moveaxis(table[scene.ids[t + 1]], -1, 0)
    return out


def true_tracks(scene, centers0):
    """The entity center moves rigidly with its shape: c0 + (path_t - path_0)."""
    return centers0[:, None, :] + (scene.centers - scene.centers[0]).transpose(1, 0, 2)


@pytest.fixture(scope="module")
def leaving():
    """16 frames: two shapes stay in the frame, a disc's center leaves it at t = 12, a rect
    leaves it entirely (center at t = 9, last pixel at t = 12)."""
    shapes = [disc((150, 160), 40, velocity=(3.2, 1.1)), rect((400.5, 120.5), (90, 60), velocity=(-4.3, 2.0)),
              disc((500, 250), 30, velocity=(6.5, 0.4)), rect((60.5, 60.5), (40, 30), velocity=(-7.0, 0.0))]
    scene = render_scene(W, H, 16, shapes, background_velocity=(1.25, -0.5), seed=5)
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    # medium (the default): the tracker is under test here. balanced gives mean 0.23 px and
    # max 1.67 px on this scene (the leaving disc near the frame edge); medium 0.18 and 1.26.
    fb = make_flow_backend("dis", preset="medium")
    return scene, frames, dequantize_flow(fb.forward(frames)), fb.backward(frames)


def test_flow_tracker_is_exact_on_exact_flow(leaving):
    scene = leaving[0]
    c0, _ = incircles(scene.ids[0], [1, 2, 3, 4])
    tr, vis = FlowTracker().track(scene.frames, c0, scene.flow, exact_backward(scene))
    err = np.linalg.norm(tr - true_tracks(scene, c0), axis=-1)
    assert err[vis].max() < 1e-3
    assert vis[:2].all()
    inside = (true_tracks(scene, c0)[..., 0] <= W - 1) & (true_tracks(scene, c0)[..., 0] >= 0)
    np.testing.assert_array_equal(vis[2:], inside[2:])                # invisible once the center left


def test_flow_tracker_on_estimated_flow_within_1px_while_visible(leaving):
    scene, frames, f, b = leaving
    c0, _ = incircles(scene.ids[0], [1, 2, 3, 4])
    tr, vis = FlowTracker(1.5).track(frames, c0, f, b)
    err = np.linalg.norm(tr - true_tracks(scene, c0), axis=-1)
    assert tr.shape == (4, 16, 2) and tr.dtype == np.float32 and vis.dtype == bool
    assert vis[:2].all() and err[vis].mean() <= 1.0 and err[vis].max() <= 1.5
    # the disc's center leaves at t = 12 (x > W - 1); the rect's center at t = 9 (x < 0) and
    # the whole rect by t = 12: invisible from then on
    assert vis[2, :12].all() and not vis[2, 12:].any()
    assert vis[3, :9].all() and not vis[3, 9:].any()
    assert scene.visible[11, 3] and not scene.visible[12:, 3].any()


@pytest.mark.parametrize("forward, backward, late, bound", [
    ("medium", "medium", 1, 4.0),
    ("medium", "balanced", 1, 4.0),      # the pipeline's defaults (flow preset, entities.backward_flow)
    ("balanced", "ultrafast", 2, 4.5),   # the throughput settings: re-acquired one frame later
])
def test_occlusion_hides_the_center_and_it_comes_back(forward, backward, late, bound):
    shapes = [disc((250, 160), 45, velocity=(1.0, 0.5)), rect((80.5, 150.5), (60, 120), velocity=(14, 0.0))]
    scene = render_scene(W, H, 24, shapes, background_velocity=(0.5, -0.25), seed=9)
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    c0, _ = incircles(scene.ids[0], [1])
    truth = true_tracks(scene, c0)[0]
    covered = np.array([scene.ids[t][int(round(truth[t, 1])), int(round(truth[t, 0]))] == 2 for t in range(24)])
    assert covered.sum() >= 4                                          # the rect passes over the center
    f = dequantize_flow(make_flow_backend("dis", preset=forward).forward(frames))
    tr, vis = FlowTracker().track(frames, c0, f, make_flow_backend("dis", preset=backward).backward(frames))
    assert not vis[0, covered].any()
    first, last = np.flatnonzero(covered)[[0, -1]]
    assert vis[0, :first].all() and vis[0, last + 1 + late:].all()    # re-acquired within `late` frames
    err = np.linalg.norm(tr[0] - truth, axis=-1)
    assert err[:first].max() < 1.0 and err[last + 1 + late:].max() < bound   # extrapolated through the occlusion


def test_flow_tracker_input_checks():
    f = np.zeros((3, 2, 10, 10), np.float32)
    with pytest.raises(ValueError, match="backward"):
        FlowTracker().track(None, np.zeros((1, 2)), f, None)
    with pytest.raises(ValueError):
        FlowTracker(fb_threshold=0)
    tr, vis = FlowTracker().track(None, np.zeros((0, 2)), f, f)
    assert tr.shape == (0, 4, 2) and vis.shape == (0, 4)
    with pytest.raises(ValueError, match="unknown entity tracker"):
        make_tracker("raft")


# ------------------------------------------------------------------ CoTracker
def test_cotracker_inputs_layout_range_and_channel_order():
    frames = np.zeros((5, 12, 20, 3), np.uint8)
    frames[..., 0] = 255          # pure red (RGB)
    frames[:, 3, 7, 2] = 17       # one blue value at (x=7, y=3)
    video, queries = cotracker_inputs(frames, np.array([[7.0, 3.0], [19.0, 11.5]]))
    assert video.shape == (1, 5, 3, 12, 20) and video.dtype == np.float32
    assert video.min() == 0.0 and video.max() == 255.0                # 0-255, not normalised
    assert (video[0, :, 0] == 255).all() and (video[0, :, 1] == 0).all()   # channel 0 = R: RGB, not BGR
    assert (video[0, :, 2, 3, 7] == 17).all()                          # (T, C, H, W) indexing
    assert queries.shape == (1, 2, 3) and queries.dtype == np.float32
    np.testing.assert_array_equal(queries[0], [[0, 7, 3], [0, 19, 11.5]])   # (t = 0, x, y)
    with pytest.raises(ValueError):
        cotracker_inputs(frames.astype(np.float32), np.zeros((1, 2)))


def test_cotracker_outputs_to_our_layout():
    tracks = np.zeros((1, 4, 2, 2), np.float32)
    tracks[0, :, 0] = [[1, 1], [5, 2], [19, 11], [25, 3]]              # leaves the 20x12 frame at t=3
    tracks[0, :, 1] = [[3, 3], [3, 3], [3, 3], [3, 3]]
    vis = np.array([[[True, True], [True, False], [True, True], [True, True]]])
    tr, v = cotracker_outputs(tracks, vis, 12, 20)
    assert tr.shape == (2, 4, 2) and v.shape == (2, 4)
    np.testing.assert_array_equal(tr[0, 2], [19, 11])
    np.testing.assert_array_equal(v, [[True, True, True, False], [True, False, True, True]])
    _, v = cotracker_outputs(tracks, vis.astype(np.float32) * 0.7, 12, 20)  # probabilities
    assert v[1, 0] and not v[1, 1]


@pytest.mark.skipif(importlib.util.find_spec("cotracker") is not None, reason="cotracker is installed here")
def test_missing_cotracker_says_how_to_install(tmp_path):
    with pytest.raises(ClipError) as e:
        CoTrackerTracker(str(tmp_path / "scaled_offline.pth"))
    assert e.value.reason == "backend_unavailable"
    msg = e.value.message
    assert "pip install git+https://github.com/facebookresearch/co-tracker" in msg
    assert "--cotracker-checkpoint" in msg and "CC BY-NC" in msg and msg.startswith(COTRACKER_INSTALL_HINT)
    # through the entity steps: a clip error naming the fix, for every clip
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    steps = ClipSteps(Config(entities=EntityConfig(tracker="cotracker", masks="motion")))
    for _ in range(2):
        with pytest.raises(ClipError, match="co-tracker"):
            steps.apply(["entity_masks", "entity_tracks"],
                        Sample(frames=frames, flow=np.zeros((2, 2, 32, 32), np.float32)), {})


def test_entity_support_keeps_the_center_off_smeared_flow():
    # A disc on a curved path brushes past a fast rect (16 px/frame) that also sweeps over a
    # big disc: the estimated flow at the small disc's center takes some of the rect's motion
    # while the FB test still passes. The disc's own support points (its incircle) keep the
    # center on the disc.
    import math

    T = 16
    shapes = [disc((300.2, 170.6), 45.5, velocity=(1.0, 0.5)),
              disc((120, 250), 28.7, path=[(120 + 9 * t, 250 - 40 * math.sin(t / 5)) for t in range(T)]),
              rect((110.5, 160.5), (60, 120), velocity=(16, 0.0))]
    scene = render_scene(W, H, T, shapes, background_velocity=(0.5, -0.25), seed=9)
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    fb = make_flow_backend("dis", preset="medium")   # the scene is built around medium's smearing
    f, b = dequantize_flow(fb.forward(frames)), fb.backward(frames)
    c0, r0 = incircles(scene.ids[0], [2])
    truth = c0[0][None] + (scene.centers[:, 1] - scene.centers[0, 1])
    alone, vis_a = FlowTracker().track(frames, c0, f, b)
    helped, vis_h = FlowTracker().track(frames, c0, f, b, entity_mask=scene.ids[0], entity_ids=[2], radii=r0)
    err_a = np.linalg.norm(alone[0] - truth, axis=-1)
    err_h = np.linalg.norm(helped[0] - truth, axis=-1)
    assert err_a[vis_a[0]].mean() > 3.0                    # the failure is real without support
    assert err_h[vis_h[0]].mean() < 1.0 and err_h.max() < 2.0 and vis_h[0, -8:].all()
    sup, owner = FlowTracker(max_support=64).support_points(scene.ids[0], [2], c0, r0)
    assert 0 < len(sup) <= 64 and (owner == 0).all()
    assert (np.linalg.norm(sup - c0[0], axis=1) <= r0[0]).all()
