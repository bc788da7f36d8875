"""Run configuration: profiles and per-stage settings, loadable from YAML/JSON and the CLI.

Profiles: the built-in ``PROFILES`` and the user's, declared in the ``profiles:`` section
(``ProfileConfig``: frames, width, height, fps, checked like every setting); ``profile``
names one of either, and ``Config.get_profile()`` resolves it (with ``frames`` overriding
its frame count).

Longer than 500 lines because it is the one place every setting is declared, typed and
documented (one section per stage): a reader finds any setting here in one hop.

Every section is a pydantic dataclass (``@section``): types, ranges and choice sets are
checked when a configuration is built, whichever way its values come in (``load_config``
of a YAML/JSON file, ``config_from_dict``, ``apply_overrides`` / ``Config.replace`` with
dotted keys as the CLI uses, or a section built in code). Every problem found is reported
at once in one ``ConfigError`` (a ``ValueError``); each line names the dotted key, the bad
value and what is valid, e.g. ``flow.preset: 'bogus' is not one of ultrafast, fast,
balanced, medium``. Unknown keys are errors too.

Adding a setting is one annotated field in its section, with one of the types below::

    max_trajectories: PosInt = 8          # an int >= 1
    device: Annotated[Device, RUNTIME] = "auto"   # RUNTIME: does not change sample content

Types: ``Bool``, ``Int``, ``PosInt`` (>= 1), ``NonNegInt``, ``PosFloat`` (> 0),
``NonNegFloat``, ``Str``, ``Device`` (auto | cpu | cuda | cuda:N | mps), and
``one_of(choices)`` for a choice set (a tuple, or a function returning the names of a
registry, read when a value is checked so that plugin-registered names count). Scalars are
strict: ``"abc"`` or ``true`` is not a number, ``1`` is not a bool (files and the CLI give
real types). Wrap a type in ``Optional[...]`` to allow null.

``RUNTIME`` marks the settings that do not change what a sample holds (devices, batch
sizes, timeouts); a section class with ``RUNTIME_SECTION = True`` (ray, isolation) is
runtime as a whole. ``pipeline.run.fingerprint`` leaves them out of the content fingerprint;
every other setting, including a new one, counts as content.

Choice sets come from the modules that implement them (the registries
``stages.flow.base.FLOW_BACKENDS``, ``stages.entities.masks.MASK_SOURCES`` and
``stages.entities.tracking.TRACKERS`` through ``stages.entities.extract.mask_choices`` /
``tracker_choices``; ``stages.flow.cpu.DIS_PRESETS``, ``stages.entities.masks_sam.SAM_MODEL_TYPES``),
so the lists cannot drift apart. ``plugins`` is the first field of ``Config`` and its
modules are imported when it is checked, before the sections: a flow backend, mask source
or tracker a plugin registers is a valid ``flow.backend``, ``entities.masks`` or
``entities.tracker``.
"""
import dataclasses
import functools
import json
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterable, Optional, Union

import pydantic
from pydantic import AfterValidator, ConfigDict, Field, Strict, ValidationError, field_validator

from stages.trajectories import FB_ROUNDTRIP_PX, FB_STEP_PX, FB_STEP_REL   # the rule's defaults, declared there

__all__ = [
    "ConfigError", "Profile", "PROFILES", "DEFAULT_PROFILE", "get_profile", "ProfileConfig",
    "DecodeConfig", "FlowConfig", "TrajectoryConfig", "EntityConfig", "FilterConfig", "ShardConfig",
    "RayConfig", "IsolationConfig", "Config", "config_from_dict", "load_config", "apply_overrides",
    "RUNTIME", "is_runtime", "RECORD_KEY", "section",
]


