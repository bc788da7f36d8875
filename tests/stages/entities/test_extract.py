"""Incircles (exact EDT, tie rule) and the entity stage on real synthetic clips."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.clip.loop import ClipSteps
from pipeline.config import Config, EntityConfig
from pipeline.testdata.synthetic import disc, rect, render_scene, write_vipseg
from schemas.sample import Sample, decode_jpeg, decode_sample, dequantize_flow, encode_jpeg, encode_sample
from stages.entities import choose_mask_source
from stages.entities.incircle import incircle, incircles
from stages.errors import ClipError

H, W = 120, 200
YS, XS = np.mgrid[0:H, 0:W]


def _disc(c, r):
    return (XS - c[0]) ** 2 + (YS - c[1]) ** 2 <= r * r


def _rect(c, w, h):  # the renderer's rule: half-open, pixel centers
    return (XS >= c[0] - w / 2) & (XS < c[0] + w / 2) & (YS >= c[1] - h / 2) & (YS < c[1] + h / 2)


# ------------------------------------------------------------------ incircle
def test_disc_on_grid_is_exact():
    (cx, cy), r = incircle(_disc((90, 60), 30))
    assert (cx, cy) == (90.0, 60.0)
    assert 30.0 <= r <= 30.5  # nearest outside pixel center is just beyond r


def test_discs_at_subpixel_centers_within_half_pixel():
    rng = np.random.default_rng(0)
    worst_c = worst_r = 0.0
    for _ in range(60):
        r = rng.uniform(6, 40)
        c = rng.uniform([45, 45], [W - 45, H - 45])
        (cx, cy), rad = incircle(_disc(c, r))
        worst_c = max(worst_c, math.hypot(cx - c[0], cy - c[1]))
        worst_r = max(worst_r, abs(rad - r))
    assert worst_c <= 0.5
    assert worst_r <= 1.0


def test_subpixel_off_gives_the_pixel_of_the_maximum():
    m = _disc((90.3, 60.2), 20)
    (cx, cy), _ = incircle(m, subpixel=False)
    assert cx == int(cx) and cy == int(cy)
    (sx, sy), _ = incircle(m)
    assert abs(sx - cx) <= 0.5 and abs(sy - cy) <= 0.5


def test_rect_center_is_the_middle_of_its_plateau():
    # 60 x 40 rect: the maximum (20) is reached on two rows x many columns (a tie)
    m = _rect((100.5, 60.5), 60, 40)
    (cx, cy), r = incircle(m)
    assert (cx, cy) == (100.5, 60.5)
    assert r == 20.0
    rng = np.random.default_rng(1)
    for _ in range(40):  # any placement: exactly the middle of the rasterised rectangle
        w, h = rng.uniform(8, 70, 2)
        m = _rect(rng.uniform([50, 45], [W - 50, H - 45]), w, h)
        ys, xs = np.nonzero(m)
        (cx, cy), r = incircle(m)
        assert (cx, cy) == ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2)
        assert abs(r - min(np.ptp(xs) + 1, np.ptp(ys) + 1) / 2) <= 0.5


def test_tie_between_separate_plateaus_takes_the_first_in_row_major_order():
    m = _disc((60, 70), 15) | _disc((140, 40), 15)   # equal discs; (140, 40) is higher up
    (cx, cy), r = incircle(m)
    assert (cx, cy) == (140.0, 40.0)                  # not the mean of the two
    m = _disc((60, 50), 15) | _disc((140, 50), 15)    # same row: the leftmost
    assert incircle(m)[0] == (60.0, 50.0)


def test_bent_plateau_center_stays_on_the_plateau():
    # An L-shaped corridor 5 px wide: its maximum (3) is the bent center line; the mean of
    # the bent line lies off it, so the rule falls back to the nearest plateau pixel.
    m = np.zeros((H, W), bool)
    m[20:25, 20:120] = True
    m[20:110, 115:120] = True
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    (cx, cy), r = incircle(m)
    assert r == d.max() == 3.0
    assert cx == int(cx) and cy == int(cy) and d[int(cy), int(cx)] == r


def test_frame_border_counts_as_background():
    m = _disc((5, 60), 30)  # mostly outside the frame on the left
    (cx, cy), r = incircle(m)
    assert cx - r >= -1.0                            # the circle stays (nearly) inside the frame
    assert r < 20


def test_empty_mask_and_incircles_agree_with_incircle():
    assert incircle(np.zeros((5, 5), bool))[1] == 0.0
    ids = np.zeros((H, W), np.int64)
    ids[_disc((50, 50), 20)] = 7
    ids[_rect((140.5, 70.5), 40, 30)] = 3
    c, r = incircles(ids, [3, 7, 9])
    assert np.allclose(c[0], incircle(ids == 3)[0]) and np.allclose(c[1], incircle(ids == 7)[0])
    assert r[2] == 0 and np.isnan(c[2]).all()


# ------------------------------------------------------------------ stage
def test_auto_rule_and_stage_construction():
    assert choose_mask_source("auto", {"masks": "/x"}, None)[0] == "gt"
    assert choose_mask_source("auto", {"masks": None}, "sam.pth")[0] == "sam"
    assert choose_mask_source("auto", {}, None)[0] == "motion"
    with pytest.raises(ClipError) as e:
        choose_mask_source("gt", {"dataset": "webvid"}, None)
    assert e.value.reason == "missing_masks"
    off = [ClipSteps(Config(entities=EntityConfig(masks="none"))), ClipSteps(Config(entities=EntityConfig(enabled=False)))]
    for steps in off:   # no mask step; the track step records that there are no entities
        assert "entity_masks" not in steps.names and "entity_tracks" in steps.names
        assert steps.apply(["entity_tracks"], Sample(key="c")).meta["entities"] is None
    with pytest.raises(ValueError, match="entities.masks"):  # config.ConfigError
        EntityConfig(masks="grabcut")
    with pytest.raises(ValueError, match="entities.tracker"):
        EntityConfig(tracker="raft")


SHAPES = [disc((60, 60), 22, velocity=(2.0, 0.5)), rect((140.5, 50.5), (40, 30), velocity=(-1.5, 1.0)),
          disc((170, 100), 3, velocity=(0.5, 0.0))]  # the last is too small for min_radius 4


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic VIPSeg clip turned into a sample's content exactly as the worker makes it."""
    root = tmp_path_factory.mktemp("ent")
    scene = render_scene(W, H, 6, SHAPES, background_velocity=(0.5, 0.25), seed=4)
    info = write_vipseg(root, "v", scene)
    cfg = Config(profile="dragnuwa-ld", frames=6)
    proc = ClipSteps(cfg)
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    flow = dequantize_flow(proc["flow"].backend.forward(frames))
    meta = {"profile": {"width": W, "height": H}, "source_size": [W, H], "resized_size": [W, H],
            "resize_scale": [1.0, 1.0], "crop_offset": [0, 0], "source_frame_indices": list(range(6)),
            "source_frame_names": [n + ".jpg" for n in info["frames"]]}
    row = {"clip_id": "c", "dataset": "vipseg", "masks": info["panomasks"], "source": info["imgs"]}
    return scene, frames, flow, meta, row, proc


