"""Entity mask sources: one id map of the first profile frame, from ground truth, SAM or motion.

Public API
----------
``MaskSource``                     the interface: ``masks(frames, flow, meta, row) -> EntityMasks``
                                   and ``describe() -> dict`` (stored in the sample meta).
``EntityMasks``                    ``id_map`` (H, W) int64 (``NO_ENTITY`` = -1 where no entity),
                                   ``ids`` (K,) int64 candidate ids, ``kinds`` (K,) str
                                   ("thing" | "stuff" | "region"), ``dropped`` counts by rule,
                                   ``info`` (per-clip provenance).
``GtMaskSource(void_ids=(0,), keep_background=True, stuff_max_id=124)``
                                   the dataset's per-frame id maps (VIPSeg panomasks), mapped to
                                   the profile geometry by nearest neighbour.
``SamMaskSource(model_type="vit_b", checkpoint=PATH, device="auto", batch_size=None, params=None,
              generator="batched", encoder_batch=4, precision="fp32")``
                                   automatic SAM masks of frame 0: ``stages.sam_amg``'s batched
                                   generator (the same masks as segment-anything's) or the
                                   official ``SamAutomaticMaskGenerator``; ``masks_many(items)``
                                   for several clips (one encoder call per ``encoder_batch``).
``MotionMaskSource(**params)``     CPU, no weights: superpixels of colour + flow, merged.
``load_sam(model_type, checkpoint, device)``
                                   build a segment-anything model and load a checkpoint with
                                   ``torch.load(map_location="cpu")``, then move it to ``device``.
``build_sam_model(model_type, logit_scale=1.0)``
                                   the architecture with random weights ("vit_h", "vit_l",
                                   "vit_b", or "tiny_test": a few-layer model for tests and
                                   benchmarks without weights; no public checkpoint exists);
                                   ``logit_scale`` multiplies the mask logits (see there).
``sam_generator_defaults()``       the automatic generator's parameters and package defaults.
``resolve_overlaps(masks, areas, scores)``
                                   overlapping binary masks -> one id map (rule below).
``segment_motion(frame, flow0, backward0=None, ...)``
                                   the motion segmentation (pure function).
``map_ids_to_profile(ids_src, meta)`` a source-size id map -> profile geometry (nearest).
``make_mask_source(name, **options)`` "gt" | "sam" | "motion".

Rules (also in docs/entities.md)
--------------------------------
* gt: every id present in frame 0 is a candidate entity; ids in ``void_ids`` never are
  (VIPSeg: 0 = VOID). VIPSeg ids are ``category`` for "stuff" (1..124) and
  ``category * 100 + instance`` for "thing"; ids ``1..stuff_max_id`` are stuff
  (background: sky, road, wall...). ``keep_background=False`` drops them.
* sam overlap rule: each pixel belongs to the *smallest* mask covering it (parts and
  objects stay whole on top of the larger regions they lie on); between masks of equal area,
  to the one with the higher predicted IoU, then higher stability score, then the earlier
  generator record. Implemented by painting in order of decreasing area, the winner of each
  tie last. A mask left with no pixel is dropped ("covered"). Ids are 1..n in painting
  order (1 = the largest surviving mask).
* motion: see ``segment_motion``.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ClipError

__all__ = [
    "NO_ENTITY",
    "EntityMasks",
    "MaskSource",
    "GtMaskSource",
    "SamMaskSource",
    "MotionMaskSource",
    "MASK_SOURCES",
    "make_mask_source",
    "map_ids_to_profile",
    "read_id_map",
    "resolve_overlaps",
    "segment_motion",
    "fb_reliability",
    "MOTION_DEFAULTS",
    "sam_generator_defaults",
    "build_sam_model",
    "scale_mask_logits",
    "load_sam",
    "SAM_MODEL_TYPES",
    "SAM_GENERATORS",
    "SAM_SOURCE_KEYS",
]

NO_ENTITY = -1
# VIPSeg: ids 1..124 are stuff categories, larger ids are category * 100 + instance.
VIPSEG_STUFF_MAX_ID = 124
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")


@dataclass
class EntityMasks:
    id_map: np.ndarray                     # (H, W) int64, NO_ENTITY where no candidate
    ids: np.ndarray                        # (K,) int64 candidate ids, as they appear in id_map
    kinds: list[str] = field(default_factory=list)   # per id: thing | stuff | region
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class MaskSource:
    """Interface: one instance per worker (models loaded once), ``masks`` per clip."""

    name = "base"
    needs_backward_flow = False   # True: masks() wants the backward flow (backward_flow=...)

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name}

    def masks(self, frames: np.ndarray, flow: np.ndarray | None, meta: dict, row: dict,
              backward_flow: np.ndarray | None = None) -> EntityMasks:
        """frames (L, H, W, 3) uint8 RGB, flow (L-1, 2, H, W), the sample meta (geometry),
        the manifest row -> candidate entities on frame 0."""
        raise NotImplementedError


def _from_label_map(labels: np.ndarray, kind: str = "region", **info: Any) -> EntityMasks:
    """A 0-based-free label map (0 = none, 1..n regions) -> EntityMasks."""
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    id_map = labels.astype(np.int64)
    id_map[labels == 0] = NO_ENTITY
    return EntityMasks(id_map, ids, [kind] * ids.size, {}, dict(info))


# --------------------------------------------------------------------------- ground truth
def read_id_map(path: str) -> np.ndarray:
    """A single-channel id map (8- or 16-bit PNG, as VIPSeg's panomasks) -> (H, W) int64."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ClipError("unreadable", f"mask {os.path.basename(path)} does not decode")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ClipError("invalid_input", f"mask {os.path.basename(path)} has {img.shape[2]} channels; "
                                         "a single-channel id map is expected")
    if not np.issubdtype(img.dtype, np.integer):
        raise ClipError("invalid_input", f"mask {os.path.basename(path)} is {img.dtype}, not an integer id map")
    return img.astype(np.int64)


