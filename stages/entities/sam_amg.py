"""A batched, device-resident automatic mask generator for segment-anything models.

It selects the same masks as segment-anything 1.0's ``SamAutomaticMaskGenerator`` (same
model, same parameters, same meaning) but runs the way a GPU wants:

* the image encoder sees several images per call (``encoder_batch``), optionally under
  bf16 autocast on CUDA (``precision="bf16"``; fp32 is the default and the only setting
  whose equivalence is tested);
* the point prompts of an image are decoded in large batches (``points_per_batch``,
  default 256 here, 64 in segment-anything);
* the predicted-IoU filter runs *before* the masks are upsampled (the IoU does not depend on
  them, so only the survivors are upsampled); stability scores, thresholding, boxes, box NMS
  (``torchvision.ops.batched_nms``) and the overlap rule that turns the masks into one id
  map all run on the model's device; nothing is encoded to RLE and decoded again;
* masks exist only at the input image's size (the profile frame, e.g. 576x320) as booleans.
  The low-resolution logits are upsampled to the same numbers as segment-anything's
  (bilinear to the model's square input, crop the padding, bilinear to the image size;
  ``upsample_logits`` skips the rows of the square that the crop drops), transiently, chunk
  by chunk, so the thresholds see the same logits.

Public API
----------
``BatchedMaskGenerator(model, points_per_side=32, points_per_batch=256, pred_iou_thresh=0.88,
stability_score_thresh=0.95, stability_score_offset=1.0, box_nms_thresh=0.7,
min_mask_region_area=0, crop_n_layers=0, encoder_batch=4, precision="fp32", **ignored_crop_params)``
    ``iter_generate(images)``                    yields one ``AmgMasks`` per image, in order
    ``generate_many(images) -> list[AmgMasks]``  (images: list of (H, W, 3) uint8 RGB)
    ``generate(image) -> AmgMasks``              (= ``generate_many([image])[0]``)
    ``timings``: seconds per phase since the last ``reset_timings()``: ``encoder`` (the image
    encoder network), ``decoder`` (prompt encoder + mask decoder networks), ``post`` (the
    filters, upsampling, boxes, NMS); the input resize and the id map are in neither;
    ``images`` and ``candidates`` (masks through the filters, before NMS) are counts.
``AmgMasks``   per image: ``masks`` (K, H, W) bool tensor on the device, ``predicted_iou``,
               ``stability_score`` (K,) float32, ``boxes`` (K, 4) XYXY, ``points`` (K, 2)
               float64, in the official generator's record order; ``areas()``; ``records()``
               (the official generator's record dicts, for comparisons).
``upsample_logits(low, img_size, input_size, orig_size)``
    ``Sam.postprocess_masks`` with the same numbers, skipping the cropped-off rows.
``paint_id_map(masks, areas, predicted_iou, stability_score) -> (labels, per_mask)``
    the overlap rule of ``stages.entities.masks_sam.resolve_overlaps`` on the device (same result).

Deliberate differences from SamAutomaticMaskGenerator (also in docs/entities.md)
-------------------------------------------------------------------------------
* ``crop_n_layers`` > 0 (multi-crop generation) is not supported: a ValueError names the
  official generator (``generator: official``) as the way to get it. With the default 0 the
  crop parameters (``crop_nms_thresh``, ``crop_overlap_ratio``,
  ``crop_n_points_downscale_factor``) have no effect in either generator; they are accepted.
  For the same reason the "box near a crop edge" filter is skipped: with one crop equal to
  the image it never removes a mask.
* ``point_grids`` (explicit prompt grids) is not exposed (nor is it by the ``sam`` source).
* ``min_mask_region_area`` > 0 (hole filling and island removal): the same rule, run with
  segment-anything's own ``remove_small_regions`` (OpenCV connected components), so that step
  moves the surviving masks to the CPU and back; the NMS that follows uses the same scores
  (1 unchanged, 0 changed) and threshold (max of box and crop NMS thresholds). With the
  default 0 everything stays on the device.
* ``points_per_batch`` defaults to 256 (prompts per decoder pass); it changes only speed
  and memory, not the result (up to floating point, see below).
* Output: binary masks at the image's size on the device (``output_mode`` is fixed), no RLE.
* Floating point: the encoder batch and the decoder batch change the shapes of the matrix
  products, so logits may differ from the official generator's by rounding (about 1e-6
  relative in fp32 on CPU). A mask whose score sits on a threshold to that precision, or a
  logit within rounding of 0, can then differ. tests/stages/entities/test_sam_amg.py measures it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["BatchedMaskGenerator", "AmgMasks", "paint_id_map", "upsample_logits", "BATCHED_DEFAULTS", "UNSUPPORTED"]

# Our defaults where they differ from segment-anything's (the rest are the package's).
BATCHED_DEFAULTS = {"points_per_batch": 256}
# Parameters of segment-anything's generator with no meaning here unless at their default.
UNSUPPORTED = {"crop_n_layers": 0, "point_grids": None}
_CROP_ONLY = ("crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor")
PRECISIONS = ("fp32", "bf16")


@dataclass
class AmgMasks:
    """The generator's masks of one image, in the official generator's record order."""

    masks: Any              # (K, H, W) bool torch tensor, on the model's device
    predicted_iou: Any      # (K,) float32
    stability_score: Any    # (K,) float32
    boxes: Any              # (K, 4) XYXY int64 (inclusive pixel bounds, as segment-anything)
    points: Any             # (K, 2) float64 prompt points in image pixels

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def areas(self):
        """(K,) int64 pixel counts."""
        return self.masks.flatten(1).sum(1)

    def records(self) -> list[dict[str, Any]]:
        """The official generator's records (binary_mask mode), on the CPU."""
        masks = self.masks.cpu().numpy()
        areas = self.areas().cpu().tolist()
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i].tolist())
            h, w = masks.shape[1:]
            out.append({"segmentation": masks[i], "area": int(areas[i]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "predicted_iou": float(self.predicted_iou[i]), "point_coords": [self.points[i].tolist()],
                        "stability_score": float(self.stability_score[i]), "crop_box": [0, 0, w, h]})
        return out


def paint_id_map(masks, areas: Sequence[int], predicted_iou: Sequence[float],
                 stability_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``stages.entities.masks_sam.resolve_overlaps`` for a (K, H, W) bool tensor, computed on its device.

    A pixel goes to the covering mask painted last, painting in order of decreasing area,
    ties by (predicted IoU, stability score) increasing, then the later record first (so the
    earlier record wins). Returns the (H, W) int64 id map (0 = none; surviving masks 1..n in
    painting order) and per mask its id (0: no pixel left). The order is a sort of K numbers
    on the CPU; the painting is one max over the masks on the device."""
    import torch

    k = int(masks.shape[0])
    if k == 0:
        raise ValueError("paint_id_map needs at least one mask (the shape comes from them)")
    area = [float(a) for a in areas]
    sc = [(float(a), float(b)) for a, b in zip(predicted_iou, stability_score)]
    order = sorted(range(k), key=lambda i: (-area[i], sc[i], -i))
    rank = torch.zeros(k, dtype=torch.int32, device=masks.device)
    rank[torch.as_tensor(order, device=masks.device)] = torch.arange(1, k + 1, dtype=torch.int32, device=masks.device)
    # paint (H, W): the highest rank among the masks covering each pixel, 0 where none
    paint = torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)
    for c in range(0, k, 64):        # chunks bound the (chunk, H, W) int32 temporary
        part = masks[c:c + 64].to(torch.int32) * rank[c:c + 64, None, None]
        paint = torch.maximum(paint, part.amax(0))
    present = torch.zeros(k + 1, dtype=torch.bool, device=masks.device)
    present[paint.flatten().unique()] = True
    present[0] = False
    new_id = torch.cumsum(present.to(torch.int64), 0) * present
    labels = new_id[paint.to(torch.int64)].cpu().numpy()
    per_rank = new_id.cpu().numpy()
    per_mask = np.zeros(k, np.int64)
    per_mask[np.asarray(order)] = per_rank[1:]
    return labels, per_mask


UPSAMPLE_CHUNK = 128   # masks per upsampling call (a 1024x1024 float intermediate is 4 MB each)


def upsample_logits(low, img_size: int, input_size: tuple[int, int], orig_size: tuple[int, int]):
    """``Sam.postprocess_masks``: (B, C, h, w) low-resolution logits -> bilinear to
    (img_size, img_size), crop to ``input_size``, bilinear to ``orig_size`` - with the same
    numbers, computing only the rows of the square intermediate that the crop keeps.

    With ``align_corners=False`` an output row y of a resize by the integer factor f reads
    the input rows around (y + 0.5) / f - 0.5 with weights that depend only on f; resizing
    the first r input rows to r * f rows gives the same scale 1 / f, so its rows are the full
    resize's rows while they stay two input rows clear of the cut (r = ceil(ih / f) + 2).
    A landscape frame (576x320 -> 1024x569) skips 44 % of the intermediate. Bit-identical
    to ``postprocess_masks`` on the CPU (tests/stages/entities/test_sam_amg.py, at ViT and tiny sizes);
    other cases (a non-integer factor) call the plain two resizes."""
    import torch.nn.functional as F

    lh, lw = low.shape[-2:]
    ih, iw = (int(v) for v in input_size)
    f = img_size // lh if lh == lw and img_size % lh == 0 else 0
    r = -(-ih // f) + 2 if f else lh
    if f and r < lh:
        x = F.interpolate(low[..., :r, :], (r * f, img_size), mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(low, (img_size, img_size), mode="bilinear", align_corners=False)
    x = x[..., :ih, :iw]
    return F.interpolate(x, tuple(int(v) for v in orig_size), mode="bilinear", align_corners=False)


class BatchedMaskGenerator:
    """Automatic masks of a segment-anything ``Sam`` for many images (see the module docstring)."""

    def __init__(self, model, points_per_side: int = 32, points_per_batch: int = 256,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 min_mask_region_area: int = 0, crop_n_layers: int = 0, point_grids=None,
                 encoder_batch: int = 4, precision: str = "fp32", **crop_params: Any):
        from segment_anything.utils.amg import build_point_grid
        from segment_anything.utils.transforms import ResizeLongestSide

        unknown = sorted(set(crop_params) - set(_CROP_ONLY))
        if unknown:
            raise ValueError(f"unknown generator parameter(s) {', '.join(unknown)}")
        if int(crop_n_layers or 0) != 0:
            raise ValueError("the batched SAM generator does not support crop_n_layers > 0 (multi-crop); "
                             "set entities.sam.generator: official to use segment-anything's generator")
        if point_grids is not None:
            raise ValueError("the batched SAM generator takes points_per_side, not point_grids")
        if points_per_side is None or int(points_per_side) < 1:
            raise ValueError(f"points_per_side must be a positive integer, got {points_per_side!r}")
        if str(precision) not in PRECISIONS:
            raise ValueError(f"unknown SAM precision {precision!r}; choose {' or '.join(PRECISIONS)}")
        if int(encoder_batch) < 1 or int(points_per_batch) < 1:
            raise ValueError("encoder_batch and points_per_batch must be >= 1")
        self.model = model
        self.grid = build_point_grid(int(points_per_side))          # (N, 2) in [0, 1], x then y
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.min_mask_region_area = int(min_mask_region_area)
        self.crop_nms_thresh = float(crop_params.get("crop_nms_thresh", 0.7))
        self.encoder_batch = int(encoder_batch)
        self.precision = str(precision)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.reset_timings()

    # ---------------------------------------------------------------- bookkeeping
    @property
    def device(self):
        return next(self.model.parameters()).device

    def reset_timings(self) -> None:
        self.timings = {"encoder": 0.0, "decoder": 0.0, "post": 0.0, "images": 0, "candidates": 0}

    @contextmanager
    def _phase(self, name: str):
        import torch

        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] += time.perf_counter() - t0

    def _autocast(self):
        import torch

        if self.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    # ---------------------------------------------------------------- encoder
    def _input(self, image: np.ndarray):
        """The image as segment-anything's predictor feeds it: longest side resized to the
        model's input with PIL (``ResizeLongestSide.apply_image``), normalised, padded."""
        import torch

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an (H, W, 3) uint8 image is expected, got {image.shape} {image.dtype}")
        if self.model.image_format != "RGB":
            image = image[..., ::-1]
        x = torch.as_tensor(self.transform.apply_image(np.ascontiguousarray(image)), device=self.device)
        x = x.permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(x), tuple(x.shape[-2:])

    def embed(self, images: Sequence[np.ndarray]):
        """Image embeddings (N, C, h, w) float32 of ``images`` in one encoder call, and each
        image's resized input size (callers pass at most ``encoder_batch`` images)."""
        import torch

        xs = [self._input(im) for im in images]             # resize + normalise: outside the phases
        with self._phase("encoder"), self._autocast():
            f = self.model.image_encoder(torch.cat([x for x, _ in xs]))
        return f.float(), [sz for _, sz in xs]

    # ---------------------------------------------------------------- decoder + filters
    def _decode(self, feat, input_size: tuple[int, int], orig_size: tuple[int, int]) -> AmgMasks:
        import torch
        from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score
        from torchvision.ops import batched_nms

        m = self.model
        h, w = orig_size
        points = self.grid * np.array([[w, h]], np.float64)            # image pixels, as the official
        # the official applies ResizeLongestSide.apply_coords (float64 numpy) and feeds that
        in_points = torch.as_tensor(self.transform.apply_coords(points, orig_size), device=self.device)
        masks_l, iou_l, stab_l, pts_l = [], [], [], []
        image_pe = m.prompt_encoder.get_dense_pe()
        thr = m.mask_threshold
        for s in range(0, len(points), self.points_per_batch):
            p = in_points[s:s + self.points_per_batch]
            with self._phase("decoder"):
                labels = torch.ones(p.shape[0], dtype=torch.int, device=self.device)
                sparse, dense = m.prompt_encoder(points=(p[:, None, :], labels[:, None]), boxes=None, masks=None)
                low, iou = m.mask_decoder(image_embeddings=feat, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                                          dense_prompt_embeddings=dense, multimask_output=True)
            with self._phase("post"):
                nm = low.shape[1]
                low, iou = low.flatten(0, 1), iou.flatten(0, 1)
                pts = torch.as_tensor(points[s:s + self.points_per_batch]).repeat_interleave(nm, 0)
                keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else None
                if keep is not None:
                    low, iou, pts = low[keep], iou[keep], pts[keep.cpu()]
                if low.shape[0] == 0:
                    continue
                # the official upsampling (Sam.postprocess_masks), UPSAMPLE_CHUNK masks at a time
                stab, masks = [], []
                for c in range(0, low.shape[0], UPSAMPLE_CHUNK):
                    logits = upsample_logits(low[c:c + UPSAMPLE_CHUNK, None], m.image_encoder.img_size,
                                             input_size, orig_size)[:, 0]
                    stab.append(calculate_stability_score(logits, thr, self.stability_score_offset))
                    masks.append(logits > thr)
                    del logits
                stab, masks = torch.cat(stab), torch.cat(masks)
                if self.stability_score_thresh > 0.0:
                    keep = stab >= self.stability_score_thresh
                    masks, iou, stab, pts = masks[keep], iou[keep], stab[keep], pts[keep.cpu()]
                masks_l.append(masks)
                iou_l.append(iou)
                stab_l.append(stab)
                pts_l.append(pts)
        with self._phase("post"):
            if not masks_l:
                empty = torch.zeros((0, h, w), dtype=torch.bool, device=self.device)
                z = torch.zeros(0, device=self.device)
                return AmgMasks(empty, z, z, torch.zeros((0, 4), dtype=torch.int64, device=self.device),
                                torch.zeros((0, 2), dtype=torch.float64))
            masks, iou, stab, pts = torch.cat(masks_l), torch.cat(iou_l), torch.cat(stab_l), torch.cat(pts_l)
            self.timings["candidates"] += int(masks.shape[0])      # through the filters, before NMS
            boxes = batched_mask_to_box(masks)
            keep = batched_nms(boxes.float(), iou, torch.zeros(len(boxes), device=boxes.device),
                               iou_threshold=self.box_nms_thresh)
            out = AmgMasks(masks[keep], iou[keep], stab[keep], boxes[keep], pts[keep.cpu()])
            if self.min_mask_region_area > 0 and len(out):
                out = self._small_regions(out)
        return out

    def _small_regions(self, out: AmgMasks) -> AmgMasks:
        """segment-anything's ``postprocess_small_regions``: fill holes and drop islands under
        ``min_mask_region_area`` (OpenCV on the CPU), then NMS preferring unchanged masks."""
        import torch
        from segment_anything.utils.amg import batched_mask_to_box, remove_small_regions
        from torchvision.ops import batched_nms

        area = self.min_mask_region_area
        new, scores = [], []
        for mk in out.masks.cpu().numpy():
            mk, ch1 = remove_small_regions(mk, area, mode="holes")
            mk, ch2 = remove_small_regions(mk, area, mode="islands")
            new.append(torch.as_tensor(mk))
            scores.append(float(not (ch1 or ch2)))
        masks = torch.stack(new)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)),
                           iou_threshold=max(self.box_nms_thresh, self.crop_nms_thresh))
        # the official keeps the old box of an unchanged mask: the same numbers, its own mask's box
        dev = self.device
        k = keep.to(dev)
        return AmgMasks(masks[keep].to(dev), out.predicted_iou[k], out.stability_score[k], boxes[keep].to(dev),
                        out.points[keep])

    # ---------------------------------------------------------------- public
    def iter_generate(self, images: Sequence[np.ndarray]):
        """Yield each image's ``AmgMasks`` in order: one encoder pass per ``encoder_batch``
        images, then the batched decoder and the filters image by image (a caller that turns
        each result into an id map right away holds one image's masks at a time)."""
        import torch

        images = [np.asarray(im) for im in images]
        for s in range(0, len(images), self.encoder_batch):
            group = images[s:s + self.encoder_batch]
            with torch.inference_mode():
                feats, sizes = self.embed(group)
                for i, im in enumerate(group):
                    out = self._decode(feats[i:i + 1], sizes[i], tuple(im.shape[:2]))
                    self.timings["images"] += 1
                    yield out

    def generate_many(self, images: Sequence[np.ndarray]) -> list[AmgMasks]:
        """Masks of each image (see ``iter_generate``)."""
        return list(self.iter_generate(images))

    def generate(self, image: np.ndarray) -> AmgMasks:
        return self.generate_many([image])[0]
