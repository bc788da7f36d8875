"""Run configuration: profiles and per-stage settings, loadable from YAML/JSON and the CLI."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Profile:
    """The training clip format: frame count, size and sampling rate."""

    name: str
    frames: int
    width: int
    height: int
    fps: float

    @property
    def span_seconds(self) -> float:
        """Time from the first to the last sampled frame."""
        return (self.frames - 1) / self.fps


PROFILES: dict[str, Profile] = {
    # DragNUWA paper, Table 1 / Sec. 3.3: low-resolution stage.
    "dragnuwa-ld": Profile("dragnuwa-ld", 8, 320, 192, 4.0),
    # DragNUWA paper: high-resolution stage (the default).
    "dragnuwa-hd": Profile("dragnuwa-hd", 16, 576, 320, 4.0),
    # Stable Video Diffusion / DragEntity base model: 14 frames at 576x320 (frames overridable).
    "svd": Profile("svd", 14, 576, 320, 4.0),
}
DEFAULT_PROFILE = "dragnuwa-hd"


def get_profile(name: str, frames: int | None = None) -> Profile:
    try:
        p = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
    if frames is not None:
        if frames < 2:
            raise ValueError("a profile needs at least 2 frames")
        p = dataclasses.replace(p, frames=int(frames))
    return p


@dataclass
class DecodeConfig:
    jpeg_quality: int = 95          # frames are stored as JPEG; stages see the decoded JPEG
    max_source_pixels: int = 8192 * 8192  # refuse larger frames (decompression bombs)
    max_source_frames: int = 10_000_000
    timeout_s: float = 120.0        # per-clip decode timeout (isolation, see worker)


@dataclass
class FlowConfig:
    backend: str = "dis"            # dis | farneback | raft | unimatch
    preset: str = "medium"          # DIS preset: ultrafast | fast | balanced | medium
    step: float = 1.0 / 16.0        # quantisation step of the stored flow (px); max error step/2
    checkpoint: str | None = None   # weights file for raft/unimatch
    source: str | None = None       # UniMatch source folder
    batch_size: int = 8
    device: str = "auto"


@dataclass
class TrajectoryConfig:
    interval: int = 16              # anchor grid interval lambda
    max_trajectories: int = 8       # N of the paper's draw (the loader draws n ~ U[1, N])


@dataclass
class EntityConfig:
    enabled: bool = True
    masks: str = "auto"             # auto | gt | sam | motion | none
    tracker: str = "flow"           # flow | cotracker
    min_radius: float = 2.0
    keep_background: bool = True
    void_ids: tuple[int, ...] = (0,)
    sam_model: str = "vit_b"
    sam_checkpoint: str | None = None
    cotracker_checkpoint: str | None = None
    fb_threshold: float = 1.5
    device: str = "auto"
    sam: dict = field(default_factory=dict)
    # Added for issue 3 (docs/entities.md): entities under min_area px are dropped (0 = no
    # limit); gt ids 1..stuff_max_id are "stuff" (VIPSeg: background classes), dropped when
    # keep_background is false; motion = stages.masks.segment_motion parameters.
    min_area: int = 0
    stuff_max_id: int = 124
    motion: dict = field(default_factory=dict)
    # Backward flow for the forward-backward checks (motion masks, flow tracker), which is
    # not stored: "auto" = DIS balanced when the flow backend is a CPU one (dis, farneback),
    # else the flow backend itself; "same" = the flow backend; or a DIS preset name.
    backward_flow: str = "auto"


@dataclass
class CaptionConfig:
    """Where each sample's text comes from (stages/captions.py, docs/captions.md)."""

    source: str = "auto"                    # auto | dataset | blip2 | none
    model: str | None = None                # local Hugging Face BLIP-2 folder (never downloaded)
    device: str = "auto"                    # auto | cpu | cuda | cuda:N
    batch_size: int = 8                     # images per model call (clips x frames)
    prompt: str | None = None               # text prefix, e.g. "a photo of"; None = unconditional
    max_new_tokens: int = 30
    frames: tuple[str | int, ...] = ("first",)  # first | mid | last | index; several are merged
    dtype: str = "auto"                     # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16


@dataclass
class FilterConfig:
    """Run-time filters on the per-clip motion statistics (rejects go to the filtered table)."""

    min_motion: float | None = None         # min mean flow magnitude (px/frame)
    max_camera_motion: float | None = None  # max camera translation (px/frame) of the fitted global motion
    drop_cuts: bool = False                 # drop clips whose sampled span contains a scene cut


@dataclass
class ShardConfig:
    samples_per_shard: int = 100
    max_shard_bytes: int = 2_000_000_000


@dataclass
class RayConfig:
    address: str | None = None
    num_workers: int | None = None   # concurrent shard workers; default: CPUs available
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    retries: int = 2


@dataclass
class IsolationConfig:
    """Each clip's stages run in a long-lived child process of the worker, so that a decoder
    that segfaults or hangs costs one clip, not the run (pipeline/isolation.py)."""

    enabled: bool = True
    stage_timeout_s: float = 600.0  # per-stage limit for the stages after decode (decode: decode.timeout_s)
    retries: int = 1                # new attempts (in a fresh child) after a timeout or crash
    start_method: str = "spawn"     # multiprocessing start method of the child: spawn | forkserver


@dataclass
class Config:
    profile: str = DEFAULT_PROFILE
    frames: int | None = None        # override the profile's frame count
    seed: int = 0
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    trajectories: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    entities: EntityConfig = field(default_factory=EntityConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    isolation: IsolationConfig = field(default_factory=IsolationConfig)
    # Modules (dotted names or .py paths) every worker imports first: they register adapters,
    # flow backends, stages.
    plugins: tuple[str, ...] = ()

    def get_profile(self) -> Profile:
        return get_profile(self.profile, self.frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> "Config":
        """A copy with ``section.key=value`` overrides applied (None values are ignored)."""
        return apply_overrides(self, {k: v for k, v in dotted.items() if v is not None})


def _from_dict(cls, data: dict[str, Any]):
    kw = {}
    names = {f.name: f for f in fields(cls)}
    for k, v in data.items():
        if k not in names:
            raise ValueError(f"unknown configuration key {k!r} in {cls.__name__}; known: {', '.join(names)}")
        sub = names[k].default_factory if names[k].default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub) and isinstance(v, dict):
            kw[k] = _from_dict(sub, v)
        elif sub is not None and isinstance(sub, type) and is_dataclass(sub):
            kw[k] = _from_dict(sub, v)
        else:
            kw[k] = tuple(v) if isinstance(names[k].default, tuple) and isinstance(v, list) else v
    return cls(**kw)


def config_from_dict(data: dict[str, Any]) -> Config:
    return _from_dict(Config, data or {})


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return config_from_dict(data)


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ValueError(f"unknown configuration section {p!r} in {dotted!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"unknown configuration key {dotted!r}")
        node[parts[-1]] = value
    return config_from_dict(data)