class ConfigError(ValueError):
    """Every problem of a configuration (``problems``: one line each, dotted key first)."""

    def __init__(self, problems: str | Iterable[str], source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" (in {source})" if source else ""
        if len(self.problems) == 1:
            text = self.problems[0] + where
        else:
            text = f"{len(self.problems)} configuration problems{where}:\n" + "\n".join(
                f"  {p}" for p in self.problems)
        super().__init__(text)


# ---- profiles ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Profile:
    """The training clip format: frame count, size and sampling rate."""

    name: str
    frames: int
    width: int
    height: int
    fps: float

    @property
    def span_seconds(self) -> float:
        """Time from the first to the last sampled frame (a shorter clip is ``too_short``)."""
        return (self.frames - 1) / self.fps

    def as_meta(self) -> dict[str, Any]:
        """What a sample's ``meta.profile`` and the fingerprint record of it."""
        return {"name": self.name, "frames": self.frames, "width": self.width, "height": self.height,
                "fps": self.fps}


PROFILES: dict[str, Profile] = {
    # DragNUWA paper, Table 1 / Sec. 3.3: low-resolution stage.
    "dragnuwa-ld": Profile("dragnuwa-ld", 8, 320, 192, 4.0),
    # DragNUWA paper: high-resolution stage (the default).
    "dragnuwa-hd": Profile("dragnuwa-hd", 16, 576, 320, 4.0),
    # Stable Video Diffusion / DragEntity base model: 14 frames at 576x320 (frames overridable).
    "svd": Profile("svd", 14, 576, 320, 4.0),
    # CogVideoX (Tora's backbone): 6 s x 8 fps + 1 = 49 frames at 720x480 (diffusers' pipeline).
    "cogvideox": Profile("cogvideox", 49, 720, 480, 8.0),
    # Wan 2.x at 480p (Wan-Move, ATI): 81 frames (its 4k+1 default) at its fixed 16 fps, 832x480.
    "wan": Profile("wan", 81, 832, 480, 16.0),
}
DEFAULT_PROFILE = "dragnuwa-hd"
# Sizes of a user profile (the config's ``profiles:`` section) are multiples of this: every
# latent video model the profiles serve (SVD, CogVideoX, Wan) encodes frames with a VAE that
# downsamples by 8 (CogVideoX and Wan then patchify by 2, so they want multiples of 16, as the
# built-in sizes are). The pipeline itself would run at any size, but a frame a trainer must
# crop again to feed its VAE no longer matches the stored tracks' coordinates.
PROFILE_SIZE_MULTIPLE = 8
PROFILE_MIN_SIZE = 32          # the decoder refuses sources under 32 px (stages.decode)
_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")   # it names the shard files


def get_profile(name: str, frames: int | None = None, profiles: dict[str, Any] | None = None) -> Profile:
    """The profile called ``name``: a built-in one (``PROFILES``) or one of ``profiles`` (the
    config's ``profiles:`` section: name -> frames, width, height, fps), with ``frames``
    overriding its frame count."""
    user = profiles or {}
    if name in PROFILES:
        p = PROFILES[name]
    elif name in user:
        spec = user[name]
        get = spec.get if isinstance(spec, dict) else functools.partial(getattr, spec)
        p = Profile(name, int(get("frames")), int(get("width")), int(get("height")), float(get("fps")))
    else:
        known = ", ".join([*PROFILES, *user])
        raise ValueError(f"unknown profile {name!r}; known: {known} (add one in the config's profiles: section)")
    if frames is not None:
        if frames < 2:
            raise ValueError("a profile needs at least 2 frames")
        p = dataclasses.replace(p, frames=int(frames))
    return p


# ---- field types ------------------------------------------------------------------------------

class _Runtime:
    """Marker (in ``Annotated``) of a setting that does not change sample content."""

    def __repr__(self) -> str:
        return "RUNTIME"


RUNTIME = _Runtime()
# Key written by pipeline.run.fingerprint into OUT/config.json next to the settings; ignored when
# a configuration is loaded, so that ``--config OUT/config.json`` reruns with those settings.
RECORD_KEY = "fingerprint"

Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
Str = Annotated[str, Strict()]


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]):
    """A case-insensitive choice of ``choices`` (stored lower-case); a callable is read at
    each check (a registry that plugins extend)."""

    def check(value: str) -> str:
        valid = [str(c) for c in (choices() if callable(choices) else choices)]
        key = value.lower()
        if key not in valid:
            raise ValueError(f"{value!r} is not one of {', '.join(valid)}")
        return key

    return Annotated[str, Strict(), AfterValidator(check)]


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)\Z")


