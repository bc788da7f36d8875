"""``GroupRunner``: one stage group's work on a batch of clips, the same for both executors.

The local executor calls it in-process; the Ray executor wraps it in an actor
(``executors.GroupOperator``) and moves ``ClipWork`` between groups as wire bytes.

- The first group turns manifest rows into ``ClipWork`` (resuming from a stage cache where
  one exists) and runs its steps; its clip stages run in the clip-isolation child when
  ``isolation.enabled`` (a decoder that crashes or hangs costs one clip).
- Model steps run over the whole batch (``flow_many``, ``entity_masks_many``): several clips
  per model call. A batch call that fails is retried clip by clip, so one bad clip fails
  alone.
- The last group encodes the sample's members and stages the part (``parts.write_part``).

Every clip ends finished (ok / error / filtered) with its part staged, whatever fails.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections import OrderedDict
from typing import Callable

from schemas.sample import Sample, encode_sample
from schemas.status import STATUS_ERROR, STATUS_OK
from stages.errors import ClipError

from pipeline.inputs.manifest import ManifestRows
from pipeline.shards import read_indexed, read_stats, tar_index
from pipeline.clip.processor import ClipFiltered, ClipProcessor
from schemas.status import CLIP_STAGES
from pipeline.run.groups import STEP_STAGE, StageGroup, steps_for
from pipeline.run.layout import RunLayout, shard_of
from pipeline.run.parts import write_part
from pipeline.run.work import ClipWork

log = logging.getLogger(__name__)

WORKER = f"{socket.gethostname()}:{os.getpid()}"
_BATCHED = ("captions", "flow", "entity_masks")   # model steps run over the batch (ClipProcessor.step_many)


class StageCache:
    """Members of clips kept by an earlier ``--stage X`` run (``OUT/_stages/X/``), read per
    clip: the tar's member index is read once per shard, then only that clip's bytes."""

    def __init__(self, layout: RunLayout, target: str, keep: int = 2):
        until = "entities" if target == "shards" else target
        self.layout = layout
        self.stages = [s for s in CLIP_STAGES[: CLIP_STAGES.index(until) + 1]][::-1]
        self._shards: OrderedDict[int, tuple] = OrderedDict()
        self.keep = keep

    def _load(self, shard: int):
        from pipeline.io import join
        from pipeline.storage import read_parquet

        for stage in self.stages:
            if stage == self.layout.stage:
                continue  # the target's own output is what this run makes
            paths = self.layout.shard_paths(shard, stage)
            stats = read_stats(paths["stats"])
            if stats is None:
                continue
            d = self.layout.stage_dir(stage)
            index = tar_index(join(d, t) for t in stats.get("tars", []))
            status = {r["clip_id"]: r for r in read_parquet(paths["status"]).to_pylist()}
            return stage, index, status
        return None, {}, {}

    def lookup(self, shard: int, clip_id: str) -> tuple[str | None, dict | None, dict | None]:
        """(stage, members or None, status row or None) of a clip in the best stage cache."""
        if shard not in self._shards:
            self._shards[shard] = self._load(shard)
            while len(self._shards) > self.keep:
                self._shards.popitem(last=False)
        stage, index, status = self._shards[shard]
        if stage is None:
            return None, None, None
        where = index.get(clip_id)
        return stage, read_indexed(where) if where is not None else None, status.get(clip_id)


def _fail(work: ClipWork, exc: BaseException) -> None:
    if isinstance(exc, ClipFiltered):
        work.filtered(exc.reason, exc.message)
    elif isinstance(exc, ClipError):
        work.error(exc.reason, exc.message)
    else:  # a bug or an unexpected library failure: record it, go on
        log.warning("clip %s failed: %s", work.clip_id, traceback.format_exc(limit=3))
        work.error("internal", f"{type(exc).__name__}: {exc}"[:2000])


class GroupRunner:
    """Runs one stage group (see the module docstring)."""

    def __init__(self, group: StageGroup, cfg, layout: RunLayout, manifest: str | None = None,
                 processor: ClipProcessor | None = None, commit_check: Callable[[], None] | None = None):
        self.group, self.cfg, self.layout = group, cfg, layout
        self.steps = [s for s in group.steps if s in steps_for(layout.stage)]
        self.processor = processor or ClipProcessor(cfg)
        self.commit_check = commit_check
        self.manifest = ManifestRows(manifest) if (group.first and manifest) else None
        self.cache = StageCache(layout, layout.stage) if group.first else None
        self.runner = None
        if group.first and cfg.isolation.enabled:
            from pipeline.clip.isolation import IsolatedRunner

            # a fused group gets the encoded members back from the child (2 MB, not 30 MB)
            self.runner = IsolatedRunner(cfg, encoded=group.fused)
        self.busy_s = self.wait_s = 0.0
        self._last_end: float | None = None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        if self.manifest is not None:
            self.manifest.close()
            self.manifest = None

    # ---- input of the first group
    def load(self, start: int, stop: int) -> list[ClipWork]:
        sps = self.cfg.shards.samples_per_shard
        works = []
        for row in self.manifest.rows(start, stop):
            w = ClipWork(row=row, shard=shard_of(row["row"], sps), worker=WORKER)
            stage, members, prior = self.cache.lookup(w.shard, w.clip_id)
            if prior is not None and prior["status"] != STATUS_OK:
                (w.error if prior["status"] == STATUS_ERROR else w.filtered)(prior["reason"], prior["message"])
            elif members is not None:
                w.sample = Sample.from_members(members, key=w.clip_id)
                w.stages_done = list(w.sample.meta.get("stages_done") or [])
                w.resumed_from = stage
            works.append(w)
        return works

    # ---- the group's work
    def __call__(self, works: list[ClipWork]) -> list[ClipWork]:
        t0 = time.perf_counter()
        if self._last_end is not None:
            self.wait_s += t0 - self._last_end
        n = len(works)
        for w in works:
            w.batches[self.group.name] = n
            if self._last_end is not None:
                w.waits[self.group.name] = round((t0 - self._last_end) / n, 4)
        if self.group.first:
            for w in works:
                if not w.done:
                    self._first_steps(w)
        pending = [s for s in self.steps if not (self.group.first and self.runner is not None and self._in_child(s))]
        for step in pending:
            todo = [w for w in works if not w.done and STEP_STAGE[step] not in w.stages_done
                    and not (step == "entity_tracks" and "entities" in w.stages_done)]
            if todo:
                self._step(step, todo)
        if self.group.last:
            for w in works:
                self._encode_and_stage(w)
        self._last_end = time.perf_counter()
        self.busy_s += self._last_end - t0
        return works

    def _in_child(self, step: str) -> bool:
        """Steps the isolation child runs in the first group: whole clip stages up to ``until``."""
        until = self.group.until
        return until is not None and CLIP_STAGES.index(STEP_STAGE[step]) <= CLIP_STAGES.index(until) and (
            step != "entity_masks" or "entity_tracks" in self.group.steps)

    def _first_steps(self, w: ClipWork) -> None:
        if self.runner is None or self.group.until is None:
            return
        if set(CLIP_STAGES[: CLIP_STAGES.index(self.group.until) + 1]) <= set(w.stages_done):
            return  # all of it comes from the stage cache
        try:
            out = self.runner(self.processor, w.row, self.group.until, w.sample)
        except BaseException as e:  # noqa: BLE001 - recorded per clip
            if not isinstance(e, Exception):
                raise
            _fail(w, e)
            return
        w.add_timings(out.timings)
        w.stages_done = list(out.stages_done)
        w.sample = out.sample          # only its meta when the child sent the encoded members
        if out.members is not None:
            w.members = out.members

    def _step(self, step: str, todo: list[ClipWork]) -> None:
        proc = self.processor
        stage = STEP_STAGE[step]
        if step in _BATCHED and len(todo) > 1:
            t0 = time.perf_counter()
            try:
                proc.step_many(step, [w.sample for w in todo], [w.row for w in todo])
            except Exception:  # one bad clip must not fail the batch: clip by clip below
                log.warning("batched %s failed; retrying clip by clip", step, exc_info=True)
            else:
                dt = (time.perf_counter() - t0) / len(todo)
                for w in todo:
                    w.add_timings({stage: dt})
                    self._mark(w, step)
                return
        for w in todo:
            t0 = time.perf_counter()
            try:
                out = proc.step(step, w.sample, w.row)
                if step == "decode":
                    w.sample = out
            except Exception as e:
                _fail(w, e)
                continue
            w.add_timings({stage: time.perf_counter() - t0})
            self._mark(w, step)

    @staticmethod
    def _mark(w: ClipWork, step: str) -> None:
        stage = STEP_STAGE[step]
        if step != "entity_masks" and stage not in w.stages_done:
            w.stages_done.append(stage)

    def _encode_and_stage(self, w: ClipWork) -> None:
        if not w.done:
            try:
                if w.members is None:
                    s = w.sample
                    s.meta.pop("timings", None)
                    s.meta["stages_done"] = list(w.stages_done)
                    w.members = encode_sample(s)
                w.ok(w.members, w.sample.meta if w.sample is not None else None)
            except Exception as e:
                _fail(w, e)
        if self.commit_check is not None:
            self.commit_check()  # fencing: a straggler of a killed run stages nothing (lock.py)
        write_part(self.layout, w)
