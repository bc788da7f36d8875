"""Executors: run the stage groups over work items and yield finished clips.

A work item is a range of manifest rows ``{start, stop}`` (a few clips: see
``plan.work_items``). Both executors run the same ``GroupRunner`` per group; the last group
stages each clip's part and the executor yields a small result per clip
(``{shard, row, status, reason}``) for the driver, which commits shards as they complete.

- ``LocalExecutor``: in-process, groups one after the other (debugging, tests, ``--executor local``).
- ``RayExecutor``: a Ray Data plan, one ``map_batches`` per group with a callable class
  (``GroupOperator``): an actor pool with the group's ``num_cpus``/``num_gpus`` and batch
  size; between groups a clip travels as ``ClipWork.to_wire()`` bytes.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator

import numpy as np

from pipeline.clip.work import ClipWork
from pipeline.run.groups import StageGroup
from pipeline.run.layout import RunLayout
from pipeline.run.runner import GroupRunner

log = logging.getLogger(__name__)


RESULT_KEYS = ("shard", "row", "status", "reason", "message")


def result_of(w: ClipWork) -> dict:
    return {"shard": int(w.shard), "row": w.index, "status": w.status, "reason": w.reason or "",
            "message": (w.message or "")[:300]}


class LocalExecutor:
    def __init__(self, groups: list[StageGroup], cfg, layout: RunLayout, manifest: str,
                 commit_check=None):
        from pipeline.clip.loop import ClipSteps

        steps = ClipSteps(cfg, layout.stage)  # one set of backends for every group in this process
        self.runners = [GroupRunner(g, cfg, layout, manifest, steps=steps, commit_check=commit_check)
                        for g in groups]

    def run(self, items: Iterable[dict]) -> Iterator[dict]:
        first, rest = self.runners[0], self.runners[1:]
        want = max([r.group.batch_size for r in rest] or [1])
        try:
            chunk: list[ClipWork] = []
            for item in items:
                chunk += first(first.load(int(item["start"]), int(item["stop"])))
                if len(chunk) >= want or not rest:
                    yield from self._rest(chunk, rest)
                    chunk = []
            if chunk:
                yield from self._rest(chunk, rest)
        finally:
            for r in self.runners:
                r.close()

    @staticmethod
    def _rest(works: list[ClipWork], rest: list[GroupRunner]) -> Iterator[dict]:
        for r in rest:
            bs = max(1, r.group.batch_size)
            works = [w for i in range(0, len(works), bs) for w in r(works[i:i + bs])]
        for w in works:
            yield result_of(w)


class GroupOperator:
    """Ray Data callable class for one stage group (one instance per actor)."""

    def __init__(self, group: StageGroup, cfg_dict: dict, layout: RunLayout, manifest: str,
                 run_id: str | None = None, later_steps: tuple[str, ...] = ()):
        from pipeline.config import config_from_dict
        from pipeline.run.lock import check_run
        from pipeline.steps import STEPS

        logging.basicConfig(level=logging.WARNING)
        cfg = config_from_dict(cfg_dict)
        check = (lambda: check_run(layout.out_dir, run_id)) if run_id else None
        self.group = group
        # carry the backward flow (float32, 22 MB per HD clip) only to a step that reads it
        self.keep_backward = any(STEPS.get(name).reads_backward_flow(cfg) for name in later_steps)
        self.runner = GroupRunner(group, cfg, layout, manifest, commit_check=check)

    def __del__(self):
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()

    def __call__(self, batch: dict) -> dict:
        if self.group.first:
            works = [w for s, e in zip(batch["start"], batch["stop"]) for w in self.runner.load(int(s), int(e))]
        else:
            works = [ClipWork.from_wire(b) for b in batch["work"]]
        works = self.runner(works)
        if self.group.last:
            rows = [result_of(w) for w in works]
            return {k: np.array([r[k] for r in rows]) for k in RESULT_KEYS}
        out = np.empty(len(works), dtype=object)
        out[:] = [w.to_wire(keep_backward=self.keep_backward) for w in works]
        return {"work": out}


def init_ray(address: str | None) -> str | None:
    """Start (or join) Ray quietly; returns the folder of Ray's own logs (None if unknown)."""
    import ray

    if not ray.is_initialized():
        kw = {"address": address} if address else {"include_dashboard": False}
        # Ray workers must import our packages: ship the repo dir on clusters, set PYTHONPATH locally.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}}
        if address:
            kw["runtime_env"] = {"working_dir": root, "excludes": [".venv", "out", "data", ".git"]}
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **kw)
    try:
        from ray._private.worker import global_worker

        node = getattr(global_worker, "node", None)
        return os.path.join(node.get_session_dir_path(), "logs") if node is not None else None
    except Exception:  # noqa: BLE001 - only for the summary line
        return None