ENTITY_STEPS = ("entity_masks", "entity_tracks")


def _entities(sample, row, **kw):
    """The two entity steps of a run with these entity settings, on one sample."""
    return ClipSteps(Config(profile="dragnuwa-ld", frames=6, entities=EntityConfig(**kw))).apply(ENTITY_STEPS, sample, row)


def _run(clip, **kw):
    scene, frames, flow, meta, row, proc = clip
    return _entities(Sample(key="c", frames=frames, flow=flow, meta=dict(meta)), row, **kw)


def test_stage_outputs_and_meta(clip):
    scene = clip[0]
    s = _run(clip, min_radius=4.0)
    ids = s.entity_ids
    assert ids.dtype == np.int32 and list(ids) == [1, 6100, 6101]       # background (stuff 1) + 2 things
    assert s.entity_mask.dtype == np.uint16 and s.entity_mask.shape == (H, W)
    assert set(np.unique(s.entity_mask)) == {0, 1, 6100, 6101}       # the small disc -> 0
    assert s.entity_tracks.shape == (3, 6, 2) and s.entity_tracks.dtype == np.float32
    assert s.entity_visibility.shape == (3, 6) and s.entity_visibility.dtype == bool
    assert s.entity_radii.dtype == np.float32
    e = s.meta["entities"]
    assert (e["mask_source"], e["model"], e["tracker"], e["count"]) == ("gt", None, "flow", 3)
    assert e["mask_source_reason"].startswith("auto") and e["dropped_small"] == 1
    assert e["kinds"] == ["stuff", "thing", "thing"] and e["source_ids"] == [1, 6100, 6101]
    # the things' centers and radii against the analytic shapes
    np.testing.assert_allclose(s.entity_tracks[1, 0], scene.centers[0, 0], atol=0.5)
    np.testing.assert_allclose(s.entity_tracks[2, 0], scene.centers[0, 1], atol=0.5)
    assert abs(s.entity_radii[1] - 22) <= 1 and abs(s.entity_radii[2] - 15) <= 1
    # a sample round trip keeps every entity member
    s.frames_jpeg = [encode_jpeg(f, 95) for f in s.frames]
    members = encode_sample(s)
    back = decode_sample(members)
    for k in ("entity_ids", "entity_mask", "entity_radii", "entity_tracks", "entity_visibility"):
        np.testing.assert_array_equal(back[k], getattr(s, k))


