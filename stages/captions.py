"""Captions for clips that have none: BLIP-2 from a local Hugging Face folder, with provenance.

DragNUWA's VideoHD was "annotated using BLIP2"; a VideoHD-style folder often has captions
for only some clips (or none). This module chooses, per clip, where the text comes from and
runs BLIP-2 on the frames the shard stores.

Public API
----------
``choose_caption(source_mode, dataset_caption, captioner_available) -> "dataset"|"blip2"|"none"``
    The per-clip rule (docs/captions.md):

    * ``auto``: the dataset caption where it is non-empty (after stripping), else ``blip2``
      when a model folder is configured, else ``none``;
    * ``dataset``: the dataset caption, ``none`` where it is empty;
    * ``blip2``: BLIP-2 for every clip, dataset captions replaced (needs a model folder);
    * ``none``: no text for any clip (an empty ``.txt``).

    ``none`` means an empty caption, recorded as ``meta.caption_empty`` as before.
``check_caption_settings(source, model_dir) -> None``
    The up-front check a run makes before it starts: a known source, a model folder when
    ``blip2`` is asked for, and when a folder will be used, that it is complete and that
    ``transformers`` and ``torch`` import. Raises ValueError / FileNotFoundError / ImportError
    with what to do.
``Blip2Captioner(model_dir, device="auto", batch_size=8, prompt=None, max_new_tokens=30,
frames=("first",), dtype="auto")``
    ``caption_many(clips) -> list[str]``: one caption per clip, clips being uint8 RGB frame
    arrays ``(L, H, W, 3)``; the selected frames of all clips go through the model in shared
    batches of ``batch_size`` images. ``describe() -> dict``: the provenance written to each
    sample's meta. The constructor checks the folder and the imports (no weights are read);
    the model is loaded on the first call.
``CAPTIONERS`` / ``make_captioner(name, model_dir, **options)``
    The registry of captioners (``stages.registry.Registry``): "blip2" -> ``Blip2Captioner``.

Frames and the merge rule: ``frames`` names the frames to caption, each ``"first"``,
``"mid"`` (index ``(L - 1) // 2``), ``"last"`` or an integer index (negative counts from
the end); repeated indices are captioned once. With more than one frame, each is captioned
and the distinct non-empty captions are joined with ``"; "`` in frame order (a frame whose
caption repeats an earlier one adds nothing).

Loading: ``Blip2ForConditionalGeneration`` and ``Blip2Processor`` from the folder with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` during the call: nothing is downloaded.
On CUDA the weights are loaded in bf16 (fp16 where the GPU has no bf16); on the CPU in fp32
(``dtype`` overrides: ``fp32``, ``bf16``; ``fp16`` needs CUDA). Decoding is greedy
(``do_sample=False``, one beam), so a caption depends only on the frames, the model, the
prompt and the settings. A batch gave the same captions as one image at a time in the tests
(tiny model, fp32); other batch sizes sum in another order, so a rare near-tie may decode
differently (more likely in bf16/fp16).

The model name in the provenance is ``<folder name>@<digest>``, the digest the first 12 hex
digits of the SHA-256 of the weight files' contents (sorted by file name), computed once per
captioner (it reads the weights once: about 15 GB for blip2-opt-2.7b in fp32).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .devices import resolve_device
from .registry import Registry

__all__ = [
    "CAPTION_SOURCES",
    "CAPTION_INSTALL_HELP",
    "CAPTION_MODEL_HELP",
    "Blip2Captioner",
    "CAPTIONERS",
    "make_captioner",
    "check_caption_settings",
    "check_model_dir",
    "choose_caption",
    "import_backend",
    "merge_captions",
    "resolve_frames",
    "weights_digest",
]

CAPTION_SOURCES = ("auto", "dataset", "blip2", "none")
DTYPES = ("auto", "fp32", "bf16", "fp16")
FRAME_NAMES = ("first", "mid", "last")
MERGE_SEPARATOR = "; "
_FRAMES_HELP = "captions.frames entries must be first, mid, last or an integer index"

CAPTION_INSTALL_HELP = ("BLIP-2 captions need the optional packages transformers and torch: "
                        "pip install -e '.[captions]'")
CAPTION_MODEL_HELP = (
    "captions.model (--caption-model) must be a local Hugging Face BLIP-2 folder (config.json, "
    "weights *.safetensors or pytorch_model*.bin, the processor and tokenizer files); nothing is "
    "downloaded. On a machine with network access: hf download Salesforce/blip2-opt-2.7b "
    "--local-dir DIR, or in Python Blip2ForConditionalGeneration.from_pretrained(NAME)"
    ".save_pretrained(DIR) and Blip2Processor.from_pretrained(NAME).save_pretrained(DIR); "
    "then copy DIR to the workers."
)

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")


def _has_text(caption: Any) -> bool:
    return bool(str(caption or "").strip())


def choose_caption(source_mode: str, dataset_caption: str | None, captioner_available: bool) -> str:
    """Where one clip's caption comes from: ``"dataset"``, ``"blip2"`` or ``"none"`` (the
    rule in the module docstring)."""
    if source_mode not in CAPTION_SOURCES:
        raise ValueError(f"captions.source must be one of {', '.join(CAPTION_SOURCES)}, got {source_mode!r}")
    if source_mode == "none":
        return "none"
    if source_mode == "blip2":
        if not captioner_available:
            raise ValueError("captions.source blip2 needs a model folder (captions.model / --caption-model DIR). "
                             + CAPTION_MODEL_HELP)
        return "blip2"
    if _has_text(dataset_caption):
        return "dataset"
    return "blip2" if source_mode == "auto" and captioner_available else "none"


def import_backend() -> tuple[Any, Any]:
    """``(torch, transformers)``, or ImportError saying how to install them."""
    try:
        import torch
        import transformers
        from transformers import Blip2ForConditionalGeneration, Blip2Processor  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{CAPTION_INSTALL_HELP} ({type(e).__name__}: {e})") from e
    return torch, transformers


def weight_files(model_dir: str | os.PathLike[str]) -> list[Path]:
    """The weight files of a model folder, sorted by name (shards included)."""
    d = Path(model_dir)
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
                  and not p.name.startswith("training_args"))


def check_model_dir(model_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Check that ``model_dir`` looks like a complete BLIP-2 folder; returns its weight files.

    Raises FileNotFoundError (no such folder) or ValueError (files missing), both naming what
    is missing and how to get the folder. Reads no weights."""
    if model_dir is None or str(model_dir).strip() == "":
        raise ValueError("no caption model folder given. " + CAPTION_MODEL_HELP)
    d = Path(os.path.expanduser(os.fspath(model_dir)))
    if not d.is_dir():
        what = "is a file, not a folder" if d.exists() else "does not exist"
        raise FileNotFoundError(f"caption model folder {str(d)!r} {what}. {CAPTION_MODEL_HELP}")
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json")
    weights = weight_files(d)
    if not weights:
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((d / f).is_file() for f in _PROCESSOR_FILES):
        missing.append("image processor (preprocessor_config.json or processor_config.json)")
    if not any((d / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise ValueError(f"caption model folder {str(d)!r} is incomplete: missing {', '.join(missing)}. "
                         f"{CAPTION_MODEL_HELP}")
    return weights


def check_caption_settings(source: str, model_dir: str | os.PathLike[str] | None) -> None:
    """The up-front check of a run's caption settings (see the module docstring)."""
    if source not in CAPTION_SOURCES:
        raise ValueError(f"captions.source (--captions) must be one of {', '.join(CAPTION_SOURCES)}, got {source!r}")
    if source == "blip2" and not model_dir:
        raise ValueError("--captions blip2 needs --caption-model DIR (captions.model). " + CAPTION_MODEL_HELP)
    if model_dir and source in ("auto", "blip2"):
        check_model_dir(model_dir)
        import_backend()


def weights_digest(files: Sequence[str | os.PathLike[str]], n: int = 12) -> str:
    """First ``n`` hex digits of the SHA-256 of the files' contents, in the order given."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:n]


def resolve_frames(frames: Sequence[str | int], length: int) -> list[int]:
    """Frame indices (distinct, in the order given) of a clip of ``length`` frames."""
    if length < 1:
        raise ValueError("a clip to caption needs at least one frame")
    out: list[int] = []
    for f in frames:
        if isinstance(f, str) and f in FRAME_NAMES:
            i = {"first": 0, "mid": (length - 1) // 2, "last": length - 1}[f]
        else:
            try:
                i = int(f)
            except (TypeError, ValueError):
                raise ValueError(f"{_FRAMES_HELP}, got {f!r}") from None
            if not -length <= i < length:
                raise ValueError(f"captions.frames index {i} is outside a clip of {length} frames")
            i %= length
        if i not in out:
            out.append(i)
    return out


def merge_captions(captions: Sequence[str]) -> str:
    """The distinct non-empty captions of one clip's frames, in frame order, joined by "; "."""
    seen: list[str] = []
    for c in captions:
        c = " ".join((c or "").split())
        if c and c not in seen:
            seen.append(c)
    return MERGE_SEPARATOR.join(seen)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set for the duration (then restored)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_frames_spec(frames: Any) -> tuple[str | int, ...]:
    if isinstance(frames, (str, int)):
        frames = (frames,)
    frames = tuple(frames)
    if not frames:
        raise ValueError("captions.frames must name at least one frame (first, mid, last or an index)")
    for f in frames:
        if isinstance(f, bool) or not (f in FRAME_NAMES or isinstance(f, int)
                                       or (isinstance(f, str) and f.lstrip("-").isdigit())):
            raise ValueError(f"{_FRAMES_HELP}, got {f!r}")
    return tuple(int(f) if isinstance(f, str) and f.lstrip("-").isdigit() else f for f in frames)


class Blip2Captioner:
    """BLIP-2 captions of clips from a local model folder (see the module docstring)."""

    device_kind = "torch"

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "auto", batch_size: int = 8,
                 prompt: str | None = None, max_new_tokens: int = 30,
                 frames: Sequence[str | int] = ("first",), dtype: str = "auto"):
        if int(batch_size) < 1:
            raise ValueError(f"captions.batch_size must be at least 1, got {batch_size!r}")
        if int(max_new_tokens) < 1:
            raise ValueError(f"captions.max_new_tokens must be at least 1, got {max_new_tokens!r}")
        if dtype not in DTYPES:
            raise ValueError(f"caption dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.model_dir = Path(os.path.expanduser(os.fspath(model_dir)))
        self.device_name = str(device or "auto")
        self.batch_size = int(batch_size)
        self.prompt = prompt if prompt else None
        self.max_new_tokens = int(max_new_tokens)
        self.frames = _check_frames_spec(frames)
        self.dtype_name = dtype
        self._weights = self.check()
        self._digest: str | None = None
        self._model = self._processor = self._device = self._dtype = None

    def check(self) -> list[Path]:
        """The up-front check: the folder is complete and the packages import. Returns the
        weight files."""
        weights = check_model_dir(self.model_dir)
        import_backend()
        return weights

    # ---- model
    def _device_and_dtype(self):
        """(torch device, torch dtype, dtype name) of the model under the settings."""
        torch, _ = import_backend()
        dev = resolve_device(self.device_name, what="captions.device", fix="device 'cpu' or 'auto'")
        name = self.dtype_name
        if name == "auto":
            name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if dev.type == "cuda" else "fp32"
        if name == "fp16" and dev.type != "cuda":
            raise ValueError("caption dtype fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        return dev, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name], name

    def load(self) -> "Blip2Captioner":
        """Load the processor and the model (once); later calls do nothing."""
        if self._model is not None:
            return self
        torch, _ = import_backend()
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        dev, dtype, self._precision = self._device_and_dtype()
        path = str(self.model_dir)
        try:
            with _offline():
                processor = Blip2Processor.from_pretrained(path, local_files_only=True)
                model = Blip2ForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"cannot load BLIP-2 from {path!r}: {type(e).__name__}: {str(e).splitlines()[0][:300]}. "
                             f"{CAPTION_MODEL_HELP}") from e
        self._model = model.to(dev).eval()
        self._processor, self._device, self._dtype = processor, dev, dtype
        return self

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = weights_digest(self._weights)
        return self._digest

    def describe(self) -> dict[str, Any]:
        """Provenance: ``{source, model, prompt, frames, max_new_tokens}`` (``model`` is
        ``<folder name>@<weights digest>``)."""
        return {"source": "blip2", "model": f"{self.model_dir.name}@{self.digest}", "prompt": self.prompt,
                "frames": list(self.frames), "max_new_tokens": self.max_new_tokens}

    # ---- captions
    def caption_images(self, images: Sequence[np.ndarray]) -> list[str]:
        """One caption per uint8 RGB image ``(H, W, 3)``, in batches of ``batch_size``."""
        self.load()
        torch, _ = import_backend()
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.ascontiguousarray(im) for im in images[start:start + self.batch_size]]
            for im in batch:
                if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
                    raise ValueError(f"images to caption must be uint8 (H, W, 3) RGB, got {im.dtype} {im.shape}")
            enc = self._processor(images=batch, text=[self.prompt or ""] * len(batch), return_tensors="pt")
            enc = {k: v.to(self._device) for k, v in enc.items()}
            enc["pixel_values"] = enc["pixel_values"].to(self._dtype)
            with torch.inference_mode():
                ids = self._model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                           num_beams=1)
            prompt_ids = enc.get("input_ids")
            if prompt_ids is not None and ids.shape[1] >= prompt_ids.shape[1] \
                    and torch.equal(ids[:, :prompt_ids.shape[1]], prompt_ids):
                ids = ids[:, prompt_ids.shape[1]:]  # decoder-only models return the prompt too
            texts = self._processor.batch_decode(ids.cpu(), skip_special_tokens=True)
            out.extend(" ".join(t.split()) for t in texts)
        return out

    def frame_indices(self, length: int) -> list[int]:
        return resolve_frames(self.frames, length)

    def caption_many(self, clips: Sequence[np.ndarray]) -> list[str]:
        """One caption per clip ``(L, H, W, 3)`` uint8: its selected frames captioned (all
        clips' frames in shared batches), merged by ``merge_captions``."""
        images: list[np.ndarray] = []
        owners: list[int] = []
        for k, clip in enumerate(clips):
            clip = np.asarray(clip)
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise ValueError(f"clips to caption must be (L, H, W, 3) frame arrays, got {clip.shape}")
            for i in self.frame_indices(len(clip)):
                images.append(clip[i])
                owners.append(k)
        texts = self.caption_images(images) if images else []
        per_clip: list[list[str]] = [[] for _ in clips]
        for k, t in zip(owners, texts):
            per_clip[k].append(t)
        return [merge_captions(ts) for ts in per_clip]

    def caption(self, clip: np.ndarray) -> str:
        return self.caption_many([clip])[0]


# name -> captioner class (``model_dir, device=..., batch_size=..., ...``); ``captions.source``
# "blip2" (and "auto" with a model folder) uses "blip2". A plugin adds one with
# ``CAPTIONERS.register(name, factory)``.
CAPTIONERS = Registry("captioner", {"blip2": Blip2Captioner})


def make_captioner(name: str, model_dir: str | os.PathLike[str], **options: Any):
    """``CAPTIONERS.create(name, model_dir=model_dir, **options)``."""
    return CAPTIONERS.create(name, model_dir=model_dir, **options)
