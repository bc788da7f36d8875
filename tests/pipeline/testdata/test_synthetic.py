"""Synthetic scenes: the ground truth (flow, centers, ids) agrees with the rendered pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pipeline.testdata.synthetic import (
    Shape, describe_scene, disc, random_scene, random_scene_params, rect, render_scene, write_mp4,
)

W, H, T = 160, 120, 6


@pytest.fixture(scope="module")
def scene():
    shapes = [
        disc((50.0, 55.0), 18.0, velocity=(2.3, -0.7)),
        rect((105.5, 60.0), (36, 24), velocity=(-1.6, 1.25)),
        # explicit curved path, overlapping the others at times
        disc((80, 40), 12.0, path=[(80 + 3 * t, 40 + 4 * math.sin(t)) for t in range(T)]),
    ]
    return render_scene(W, H, T, shapes, background_velocity=(0.6, -0.35), seed=7)


def _interior_mask(scene, t, margin=3, erode=2):
    """Pixels whose surface stays visible from t to t+1, away from frame and object edges."""
    ids0 = scene.ids[t].astype(np.int32)
    flow = scene.flow[t]
    ys, xs = np.mgrid[0:H, 0:W]
    tx, ty = xs + flow[0], ys + flow[1]
    inside = (tx >= margin) & (tx <= W - 1 - margin) & (ty >= margin) & (ty <= H - 1 - margin)
    inside &= (xs >= margin) & (xs <= W - 1 - margin) & (ys >= margin) & (ys <= H - 1 - margin)
    ids1 = scene.ids[t + 1].astype(np.int32)
    same = np.zeros_like(inside)
    ok = inside
    same[ok] = ids1[np.rint(ty[ok]).astype(int), np.rint(tx[ok]).astype(int)] == ids0[ok]
    # erode every region of frame t and of frame t+1 (mapped back), to stay off occlusion edges
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    stable = np.zeros_like(inside)
    for k in np.unique(ids0):
        stable |= cv2.erode((ids0 == k).astype(np.uint8), kernel).astype(bool)
    return inside & same & stable


def test_warping_next_frame_by_true_flow_reproduces_frame(scene):
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    for t in range(T - 1):
        f0 = scene.frames[t].astype(np.float32)
        f1 = scene.frames[t + 1].astype(np.float32)
        flow = scene.flow[t]
        warped = cv2.remap(f1, xs + flow[0], ys + flow[1], cv2.INTER_LINEAR)
        # control: a flow off by half a pixel must do clearly worse (the check has power)
        off = cv2.remap(f1, xs + flow[0] + 0.5, ys + flow[1], cv2.INTER_LINEAR)
        m = _interior_mask(scene, t)
        assert m.sum() > 0.5 * W * H
        err = np.abs(warped - f0)[m].mean()
        err_off = np.abs(off - f0)[m].mean()
        err_zero = np.abs(f1 - f0)[m].mean()
        assert err < 0.8, (t, err)
        assert err_off > 2 * err and err_zero > 4 * err, (t, err, err_off, err_zero)


def test_flow_is_velocity_of_visible_surface(scene):
    assert scene.flow.shape == (T - 1, 2, H, W) and scene.flow.dtype == np.float32
    for t in range(T - 1):
        bg = scene.ids[t] == 0
        np.testing.assert_allclose(scene.flow[t][:, bg].T, np.broadcast_to((0.6, -0.35), (bg.sum(), 2)), atol=1e-6)
        for k in range(scene.num_shapes):
            m = scene.ids[t] == k + 1
            v = scene.centers[t + 1, k].astype(np.float64) - scene.centers[t, k]
            if m.any():
                np.testing.assert_allclose(scene.flow[t][:, m].T, np.broadcast_to(v, (m.sum(), 2)), atol=1e-4)
        np.testing.assert_array_equal(scene.flow_at(t), scene.flow[t])


def test_centers_follow_velocity_and_path(scene):
    assert scene.centers.shape == (T, 3, 2) and scene.centers.dtype == np.float32
    t = np.arange(T)[:, None]
    np.testing.assert_allclose(scene.centers[:, 0], np.array([50.0, 55.0]) + t * np.array([2.3, -0.7]), atol=1e-4)
    np.testing.assert_allclose(scene.centers[:, 1], np.array([105.5, 60.0]) + t * np.array([-1.6, 1.25]), atol=1e-4)
    np.testing.assert_allclose(scene.centers[:, 2], [(80 + 3 * i, 40 + 4 * math.sin(i)) for i in range(T)], atol=1e-4)
    np.testing.assert_allclose(scene.velocities[:, 0], np.broadcast_to((2.3, -0.7), (T - 1, 2)), atol=1e-4)


def test_ids_match_shape_geometry():
    r = 20.0
    s = render_scene(120, 100, 3, [disc((50.3, 48.6), r, velocity=(1.7, 0.4)), rect((20, 80), (16, 10))], seed=1)
    ys, xs = np.mgrid[0:100, 0:120]
    for t in range(3):
        m = s.ids[t] == 1
        assert abs(m.sum() - math.pi * r * r) / (math.pi * r * r) < 0.02
        cx, cy = s.centers[t, 0]
        assert abs(xs[m].mean() - cx) < 0.15 and abs(ys[m].mean() - cy) < 0.15
        # every pixel center within r - 1 is in, every one beyond r + 1 is out
        d = np.hypot(xs - cx, ys - cy)
        assert m[d < r - 1].all() and not m[d > r + 1].any()
        # an integer-aligned rect covers exactly w*h pixels: x in [12, 28), y in [75, 85)
        assert (s.ids[t] == 2).sum() == 16 * 10
        assert (s.ids[t, 75:85, 12:28] == 2).all()
    assert s.ids.dtype == np.uint16 and s.frames.dtype == np.uint8 and s.frames.shape == (3, 100, 120, 3)


def test_z_order_later_shapes_occlude_earlier():
    s = render_scene(80, 60, 1, [rect((40, 30), (40, 30)), disc((40, 30), 8)], seed=2)
    assert s.ids[0, 30, 40] == 2 and s.ids[0, 30, 25] == 1
    s2 = render_scene(80, 60, 1, [disc((40, 30), 8), rect((40, 30), (40, 30))], seed=2)
    assert s2.ids[0, 30, 40] == 2 and not (s2.ids[0] == 1).any()
    assert s2.visible.tolist() == [[False, True]]


def test_shapes_may_leave_the_frame():
    s = render_scene(64, 48, 5, [disc((60, 24), 6, velocity=(5, 0))], seed=3)
    assert s.centers[-1, 0, 0] == pytest.approx(80.0)
    assert s.visible[:, 0].tolist() == [True, True, False, False, False]
    assert (s.ids[-1] == 0).all()
    assert np.allclose(s.flow[-1], 0)  # only background, which is static here


def test_deterministic_for_a_seed():
    shapes = [disc((30, 30), 10, velocity=(0.5, 0.25))]
    a = render_scene(64, 48, 3, shapes, background_velocity=(0.3, 0), seed=5)
    b = render_scene(64, 48, 3, shapes, background_velocity=(0.3, 0), seed=5)
    c = render_scene(64, 48, 3, shapes, background_velocity=(0.3, 0), seed=6)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    # shapes can be given as dicts too
    d = render_scene(64, 48, 3, [dict(kind="disc", center=(30, 30), radius=10, velocity=(0.5, 0.25))],
                     background_velocity=(0.3, 0), seed=5)
    np.testing.assert_array_equal(a.frames, d.frames)


def test_shape_validation():
    with pytest.raises(ValueError):
        Shape("triangle", radius=3)
    with pytest.raises(ValueError):
        disc((0, 0), -1)
    with pytest.raises(ValueError):
        Shape("rect", center=(0, 0))
    with pytest.raises(ValueError):
        render_scene(32, 32, 5, [disc((0, 0), 3, path=[(0, 0), (1, 1)])])


def test_random_scene():
    s = random_scene(3, width=160, height=96, num_frames=12)
    assert 2 <= s.num_shapes <= 4 and len(s.motions) == s.num_shapes
    assert s.frames.shape == (12, 96, 160, 3)
    np.testing.assert_array_equal(s.frames, random_scene(3, width=160, height=96, num_frames=12).frames)
    caption = describe_scene(s)
    assert caption.startswith("Synthetic scene:") and caption == describe_scene(
        random_scene_params(3, width=160, height=96, num_frames=12))


def test_write_mp4_round_trip_through_decord(tmp_path):
    decord = pytest.importorskip("decord")
    s = random_scene(4, width=176, height=144, num_frames=10)
    path = write_mp4(tmp_path / "clip.mp4", s.frames, fps=12)
    vr = decord.VideoReader(str(path))
    assert len(vr) == 10
    assert vr.get_avg_fps() == pytest.approx(12.0)
    frames = vr.get_batch(list(range(10))).asnumpy()
    assert frames.shape == (10, 144, 176, 3)
    # RGB order preserved (a BGR swap would give errors of tens of levels)
    assert np.abs(frames.astype(np.float32) - s.frames).mean() < 6.0
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8), fps=8)