def test_void_background_and_area_rules(clip):
    s = _run(clip, keep_background=False, min_radius=1.0)
    assert list(s.entity_ids) == [6100, 6101, 6102]
    assert s.meta["entities"]["dropped"]["background"] == 1
    s = _run(clip, void_ids=(1,), min_radius=1.0, min_area=200)
    assert list(s.entity_ids) == [6100, 6101]
    e = s.meta["entities"]
    assert e["dropped"]["void"] == 1 and e["dropped_small_area"] == 1


def test_ids_are_renumbered_when_0_is_an_entity(clip, tmp_path):
    scene, frames, flow, meta, row, proc = clip
    info = write_vipseg(tmp_path, "v", scene, background_id=0)   # background written as 0
    s = _entities(Sample(frames=frames, flow=flow, meta=dict(meta)), {**row, "masks": info["panomasks"]},
                  void_ids=(), min_radius=1.0)
    e = s.meta["entities"]
    assert list(s.entity_ids) == [1, 2, 3, 4] and e["source_ids"] == [0, 6100, 6101, 6102]
    assert e["ids"].startswith("renumbered")
    assert (s.entity_mask == 1).sum() == (scene.ids[0] == 0).sum()   # 0 -> entity 1 everywhere


def test_gt_without_masks_is_a_clip_error(clip):
    scene, frames, flow, meta, row, proc = clip
    with pytest.raises(ClipError) as e:
        _entities(Sample(frames=frames, flow=flow, meta=dict(meta)), {**row, "masks": None}, masks="gt")
    assert e.value.reason == "missing_masks"
    with pytest.raises(ClipError) as e:   # a mask folder without this frame's mask
        _entities(Sample(frames=frames, flow=flow, meta={**meta, "source_frame_names": ["99999999.jpg"]}), row,
                  masks="gt")
    assert e.value.reason == "missing_masks"


def test_motion_source_through_the_stage(clip):
    s = _run(clip, masks="motion", min_radius=4.0)
    e = s.meta["entities"]
    assert (e["mask_source"], e["model"]) == ("motion", "motion-seg-v1")
    assert e["count"] >= 2 and set(e["kinds"]) == {"region"}
    assert list(s.entity_ids) == sorted(s.entity_ids) and s.entity_ids.min() >= 1
    assert set(np.unique(s.entity_mask)) - {0} == set(s.entity_ids.tolist())


def test_backward_flow_choice(clip):
    """entities.backward_flow: auto (DIS balanced next to a CPU flow backend), same (the flow
    backend), a DIS preset; recorded in meta; an unknown name is a clear error."""
    from pipeline.steps.flow import backward_backend, main_flow

    def backward(choice):
        cfg = Config(entities=EntityConfig(backward_flow=choice))
        steps = ClipSteps(cfg)
        return backward_backend(cfg, steps.backends), main_flow(cfg, steps.backends)

    s = _run(clip, min_radius=4.0)
    assert s.meta["entities"]["backward_flow"]["preset"] == "balanced"
    back, main = backward("same")
    assert back is main
    assert backward("ultrafast")[0].preset == "ultrafast"
    with pytest.raises(ValueError, match="backward_flow"):
        EntityConfig(backward_flow="raft")