def _check_device(value: str) -> str:
    key = value.lower()
    if not _DEVICE.match(key):
        raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return key


Device = Annotated[str, Strict(), AfterValidator(_check_device)]


def _flow_backends() -> Iterable[str]:
    from stages.flow.base import FLOW_BACKENDS

    return FLOW_BACKENDS


def _decoders() -> Iterable[str]:
    from stages.decoders import decoder_choices

    return decoder_choices()


def _dis_presets() -> Iterable[str]:
    from stages.flow.cpu import DIS_PRESETS

    return DIS_PRESETS


def _backward_flows() -> Iterable[str]:
    from stages.flow.backward import backward_choices

    return backward_choices()


def _mask_choices() -> Iterable[str]:
    from stages.entities.extract import mask_choices

    return mask_choices()


def _tracker_choices() -> Iterable[str]:
    from stages.entities.extract import tracker_choices

    return tracker_choices()


def _anchor_trackers() -> Iterable[str]:
    from stages.anchors.base import ANCHOR_TRACKERS

    return ANCHOR_TRACKERS.choices()


def _sam_models() -> Iterable[str]:
    from stages.entities.masks_sam import SAM_MODEL_TYPES

    return SAM_MODEL_TYPES


def _group_names() -> Iterable[str]:
    from pipeline.steps import operator_names

    return operator_names()


def _group_keys() -> Iterable[str]:
    from pipeline.run.groups import GROUP_KEYS

    return GROUP_KEYS


# ---- sections ---------------------------------------------------------------------------------

_PYDANTIC = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=False)
_SECTION_NAMES: dict[type, str] = {}  # section class -> its key in Config (filled below)


def section(cls):
    """A configuration section: a pydantic dataclass whose construction and assignments
    raise ``ConfigError`` (dotted keys) instead of pydantic's ``ValidationError``."""
    cls = pydantic.dataclasses.dataclass(cls, config=_PYDANTIC)
    init, setattr_ = cls.__init__, cls.__setattr__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            raise ConfigError(_problems(e, type(self))) from None

    @functools.wraps(setattr_)
    def __setattr__(self, name, value):
        try:
            setattr_(self, name, value)
        except ValidationError as e:
            raise ConfigError(_problems(e, type(self))) from None

    cls.__init__, cls.__setattr__ = __init__, __setattr__
    return cls


@section
class DecodeConfig:
    """Decoding and frame storage: the decode step (pipeline/steps/decode.py: stages/decode.py,
    JPEG encoding) and the decode time limit of pipeline/clip/isolation.py. ``backend``: a
    decoder of ``stages.decoders.DECODERS`` (built by preflight before the first clip); the
    fingerprint records the one ``auto`` resolves to, and the device type."""

    backend: one_of(_decoders) = "auto"   # auto (decord where it imports, else pyav) | decord | pyav | torchcodec
    device: Annotated[Device, RUNTIME] = "cpu"  # torchcodec: cpu | cuda | cuda:N | auto (decord, pyav: cpu)
    jpeg_quality: Annotated[int, Strict(), Field(ge=1, le=100)] = 95  # frames are stored as JPEG; stages see the decoded JPEG
    max_source_pixels: PosInt = 8192 * 8192  # refuse larger frames (decompression bombs)
    max_source_frames: PosInt = 10_000_000
    timeout_s: Annotated[PosFloat, RUNTIME] = 120.0  # per-clip decode timeout (isolation, see worker)