def map_ids_to_profile(ids_src: np.ndarray, meta: dict) -> np.ndarray:
    """Map a source-size id map to the profile frame with the frames' geometry (from meta).

    Profile pixel (x, y) is the source point ``((x + crop_x + 0.5) / sx - 0.5, ...)``; it takes
    the id of the source pixel whose center is nearest (``floor((x + crop_x + 0.5) / sx)``,
    clipped to the image): nearest neighbour, no id is ever blended or invented.
    """
    h_src, w_src = ids_src.shape
    sw, sh = (int(v) for v in meta["source_size"])
    if (w_src, h_src) != (sw, sh):
        raise ClipError("decode_error", f"mask is {w_src}x{h_src}, the frames are {sw}x{sh}")
    sx, sy = (float(v) for v in meta["resize_scale"])
    cx, cy = (int(v) for v in meta["crop_offset"])
    h = int(meta["profile"]["height"])
    w = int(meta["profile"]["width"])
    xs = np.clip(np.floor((np.arange(w) + cx + 0.5) / sx), 0, w_src - 1).astype(np.intp)
    ys = np.clip(np.floor((np.arange(h) + cy + 0.5) / sy), 0, h_src - 1).astype(np.intp)
    return ids_src[ys[:, None], xs[None, :]]


def _mask_file(folder: str, meta: dict) -> str:
    if not folder or not os.path.isdir(folder):
        raise ClipError("missing_masks", f"mask folder {folder!r} does not exist")
    names = [n for n in os.listdir(folder) if n.lower().endswith(MASK_EXTS)]
    by_stem = {os.path.splitext(n)[0]: n for n in names}
    frame_names = meta.get("source_frame_names")
    if frame_names:
        stem = os.path.splitext(frame_names[0])[0]
        if stem not in by_stem:
            raise ClipError("missing_masks", f"no mask for frame {frame_names[0]} in {folder}")
        return os.path.join(folder, by_stem[stem])
    # A video file with a mask folder: the i-th mask in numeric order is frame i.
    stems = sorted((s for s in by_stem if s.isdigit()), key=int)
    idx = int(meta["source_frame_indices"][0])
    if idx >= len(stems):
        raise ClipError("missing_masks", f"no mask for frame index {idx} in {folder} ({len(stems)} masks)")
    return os.path.join(folder, by_stem[stems[idx]])


