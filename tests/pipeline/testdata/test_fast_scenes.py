"""The fast synthetic scenes (pipeline/testdata/fast_scenes.py): their ground truth is exact."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.testdata.fast_scenes import FAST_SCENES, HD, LD, FastSceneSpec, Layer, render_fast_scene
from stages.trajectories import anchor_grid, bilinear_sample


@pytest.fixture(scope="module", params=sorted(FAST_SCENES))
def scene(request):
    return render_fast_scene(FAST_SCENES[request.param]())


def test_profile_geometry_and_speeds(scene):
    n, w, h, stride = HD
    assert scene.frames.shape == (n, h, w, 3) and scene.frames.dtype == np.uint8
    pts = anchor_grid(h, w, 16)
    tracks, visible, layer, textured = scene.ground_truth(pts)
    assert tracks.shape == (len(pts), n, 2) and visible.shape == (len(pts), n)
    assert visible[:, 0].all()
    step = np.hypot(*np.diff(tracks, axis=1).transpose(2, 0, 1))
    moving = step[:, 0] > 0.5
    # the range: 5-30 px per profile frame at HD (plus rotation/zoom at the edges)
    assert 4.5 <= np.median(step[moving]) and step.max() <= 36.0
    assert set(np.unique(layer)) == set(range(len(scene.spec.layers)))


def test_visible_points_show_their_own_surface(scene):
    """The colour at a point's true position, where it is visible, is the colour it had in
    frame 0 (exact for translations, bilinear resampling only for rotation and scale)."""
    pts = anchor_grid(scene.spec.height, scene.spec.width, 8)
    tracks, visible, _, textured = scene.ground_truth(pts)
    f = [fr.astype(np.float32).transpose(2, 0, 1) for fr in scene.frames]
    c0 = bilinear_sample(f[0], pts)
    errs = []
    for t in range(1, scene.spec.num_frames):
        # away from layer edges (a pixel there mixes two layers once it is resampled)
        m = visible[:, t] & textured
        if m.any():
            errs.append(np.abs(bilinear_sample(f[t], tracks[m, t]) - c0[m]).mean(1))
    e = np.concatenate(errs)
    assert np.median(e) <= 0.6 and np.percentile(e, 90) <= 6.0


def test_occlusion_and_disocclusion():
    sc = render_fast_scene(FAST_SCENES["occlusion"]())
    pts = anchor_grid(sc.spec.height, sc.spec.width, 8)
    _, visible, layer, _ = sc.ground_truth(pts)
    on_disc = layer == 1
    hidden_then_back = on_disc & (~visible).any(1) & visible[:, -1]
    assert hidden_then_back.sum() >= 5                      # swept over by the rect, then seen again
    ids_top = sc.top_layer(pts, sc.times[5])
    assert (ids_top == 3).sum() > 0


def test_flat_regions_are_marked_untextured():
    sc = render_fast_scene(FAST_SCENES["translate"]())
    pts = anchor_grid(sc.spec.height, sc.spec.width, 8)
    _, _, layer, textured = sc.ground_truth(pts)
    assert not textured[layer == 3].any()                  # the flat disc
    sky = (layer == 0) & (pts[:, 1] < 0.2 * sc.spec.height - 1)
    assert sky.any() and not textured[sky].any()           # the plane's flat band
    f0 = sc.frames[0].astype(np.float32)
    xs, ys = pts[~textured].astype(int).T
    # flat: the 5x5 neighbourhood of a flat point inside its region has no texture
    inner = [(y, x) for y, x in zip(ys, xs) if 3 <= y < sc.spec.height - 3 and 3 <= x < sc.spec.width - 3
             and (f0[y - 2:y + 3, x - 2:x + 3].std(axis=(0, 1)) < 1.0).all()]
    assert len(inner) >= 0.5 * len(ys)


def test_rotation_and_scale_ground_truth():
    spec = FastSceneSpec("one", (Layer("plane", center=(40, 30), spin=math.radians(2), zoom=0.01),),
                         num_frames=3, width=80, height=60, stride=2)
    sc = render_fast_scene(spec)
    tracks, visible, _, _ = sc.ground_truth(np.array([[40.0, 30.0], [60.0, 30.0]]))
    np.testing.assert_allclose(tracks[0], [[40, 30]] * 3, atol=1e-9)       # the center stays
    r = 20 * math.exp(0.01 * 4)
    np.testing.assert_allclose(tracks[1, 2], [40 + r * math.cos(math.radians(8)), 30 + r * math.sin(math.radians(8))])
    assert sc.source_frames.shape == (5, 60, 80, 3)
    np.testing.assert_array_equal(sc.source_frames[::2], sc.frames)


def test_ld_scenes_and_determinism():
    a = render_fast_scene(FAST_SCENES["shake"](*LD))
    b = render_fast_scene(FAST_SCENES["shake"](*LD))
    assert a.frames.shape == (LD[0], LD[2], LD[1], 3)
    np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(ValueError):
        Layer("disc")
    with pytest.raises(ValueError):
        Layer("cube")
