"""Model flow backends on torch: RAFT (torchvision) and UniMatch/GMFlow (from its source).

Both implement ``stages.flow.base.FlowBackend`` and are registered in ``FLOW_BACKENDS`` as
"raft" and "unimatch" (lazily: ``stages.flow.base`` imports this module, and torch, only
when one of them is created); the device comes from ``stages.devices.resolve_device``.
Created by the worker with::

    make_flow_backend("raft", preset=..., checkpoint=PATH, device="auto", batch_size=8)
    make_flow_backend("unimatch", preset=..., checkpoint=PATH, source=UNIMATCH_DIR, ...)

Weights are never downloaded: ``checkpoint`` is a file the user provides, read with
``torch.load(path, map_location="cpu", weights_only=True)`` and moved to the device after
loading. Frames are batched across frame pairs (``batch_size`` pairs per model call; each
clip frame is uploaded once), padded (replicate) to the model's size multiple and cropped
back. ``precision`` "bf16"/"fp16" runs the model under ``torch.autocast`` (fp16 on CUDA
only); the returned flow is always float32 ``(N, 2, H, W)`` px, channel 0 = dx, 1 = dy.

``forward_many(clips)`` computes the forward flow of several clips in shared batches
(pairs of different clips in one model call), for callers that hold several clips.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np

from ..devices import resolve_device
from .base import GENERIC_OPTIONS, FlowBackend, check_frames, check_pairs

__all__ = [
    "PRECISIONS",
    "TorchFlowBackend",
    "RAFTFlow",
    "UniMatchFlow",
    "load_state_dict",
    "make_raft",
    "make_unimatch",
    "RAFT_WEIGHTS_HELP",
    "UNIMATCH_HELP",
    "UNIMATCH_MODELS",
]

PRECISIONS = ("fp32", "bf16", "fp16")

RAFT_WEIGHTS_HELP = (
    "The raft backend needs torchvision's RAFT weights as a local file (flow.checkpoint=PATH). "
    "On a machine with network access, save them with: python -c \"import torch; from "
    "torchvision.models.optical_flow import Raft_Large_Weights as W; "
    "torch.save(W.DEFAULT.get_state_dict(progress=True), 'raft_large_C_T_SKHT_V2.pth')\" "
    "(Raft_Small_Weights for raft_small). The original princeton-vl RAFT checkpoints use other "
    "parameter names and are not accepted."
)

UNIMATCH_HELP = (
    "UniMatch is not a pip package: clone its source (git clone "
    "https://github.com/autonomousvision/unimatch) and pass flow.source=PATH (the folder that "
    "holds unimatch/unimatch.py) and flow.checkpoint=PATH to a GMFlow weights file from its "
    "MODEL_ZOO.md, e.g. gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth "
    "(MIT licence)."
)

# UniMatch flow model variants: constructor arguments, inference arguments, padding multiple.
UNIMATCH_MODELS: dict[str, dict[str, Any]] = {
    "scale1": dict(build=dict(num_scales=1, upsample_factor=8, reg_refine=False),
                   infer=dict(attn_splits_list=[2], corr_radius_list=[-1], prop_radius_list=[-1],
                              num_reg_refine=1),
                   pad=16),
    "scale2": dict(build=dict(num_scales=2, upsample_factor=4, reg_refine=False),
                   infer=dict(attn_splits_list=[2, 8], corr_radius_list=[-1, 4], prop_radius_list=[-1, 1],
                              num_reg_refine=1),
                   pad=32),
    "scale2-regrefine6": dict(build=dict(num_scales=2, upsample_factor=4, reg_refine=True),
                              infer=dict(attn_splits_list=[2, 8], corr_radius_list=[-1, 4],
                                         prop_radius_list=[-1, 1], num_reg_refine=6),
                              pad=32),
}


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is in the dev/torch extras
        raise ImportError("the raft/unimatch flow backends need torch and torchvision: "
                          "pip install -e '.[torch]'") from e
    return torch


def _file_digest(path: str, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def load_state_dict(path: str | os.PathLike[str] | None, what: str, help_text: str = "") -> dict:
    """Read a weights file on the CPU: a state dict, or a dict wrapping one under ``model`` /
    ``state_dict`` / ``model_state_dict``; a ``module.`` prefix (DataParallel) is removed."""
    torch = _torch()
    if path is None or str(path) == "":
        raise ValueError(f"{what} needs a checkpoint file (flow.checkpoint=PATH). {help_text}".strip())
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} checkpoint {path!r} does not exist. {help_text}".strip())
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{what} checkpoint {path!r} cannot be read as torch weights: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"{what} checkpoint {path!r} does not hold a state dict of tensors. {help_text}".strip())
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


class TorchFlowBackend(FlowBackend):
    """Shared machinery of the torch backends: device, batching, padding, autocast.

    Subclasses set ``self.model`` (eval mode, on ``self.device``), ``self.pad_multiple`` and
    implement ``_infer(a, b)``: float32 ``(B, 3, H, W)`` RGB in [0, 255] (H, W multiples of
    ``pad_multiple`` and at least ``min_size``) -> flow ``(B, 2, H, W)``.
    """

    pad_multiple = 8
    min_size = 0
    device_kind = "torch"

    def __init__(self, device: str | None = "auto", batch_size: int | None = 8, precision: str = "fp32"):
        torch = _torch()  # first: the install hint when torch is missing
        self.device = resolve_device(device)
        bs = 8 if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = bs
        p = str(precision).lower()
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        if p == "fp16" and self.device.type != "cuda":
            raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
        self.precision = p
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p)

    # ---- subclass hook
    def _infer(self, a, b):  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- helpers
    def _upload(self, frames: np.ndarray):
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) on the device (uint8 crosses the bus)."""
        torch = _torch()
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
        return t.permute(0, 3, 1, 2).float()

    def _pad(self, x):
        torch = _torch()
        h, w = x.shape[-2:]
        m = self.pad_multiple
        th, tw = max(h, self.min_size), max(w, self.min_size)
        ph, pw = th + (-th) % m - h, tw + (-tw) % m - w
        if not (ph or pw):
            return x
        # split evenly (top/bottom, left/right), replicate the border
        return torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")

    def _run_batch(self, a, b) -> np.ndarray:
        torch = _torch()
        h, w = a.shape[-2:]
        a, b = self._pad(a), self._pad(b)
        if self._autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
                flow = self._infer(a, b)
        else:
            flow = self._infer(a, b)
        ph, pw = a.shape[-2] - h, a.shape[-1] - w
        flow = flow[:, :, ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
        return flow.float().cpu().numpy()

    def _pairs_from(self, frames_dev, src_idx: Sequence[int], dst_idx: Sequence[int]) -> np.ndarray:
        n = len(src_idx)
        h, w = frames_dev.shape[-2:]
        out = np.empty((n, 2, h, w), np.float32)
        torch = _torch()
        with torch.inference_mode():
            for i in range(0, n, self.batch_size):
                s = torch.as_tensor(list(src_idx[i:i + self.batch_size]), device=self.device)
                d = torch.as_tensor(list(dst_idx[i:i + self.batch_size]), device=self.device)
                out[i:i + len(s)] = self._run_batch(frames_dev.index_select(0, s), frames_dev.index_select(0, d))
        return out

    # ---- FlowBackend
    def pairs(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        src, dst = check_pairs(src, dst)
        n = len(src)
        if n == 0:
            return np.zeros((0, 2) + src.shape[1:3], np.float32)
        torch = _torch()
        with torch.inference_mode():
            frames = self._upload(np.concatenate([src, dst]))
        return self._pairs_from(frames, range(n), range(n, 2 * n))

    def forward(self, frames: np.ndarray) -> np.ndarray:
        return self.forward_many([frames])[0]

    def _forward_pairs(self, frames: np.ndarray) -> Iterator[np.ndarray]:
        """The forward flow pair by pair, in the batches ``forward`` makes (frames uploaded once)."""
        frames = check_frames(frames)
        torch = _torch()
        with torch.inference_mode():
            dev = self._upload(frames)
        n = len(frames)
        for i in range(0, n - 1, self.batch_size):
            j = min(i + self.batch_size, n - 1)
            yield from self._pairs_from(dev, range(i, j), range(i + 1, j + 1))

    def backward(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        torch = _torch()
        with torch.inference_mode():
            dev = self._upload(frames)
        n = len(frames)
        return self._pairs_from(dev, range(1, n), range(0, n - 1))

    def forward_many(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Forward flow of each clip (all the same frame size), pairs batched across clips."""
        clips = [check_frames(c) for c in clips]
        if not clips:
            return []
        shapes = {c.shape[1:] for c in clips}
        if len(shapes) != 1:
            raise ValueError(f"forward_many needs clips of one frame size, got {sorted(shapes)}")
        torch = _torch()
        with torch.inference_mode():
            dev = self._upload(np.concatenate(clips))
        src, dst, bounds, off = [], [], [], 0
        for c in clips:
            k = len(c)
            src += range(off, off + k - 1)
            dst += range(off + 1, off + k)
            bounds.append((len(src) - (k - 1), len(src)))
            off += k
        flow = self._pairs_from(dev, src, dst)
        return [flow[a:b] for a, b in bounds]

    def _describe_common(self) -> dict[str, Any]:
        torch = _torch()
        return {"input": "rgb", "precision": self.precision, "batch_size": self.batch_size,
                "device": self.device.type, "torch": torch.__version__.split("+")[0]}


# ---------------------------------------------------------------------------------- RAFT
RAFT_MODELS = ("large", "small")


def _raft_model_of(state: dict) -> str:
    # raft_large has a convex-upsampling mask predictor; raft_small upsamples bilinearly.
    return "large" if any(k.startswith("mask_predictor.") for k in state) else "small"


class RAFTFlow(TorchFlowBackend):
    """torchvision RAFT (Teed & Deng 2020), weights from a local file.

    model: "large" | "small" | "auto" (from the checkpoint's parameters); iters: refinement
    iterations (torchvision's default 12). Input frames are scaled to [-1, 1] as RAFT expects.
    """

    name = "raft"
    pad_multiple = 8
    min_size = 128  # its 4-level correlation pyramid needs feature maps of >= 16 (= 128 px / 8)

    def __init__(self, checkpoint: str | None, model: str = "auto", iters: int = 12, device: str | None = "auto",
                 batch_size: int | None = 8, precision: str = "fp32"):
        super().__init__(device, batch_size, precision)
        from torchvision.models.optical_flow import raft_large, raft_small

        m = str(model).lower()
        if m not in RAFT_MODELS + ("auto",):
            raise ValueError(f"unknown RAFT model {model!r}; valid: large, small, auto")
        self.iters = int(iters)
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        state = load_state_dict(checkpoint, "RAFT", RAFT_WEIGHTS_HELP)
        self.model_name = _raft_model_of(state) if m == "auto" else m
        net = (raft_large if self.model_name == "large" else raft_small)(weights=None, progress=False)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = "; ".join(str(e).splitlines()[:3])[:500]
            raise ValueError(f"checkpoint {checkpoint!r} does not match torchvision raft_{self.model_name}: "
                             f"{first}. {RAFT_WEIGHTS_HELP}") from e
        self.model = net.eval().to(self.device)
        self.checkpoint = os.fspath(checkpoint)
        self._digest = _file_digest(self.checkpoint)

    def _infer(self, a, b):
        a = a * (2.0 / 255.0) - 1.0
        b = b * (2.0 / 255.0) - 1.0
        return self.model(a, b, num_flow_updates=self.iters)[-1]

    def describe(self) -> dict[str, Any]:
        import torchvision

        return {"backend": self.name, "model": f"raft_{self.model_name}", "iters": self.iters,
                "checkpoint": os.path.basename(self.checkpoint), "checkpoint_sha256": self._digest,
                "torchvision": torchvision.__version__.split("+")[0], **self._describe_common()}


# ---------------------------------------------------------------------------------- UniMatch
def import_unimatch(source: str | os.PathLike[str] | None):
    """The ``UniMatch`` class from a UniMatch source folder (added to ``sys.path`` lazily)."""
    if source is None or str(source) == "":
        raise ImportError(f"the unimatch flow backend needs the UniMatch source folder (flow.source). {UNIMATCH_HELP}")
    root = os.path.abspath(os.fspath(source))
    if not os.path.isfile(os.path.join(root, "unimatch", "unimatch.py")):
        raise ImportError(f"{root!r} is not a UniMatch source folder (no unimatch/unimatch.py in it). {UNIMATCH_HELP}")
    loaded = sys.modules.get("unimatch")
    if loaded is not None:
        where = os.path.abspath(os.path.dirname(os.path.dirname(getattr(loaded, "__file__", "") or "")))
        if where != root:
            raise ImportError(f"a different 'unimatch' package is already imported (from {where!r}); "
                              f"cannot also import it from {root!r} in this process")
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        mod = importlib.import_module("unimatch.unimatch")
    except Exception as e:
        raise ImportError(f"importing UniMatch from {root!r} failed ({type(e).__name__}: {e}). {UNIMATCH_HELP}") from e
    cls = getattr(mod, "UniMatch", None)
    if cls is None:
        raise ImportError(f"{root}/unimatch/unimatch.py defines no UniMatch class. {UNIMATCH_HELP}")
    return cls


def _unimatch_model_of(checkpoint: str, state: dict) -> str:
    name = os.path.basename(checkpoint).lower()
    refine = any(k.startswith("refine.") or k.startswith("refine_proj.") for k in state)
    if "scale1" in name:
        return "scale1"
    return "scale2-regrefine6" if refine else "scale2"


class UniMatchFlow(TorchFlowBackend):
    """UniMatch / GMFlow (Xu et al. 2023) from its source folder, flow task, swin attention.

    model: "scale1" | "scale2" | "scale2-regrefine6" | "auto" (from the checkpoint name and
    parameters). The model normalises its [0, 255] input itself (ImageNet mean/std).
    """

    name = "unimatch"

    def __init__(self, checkpoint: str | None, source: str | None, model: str = "auto",
                 device: str | None = "auto", batch_size: int | None = 8, precision: str = "fp32"):
        super().__init__(device, batch_size, precision)
        m = str(model).lower()
        if m not in tuple(UNIMATCH_MODELS) + ("auto",):
            raise ValueError(f"unknown UniMatch model {model!r}; valid: {', '.join(UNIMATCH_MODELS)}, auto")
        cls = import_unimatch(source)
        state = load_state_dict(checkpoint, "UniMatch", UNIMATCH_HELP)
        self.model_name = _unimatch_model_of(os.fspath(checkpoint), state) if m == "auto" else m
        spec = UNIMATCH_MODELS[self.model_name]
        net = cls(feature_channels=128, num_head=1, ffn_dim_expansion=4, num_transformer_layers=6,
                  task="flow", **spec["build"])
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = "; ".join(str(e).splitlines()[:3])[:500]
            raise ValueError(f"checkpoint {checkpoint!r} does not match UniMatch {self.model_name}: {first}") from e
        self.model = net.eval().to(self.device)
        self.pad_multiple = int(spec["pad"])
        self._infer_args = dict(spec["infer"])
        self.checkpoint, self.source = os.fspath(checkpoint), os.path.abspath(os.fspath(source))
        self._digest = _file_digest(self.checkpoint)

    def _infer(self, a, b):
        out = self.model(a, b, attn_type="swin", task="flow", pred_bidir_flow=False, **self._infer_args)
        return out["flow_preds"][-1]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "attn_type": "swin", **self._infer_args,
                "checkpoint": os.path.basename(self.checkpoint), "checkpoint_sha256": self._digest,
                **self._describe_common()}


# ---------------------------------------------------------------------------------- factories
def _split(kwargs: dict, allowed: tuple[str, ...], name: str) -> dict:
    extra = sorted(k for k in kwargs if k not in allowed and k not in GENERIC_OPTIONS)
    if extra:
        raise ValueError(f"unknown option(s) for flow backend {name!r}: {', '.join(extra)}; "
                         f"valid: {', '.join(allowed + GENERIC_OPTIONS)}")
    return {k: v for k, v in kwargs.items() if k in allowed}


def make_raft(preset: str | None = None, checkpoint: str | None = None, device: str | None = "auto",
              batch_size: int | None = 8, source: str | None = None, **kwargs: Any) -> RAFTFlow:
    """Factory registered as "raft" (``preset`` and ``source`` do not apply and are ignored).
    Extra options: model (large|small|auto), iters, precision (fp32|bf16|fp16)."""
    opts = _split(kwargs, ("model", "iters", "precision"), "raft")
    return RAFTFlow(checkpoint, device=device, batch_size=batch_size, **opts)


def make_unimatch(preset: str | None = None, checkpoint: str | None = None, source: str | None = None,
                  device: str | None = "auto", batch_size: int | None = 8, **kwargs: Any) -> UniMatchFlow:
    """Factory registered as "unimatch" (``preset`` does not apply and is ignored).
    Extra options: model (scale1|scale2|scale2-regrefine6|auto), precision."""
    opts = _split(kwargs, ("model", "precision"), "unimatch")
    return UniMatchFlow(checkpoint, source, device=device, batch_size=batch_size, **opts)


make_raft.device_kind = make_unimatch.device_kind = "torch"   # FLOW_BACKENDS.device_kind reads it