class GtMaskSource(MaskSource):
    """The dataset's own first-frame ids (``row["masks"]``: a folder of per-frame id maps)."""

    name = "gt"

    def __init__(self, void_ids: Sequence[int] = (0,), keep_background: bool = True,
                 stuff_max_id: int = VIPSEG_STUFF_MAX_ID):
        self.void_ids = tuple(int(v) for v in (void_ids or ()))
        self.keep_background = bool(keep_background)
        self.stuff_max_id = int(stuff_max_id)

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name, "model": None, "void_ids": list(self.void_ids),
                "keep_background": self.keep_background, "stuff_ids": f"1..{self.stuff_max_id}"}

    def kind(self, v: int) -> str:
        return "stuff" if 1 <= v <= self.stuff_max_id else "thing"

    def masks(self, frames, flow, meta, row, backward_flow=None) -> EntityMasks:
        path = _mask_file(row.get("masks") or "", meta)
        ids_p = map_ids_to_profile(read_id_map(path), meta)
        present = np.unique(ids_p)
        void = np.isin(present, self.void_ids)
        kinds = np.array([self.kind(int(v)) for v in present], dtype=object)
        background = (kinds == "stuff") & ~void & (not self.keep_background)
        keep = present[~void & ~background]
        id_map = np.where(np.isin(ids_p, keep), ids_p, NO_ENTITY)
        return EntityMasks(id_map.astype(np.int64), keep.astype(np.int64), [self.kind(int(v)) for v in keep],
                           {"void": int(void.sum()), "background": int(background.sum())},
                           {"mask_file": os.path.basename(path)})