class RayExecutor:
    def __init__(self, groups: list[StageGroup], cfg, layout: RunLayout, manifest: str, run_id: str | None):
        self.groups, self.cfg, self.layout, self.manifest, self.run_id = groups, cfg, layout, manifest, run_id

    def run(self, items: list[dict]) -> Iterator[dict]:
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty()
        ctx.print_on_execution_start = False
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        for k, g in enumerate(self.groups):
            later = tuple(name for h in self.groups[k + 1:] for name in h.steps)
            max_actors = max(1, min(g.max_actors, len(items))) if g.first else g.max_actors
            compute = ray.data.ActorPoolStrategy(min_size=min(g.min_actors, max_actors), max_size=max_actors,
                                                 max_tasks_in_flight_per_actor=2)
            ds = ds.map_batches(
                GroupOperator,
                fn_constructor_kwargs=dict(group=g, cfg_dict=self.cfg.to_dict(), layout=self.layout,
                                           manifest=self.manifest, run_id=self.run_id, later_steps=later),
                batch_size=1 if g.first else g.batch_size,
                compute=compute,
                num_cpus=g.num_cpus,
                num_gpus=g.num_gpus or None,
                batch_format="numpy",
            )
        for row in ds.iter_rows():
            yield {"shard": int(row["shard"]), "row": int(row["row"]), "status": str(row["status"]),
                   "reason": str(row["reason"]), "message": str(row["message"])}


def commit_task(layout: RunLayout, shard: int, start: int, stop: int, max_shard_bytes: int,
                run_id: str | None, extra: dict | None = None) -> dict:
    """A shard commit as a Ray task (any node that sees OUT)."""
    from pipeline.run.commit import commit_shard
    from pipeline.run.lock import check_run

    check = (lambda: check_run(layout.out_dir, run_id)) if run_id else None
    return commit_shard(layout, shard, start, stop, max_shard_bytes, check, extra)


class Committer:
    """Commits shards as they complete: inline (local) or as Ray tasks (``num_cpus=0``: a
    commit is I/O and must not wait for the CPUs the clip operators hold)."""

    def __init__(self, layout: RunLayout, max_shard_bytes: int, run_id: str | None, use_ray: bool,
                 extra: dict | None = None, retries: int = 2):
        self.layout, self.max_bytes, self.run_id, self.extra = layout, max_shard_bytes, run_id, extra
        self.use_ray = use_ray
        self._pending: list = []
        if use_ray:
            import ray

            self._remote = ray.remote(num_cpus=0, max_retries=int(retries))(commit_task)

    def submit(self, shard: int, start: int, stop: int) -> list[dict]:
        if not self.use_ray:
            return [commit_task(self.layout, shard, start, stop, self.max_bytes, self.run_id, self.extra)]
        self._pending.append(self._remote.remote(self.layout, shard, start, stop, self.max_bytes, self.run_id,
                                                 self.extra))
        return self.poll()

    def poll(self, wait: bool = False) -> list[dict]:
        if not self._pending:
            return []
        import ray

        if wait:
            done, self._pending = self._pending, []
        else:
            done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
        return ray.get(done) if done else []

    def drain(self) -> list[dict]:
        out = []
        while self._pending:
            out += self.poll(wait=True)
            time.sleep(0)
        return out