@section
class FlowConfig:
    """Dense optical flow. Backends in stages/flow/ (registry ``FLOW_BACKENDS``), built by the
    flow step (pipeline/steps/flow.py), which also builds the backward flow of the checks
    (``entities.backward_flow``); a backend that declares ``device_kind = "torch"`` gets its own
    operator on a GPU cluster (pipeline/run/groups.py)."""

    backend: one_of(_flow_backends) = "dis"        # dis | farneback | raft | unimatch | a plugin's
    preset: one_of(_dis_presets) = "medium"        # DIS preset: ultrafast | fast | balanced | medium
    step: PosFloat = 1.0 / 16.0     # quantisation step of the stored flow (px); max error step/2
    checkpoint: Optional[Str] = None   # weights file for raft/unimatch
    source: Optional[Str] = None       # UniMatch source folder
    batch_size: Annotated[PosInt, RUNTIME] = 8
    device: Annotated[Device, RUNTIME] = "auto"


@section
class TrajectoryConfig:
    """Anchored trajectories: the anchors step (pipeline/steps/anchors.py) calls
    stages/trajectories.py; the loader draws from them (pipeline/train/loader.py)."""

    interval: PosInt = 16              # anchor grid interval lambda
    max_trajectories: PosInt = 8       # N of the paper's draw (the loader draws n ~ U[1, N])
    # Anchor reliability (docs/trajectories.md): forward-backward checks with the backward
    # flow of entities.backward_flow; a step passes when its FB error <= reliable_step_px
    # (+ reliable_step_rel * |step|) and the position chained back to frame 0 lands within
    # reliable_roundtrip_px of the anchor (None turns a test off; reliability false stores
    # no reliable array, and the loader then treats the anchors as unverified).
    # Issue 23: the defaults are stages.trajectories' FB_STEP_PX, FB_STEP_REL (a step tolerance
    # that grows with the step, Sundaram et al.'s form) and FB_ROUNDTRIP_PX (0.3 x the paper's
    # Gaussian sigma of 10 px); the measured trade-off table is in docs/trajectories.md.
    reliability: Bool = True
    reliable_step_px: Optional[PosFloat] = FB_STEP_PX          # 0.7
    reliable_step_rel: NonNegFloat = FB_STEP_REL               # 0.14
    reliable_roundtrip_px: Optional[PosFloat] = FB_ROUNDTRIP_PX  # 3.0
    # Issue 23: what follows the anchors (stages/anchors/, ANCHOR_TRACKERS): "flow" (the dense
    # flow chained, the rule above), "lk" (the same rule, each step the midpoint of the forward
    # and the inverted backward flow, a step failing the dense test re-tracked by pyramidal
    # Lucas-Kanade with its own checks; CPU), "cotracker" (CoTracker3 on the grid,
    # torch; its own visibility/confidence rule). tracker_options: the backend's own settings
    # (stages/anchors/lk.py, stages/anchors/cotracker.py); cotracker_checkpoint: CoTracker3's
    # offline weights (scaled_offline.pth); device/batch_size: where and how many clips per call.
    tracker: one_of(_anchor_trackers) = "lk"
    tracker_options: dict[str, Any] = field(default_factory=dict)
    cotracker_checkpoint: Optional[Str] = None
    device: Annotated[Device, RUNTIME] = "auto"
    batch_size: Annotated[PosInt, RUNTIME] = 1     # CoTracker3 offline takes one video per call