# --------------------------------------------------------------------------- SAM
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


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


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
    return model.to(_resolve_device(device)).eval()


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
    ``generator``: ``batched`` (``stages.sam_amg.BatchedMaskGenerator``: same masks, batched
    and on the device; no ``crop_n_layers``) or ``official`` (segment-anything's
    ``SamAutomaticMaskGenerator``, one image at a time). ``encoder_batch``: first frames per
    image-encoder call in ``masks_many`` (batched only). ``precision``: fp32 | bf16 (bf16
    autocast of the image encoder on CUDA; batched only; not measured for equivalence).

    ``masks_many(items)`` segments the first frames of several clips (items: ``(frames, flow,
    meta, row)``), ``encoder_batch`` at a time; ``masks(...)`` is ``masks_many([...])[0]``.
    """

    name = "sam"

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
        out = _from_label_map(labels, "region", sam_masks=n)
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


# --------------------------------------------------------------------------- motion
MOTION_DEFAULTS: dict[str, Any] = {
    "cell": 16,            # superpixel grid step (px)
    "iterations": 3,       # superpixel (k-means) iterations
    "color_weight": 10.0,  # superpixels: Lab distance that counts as one grid step
    "flow_weight": 0.5,    # superpixels: flow difference (px) that counts as one grid step
    "merge_color": 30.0,   # merging: Lab distance scale
    "merge_flow": 2.0,     # merging: flow difference scale (px/frame)
    "merge_threshold": 1.0,  # merge adjacent regions while their scaled distance is below this
    "min_region": 0.003,   # regions smaller than this fraction of the frame are merged into their closest neighbour
    "fb_threshold": 1.5,   # flow is trusted where |F(p) + B(p + F(p))| < this (px), when B is given
    "min_reliable": 0.25,  # a region's flow counts in merging when this fraction of its pixels is trusted
}


def _lab(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def fb_reliability(flow0: np.ndarray, backward0: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: forward-backward consistent pixels, ``|F(p) + B(p + F(p))| < threshold``
    (bilinear sampling of B; a target outside the frame is unreliable)."""
    import cv2

    h, w = flow0.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + flow0[0], ys + flow0[1]
    bx = cv2.remap(np.ascontiguousarray(backward0[0], np.float32), tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    by = cv2.remap(np.ascontiguousarray(backward0[1], np.float32), tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return inside & ((flow0[0] + bx) ** 2 + (flow0[1] + by) ** 2 < float(threshold) ** 2)


def _superpixels(color: np.ndarray, flow: np.ndarray, weight: np.ndarray, cell: int, iterations: int) -> np.ndarray:
    """SLIC-style clustering. ``color`` (H, W, 3) and ``flow`` (H, W, 2) are already scaled so
    that one unit weighs as one grid step; the flow term of a pixel counts only where
    ``weight`` (H, W) is 1 (trusted flow), and seeds average the flow of trusted pixels.
    Each pixel picks among the 3x3 seeds around its grid cell (the first of equal ones).

    The squared distance of pixel x to seed s, ``|xb - sb|^2 + w |xf - sf|^2``, is ranked as
    ``|sb|^2 + w |sf|^2 - 2 (xb.sb + w xf.sf)`` (the pixel's own norm is the same for all its
    candidates): one batched product per grid cell of its pixels by its 9 candidate seeds."""
    h, w = color.shape[:2]
    ny, nx = max(1, -(-h // cell)), max(1, -(-w // cell))
    ph, pw = ny * cell, nx * cell                                   # padded to whole cells
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.concatenate([color, np.stack([xs / cell, ys / cell], -1)], -1).astype(np.float64)
    fl = flow.astype(np.float64)
    wt = weight.astype(np.float64)
    k = ny * nx
    lab0 = (np.minimum(ys // cell, ny - 1) * nx + np.minimum(xs // cell, nx - 1)).ravel()

    def cells(a: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> (ny * nx, cell * cell, ...), padding with zeros."""
        pad = np.zeros((ph, pw) + a.shape[2:], a.dtype)
        pad[:h, :w] = a
        return pad.reshape((ny, cell, nx, cell) + a.shape[2:]).swapaxes(1, 2).reshape((k, cell * cell) + a.shape[2:])

    # per-pixel features [base, w * flow, 1, w] grouped by cell: their product with a seed's
    # [-2 sb, -2 sf, |sb|^2, |sf|^2] is the distance ranked
    xc = cells(np.concatenate([base, fl * wt[..., None], np.ones((h, w, 1)), wt[..., None]], -1))  # (k, c2, 9)
    # the 9 candidate seeds of each cell (-1: outside the grid)
    gy, gx = np.divmod(np.arange(k), nx)
    cand = np.full((k, 9), -1, np.int64)
    for n, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        cy, cx = gy + dy, gx + dx
        ok = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
        cand[ok, n] = (cy * nx + cx)[ok]
    valid = cand >= 0
    cj = np.maximum(cand, 0)
    flat_b = base.reshape(-1, 5)
    flat_f = fl.reshape(-1, 2)
    flat_w = wt.reshape(-1)

    def means(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.bincount(labels, minlength=k)
        b = np.stack([np.bincount(labels, weights=flat_b[:, j], minlength=k) for j in range(5)], 1)
        wsum = np.bincount(labels, weights=flat_w, minlength=k)
        f = np.stack([np.bincount(labels, weights=flat_f[:, j] * flat_w, minlength=k) for j in range(2)], 1)
        return b / np.maximum(counts, 1)[:, None], f / np.maximum(wsum, 1e-9)[:, None], counts

    sb, sf, _ = means(lab0)
    labels = lab0
    for _ in range(iterations):
        seeds = np.concatenate([-2.0 * sb, -2.0 * sf, (sb ** 2).sum(1, keepdims=True),
                                (sf ** 2).sum(1, keepdims=True)], 1)[cj]   # (k, 9 candidates, 9)
        seeds[:, :, 7][~valid] = np.inf                             # never pick a seed off the grid
        # The zero padding past the frame edge times an off-grid seed's inf is NaN: those
        # padded pixels are cut off below, so the NaN is expected there and nowhere else.
        with np.errstate(invalid="ignore"):
            d = np.matmul(xc, seeds.transpose(0, 2, 1))             # (k, c2, 9 candidates)
        pick = np.take_along_axis(cand[:, None, :], d.argmin(2)[:, :, None], 2)[:, :, 0]   # (k, c2)
        full = pick.reshape(ny, nx, cell, cell).swapaxes(1, 2).reshape(ph, pw)
        labels = full[:h, :w].ravel()
        mb, mf, counts = means(labels)
        live = (counts > 0)[:, None]
        sb, sf = np.where(live, mb, sb), np.where(live, mf, sf)
    return labels.reshape(h, w)


def _connected_fragments(labels: np.ndarray) -> np.ndarray:
    """Split every label into its 4-connected components: -> 0..n-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = labels.shape
    idx = np.arange(h * w).reshape(h, w)
    a = [idx[:, :-1][labels[:, :-1] == labels[:, 1:]], idx[:-1][labels[:-1] == labels[1:]]]
    b = [idx[:, 1:][labels[:, :-1] == labels[:, 1:]], idx[1:][labels[:-1] == labels[1:]]]
    a, b = np.concatenate(a), np.concatenate(b)
    g = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(h * w, h * w))
    _, comp = connected_components(g, directed=False)
    return comp.reshape(h, w)


def _pair_flow_term(pairs: np.ndarray, fs: np.ndarray, ws: np.ndarray, sz: np.ndarray,
                    min_reliable: float) -> np.ndarray:
    """Squared flow distance of each pair, 0 unless both regions have reliable flow."""
    a, b = pairs[:, 0], pairs[:, 1]
    ok = (ws[a] > 0) & (ws[b] > 0) & (ws[a] >= min_reliable * sz[a]) & (ws[b] >= min_reliable * sz[b])
    out = np.zeros(len(pairs))
    if ok.any():
        a, b = a[ok], b[ok]
        out[ok] = ((fs[a] / ws[a][:, None] - fs[b] / ws[b][:, None]) ** 2).sum(1)
    return out


def _merge_regions(frag: np.ndarray, color: np.ndarray, flow: np.ndarray, weight: np.ndarray,
                   threshold: float, min_region: int, min_reliable: float) -> np.ndarray:
    """Agglomerative merging of adjacent fragments by the distance of their mean features
    (already scaled): sqrt(|dcolor|^2 + |dflow|^2), where the flow term counts only when both
    regions have trusted flow on at least ``min_reliable`` of their pixels (their flow mean is
    over trusted pixels). Repeatedly merge the closest adjacent pair while its distance is
    below ``threshold`` (means updated after each merge), then merge every region smaller
    than ``min_region`` px into its closest neighbour. Returns labels 1..n numbered by
    decreasing area (ties: first pixel in row-major order)."""
    n = int(frag.max()) + 1
    flat = frag.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    wt = weight.reshape(-1).astype(np.float64)
    csum = np.stack([np.bincount(flat, weights=color.reshape(-1, 3)[:, j].astype(np.float64), minlength=n)
                     for j in range(3)], 1)
    fsum = np.stack([np.bincount(flat, weights=flow.reshape(-1, 2)[:, j].astype(np.float64) * wt, minlength=n)
                     for j in range(2)], 1)
    wsum = np.bincount(flat, weights=wt, minlength=n)
    pairs = np.concatenate([np.stack([frag[:, :-1].ravel(), frag[:, 1:].ravel()], 1),
                            np.stack([frag[:-1].ravel(), frag[1:].ravel()], 1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1)
    key = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])   # = np.unique(pairs, axis=0), faster
    pairs = np.stack([key // n, key % n], 1)
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for i, j in pairs:
        nbrs[int(i)].add(int(j))
        nbrs[int(j)].add(int(i))
    parent = list(range(n))
    sz, ws, cs, fs = size, wsum, csum, fsum   # region sums, updated in place on merges

    SMALL = 32  # up to this many neighbours, plain Python is faster than numpy
    # The same sums as Python lists: a region with few neighbours is searched faster in plain
    # Python (same operations in the same order as ``dists_np``, so the same floats).
    szl, wsl, csl, fsl = sz.tolist(), ws.tolist(), cs.tolist(), fs.tolist()

    def dists_py(i: int, ks: list[int]) -> list[float]:
        """Distances of region ``i`` to regions ``ks`` (few), in plain Python."""
        si, wi = szl[i], wsl[i]
        ci, fi = csl[i], fsl[i]
        c0, c1, c2 = ci[0] / si, ci[1] / si, ci[2] / si
        rel_i = wi > 0 and wi >= min_reliable * si
        out = []
        for k in ks:
            sk, wk = szl[k], wsl[k]
            ck = csl[k]
            a, b, c = c0 - ck[0] / sk, c1 - ck[1] / sk, c2 - ck[2] / sk
            d2 = a * a + b * b + c * c
            if rel_i and wk > 0 and wk >= min_reliable * sk:
                fk = fsl[k]
                a, b = fi[0] / wi - fk[0] / wk, fi[1] / wi - fk[1] / wk
                d2 += a * a + b * b
            out.append(math.sqrt(d2))
        return out

    def dists_np(i: int, ks: np.ndarray) -> np.ndarray:
        """Distances of region ``i`` to regions ``ks`` (many), vectorised."""
        si, sk = sz[i], sz[ks]
        d2 = ((cs[i] / si - cs[ks] / sk[:, None]) ** 2).sum(1)
        wi, wk = ws[i], ws[ks]
        if wi > 0 and wi >= min_reliable * si:
            both = (wk > 0) & (wk >= min_reliable * sk)
            if both.any():
                fd = fs[i] / wi - fs[ks[both]] / wk[both][:, None]
                d2[both] += (fd ** 2).sum(1)
        return np.sqrt(d2)

    def merge(i: int, j: int) -> int:
        """Merge j into i (both roots); returns i."""
        sz[i] += sz[j]
        ws[i] += ws[j]
        cs[i] += cs[j]
        fs[i] += fs[j]
        szl[i], wsl[i] = float(sz[i]), float(ws[i])
        csl[i], fsl[i] = cs[i].tolist(), fs[i].tolist()
        parent[j] = i
        for k in nbrs[j]:
            if k != i:
                nbrs[k].discard(j)
                nbrs[k].add(i)
                nbrs[i].add(k)
        nbrs[i].discard(j)
        nbrs[j] = set()
        return i

    # Closest pair first: every region keeps its closest neighbour under the threshold
    # (best_n, at best_d; inf: none), so the closest pair overall is an argmin; after a merge
    # only the merged region and the neighbours that pointed at its parts are searched again.
    best_d = np.full(n, np.inf)
    best_n = np.full(n, -1, np.int64)

    def search(i: int) -> tuple[list[int], list[float] | np.ndarray, int]:
        """Region ``i``'s neighbours (by index), their distances and the position of the
        closest (the first, i.e. lowest index, of equals; -1 without neighbours)."""
        ks = sorted(nbrs[i])
        if len(ks) <= SMALL:
            ds = dists_py(i, ks)
            return ks, ds, (min(range(len(ds)), key=ds.__getitem__) if ds else -1)
        ds = dists_np(i, np.array(ks, np.int64))
        return ks, ds, int(np.argmin(ds))

    def refresh(i: int) -> tuple[list[int], list[float] | np.ndarray]:
        ks, ds, m = search(i)
        best_d[i], best_n[i] = (ds[m], ks[m]) if m >= 0 and ds[m] < threshold else (np.inf, -1)
        return ks, ds

    if len(pairs):
        d0 = np.sqrt(((cs[pairs[:, 0]] / sz[pairs[:, 0], None] - cs[pairs[:, 1]] / sz[pairs[:, 1], None]) ** 2).sum(1)
                     + _pair_flow_term(pairs, fs, ws, sz, min_reliable))
        both = np.concatenate([pairs, pairs[:, ::-1]])
        dd = np.concatenate([d0, d0])
        order = np.lexsort((both[:, 1], dd, both[:, 0]))        # per region: closest, then lowest index
        first = order[np.r_[True, both[order[1:], 0] != both[order[:-1], 0]]]
        near = dd[first] < threshold
        best_d[both[first[near], 0]] = dd[first[near]]
        best_n[both[first[near], 0]] = both[first[near], 1]
    # A region whose closest neighbour moved away keeps its old distance as a lower bound
    # (``stale``) and is searched again only when that bound is the smallest of all.
    stale = np.zeros(n, bool)
    while True:
        i = int(np.argmin(best_d))
        if not best_d[i] < threshold:
            break
        if stale[i]:
            refresh(i)
            stale[i] = False
            continue
        j = int(best_n[i])
        merge(i, j)
        best_d[j], best_n[j], stale[j] = np.inf, -1, False
        ks, ds = refresh(i)
        if ks:
            ks, ds = np.array(ks, np.int64), np.asarray(ds, np.float64)
            bd, bn = best_d[ks], best_n[ks]
            pointed = (bn == i) | (bn == j)
            ok = ds < threshold
            # closer than the (exact or lower-bound) best: the new best, exact
            better = ok & ((ds < bd) | ((ds == bd) & ((i < bn) | pointed)))
            best_d[ks[better]] = ds[better]
            best_n[ks[better]] = i
            stale[ks[better]] = False
            # pointed at a part of the merged region that is now farther: search again later
            moved = pointed & ~better
            best_n[ks[moved]] = i
            stale[ks[moved]] = True
    # Small leftovers: smallest first, into the closest neighbour (ties: lower index).
    roots = [i for i in range(n) if parent[i] == i]
    for i in sorted(roots, key=lambda r: (sz[r], r)):
        if parent[i] != i or sz[i] >= min_region or not nbrs[i]:
            continue
        ks, _, m = search(i)
        merge(ks[m], i)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    root = np.array([find(i) for i in range(n)])
    lab = root[frag]
    uniq, first, counts = np.unique(lab.ravel(), return_index=True, return_counts=True)
    order = sorted(range(uniq.size), key=lambda k: (-counts[k], first[k]))
    lut = np.zeros(n, np.int64)
    lut[uniq[order]] = np.arange(1, uniq.size + 1)
    return lut[lab]


def segment_motion(frame: np.ndarray, flow0: np.ndarray, backward0: np.ndarray | None = None,
                   **params: Any) -> np.ndarray:
    """Segment a frame into regions that are coherent in colour and in motion.

    frame ``(H, W, 3)`` uint8 RGB, flow0 ``(2, H, W)`` its forward flow to the next frame,
    backward0 ``(2, H, W)`` (optional) the backward flow from the next frame to it.
    Returns labels ``(H, W)`` int64 in 1..n (every pixel labelled; 1 = largest region).

    Method (parameters in ``MOTION_DEFAULTS``):
    1. Features per pixel: CIE Lab colour (OpenCV, L in 0..100) of the frame after a 5x5
       Gaussian blur, and the flow after a 5x5 median filter. Trusted flow: with
       ``backward0``, pixels whose forward-backward error ``|F(p) + B(p + F(p))|`` is under
       ``fb_threshold`` px (the flow around a moving object's boundary, where the estimator
       smears the object's motion onto the background, fails this test); without it, all.
    2. Superpixels: SLIC-style k-means on (Lab / color_weight, flow / flow_weight,
       position / cell), the flow term only for trusted pixels, seeds on a ``cell`` grid,
       ``iterations`` rounds, each pixel choosing among the 3x3 nearest seeds; every
       superpixel is then split into its 4-connected pieces.
    3. Merging: adjacent pieces are merged greedily, closest first, while the distance of
       their means sqrt((dLab / merge_color)^2 + (dflow / merge_flow)^2) is below
       ``merge_threshold`` (region flow = mean over trusted pixels; the flow term is left out
       unless both regions have at least ``min_reliable`` trusted pixels); means are updated
       after each merge; regions smaller than ``min_region`` (a fraction of the frame area)
       are finally merged into their closest neighbour.
    So two regions stay apart when they differ clearly in colour *or* in trusted motion: a
    moving object of the background's colour is separated by its flow, a still object by its
    colour. Deterministic for its inputs.
    """
    import cv2

    p = {**MOTION_DEFAULTS, **params}
    unknown = sorted(set(params) - set(MOTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown motion segmentation parameter(s) {', '.join(unknown)}; valid: {', '.join(MOTION_DEFAULTS)}")
    frame = np.asarray(frame)
    flow0 = np.asarray(flow0, np.float32)
    if frame.ndim != 3 or flow0.shape != (2,) + frame.shape[:2]:
        raise ValueError(f"frame (H, W, 3) and flow (2, H, W) expected, got {frame.shape} and {flow0.shape}")
    if backward0 is not None:
        backward0 = np.asarray(backward0, np.float32)
        if backward0.shape != flow0.shape:
            raise ValueError(f"backward flow must be {flow0.shape}, got {backward0.shape}")
        trusted = fb_reliability(flow0, backward0, float(p["fb_threshold"]))
    else:
        trusted = np.ones(frame.shape[:2], bool)
    lab = _lab(cv2.GaussianBlur(frame, (5, 5), 0))
    fl = np.stack([cv2.medianBlur(np.ascontiguousarray(f), 5) for f in flow0], -1)
    cell = int(p["cell"])
    sp = _superpixels(lab / float(p["color_weight"]), fl / float(p["flow_weight"]), trusted, cell, int(p["iterations"]))
    frag = _connected_fragments(sp)
    min_px = int(round(float(p["min_region"]) * frame.shape[0] * frame.shape[1]))
    return _merge_regions(frag, lab / float(p["merge_color"]), fl / float(p["merge_flow"]), trusted,
                          float(p["merge_threshold"]), min_px, float(p["min_reliable"]))


class MotionMaskSource(MaskSource):
    """Regions of frame 0 coherent in colour and flow (``segment_motion``): CPU, no weights.

    Provenance: ``meta.entities.mask_source == "motion"`` and ``model == "motion-seg-v1"``;
    these are not SAM masks and not object masks (one object may span several regions, one
    region several touching objects of like colour and motion)."""

    name = "motion"
    MODEL = "motion-seg-v1"

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(MOTION_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown motion segmentation parameter(s) {', '.join(unknown)}")
        self.params = {**MOTION_DEFAULTS, **params}

    def describe(self) -> dict[str, Any]:
        return {"mask_source": self.name, "model": self.MODEL, "params": dict(self.params),
                "note": "colour+flow regions, not SAM"}

    needs_backward_flow = True

    def masks(self, frames, flow, meta, row, backward_flow=None) -> EntityMasks:
        if flow is None or len(flow) == 0:
            raise ValueError("the motion mask source needs the forward flow")
        back0 = None if backward_flow is None else np.asarray(backward_flow[0])
        labels = segment_motion(np.asarray(frames[0]), np.asarray(flow[0]), back0, **self.params)
        return _from_label_map(labels, "region", fb_checked=back0 is not None)


# --------------------------------------------------------------------------- registry
def make_mask_source(name: str, **options: Any) -> MaskSource:
    """``gt`` (void_ids, keep_background, stuff_max_id) | ``sam`` (model_type, checkpoint,
    device, batch_size, params) | ``motion`` (segment_motion parameters)."""
    key = str(name).lower()
    if key == "gt":
        return GtMaskSource(**options)
    if key == "sam":
        return SamMaskSource(**options)
    if key == "motion":
        return MotionMaskSource(**options)
    raise ValueError(f"unknown mask source {name!r}; known: {', '.join(MASK_SOURCES)}")


MASK_SOURCES = ("gt", "sam", "motion")
