"""The SAM mask source (``"sam"``): automatic segment-anything masks of frame 0.

Public API
----------
``SamMaskSource(model_type="vit_b", checkpoint=PATH, device="auto", batch_size=None, params=None,
              generator="batched", encoder_batch=4, precision="fp32")``
                                   automatic SAM masks of frame 0: ``stages.entities.sam_amg``'s
                                   batched generator (the same masks as segment-anything's) or
                                   the official ``SamAutomaticMaskGenerator``; ``masks_many(items)``
                                   for several clips (one encoder call per ``encoder_batch``).
``load_sam(model_type, checkpoint, device)``
                                   build a segment-anything model and load a checkpoint with
                                   ``torch.load(map_location="cpu")``, then move it to ``device``
                                   (``stages.devices.resolve_device``).
``build_sam_model(model_type, logit_scale=1.0)``
                                   the architecture with random weights ("vit_h", "vit_l",
                                   "vit_b", or "tiny_test": a few-layer model for tests and
                                   benchmarks without weights; no public checkpoint exists);
                                   ``logit_scale`` multiplies the mask logits (see there).
``sam_generator_defaults()``       the automatic generator's parameters and package defaults.
``resolve_overlaps(masks, areas, scores)``
                                   overlapping binary masks -> one id map (rule below).

Overlap rule (also in docs/entities.md): each pixel belongs to the *smallest* mask covering
it (parts and objects stay whole on top of the larger regions they lie on); between masks of
equal area, to the one with the higher predicted IoU, then higher stability score, then the
earlier generator record. Implemented by painting in order of decreasing area, the winner of
each tie last. A mask left with no pixel is dropped ("covered"). Ids are 1..n in painting
order (1 = the largest surviving mask).
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import numpy as np

from ..devices import resolve_device
from ..errors import ClipError
from .masks import NO_ENTITY, EntityMasks, MaskSource, from_label_map

__all__ = [
    "SamMaskSource",
    "resolve_overlaps",
    "sam_generator_defaults",
    "build_sam_model",
    "scale_mask_logits",
    "load_sam",
    "SAM_MODEL_TYPES",
    "SAM_GENERATORS",
    "SAM_SOURCE_KEYS",
]

SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b", "tiny_test")


def build_sam_model(model_type: str, logit_scale: float = 1.0):
    """A segment-anything ``Sam`` with random weights, built from the package's classes.

    ``logit_scale`` multiplies the last layer of the mask decoder's hypernetwork MLPs, hence
    the mask logits. At random initialisation the logits are about 0.02 in size, so every
    stability score (the IoU of the masks thresholded at +-``stability_score_offset`` = 1)
    is 0 and the generator keeps nothing at its defaults; a scale of about 300 gives logits
    of a few units, as a trained model's, and stability scores spread over 0.6-0.9: the
    tests and benchmarks use that so masks survive the filters. It changes no mask's sign."""
    if model_type not in SAM_MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}; known: {', '.join(SAM_MODEL_TYPES)}")
    model = _build_sam_architecture(model_type)
    if float(logit_scale) != 1.0:
        scale_mask_logits(model, logit_scale)
    return model


def scale_mask_logits(model, factor: float):
    """Multiply a ``Sam``'s mask logits by ``factor`` (the last layer of each hypernetwork
    MLP of its mask decoder), in place; returns the model. For random-weight benchmarks."""
    import torch

    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(float(factor))
            mlp.layers[-1].bias.mul_(float(factor))
    return model


def _build_sam_architecture(model_type: str):
    if model_type != "tiny_test":
        from segment_anything import sam_model_registry

        return sam_model_registry[model_type](checkpoint=None)
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    # A few-layer SAM (128 px input, 8x8 embedding, width 32) for tests and weight-free benchmarks.
    img, patch, dim = 128, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                                      mlp_ratio=2, out_chans=dim, qkv_bias=True, use_rel_pos=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      window_size=0, global_attn_indexes=(0,)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img // patch, img // patch),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def load_sam(model_type: str, checkpoint: str, device: str = "auto"):
    """Build ``model_type`` and load ``checkpoint`` into it: ``torch.load(map_location="cpu")``
    (segment-anything's own loader omits map_location, which fails for GPU-saved files on
    CPU hosts), strict ``load_state_dict``, then ``.to(device)``, eval mode."""
    import torch

    if not checkpoint:
        raise ClipError("backend_unavailable", "the 'sam' mask source needs --sam-checkpoint PATH "
                                               "(sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth)")
    if not os.path.isfile(checkpoint):
        raise ClipError("backend_unavailable", f"SAM checkpoint {checkpoint} does not exist")
    model = build_sam_model(model_type)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ClipError("backend_unavailable", f"SAM checkpoint {os.path.basename(checkpoint)} does not fit model "
                                               f"type {model_type!r}: {str(e).splitlines()[0][:300]}") from None
    return model.to(resolve_device(device, check=False)).eval()