@section
class EntityConfig:
    """DragEntity entities: the entity steps (pipeline/steps/entity_masks.py: mask sources
    ``MASK_SOURCES``; entity_tracks.py: trackers ``TRACKERS``) call stages/entities/; SAM masks
    and CoTracker tracks get their own operators on a GPU cluster (pipeline/run/groups.py)."""

    enabled: Bool = True
    masks: one_of(_mask_choices) = "auto"        # auto | gt | sam | motion | none
    tracker: one_of(_tracker_choices) = "flow"   # flow | cotracker
    min_radius: NonNegFloat = 2.0
    keep_background: Bool = True
    void_ids: tuple[Int, ...] = (0,)
    sam_model: one_of(_sam_models) = "vit_b"     # vit_b | vit_l | vit_h (| tiny_test)
    sam_checkpoint: Optional[Str] = None
    cotracker_checkpoint: Optional[Str] = None
    fb_threshold: PosFloat = 1.5
    device: Annotated[Device, RUNTIME] = "auto"
    sam: dict[str, Any] = field(default_factory=dict)   # SamAutomaticMaskGenerator parameters
    # Added for issue 3 (docs/entities.md): entities under min_area px are dropped (0 = no
    # limit); gt ids 1..stuff_max_id are "stuff" (VIPSeg: background classes), dropped when
    # keep_background is false; motion = stages.entities.masks_motion.segment_motion parameters.
    min_area: NonNegInt = 0
    stuff_max_id: NonNegInt = 124
    motion: dict[str, Any] = field(default_factory=dict)
    # Backward flow for the forward-backward checks (motion masks, flow tracker), which is
    # not stored: "auto" = DIS balanced when the flow backend is a CPU one (dis, farneback),
    # else the flow backend itself; "same" = the flow backend; or a DIS preset name.
    backward_flow: one_of(_backward_flows) = "auto"


@section
class CaptionConfig:
    """Where each sample's text comes from: the captions step (pipeline/steps/captions.py)
    calls stages/captions.py; a GPU cluster gives it an operator (docs/captions.md)."""

    source: one_of(("auto", "dataset", "blip2", "none")) = "auto"
    model: Optional[Str] = None                 # local Hugging Face BLIP-2 folder (never downloaded)
    device: Annotated[Device, RUNTIME] = "auto"
    batch_size: Annotated[PosInt, RUNTIME] = 8  # images per model call (clips x frames)
    prompt: Optional[Str] = None                # text prefix, e.g. "a photo of"; None = unconditional
    max_new_tokens: PosInt = 30
    frames: tuple[Union[Str, Int], ...] = ("first",)  # first | mid | last | index; several are merged
    dtype: one_of(("auto", "fp32", "bf16", "fp16")) = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU


@section
class FilterConfig:
    """Run-time filters on the per-clip statistics (rejects go to the filtered table): the motion
    step (stages/motion.py ``check_filters``) and the anchors step (``min_trackable``)."""

    min_motion: Optional[NonNegFloat] = None         # min mean flow magnitude (px/frame)
    max_camera_motion: Optional[NonNegFloat] = None  # max camera translation (px/frame) of the fitted global motion
    drop_cuts: Bool = False                          # drop clips whose sampled span contains a scene cut
    # min share of the anchors in frame through the clip that are reliable through it
    # (meta.anchors.trackability.reliable_through); 0 or None = keep all (the default). 0.05
    # (measured, docs/trajectories.md) drops the clips whose flow failed (real fast hand-held
    # clips at HD: round trip of all anchors 14-150 px)
    min_trackable: Optional[Annotated[float, Strict(), Field(ge=0, le=1)]] = None


@section
class ShardConfig:
    """Shard membership (``row // samples_per_shard``: pipeline/run/plan.py, runner.py) and tar
    splitting (pipeline/run/commit.py, ``TarShardWriter`` in pipeline/shards.py)."""

    samples_per_shard: PosInt = 100
    max_shard_bytes: Annotated[PosInt, RUNTIME] = 2_000_000_000


@section
class RayConfig:
    """Execution: pipeline/run/plan.py (cluster, workers), pipeline/run/groups.py (stage groups
    and their resources), pipeline/run/executors.py (actor pools, retries)."""

    RUNTIME_SECTION: ClassVar[bool] = True

    address: Optional[Str] = None
    num_workers: Optional[PosInt] = None   # concurrent CPU workers (the first stage group); default: CPUs available
    num_cpus_per_worker: NonNegFloat = 1.0
    num_gpus_per_worker: NonNegFloat = 0.0
    retries: NonNegInt = 2                 # attempts of a shard commit task after a failure (executors.Committer)
    # Stage groups (pipeline/run/groups.py): model stages run as GPU operators when the
    # cluster has GPUs (None = auto; False = one fused operator per clip everywhere), and
    # per-group resources: {"cpu" | an operator a step declares (flow, masks, tracks, captions,
    # a plugin step's): {num_cpus, num_gpus,
    # batch_size, min_actors, max_actors}}.
    gpu_operators: Optional[Bool] = None
    groups: dict[one_of(_group_names), dict[one_of(_group_keys), Annotated[float, Field(ge=0)]]] = field(
        default_factory=dict)
    quiet: Bool = True  # Ray's own console output goes to its log folder (pipeline/run/console.py)


