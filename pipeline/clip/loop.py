"""The one loop over a clip's steps: what the isolation child, every operator of the run and the
bench call.

``ClipSteps(cfg)`` builds the run's steps for one process (``pipeline.steps``: one instance of
each enabled step, sharing one ``Backends``: every backend is built once, on first use) and
sizes the process's thread pools. ``ClipSteps.run(works, names)`` takes clips
(``pipeline.clip.work.ClipWork``) through those steps in order:

* a clip whose stage of a step is already done (``meta["stages_done"]``: resumed from a stage
  cache, or done by an earlier operator) skips it;
* a ``batched`` step (a model) gets every clip of the batch in one call; when that call fails,
  each clip is tried alone, so one bad clip fails alone; other steps get one clip at a time;
* a clip that fails ends with its outcome (``ClipWork.fail``): ``ClipError`` / ``ClipFiltered``
  as raised, anything else ``internal``; the others go on;
* each step's seconds are added to the clip's timings under its stage (``stage_of``), never to
  the sample: a sample's content must not depend on timing.

``encode(work)`` turns a finished clip's sample into its tar members.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from schemas.sample import encode_sample

from pipeline.clip.runtime import import_plugins, keep_freed_memory, set_cpu_threads
from pipeline.clip.work import ClipWork
from pipeline.steps import Backends, Step, stage_of, steps_for

log = logging.getLogger(__name__)

__all__ = ["ClipSteps", "encode"]


class ClipSteps:
    """The steps of a run in one process, and the loop over them (module docstring)."""

    def __init__(self, cfg, target: str = "shards", backends: Backends | None = None):
        import_plugins(cfg.plugins)
        set_cpu_threads(cfg.ray.num_cpus_per_worker)
        keep_freed_memory()
        self.cfg = cfg
        self.backends = backends or Backends(cpu_threads=cfg.ray.num_cpus_per_worker)
        self.steps: list[Step] = [cls(cfg, self.backends) for cls in steps_for(cfg, target)]
        self.stages = {s.name: stage_of(type(s)) for s in self.steps}

    def __getitem__(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} in this run; steps: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def pending(self, work: ClipWork, names: Iterable[str] | None = None) -> list[Step]:
        """The steps (of ``names``, else all) still to do on ``work``."""
        wanted = None if names is None else set(names)
        done = set(work.stages_done)
        return [s for s in self.steps if (wanted is None or s.name in wanted) and self.stages[s.name] not in done]

    def run(self, works: list[ClipWork], names: Iterable[str] | None = None,
            on_step: Callable[[str], None] | None = None) -> list[ClipWork]:
        """Take ``works`` through the steps ``names`` (else all), in the run's order."""
        wanted = None if names is None else set(names)
        for step in self.steps:
            if wanted is not None and step.name not in wanted:
                continue
            stage = self.stages[step.name]
            todo = [w for w in works if not w.done and stage not in w.stages_done]
            if not todo:
                continue
            if on_step is not None:
                on_step(step.name)
            if step.batched and len(todo) > 1 and self._batch(step, stage, todo):
                continue
            for w in todo:
                self._one(step, stage, w)
        return works

    def _batch(self, step: Step, stage: str, todo: list[ClipWork]) -> bool:
        t0 = time.perf_counter()
        try:
            samples = step.run([w.sample for w in todo], [w.row for w in todo])
        except Exception:  # one bad clip must not fail the batch: clip by clip instead
            log.warning("batched %s failed; retrying clip by clip", step.name, exc_info=True)
            return False
        dt = (time.perf_counter() - t0) / len(todo)
        for w, sample in zip(todo, samples):
            w.sample = sample
            self._done(w, step, stage, dt)
        return True

    def _one(self, step: Step, stage: str, w: ClipWork) -> None:
        t0 = time.perf_counter()
        try:
            w.sample = step.run([w.sample], [w.row])[0]
        except Exception as e:  # noqa: BLE001 - recorded per clip (ClipWork.fail)
            w.fail(e)
            return
        self._done(w, step, stage, time.perf_counter() - t0)

    @staticmethod
    def _done(w: ClipWork, step: Step, stage: str, seconds: float) -> None:
        w.add_timings({stage: seconds})
        if step.stage:
            w.mark_done(step.stage)

    def apply(self, names: Iterable[str], sample=None, row: dict | None = None):
        """The steps ``names``, in the order given, on one sample, directly: a clip that ends
        raises its ``ClipError`` / ``ClipFiltered`` (tests, tools that reuse a step)."""
        for name in names:
            sample = self[name].run([sample], [row or {}])[0]
        return sample

    def process(self, row: dict, until: str | None = None, sample=None) -> ClipWork:
        """One clip (from ``sample`` when given: a clip some steps have seen) through the steps
        up to the clip stage ``until`` (else all), in this process (tests, the bench)."""
        names = None
        if until is not None:
            order = list(dict.fromkeys(self.stages.values()))
            names = [n for n, st in self.stages.items() if order.index(st) <= order.index(until)]
        return self.run([ClipWork(row=row, shard=0, sample=sample)], names)[0]


def encode(work: ClipWork) -> dict[str, bytes]:
    """The tar members of a clip whose steps are done (``schemas.sample.encode_sample``)."""
    work.sample.meta.pop("timings", None)  # written by older versions into stage caches
    return encode_sample(work.sample)
