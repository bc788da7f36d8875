"""Mask sources: ground truth geometry, the SAM path with a real (tiny, random) model, motion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.config import EntityConfig
from pipeline.testdata.synthetic import disc, random_scene, rect, render_scene, write_vipseg
from schemas.sample import Sample, decode_jpeg, encode_jpeg
from stages.decode import clip_rng, decode_frame_folder
from pipeline.clip.loop import ClipSteps
from pipeline.config import Config
from stages.entities.masks import NO_ENTITY
from stages.entities.masks_gt import GtMaskSource, map_ids_to_profile, read_id_map
from stages.entities.masks_motion import MotionMaskSource, fb_reliability, segment_motion
from stages.entities.masks_sam import SamMaskSource, build_sam_model, resolve_overlaps, sam_generator_defaults
from stages.errors import ClipError
from stages.flow.base import make_flow_backend


# ------------------------------------------------------------------ ground truth
def _meta(src_w, src_h, scale, crop, out_w, out_h):
    rw, rh = round(src_w * scale), round(src_h * scale)
    return {"source_size": [src_w, src_h], "resized_size": [rw, rh], "resize_scale": [rw / src_w, rh / src_h],
            "crop_offset": list(crop), "profile": {"width": out_w, "height": out_h}}


def test_nearest_mapping_matches_opencv_nearest_exact():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 9000, size=(150, 260)).astype(np.int64)
    for scale, crop, out in ((0.8, (4, 2), (200, 116)), (2.0, (10, 0), (480, 300)), (1.0, (0, 0), (260, 150))):
        meta = _meta(260, 150, scale, crop, *out)
        rw, rh = meta["resized_size"]
        ref = cv2.resize(ids.astype(np.uint16), (rw, rh), interpolation=cv2.INTER_NEAREST_EXACT)
        ref = ref[crop[1]:crop[1] + out[1], crop[0]:crop[0] + out[0]]
        np.testing.assert_array_equal(map_ids_to_profile(ids, meta), ref)
    with pytest.raises(ClipError):
        map_ids_to_profile(ids[:, :100], _meta(260, 150, 1, (0, 0), 260, 150))


def test_gt_masks_follow_the_decoded_frames(tmp_path):
    # source 400x260 -> profile 320x192: scale 0.8, crop (0, 8); a disc and a rect of known size
    scene = render_scene(400, 260, 3, [disc((150, 130), 50), rect((300.5, 100.5), (60, 80))], seed=2)
    info = write_vipseg(tmp_path, "v", scene)
    clip = decode_frame_folder(info["imgs"], 5.0, 3, 5.0, 320, 192, clip_rng(0, "v", "start"))
    meta = {**clip.meta(), "profile": {"width": 320, "height": 192}}
    assert meta["crop_offset"] == [0, 8] and meta["resize_scale"] == [0.8, 0.8]
    em = GtMaskSource().masks(clip.frames, None, meta, {"masks": info["panomasks"]})
    assert list(em.ids) == [1, 6100, 6101] and em.kinds == ["stuff", "thing", "thing"]
    ys, xs = np.mgrid[0:192, 0:320]
    c = ((150 + 0.5) * 0.8 - 0.5, (130 + 0.5) * 0.8 - 0.5 - 8)
    analytic = (xs - c[0]) ** 2 + (ys - c[1]) ** 2 <= (50 * 0.8) ** 2
    got = em.id_map == 6100
    assert (got & analytic).sum() / (got | analytic).sum() > 0.97
    # the mask lies on the decoded frame's disc: its pixels are far from the background colour
    bg = clip.frames[0][em.id_map == 1].reshape(-1, 3).mean(0)
    inner = cv2.erode(got.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(clip.frames[0][inner].astype(float) - bg).mean() > 40


def test_read_id_map_16bit_and_rejects_colour(tmp_path):
    ids = np.array([[0, 6100], [12499, 7]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), ids)
    np.testing.assert_array_equal(read_id_map(str(tmp_path / "a.png")), ids)
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ClipError) as e:
        read_id_map(str(tmp_path / "b.png"))
    assert e.value.reason == "invalid_input"


# ------------------------------------------------------------------ overlaps
def test_overlap_rule_smallest_mask_wins_ties_by_score():
    big = np.zeros((20, 20), bool)
    big[2:18, 2:18] = True
    a = np.zeros_like(big)
    a[4:8, 4:8] = True
    b = np.zeros_like(big)
    b[6:10, 6:10] = True          # same area as a, overlapping it
    hidden = np.zeros_like(big)
    hidden[4:8, 4:8] = True       # identical to a, lower score: loses every pixel
    labels, per_mask = resolve_overlaps([big, a, b, hidden], scores=[(0.9, 0.9), (0.8, 0.9), (0.95, 0.9), (0.5, 0.9)])
    assert per_mask[3] == 0                                   # covered -> dropped
    assert labels[7, 7] == per_mask[2]                        # b beats a (higher score)
    assert labels[5, 5] == per_mask[1]                        # a keeps what b does not cover
    assert labels[3, 3] == per_mask[0] == 1                   # the big mask is id 1
    assert labels[0, 0] == 0
    assert sorted(set(np.unique(labels)) - {0}) == [1, 2, 3]


# ------------------------------------------------------------------ SAM
def test_sam_generator_defaults_are_the_package_defaults():
    d = sam_generator_defaults()
    assert (d["points_per_side"], d["points_per_batch"], d["pred_iou_thresh"], d["stability_score_thresh"],
            d["box_nms_thresh"], d["min_mask_region_area"]) == (32, 64, 0.88, 0.95, 0.7, 0)
    assert "model" not in d and "output_mode" not in d


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model = build_sam_model("tiny_test")     # segment_anything's own classes, random weights
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


SAM_PARAMS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
              "stability_score_offset": 0.0, "box_nms_thresh": 1.0}


def test_sam_runs_for_real_and_gives_a_valid_id_map(tiny_sam):
    model, path = tiny_sam
    src = SamMaskSource("tiny_test", path, device="cpu", batch_size=16, params=SAM_PARAMS)
    for k, v in model.state_dict().items():       # loaded through the user's path, bit for bit
        assert np.array_equal(v.numpy(), src.model.state_dict()[k].numpy())
    scene = render_scene(160, 96, 2, [disc((50, 50), 20), rect((110.5, 40.5), (30, 30))], seed=1)
    em = src.masks(scene.frames, None, {}, {})
    assert em.id_map.shape == (96, 160) and em.id_map.dtype == np.int64
    assert em.ids.size >= 2 and list(em.ids) == list(range(1, em.ids.size + 1))
    assert set(np.unique(em.id_map)) <= {NO_ENTITY} | set(em.ids.tolist())
    assert em.info["sam_masks"] == em.ids.size + em.dropped["covered"]
    assert src.describe()["model"] == "sam_tiny_test" and src.describe()["generator"]["points_per_batch"] == 16


def test_sam_through_the_entity_stage(tiny_sam):
    _, path = tiny_sam
    scene = render_scene(160, 96, 3, [disc((50, 50), 20, velocity=(1, 0))], seed=1)
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
    cfg = EntityConfig(masks="auto", sam_model="tiny_test", sam_checkpoint=path, device="cpu",
                       sam=dict(SAM_PARAMS), min_radius=1.0)
    fb = make_flow_backend("dis")
    s = ClipSteps(Config(entities=cfg)).apply(["entity_masks", "entity_tracks"],
                                              Sample(frames=frames, flow=fb.forward(frames)), {"masks": None})
    e = s.meta["entities"]
    assert (e["mask_source"], e["model"]) == ("sam", "sam_tiny_test")
    assert e["mask_source_reason"] == "auto: no dataset masks; a SAM checkpoint is configured"
    assert s.entity_mask.dtype == np.uint16 and set(np.unique(s.entity_mask)) - {0} == set(s.entity_ids.tolist())


def test_sam_checkpoint_problems(tiny_sam, tmp_path):
    import torch

    with pytest.raises(ClipError) as e:
        SamMaskSource("tiny_test", str(tmp_path / "nope.pth"))
    assert e.value.reason == "backend_unavailable" and "does not exist" in e.value.message
    with pytest.raises(ClipError, match="--sam-checkpoint"):
        SamMaskSource("tiny_test", None)
    sd = build_sam_model("tiny_test").state_dict()
    sd.pop(next(iter(sd)))
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ClipError, match="does not fit"):
        SamMaskSource("tiny_test", str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="unknown SAM generator parameter"):
        SamMaskSource("tiny_test", tiny_sam[1], params={"points": 3})
    with pytest.raises(ValueError, match="unknown SAM model type"):
        build_sam_model("vit_x")


# ------------------------------------------------------------------ motion
def _iou_best(labels, gt):
    return max(((labels == v) & gt).sum() / ((labels == v) | gt).sum() for v in np.unique(labels[gt]))


def test_motion_segmentation_finds_the_shapes():
    fb = make_flow_backend("dis")
    ious = []
    for seed in (12, 14):
        scene = random_scene(seed, 576, 320, 2)
        frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in scene.frames])
        f, b = fb.forward(frames), fb.backward(frames)
        labels = segment_motion(frames[0], f[0], b[0])
        assert labels.min() == 1 and labels.max() <= 20 and labels.shape == (320, 576)
        np.testing.assert_array_equal(labels, segment_motion(frames[0], f[0], b[0]))  # deterministic
        ious += [_iou_best(labels, scene.ids[0] == k + 1) for k in range(scene.num_shapes)]
    assert min(ious) > 0.85, ious


def test_motion_separates_by_flow_alone_and_by_colour_alone():
    scene = render_scene(160, 96, 1, [], seed=3)               # textured background only
    flow = np.zeros((2, 96, 160), np.float32)
    block = np.zeros((96, 160), bool)
    block[30:70, 50:110] = True
    flow[0][block] = 4.0                                       # same colours, different motion
    assert _iou_best(segment_motion(scene.frames[0], flow), block) > 0.9
    still = render_scene(160, 96, 1, [disc((80, 48), 25)], seed=3)   # different colour, no motion
    labels = segment_motion(still.frames[0], np.zeros((2, 96, 160), np.float32))
    assert _iou_best(labels, still.ids[0] == 1) > 0.9


def test_fb_reliability_and_motion_source_provenance():
    f = np.full((2, 20, 30), 2.0, np.float32)
    ok = fb_reliability(f, -f, 1.5)
    ys, xs = np.mgrid[0:20, 0:30]
    np.testing.assert_array_equal(ok, (xs <= 27) & (ys <= 17))   # targets outside the frame: not trusted
    assert not fb_reliability(f, f * 0, 1.5).any()
    src = MotionMaskSource()
    d = src.describe()
    assert (d["mask_source"], d["model"]) == ("motion", "motion-seg-v1") and "not SAM" in d["note"]
    with pytest.raises(ValueError):
        MotionMaskSource(cells=3)