@section
class IsolationConfig:
    """Each clip's stages run in a long-lived child process of the worker, so that a decoder
    that segfaults or hangs costs one clip, not the run (pipeline/clip/isolation.py)."""

    RUNTIME_SECTION: ClassVar[bool] = True

    enabled: Bool = True
    stage_timeout_s: PosFloat = 600.0  # per-stage limit for the stages after decode (decode: decode.timeout_s)
    retries: NonNegInt = 1             # new attempts (in a fresh child) after a timeout or crash
    start_method: one_of(("spawn", "forkserver")) = "spawn"  # multiprocessing start method of the child


def _check_profile_size(value: int) -> int:
    if value < PROFILE_MIN_SIZE or value % PROFILE_SIZE_MULTIPLE:
        raise ValueError(f"got {value!r}, should be a multiple of {PROFILE_SIZE_MULTIPLE} of at least "
                         f"{PROFILE_MIN_SIZE} px (the VAEs of the video models downsample by 8)")
    return value


def _check_profile_name(name: str) -> str:
    if name in PROFILES:
        raise ValueError(f"{name!r} is a built-in profile ({PROFILES[name].frames} frames, "
                         f"{PROFILES[name].width}x{PROFILES[name].height}, {PROFILES[name].fps:g} fps); "
                         "a user profile needs a name of its own")
    if not _PROFILE_NAME.match(name):
        raise ValueError(f"{name!r} is not a profile name: lower-case letters, digits, '-' and '_' "
                         "(it names the shard files)")
    return name


ProfileSize = Annotated[int, Strict(), AfterValidator(_check_profile_size)]
ProfileName = Annotated[str, Strict(), AfterValidator(_check_profile_name)]


@section
class ProfileConfig:
    """One user profile of the ``profiles:`` section (``profiles: {NAME: {frames, width,
    height, fps}}``): the clip format a run makes when ``profile: NAME`` names it, exactly
    like a built-in one (``PROFILES``). Its values count in the fingerprint through the
    resolved profile (``pipeline.run.fingerprint``); profiles that the run does not use do
    not."""

    frames: Annotated[int, Strict(), Field(ge=2)]   # a flow needs a pair of frames
    width: ProfileSize
    height: ProfileSize
    fps: PosFloat


@section
class Config:
    # Modules (dotted names or .py paths) every worker imports first: they register adapters,
    # flow backends, stages. First field: imported when checked, before the sections are.
    plugins: tuple[Str, ...] = ()
    # User profiles (name -> frames, width, height, fps); before ``profile``, which may name one.
    profiles: dict[ProfileName, ProfileConfig] = field(default_factory=dict)
    profile: Str = DEFAULT_PROFILE   # a built-in profile (PROFILES) or one of profiles
    frames: Optional[Annotated[int, Strict(), Field(ge=2)]] = None   # override the profile's frame count
    seed: Int = 0
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    trajectories: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    entities: EntityConfig = field(default_factory=EntityConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    isolation: IsolationConfig = field(default_factory=IsolationConfig)

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if names:
            from pipeline.clip.runtime import import_plugins

            for name in names:
                try:
                    import_plugins((name,))
                except Exception as e:  # noqa: BLE001 - any failure of the plugin's import
                    raise ValueError(f"cannot import plugin {name!r}: {type(e).__name__}: {e}") from None
        return names

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str, info: pydantic.ValidationInfo) -> str:
        if "profiles" not in info.data:   # the profiles section has its own problems, listed
            return name
        key = name.lower()
        known = [*PROFILES, *info.data["profiles"]]
        if key not in known:
            raise ValueError(f"{name!r} is not one of {', '.join(known)} (built-in profiles, and those of "
                             "the profiles: section)")
        return key

    def get_profile(self) -> Profile:
        return get_profile(self.profile, self.frames, self.profiles)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> "Config":
        """A copy with ``section.key=value`` overrides applied (None values are ignored)."""
        return apply_overrides(self, {k: v for k, v in dotted.items() if v is not None})