# Parameters of SamAutomaticMaskGenerator we do not expose: the model, explicit point grids,
# and the output mode (we need binary masks).
_SAM_FIXED = ("self", "model", "point_grids", "output_mode")


def sam_generator_defaults() -> dict[str, Any]:
    """SamAutomaticMaskGenerator's parameters with the installed package's defaults."""
    from segment_anything import SamAutomaticMaskGenerator

    sig = inspect.signature(SamAutomaticMaskGenerator.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in _SAM_FIXED}


def resolve_overlaps(masks: Sequence[np.ndarray], areas: Sequence[float] | None = None,
                     scores: Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping binary masks -> one id map (0 = none) and, per input mask, its id (0 when
    it kept no pixel).

    Rule: a pixel belongs to the covering mask with the smallest area (``areas``, default
    the pixel counts); among equal areas to the one with the higher ``scores`` (a tuple per
    mask compared in order, e.g. (predicted_iou, stability_score)), then to the earlier mask.
    Masks are painted in order of decreasing area, each tie's winner last. Surviving masks
    get ids 1..n in painting order.
    """
    n = len(masks)
    if n == 0:
        raise ValueError("resolve_overlaps needs at least one mask (the shape comes from them)")
    ms = [np.asarray(m, bool) for m in masks]
    area = [float(a) for a in areas] if areas is not None else [float(m.sum()) for m in ms]
    sc = [tuple(float(v) for v in s) for s in scores] if scores is not None else [()] * n
    order = sorted(range(n), key=lambda i: (-area[i], sc[i], -i))   # the last painted wins
    paint = np.zeros(ms[0].shape, np.int64)
    for rank, i in enumerate(order, start=1):
        paint[ms[i]] = rank
    present = np.zeros(n + 1, bool)
    present[np.unique(paint)] = True
    new_id = np.zeros(n + 1, np.int64)
    new_id[np.flatnonzero(present[1:]) + 1] = np.arange(1, int(present[1:].sum()) + 1)
    labels = new_id[paint]
    per_mask = np.zeros(n, np.int64)
    for rank, i in enumerate(order, start=1):
        per_mask[i] = new_id[rank]
    return labels, per_mask


SAM_GENERATORS = ("batched", "official")
# Keys of the ``entities.sam`` dict that configure the source, not the generator's parameters.
SAM_SOURCE_KEYS = ("generator", "encoder_batch", "precision")


class SamMaskSource(MaskSource):
    """Automatic SAM masks of the first profile frame.

    ``model_type``: vit_h | vit_l | vit_b (or tiny_test); ``checkpoint``: the weights file;
    ``device``: auto | cuda | cpu; ``batch_size``: prompts per decoder pass
    (``points_per_batch``; default 256 for the batched generator, the package's 64 for the
    official one); ``params``: SamAutomaticMaskGenerator parameters (``sam_generator_defaults()``:
    package defaults), e.g. ``{"points_per_side": 32, "pred_iou_thresh": 0.88}``; the source's
    own keys (``SAM_SOURCE_KEYS``) may be given there too, as the ``entities.sam`` dict does.
    ``generator``: ``batched`` (``stages.entities.sam_amg.BatchedMaskGenerator``: same masks, batched
    and on the device; no ``crop_n_layers``) or ``official`` (segment-anything's
    ``SamAutomaticMaskGenerator``, one image at a time). ``encoder_batch``: first frames per
    image-encoder call in ``masks_many`` (batched only). ``precision``: fp32 | bf16 (bf16
    autocast of the image encoder on CUDA; batched only; not measured for equivalence).

    ``masks_many(items)`` segments the first frames of several clips (items: ``(frames, flow,
    meta, row)``), ``encoder_batch`` at a time; ``masks(...)`` is ``masks_many([...])[0]``.
    """

    name = "sam"
    device_kind = "torch"

    def __init__(self, model_type: str = "vit_b", checkpoint: str | None = None, device: str = "auto",
                 batch_size: int | None = None, params: dict[str, Any] | None = None,
                 generator: str | None = None, encoder_batch: int | None = None, precision: str | None = None):
        try:
            from segment_anything import SamAutomaticMaskGenerator
        except ImportError as e:
            raise ClipError("backend_unavailable", "the 'sam' mask source needs segment-anything "
                                                   f"(pip install segment-anything==1.0): {e}") from None
        defaults = sam_generator_defaults()
        params = dict(params or {})
        own = {k: params.pop(k) for k in SAM_SOURCE_KEYS if k in params}
        def pick(given, key, default):
            return given if given is not None else own[key] if own.get(key) is not None else default

        generator = str(pick(generator, "generator", "batched")).lower()
        if generator not in SAM_GENERATORS:
            raise ValueError(f"unknown SAM generator {generator!r}; choose {' or '.join(SAM_GENERATORS)}")
        encoder_batch = int(pick(encoder_batch, "encoder_batch", 4))
        if encoder_batch < 1:
            raise ValueError(f"entities.sam.encoder_batch must be >= 1, got {encoder_batch}")
        precision = str(pick(precision, "precision", "fp32")).lower()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(f"unknown SAM generator parameter(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(list(defaults) + list(SAM_SOURCE_KEYS))}")
        if batch_size is not None:
            params["points_per_batch"] = int(batch_size)
        if generator == "batched":
            from .sam_amg import BATCHED_DEFAULTS, PRECISIONS

            params = {**BATCHED_DEFAULTS, **params}
            if int(params.get("crop_n_layers", 0) or 0) != 0:
                raise ValueError("entities.sam.crop_n_layers > 0 needs entities.sam.generator: official "
                                 "(the batched generator does not run crops)")
            if precision not in PRECISIONS:
                raise ValueError(f"unknown SAM precision {precision!r}; choose {' or '.join(PRECISIONS)}")
        elif precision != "fp32":
            raise ValueError("entities.sam.precision bf16 needs entities.sam.generator: batched")
        self.params = {**defaults, **params}
        self.generator_name, self.encoder_batch, self.precision = generator, encoder_batch, precision
        self.model_type, self.checkpoint = model_type, checkpoint
        self.model = load_sam(model_type, checkpoint, device)
        self.device = str(next(self.model.parameters()).device)
        if precision == "bf16" and not self.device.startswith("cuda"):
            raise ValueError(f"entities.sam.precision bf16 runs on CUDA only; the model is on {self.device}")
        if generator == "batched":
            from .sam_amg import BatchedMaskGenerator

            self.generator = BatchedMaskGenerator(self.model, encoder_batch=encoder_batch, precision=precision,
                                                  **self.params)
        else:
            self.generator = SamAutomaticMaskGenerator(self.model, output_mode="binary_mask", **self.params)

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name, "model": f"sam_{self.model_type}",
                "checkpoint": os.path.basename(self.checkpoint or ""), "device": self.device,
                "generator": {k: v for k, v in self.params.items()},
                "generator_impl": self.generator_name,
                "encoder_batch": self.encoder_batch if self.generator_name == "batched" else 1,
                "precision": self.precision,
                "overlap_rule": "decreasing area; each pixel to the smallest covering mask"}

    def generate(self, frame: np.ndarray) -> list[dict[str, Any]]:
        """The official generator's records (binary_mask mode) for one RGB uint8 frame, from
        the configured generator."""
        import torch

        if self.generator_name == "batched":
            return self.generator.generate(np.asarray(frame)).records()
        with torch.inference_mode():
            return self.generator.generate(np.ascontiguousarray(frame))

    @staticmethod
    def _entity_masks(labels: np.ndarray, per_mask: np.ndarray, n: int) -> EntityMasks:
        out = from_label_map(labels, "region", sam_masks=n)
        out.dropped["covered"] = int((per_mask == 0).sum())
        return out

    @classmethod
    def from_records(cls, recs: list[dict[str, Any]], shape) -> EntityMasks:
        """The official generator's records of a frame of ``shape`` -> EntityMasks (overlap rule)."""
        if not recs:
            return cls._empty(shape)
        labels, per_mask = resolve_overlaps([r["segmentation"] for r in recs], [r["area"] for r in recs],
                                            [(r.get("predicted_iou", 0.0), r.get("stability_score", 0.0)) for r in recs])
        return cls._entity_masks(labels, per_mask, len(recs))

    @staticmethod
    def _empty(shape) -> EntityMasks:
        return EntityMasks(np.full(shape[:2], NO_ENTITY, np.int64), np.zeros(0, np.int64), [],
                           {"covered": 0}, {"sam_masks": 0})

    def masks_many(self, items: Sequence[tuple]) -> list[EntityMasks]:
        """Candidate entities of several clips: ``items`` are ``(frames, flow, meta, row)``
        tuples (only ``frames[0]`` is used). The batched generator embeds the first frames
        ``encoder_batch`` at a time, then decodes each; the official one goes frame by frame."""
        frames0 = [np.asarray(it[0][0]) for it in items]
        out: list[EntityMasks] = []
        if self.generator_name == "official":
            return [self.from_records(self.generate(f), f.shape) for f in frames0]
        from .sam_amg import paint_id_map

        for f, res in zip(frames0, self.generator.iter_generate(frames0)):
            if len(res) == 0:
                out.append(self._empty(f.shape))
                continue
            labels, per_mask = paint_id_map(res.masks, res.areas().tolist(), res.predicted_iou.tolist(),
                                            res.stability_score.tolist())
            out.append(self._entity_masks(labels, per_mask, len(res)))
        return out

    def masks(self, frames, flow, meta, row, backward_flow=None) -> EntityMasks:
        return self.masks_many([(frames, flow, meta, row)])[0]

