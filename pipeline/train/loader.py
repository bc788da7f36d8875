"""The trainers' side: ``make_dataset(url, ...)`` turns shards into model-ready tensors.

``url`` may be a tar path, a brace pattern (``out/x-{000000..000009}.tar``), a list of
those, or an output folder (its ``index.json`` lists the shards); ``pipeline.shards.expand_urls``
resolves it. ``read_samples(url)`` (``pipeline.train.sources``) gives the decoded samples
(numpy arrays, see ``schemas.sample``) without any of the below.

``make_dataset`` yields the DragNUWA and/or DragEntity conditions (``pipeline.train.conditions``),
consistent augmentation (``pipeline.train.augment``), condition dropout, node/worker splitting
with an exactly-once finite epoch or an infinite resampled mode (``pipeline.train.sources``).
See its docstring and docs/trainers.md.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import webdataset as wds

from pipeline import storage
from pipeline.shards import expand_urls
from pipeline.train.sources import SampleLimit, SampleShuffle, ShardSource, SourceState, shard_samples, world_info
from schemas.sample import ANCHORS_MEMBER, ENTITIES_MEMBER, FLOW_MEMBER, decode_sample
from stages.trajectories import draw_trajectories

UNVERIFIED_ANCHORS = ("error", "visible", "skip")

# torch (and the torch-only modules pipeline.train.augment / pipeline.train.conditions) are imported where
# used, so that read_samples works without torch installed (torch is the "torch" extra).

log = logging.getLogger(__name__)


def usable_spans(reliable: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """The frames of each anchor the trainer may use: ``(A, L)`` bool, the prefix of frames up
    to (not including) the first frame that is unreliable or, when ``inside`` is given,
    outside the training crop. A drawn trajectory ends there: nothing past it is written."""
    ok = np.asarray(reliable, dtype=bool)
    if inside is not None:
        ok = ok & np.asarray(inside, dtype=bool)
    return np.logical_and.accumulate(ok, axis=1) if ok.size else ok.copy()


# =====================================================================================
# make_dataset: model-ready tensors
# =====================================================================================
CONDITIONS = ("dragnuwa", "dragentity")


@dataclass(frozen=True)
class Dropout:
    """Condition dropout probabilities (per sample, independent). A dropped text becomes the
    empty caption; a dropped image zeroes ``image``; a dropped trajectory zeroes the motion
    conditions (``flow``, ``trajectory_map``, ``entity_gaussian``, ``entity_index``). The
    ``drop_*`` flags in each sample say what was dropped. ``Dropout.paper()``: DragNUWA's
    Table 1 (text 0.1, image 0.1, trajectory 0.5; its Sec. 4.2 text says 0.1 for all three)."""

    text: float = 0.0
    image: float = 0.0
    trajectory: float = 0.0

    @classmethod
    def paper(cls) -> "Dropout":
        return cls(0.1, 0.1, 0.5)

    def __post_init__(self) -> None:
        for name in ("text", "image", "trajectory"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"dropout {name} must be a probability, got {getattr(self, name)!r}")


def _resolve_dropout(spec) -> Dropout:
    if spec is None or spec is False:
        return Dropout()
    if isinstance(spec, Dropout):
        return spec
    if spec == "paper" or spec is True:
        return Dropout.paper()
    if isinstance(spec, Mapping):
        return Dropout(**dict(spec))
    if isinstance(spec, (tuple, list)):
        return Dropout(*spec)
    raise ValueError(f"cannot make a condition dropout from {spec!r} (use 'paper', a dict or Dropout)")


@dataclass(frozen=True)
class LoaderOptions:
    """Everything ``make_dataset`` was asked for (see its docstring for each field)."""

    conditions: tuple[str, ...]
    size: tuple[int, int] | None
    augment: Any
    gaussian: Any
    filter_method: str
    gaussian_scale: str | float
    max_trajectories: int
    max_entities: int
    entity_sigma_ratio: float
    loss_mask: str
    missing_entities: str
    dropout: Dropout
    keep_meta: bool
    on_error: str
    unverified_anchors: str = "error"


class _Builder:
    """Raw tar members -> model-ready tensors (see ``make_dataset``)."""

    def __init__(self, opts: LoaderOptions, state: SourceState):
        self.opts, self.state = opts, state

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        for raw in src:
            key = raw.get("__key__", "?")
            try:
                out = self.build(raw)
            except Exception as exn:  # noqa: BLE001 - policy below
                if self.opts.on_error == "skip":
                    warnings.warn(f"make_dataset: skipping sample {key!r} of {raw.get('__url__')}: {exn!r}")
                    continue
                raise ValueError(f"sample {key!r} of {raw.get('__url__')}: {exn}") from exn
            if out is not None:
                yield out

    def build(self, raw: dict) -> dict | None:
        import torch

        from pipeline.train.augment import CropFlip, color_jitter, resolve_augment, sample_crop_flip
        from pipeline.train.conditions import dense_flow_condition, trajectory_map

        o = self.opts
        key = raw["__key__"]
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        want_nuwa = "dragnuwa" in o.conditions
        want_entity = "dragentity" in o.conditions
        if want_entity and ENTITIES_MEMBER not in members:
            if o.missing_entities == "skip":
                return None
            if o.missing_entities == "error":
                raise ValueError(f"no {ENTITIES_MEMBER}: run the pipeline with entities enabled, or pass "
                                 "make_dataset(..., missing_entities='skip' | 'empty')")
        if not want_nuwa:                      # decode only what the asked-for conditions use
            members = {k: v for k, v in members.items() if k not in (FLOW_MEMBER, ANCHORS_MEMBER)}
        if not want_entity:
            members.pop(ENTITIES_MEMBER, None)
        s = decode_sample(members, key=key)
        # Independent streams per purpose: switching jitter or dropout on leaves crops and draws as they were.
        crc = zlib.crc32(key.encode())
        rng_geo, rng_color, rng_draw, rng_drop = (self.state.rng(4, crc, i) for i in range(4))
        frames = s["frames"]
        if frames is None:
            raise ValueError("sample has no frames")
        length, height, width = frames.shape[:3]
        out_h, out_w = o.size if o.size is not None else (height, width)
        aug = resolve_augment(o.augment)
        cf = sample_crop_flip(rng_geo, height, width, out_h, out_w, aug) if aug is not None else \
            CropFlip.identity(height, width, out_h, out_w)

        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        video = cf.images(video).clamp_(0.0, 1.0)      # resampling may overshoot by an ulp
        if aug is not None and aug.jitter:
            video = color_jitter(video, rng_color, aug.brightness, aug.contrast, aug.saturation, inplace=True)
        video = video.mul_(2.0).sub_(1.0)

        drops = {n: bool(rng_drop.random() < p) if p > 0 else False
                 for n, p in (("text", o.dropout.text), ("image", o.dropout.image),
                              ("trajectory", o.dropout.trajectory))}
        sample: dict[str, Any] = {
            "key": key,
            "caption": "" if drops["text"] else s["caption"],
            "video": video,
            "image": torch.zeros_like(video[0]) if drops["image"] else video[0].clone(),
            "crop": cf.as_tensor(),
            "flip": torch.tensor(cf.flip),
            "drop_text": torch.tensor(drops["text"]),
            "drop_image": torch.tensor(drops["image"]),
            "drop_trajectory": torch.tensor(drops["trajectory"]),
        }
        if o.keep_meta:
            sample["meta"] = s["meta"]

        if want_nuwa:
            if s.get("flow") is None or "anchor_tracks" not in s:
                raise ValueError(f"DragNUWA conditions need {FLOW_MEMBER} and {ANCHORS_MEMBER}")
            flow = dense_flow_condition(cf.flow(torch.from_numpy(s["flow"])))
            tracks = cf.points(s["anchor_tracks"])                               # (A, L, 2) float32
            reliable = s.get("anchor_reliable")
            if reliable is None:                      # schema 1, or written without the checks
                if o.unverified_anchors == "skip":
                    return None
                if o.unverified_anchors == "error":
                    raise ValueError(f"{ANCHORS_MEMBER} has no 'reliable' array (schema 1 shards, or a run with "
                                     "trajectories.reliability off): its anchors were never checked. Re-run "
                                     "the pipeline, or pass make_dataset(..., unverified_anchors='visible') to "
                                     "trust every in-frame anchor (the old behaviour) or 'skip'")
                reliable = s["anchor_visible"]
            visible = usable_spans(reliable, cf.inside(tracks))
            weights = self._weights(s["anchor_weights"], s["anchor_tracks"], cf)
            candidates = np.flatnonzero(visible[:, 0] & visible[:, 1]) if length > 1 \
                else np.zeros(0, np.int64)                                      # reliable in frames 0 and 1
            picked = candidates[draw_trajectories(weights[candidates], rng_draw, o.max_trajectories)] \
                if candidates.size else np.zeros(0, np.int64)
            tmap = trajectory_map(tracks, visible, picked, out_h, out_w, self._gaussian(out_w), method=o.filter_method)
            n = len(picked)
            pad_tracks = torch.zeros(o.max_trajectories, length, 2)
            pad_vis = torch.zeros(o.max_trajectories, length, dtype=torch.bool)
            pad_tracks[:n] = torch.from_numpy(tracks[picked])
            pad_vis[:n] = torch.from_numpy(visible[picked])
            if drops["trajectory"]:
                flow.zero_()
                tmap.zero_()
            sample.update(flow=flow, trajectory_map=tmap, trajectory_tracks=pad_tracks,
                          trajectory_visible=pad_vis, num_trajectories=torch.tensor(n),
                          num_reliable_anchors=torch.tensor(int(candidates.size)))

        if want_entity:
            sample.update(self._entities(s, cf, length, out_h, out_w, drops["trajectory"]))
        return sample

    def _gaussian(self, width: int):
        """The trajectory map's filter at this training width (``gaussian_scale``)."""
        from pipeline.train.conditions import scale_gaussian

        o = self.opts
        return scale_gaussian(o.gaussian, width, o.gaussian_scale)

    @staticmethod
    def _weights(weights: np.ndarray, tracks: np.ndarray, cf) -> np.ndarray:
        """The multinomial weights ||f0|| in the training frame: the stored ones, rescaled by
        how the crop-resize stretches each anchor's first displacement."""
        w = np.asarray(weights, np.float64)
        if not cf.resizes or tracks.shape[1] < 2:
            return w
        d = (tracks[:, 1] - tracks[:, 0]).astype(np.float64)
        n0 = np.hypot(d[:, 0], d[:, 1])
        n1 = np.hypot(d[:, 0] * cf.sx, d[:, 1] * cf.sy)
        ratio = np.where(n0 > 0, n1 / np.where(n0 > 0, n0, 1.0), math.sqrt(cf.sx * cf.sy))
        return w * ratio

    def _entities(self, s, cf, length, out_h, out_w, dropped) -> dict:
        import torch

        from pipeline.train.conditions import entity_gaussian_map, entity_index_map, entity_loss_mask

        o = self.opts
        kmax = o.max_entities
        if "entity_ids" in s:
            ids = np.asarray(s["entity_ids"], np.int64)
            centers = cf.points(s["entity_tracks"])                               # (K, L, 2)
            visible = np.asarray(s["entity_visibility"], bool) & cf.inside(centers)
            radii = cf.radii(s["entity_radii"])                                   # (K, 2)
            mask0 = cf.labels(torch.from_numpy(s["entity_mask"].astype(np.int64)))
        else:                                                                     # missing_entities="empty"
            ids = np.zeros(0, np.int64)
            centers = np.zeros((0, length, 2), np.float32)
            visible = np.zeros((0, length), bool)
            radii = torch.zeros(0, 2)
            mask0 = torch.zeros(out_h, out_w, dtype=torch.int64)
        if len(ids) > kmax:   # keep the largest entities (by area of their circle)
            keep = np.sort(np.argsort(-(radii[:, 0] * radii[:, 1]).numpy(), kind="stable")[:kmax])
            ids, centers, visible, radii = ids[keep], centers[keep], visible[keep], radii[keep]
        k = len(ids)
        centers_t = torch.from_numpy(np.ascontiguousarray(centers, np.float32))
        visible_t = torch.from_numpy(np.ascontiguousarray(visible))
        ids_t = torch.from_numpy(ids)
        mask0 = torch.where(torch.isin(mask0, ids_t), mask0, torch.zeros((), dtype=mask0.dtype))  # kept ids only
        gauss = entity_gaussian_map(centers_t, radii, visible_t, out_h, out_w, o.entity_sigma_ratio)
        index = entity_index_map(centers_t, radii, visible_t, ids_t, out_h, out_w)
        loss = entity_loss_mask(mask0, ids_t, centers_t, visible_t, radii, mode=o.loss_mask)
        if dropped:
            gauss.zero_()
            index.zero_()
        pad = {
            "entity_ids": torch.zeros(kmax, dtype=torch.int64),
            "entity_tracks": torch.zeros(kmax, length, 2),
            "entity_visible": torch.zeros(kmax, length, dtype=torch.bool),
            "entity_radii": torch.zeros(kmax, 2),
        }
        pad["entity_ids"][:k] = ids_t
        pad["entity_tracks"][:k] = centers_t
        pad["entity_visible"][:k] = visible_t
        pad["entity_radii"][:k] = radii
        return {"entity_gaussian": gauss, "entity_index": index, "loss_mask": loss, "entity_mask": mask0,
                "num_entities": torch.tensor(k), **pad}