def _field_types(cls) -> dict[str, Any]:
    return {name: f.annotation for name, f in cls.__pydantic_fields__.items()}


for _name, _tp in _field_types(Config).items():
    if dataclasses.is_dataclass(_tp):
        _SECTION_NAMES[_tp] = _name


def is_runtime(section_cls: type, name: str | None = None) -> bool:
    """Whether a section (``name`` None) or one of its fields does not change sample content."""
    if getattr(section_cls, "RUNTIME_SECTION", False):
        return True
    if name is None:
        return False
    info = section_cls.__pydantic_fields__[name]
    return any(m is RUNTIME for m in info.metadata)


# ---- errors -----------------------------------------------------------------------------------

def _class_at(cls, path: tuple) -> "type | None":
    for part in path:
        tp = _field_types(cls).get(part) if isinstance(part, str) else None
        if not dataclasses.is_dataclass(tp):
            return None
        cls = tp
    return cls


def _dotted(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _problems(err: ValidationError, cls: type) -> list[str]:
    """pydantic's errors as lines ``dotted.key: what is wrong``; ``cls`` is the class that
    was validated (its key in Config prefixes the locations of a section built alone)."""
    prefix = (_SECTION_NAMES[cls],) if cls in _SECTION_NAMES else ()
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        if loc and loc[-1] == "[key]":   # a mapping's key (a profile's name): the key itself
            loc = loc[:-1]
        key = _dotted(prefix + loc) or "configuration"
        kind, value = e["type"], e.get("input")
        if kind == "missing":
            msg = "missing"
        elif kind == "value_error":
            msg = str(e["ctx"]["error"])
        elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
            owner = _class_at(cls, loc[:-1])
            known = f"; known: {', '.join(_field_types(owner))}" if owner is not None else ""
            msg = f"unknown key{known}"
        elif kind == "dataclass_type":
            msg = f"must be a mapping of settings, got {value!r}"
        else:
            text = e["msg"]
            text = "should" + text[len("Input should"):] if text.startswith("Input should") else text[0].lower() + text[1:]
            msg = f"got {value!r}, {text}"
        out.append(f"{key}: {msg}")
    return out


# ---- building a configuration -----------------------------------------------------------------

def config_from_dict(data: dict[str, Any] | None, source: str | None = None) -> Config:
    """A checked ``Config`` from nested mappings (sections as dicts); raises ``ConfigError``
    listing every problem. ``source`` names where the data came from in the message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the configuration must be a mapping of sections, got {type(data).__name__}", source)
    data = {k: v for k, v in data.items() if k != RECORD_KEY}
    try:
        return Config(**data)
    except ConfigError as e:
        raise ConfigError(e.problems, source) from None


def load_config(path: str | Path | None) -> Config:
    """The configuration of a YAML (``.yaml``/``.yml``) or JSON file (None: the defaults)."""
    if path is None:
        return Config()
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse the YAML: {e}", str(path)) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"cannot parse the JSON: {e}", str(path)) from None
    return config_from_dict(data, source=str(path))


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted ``section.key`` overrides; the result is checked as a
    whole (``ConfigError`` lists unknown keys and bad values together)."""
    data = cfg.to_dict()
    problems = []
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            if p not in node or not isinstance(node[p], dict):
                known = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                problems.append(f"{dotted}: unknown section {'.'.join(parts[:i + 1])!r}; known: {known}")
                node = None
                break
            node = node[p]
        if node is None:
            continue
        if parts[-1] not in node:
            problems.append(f"{dotted}: unknown key; known: {', '.join(node)}")
            continue
        node[parts[-1]] = value
    try:
        new = config_from_dict(data)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    return new
