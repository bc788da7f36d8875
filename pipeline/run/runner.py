"""``GroupRunner``: one stage group's work on a batch of clips, the same for both executors.

The local executor calls it in-process; the Ray executor wraps it in an actor
(``executors.GroupOperator``) and moves ``ClipWork`` between groups as wire bytes.

- The first group turns manifest rows into ``ClipWork`` (resuming from a stage cache where
  one exists); its steps run in the clip-isolation child when ``isolation.enabled`` (a
  decoder that crashes or hangs costs one clip), else in-process.
- The steps themselves run in the one loop (``pipeline.clip.loop.ClipSteps``): model steps
  over the whole batch, a failed batch retried clip by clip.
- The last group encodes the sample's members and stages the part (``parts.write_part``).

Every clip ends finished (ok / error / filtered) with its part staged, whatever fails.
"""
from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from typing import Callable

from schemas.sample import Sample
from schemas.status import STATUS_OK
from stages.errors import Outcome

from pipeline import storage
from pipeline.clip.loop import ClipSteps, encode
from pipeline.clip.work import ClipWork
from pipeline.inputs.manifest import ManifestRows
from pipeline.run.groups import StageGroup
from pipeline.run.layout import RunLayout, shard_of
from pipeline.run.parts import write_part
from pipeline.shards import read_indexed, tar_index
from pipeline.steps import clip_stages

WORKER = f"{socket.gethostname()}:{os.getpid()}"


class StageCache:
    """Members of clips kept by an earlier ``--stage X`` run (``OUT/_stages/X/``), read per
    clip: the tar's member index is read once per shard, then only that clip's bytes."""

    def __init__(self, layout: RunLayout, target: str, keep: int = 2):
        stages = clip_stages()
        until = stages[-1] if target == "shards" else target
        self.layout = layout
        self.stages = list(stages[: stages.index(until) + 1])[::-1]
        self._shards: OrderedDict[int, tuple] = OrderedDict()
        self.keep = keep

    def _load(self, shard: int):
        for stage in self.stages:
            if stage == self.layout.stage:
                continue  # the target's own output is what this run makes
            paths = self.layout.shard_paths(shard, stage)
            stats = storage.read_json(paths["stats"])
            if stats is None:
                continue
            d = self.layout.stage_dir(stage)
            index = tar_index(storage.join(d, t) for t in stats.get("tars", []))
            status = {r["clip_id"]: r for r in storage.read_parquet(paths["status"]).to_pylist()}
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


class GroupRunner:
    """Runs one stage group (see the module docstring). ``steps``: the process's ``ClipSteps``
    (the local executor shares one between its groups)."""

    def __init__(self, group: StageGroup, cfg, layout: RunLayout, manifest: str | None = None,
                 steps: ClipSteps | None = None, commit_check: Callable[[], None] | None = None):
        self.group, self.cfg, self.layout = group, cfg, layout
        self.steps = steps or ClipSteps(cfg, layout.stage)
        self.names = list(group.steps)
        self.commit_check = commit_check
        self.manifest = ManifestRows(manifest) if (group.first and manifest) else None
        self.cache = StageCache(layout, layout.stage) if group.first else None
        self.child = None
        if group.first and cfg.isolation.enabled and self.names:
            from pipeline.clip.isolation import IsolatedRunner

            # a fused group gets the encoded members back from the child (2 MB, not 30 MB)
            self.child = IsolatedRunner(cfg, encoded=group.fused)
        self.busy_s = self.wait_s = 0.0
        self._last_end: float | None = None

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None
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
                w.finish(Outcome(prior["status"], prior["reason"], prior["message"]))
            elif members is not None:
                w.sample = Sample.from_members(members, key=w.clip_id)
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
        if self.child is not None:
            for w in works:
                if not w.done and self.steps.pending(w, self.names):
                    self.child(w, self.names)
        else:
            self.steps.run(works, self.names)
        if self.group.last:
            for w in works:
                self._encode_and_stage(w)
        self._last_end = time.perf_counter()
        self.busy_s += self._last_end - t0
        return works

    def _encode_and_stage(self, w: ClipWork) -> None:
        if not w.done:
            try:
                w.ok(w.members if w.members is not None else encode(w), w.sample.meta if w.sample else None)
            except Exception as e:  # noqa: BLE001 - recorded per clip
                w.fail(e)
        if self.commit_check is not None:
            self.commit_check()  # fencing: a straggler of a killed run stages nothing (lock.py)
        write_part(self.layout, w)