class TrainerDataset(wds.DataPipeline):
    """A webdataset pipeline (torch IterableDataset) of model-ready samples; see ``make_dataset``."""

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (like ``DistributedSampler.set_epoch``) when a ``seed`` is
        given: shard order, sample shuffle, augmentation, drawn trajectories and dropout then
        depend on (seed, epoch, sample key) only. Without a seed it changes nothing."""
        self.state.epoch = int(epoch)
        self.state.passes = -1


def make_dataset(
    url: str | Sequence[str],
    *,
    conditions: str | Sequence[str] = ("dragnuwa",),
    size: tuple[int, int] | None = None,
    augment: bool | str | Any = True,
    gaussian: str | Any = "paper",
    gaussian_scale: str | float = "none",
    filter_method: str = "sparse",
    max_trajectories: int = 8,
    max_entities: int = 32,
    entity_sigma_ratio: float = 1.0 / 3.0,
    loss_mask: str = "shift",
    missing_entities: str = "error",
    dropout: Any = None,
    shuffle: int = 100,
    shuffle_shards: bool = True,
    resampled: bool = False,
    epoch_samples: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int | None = None,
    keep_meta: bool = False,
    on_error: str = "raise",
    unverified_anchors: str = "error",
):
    """Model-ready training samples from the shards at ``url``: a torch IterableDataset.

    Put it in ``torch.utils.data.DataLoader(ds, batch_size=B, num_workers=W)``; the default
    collate stacks every tensor (all shapes are fixed for a given set of options). Each sample
    is a dict:

    always
      ``key`` str; ``caption`` str ("" when the text is dropped); ``video`` (L, 3, H, W)
      float32 in [-1, 1]; ``image`` (3, H, W) = ``video[0]`` (zeros when the image is
      dropped); ``crop`` (4,) the crop box [x0, y0, w, h] in stored pixels; ``flip`` bool;
      ``drop_text`` / ``drop_image`` / ``drop_trajectory`` bool.
    conditions contains "dragnuwa"
      ``flow`` (L, 2, H, W): the dense flow, zero frame first (Adaptive Training stage 1);
      ``trajectory_map`` (L, 2, H, W): n ~ U[1, max_trajectories] anchors drawn afresh at
      every read by the multinomial on ||f0|| among the anchors *reliable* in frames 0 and
      1 (``anchors.npz:reliable``, inside the crop; the weights of the others never count),
      displacements at the rounded pixel of frame t, Gaussian-filtered, zero frame first
      (stage 2). Each drawn trajectory ends at its first unreliable (or out-of-crop) frame:
      no displacement is written past it (``usable_spans``; docs/trajectories.md).
      ``trajectory_tracks`` (N, L, 2) / ``trajectory_visible`` (N, L): the drawn tracks and
      their usable frames (that prefix), padded to N = max_trajectories;
      ``num_trajectories``; ``num_reliable_anchors``: how many anchors the draw could
      choose from. A clip with none gives ``num_trajectories == 0`` and an all-zero
      ``trajectory_map`` (its dense ``flow`` is still there): check ``num_reliable_anchors``
      (or drop such clips in the pipeline with ``--min-trackable``).
    conditions contains "dragentity"
      ``entity_gaussian`` (L, 1, H, W); ``entity_index`` (L, H, W) int64 (entity ids painted
      in their circles at the tracked centers); ``loss_mask`` (L, 1, H, W) the loss mask M;
      ``entity_mask`` (H, W) int64 frame-0 id map (pool each id's embedding from it);
      ``entity_ids`` (K,) / ``entity_tracks`` (K, L, 2) / ``entity_visible`` (K, L) /
      ``entity_radii`` (K, 2) padded to K = max_entities (id 0 = padding); ``num_entities``.
      See pipeline/train/conditions.py for the radius rule and the maps' definitions.

    Options (defaults in brackets):

    - ``conditions`` [("dragnuwa",)]: any of "dragnuwa", "dragentity" (a string or a tuple).
    - ``size`` [None = the stored size]: output (H, W).
    - ``augment`` [True = the paper's: crop scale (0.9, 1), ratio 5/3, no flip, colour jitter
      0.05/0.15/0.1]: False/None (off), a preset name ("paper", "paper+flip", "geometry"),
      an ``AugmentConfig`` or a dict of its fields (pipeline/train/augment.py).
    - ``gaussian`` ["paper" = kernel 99, sigma 10, center weight 1]: "release" (199, 20,
      center 1), "motionctrl" (99, 10, sum 1), a ``GaussianFilter`` / dict, or None (raw
      sparse displacements). ``gaussian_scale`` ["none"]: kernel size and sigma in training
      pixels whatever the size; "width": scaled by the training width / 576 (the presets'
      frames), so at 832x480 "paper" is 143 taps, sigma 14.4; or a factor
      (``conditions.scale_gaussian``). ``filter_method`` ["sparse"]: "sparse", "separable", "fft".
    - ``max_trajectories`` [8]: the paper's N. ``max_entities`` [32]: padding size; a sample
      with more entities keeps the largest. ``entity_sigma_ratio`` [1/3]: Gaussian sigma per
      radius. ``loss_mask`` ["shift"]: "shift", "circle" or "first".
    - ``missing_entities`` ["error"]: what to do with a sample without entities when
      "dragentity" is asked for: "error", "skip" it, or "empty" (all-zero entity conditions).
    - ``dropout`` [None = never]: "paper" (text 0.1, image 0.1, trajectory 0.5), a dict or
      ``Dropout(text, image, trajectory)``.
    - ``shuffle`` [100]: sample shuffle buffer (raw encoded samples, per worker; 0 = off).
      ``shuffle_shards`` [True]: shuffle the shard order each epoch.
    - ``resampled`` [False]: False = finite epochs, every sample exactly once across all ranks
      and workers (a ValueError when there are fewer shards than ranks x workers); True =
      shards drawn at random with replacement, endless (set ``epoch_samples``).
      ``epoch_samples`` [None]: stop each pass after this many samples per rank (split
      exactly among its workers).
    - ``rank`` / ``world_size`` [None: torch.distributed if initialised, else the RANK and
      WORLD_SIZE environment variables, else 0 / 1]: this process's share of the shards.
    - ``seed`` [None = fresh randomness per worker and pass]: an int makes shard order,
      shuffle, augmentation, draws and dropout depend only on (seed, epoch, key); call
      ``ds.set_epoch(e)`` each epoch (like DistributedSampler) to vary them across epochs.
    - ``keep_meta`` [False]: add the sample's meta dict (it does not collate into batches).
    - ``on_error`` ["raise"]: "skip" warns and drops a sample that fails to decode or build.
    - ``unverified_anchors`` ["error"]: what to do with a sample whose anchors carry no
      reliability (schema-1 shards, or runs with ``trajectories.reliability`` off): "error"
      (a ValueError naming this option), "visible" (trust every in-frame anchor, the
      behaviour before schema 2) or "skip" the sample.
    """
    from pipeline.train.augment import resolve_augment
    from pipeline.train.conditions import FILTER_METHODS, LOSS_MASK_MODES, resolve_gaussian, scale_gaussian

    conds = (conditions,) if isinstance(conditions, str) else tuple(conditions)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ValueError(f"unknown conditions {bad or conds!r}; known: {', '.join(CONDITIONS)}")
    if filter_method not in FILTER_METHODS:
        raise ValueError(f"filter_method must be one of {FILTER_METHODS}")
    if loss_mask not in LOSS_MASK_MODES:
        raise ValueError(f"loss_mask must be one of {LOSS_MASK_MODES}")
    if missing_entities not in ("error", "skip", "empty"):
        raise ValueError("missing_entities must be 'error', 'skip' or 'empty'")
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    if unverified_anchors not in UNVERIFIED_ANCHORS:
        raise ValueError(f"unverified_anchors must be one of {UNVERIFIED_ANCHORS}")
    if int(max_trajectories) < 1 or int(max_entities) < 1:
        raise ValueError("max_trajectories and max_entities must be >= 1")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    resolve_augment(augment)                      # validate now, not in a worker
    scale_gaussian(resolve_gaussian(gaussian), 1, gaussian_scale)
    urls = expand_urls(url)
    if not urls:
        raise FileNotFoundError(f"no shards at {url if not isinstance(url, str) else storage.redact(url)!r}")
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard(s) do not exist, e.g. {missing[:3]}")
    if rank is not None or world_size is not None:
        world_info(rank, world_size)              # validate
    opts = LoaderOptions(
        conditions=conds, size=size, augment=augment, gaussian=resolve_gaussian(gaussian),
        gaussian_scale=gaussian_scale, filter_method=filter_method, max_trajectories=int(max_trajectories),
        max_entities=int(max_entities),
        entity_sigma_ratio=float(entity_sigma_ratio), loss_mask=loss_mask, missing_entities=missing_entities,
        dropout=_resolve_dropout(dropout), keep_meta=bool(keep_meta), on_error=on_error,
        unverified_anchors=unverified_anchors,
    )
    state = SourceState(seed)
    handler = wds.warn_and_continue if on_error == "skip" else wds.reraise_exception
    stages = [
        ShardSource(urls, state, rank, world_size, bool(shuffle_shards), bool(resampled)),
        shard_samples(handler=handler),       # local files, pipe:, http, and s3:// / gs:// (pyarrow)
        SampleShuffle(int(shuffle), state),
        _Builder(opts, state),
    ]
    if epoch_samples is not None:
        stages.append(SampleLimit(int(epoch_samples)))
    ds = TrainerDataset(*stages)
    ds.state, ds.options, ds.urls = state, opts, urls
    return ds
