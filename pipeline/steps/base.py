"""What a clip step is: one class per step, declaring everything the run needs to know of it.

A step (cosmos-curate's stage shape, datatrove's one ``run``) declares

* ``name`` and the clip ``stage`` it completes (recorded in ``meta.stages_done``, the key of its
  seconds in the shard stats, a value of ``--stage``), or None when it is the first part of the
  next step's stage (``entity_masks`` is part of ``entities``);
* ``enabled(cfg)``: whether the run performs it at all;
* ``resources(cfg)``: a ``Resources`` derived from the ``device_kind`` its backend declares
  (``cpu`` or ``torch``), never from a backend's name; ``light`` steps (a few ms of CPU) run in
  the operator of the step before them;
* ``devices(cfg)``: the device settings its backends use (preflight checks they exist);
* ``__init__(cfg, backends)``: reads its config section, once, into explicit values for
  ``stages/`` (no defaults repeated downstream); ``backends`` is the process's ``Backends``,
  which builds each backend once and shares it between steps (the main flow backend serves
  the flow step, the anchors' backward flow and the entity checks);
* ``setup()``: builds its backends now and describes them (preflight; a failure is a
  ``SetupError`` naming what to fix);
* ``run(samples, rows)``: the step on a batch of clips (one clip is a batch of one); it fills
  each ``schemas.sample.Sample`` and raises ``ClipError`` / ``ClipFiltered`` for a clip that ends
  here. ``batched`` steps (model steps) gain from several clips per call; the loop
  (``pipeline.clip.loop``) gives the others one clip at a time.

The step list is ``pipeline.steps.STEPS``; the planner (``pipeline.run.groups``), the loop,
preflight and the fingerprint ask the steps instead of keeping tables of their own.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from schemas.sample import Sample

__all__ = ["CPU", "TORCH", "Resources", "Step", "Backends", "SetupError", "setup_failure", "setting_up", "short"]

CPU, TORCH = "cpu", "torch"


class SetupError(Exception):
    """The run's setup cannot work (a backend that cannot be built, a device that is not there,
    an OUT that cannot be written, a dataset that cannot be listed, settings that differ from
    the done shards'): the message names what failed and the fix. Like ``config.ConfigError``
    it stops the run before the first clip (exit status 2), with nothing marked done."""


@dataclass(frozen=True)
class Resources:
    """Where a step runs on a GPU cluster: ``device`` ``cpu`` or ``torch`` (its backend's
    ``device_kind``), the ``operator`` it shares with its neighbours there (the name of the
    ``ray.groups.<operator>`` settings) and that operator's default clips per call."""

    device: str = CPU
    operator: str = "cpu"
    batch_size: int = 1

    @property
    def gpu(self) -> bool:
        return self.device != CPU


def setup_failure(what: str, e: BaseException | str, fix: str) -> SetupError:
    """The one wording of a setup error: what failed, its own message, how to fix it."""
    msg = e if isinstance(e, str) else (str(getattr(e, "message", "") or "") or str(e) or type(e).__name__)
    return SetupError(f"cannot set up {what}: {msg}\n  to fix: {fix}")


@contextmanager
def setting_up(what: str, fix: str):
    """Whatever building ``what`` inside the block raises becomes its setup error
    (``setup_failure``: what failed, its own message, ``fix``)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever a backend raises is its own message
        raise setup_failure(what, e, fix) from e


def short(desc: dict[str, Any], *keys: str) -> str:
    """A backend's describe() in a few words (preflight's console line): the values of
    ``keys`` that are set, then ``on DEVICE``."""
    parts = [str(desc[k]) for k in keys if desc.get(k) not in (None, "")]
    if desc.get("device"):
        parts.append(f"on {desc['device']}")
    return " ".join(parts)


class Backends:
    """The backends of one process, each built once (on first ``get``) and shared by the steps
    that use it. A failure is remembered and raised again for every clip that asks (cheaply).
    ``device``: a device that replaces every configured one (preflight builds on the CPU what
    a remote cluster's GPU workers will run)."""

    def __init__(self, device: str | None = None, cpu_threads: float | None = None):
        self.device = device
        self.cpu_threads = cpu_threads    # torch's pool is sized to it once torch is imported
        self._made: dict[str, Any] = {}
        self._torch_sized = cpu_threads is None

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._made:
            try:
                self._made[key] = make()
            except Exception as e:  # noqa: BLE001 - raised again below, and for every later clip
                self._made[key] = e
            self.size_torch_threads()
        value = self._made[key]
        if isinstance(value, Exception):
            raise value
        return value

    def on(self, configured: str | None) -> str | None:
        """The device a backend is built on: the override, else the configured one."""
        return self.device or configured

    def size_torch_threads(self) -> None:
        """Size torch's thread pool once a backend has imported torch (``set_cpu_threads``)."""
        if not self._torch_sized and "torch" in sys.modules:
            from pipeline.clip.runtime import set_cpu_threads

            set_cpu_threads(self.cpu_threads)
            self._torch_sized = True

    def release(self) -> None:
        """Drop every backend (preflight: free a GPU model it built)."""
        self._made.clear()


class Step:
    """One clip step (module docstring). Subclasses set the class attributes and ``run``."""

    name: ClassVar[str]
    stage: ClassVar[str | None] = None
    operator: ClassVar[str | None] = None  # its operator on a GPU cluster (ray.groups.<operator>) when it needs one
    batched: ClassVar[bool] = False       # run() gains from several clips per call (model steps)
    light: ClassVar[bool] = False         # a few ms of CPU: runs in the previous step's operator

    def __init__(self, cfg, backends: Backends):
        self.cfg = cfg
        self.backends = backends

    @classmethod
    def enabled(cls, cfg) -> bool:
        return True

    @classmethod
    def resources(cls, cfg) -> Resources:
        return Resources()

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        return {}

    @classmethod
    def reads_backward_flow(cls, cfg) -> bool:
        """Whether it uses ``Sample.backward_flow`` (made by a step before it, or by itself):
        an operator carries that array (22 MB per HD clip) to the next only when a later step
        reads it."""
        return False

    def setup(self) -> dict[str, str]:
        return {}

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, stage={self.stage!r})"
