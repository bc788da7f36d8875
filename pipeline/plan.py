"""The run: manifest -> shard tasks -> (Ray Data or local) shard workers -> index + summary.

Ray Data plan: one row per shard (its manifest rows); ``map_batches`` with a callable class
(``ShardWorker``) runs a pool of actors that each load the stage backends once and process
whole shards, writing the tar, status table and stats file themselves. Decoded frames never
leave the worker process (no object-store traffic beyond the small manifest rows and stats),
and the plan streams: the driver only receives each shard's stats.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.status import STATUS_SCHEMA

from .config import Config
from .datasets import build_manifest, write_manifest
from .shards import atomic_write_bytes, remove_temp_files, shard_paths, write_index, write_status
from .isolation import make_clip_runner
from .lock import RunLock, check_run
from .worker import STAGES, ClipProcessor, import_plugins, process_shard, stage_dir

log = logging.getLogger(__name__)


def shard_tasks(manifest: pa.Table, samples_per_shard: int) -> list[dict]:
    rows = manifest.to_pylist()
    return [{"shard": i // samples_per_shard, "rows": rows[i:i + samples_per_shard]}
            for i in range(0, len(rows), samples_per_shard)]


class ShardWorker:
    """Ray Data callable class: one instance per actor, backends loaded once."""

    def __init__(self, cfg_dict: dict, out_dir: str, prefix: str, target: str, force: bool,
                 run_id: str | None = None):
        from .config import config_from_dict

        logging.basicConfig(level=logging.WARNING)
        self.cfg = config_from_dict(cfg_dict)
        self.out_dir, self.prefix, self.target, self.force = out_dir, prefix, target, force
        # Fencing: a straggler of a killed driver must not commit over a newer run (lock.py).
        self.commit_check = (lambda: check_run(out_dir, run_id)) if run_id else None
        self.processor = ClipProcessor(self.cfg)
        self.runner = make_clip_runner(self.cfg)  # clips run in a child process (isolation)

    def __del__(self):
        if getattr(self, "runner", None) is not None:
            self.runner.close()

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard, rows_json in zip(batch["shard"], batch["rows"]):
            rows = json.loads(rows_json)
            st = process_shard(rows, int(shard), self.cfg, self.out_dir, self.prefix, self.processor,
                               self.target, self.force, clip_runner=self.runner,
                               commit_check=self.commit_check)
            out.append(json.dumps(st))
        return {"stats": out}


@dataclass
class RunResult:
    out_dir: str
    prefix: str
    stage: str
    clips: int = 0
    ok: int = 0
    error: int = 0
    filtered: int = 0
    shards: int = 0
    skipped_shards: int = 0
    seconds: float = 0.0
    index: dict | None = None
    stats: list = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def _iter_local(tasks: list[dict], cfg: Config, out_dir: str, prefix: str, target: str, force: bool) -> Iterator[dict]:
    proc = ClipProcessor(cfg)
    runner = make_clip_runner(cfg)
    try:
        for t in tasks:
            yield process_shard(t["rows"], t["shard"], cfg, out_dir, prefix, proc, target, force,
                                clip_runner=runner)
    finally:
        if runner is not None:
            runner.close()


def _iter_ray(tasks: list[dict], cfg: Config, out_dir: str, prefix: str, target: str, force: bool,
              address: str | None, run_id: str | None = None) -> Iterator[dict]:
    import ray

    if not ray.is_initialized():
        kw = {"address": address} if address else {"include_dashboard": False}
        # Ray workers must import our packages: ship the repo dir on clusters, set PYTHONPATH locally.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}}
        if address:
            kw["runtime_env"] = {"working_dir": root, "excludes": [".venv", "out", "data", ".git"]}
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    cpus = ray.cluster_resources().get("CPU", 1)
    r = cfg.ray
    workers = r.num_workers or max(1, int(cpus // max(r.num_cpus_per_worker, 0.01)))
    workers = max(1, min(workers, len(tasks)))
    items = [{"shard": t["shard"], "rows": json.dumps(t["rows"])} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardWorker,
        fn_constructor_kwargs=dict(cfg_dict=cfg.to_dict(), out_dir=os.path.abspath(out_dir), prefix=prefix,
                                   target=target, force=force, run_id=run_id),
        batch_size=1,
        concurrency=workers,
        num_cpus=r.num_cpus_per_worker,
        num_gpus=r.num_gpus_per_worker or None,
        ray_remote_args_fn=lambda: {"max_restarts": r.retries, "max_task_retries": r.retries},
    )
    for row in ds.iter_rows():
        yield json.loads(row["stats"])


def collect_tables(out_dir: str, prefix: str, shards: list[int], stage: str) -> pa.Table:
    d = stage_dir(out_dir, stage)
    tables = [pq.read_table(shard_paths(d, prefix, s)["status"], schema=STATUS_SCHEMA) for s in shards]
    return pa.concat_tables(tables) if tables else STATUS_SCHEMA.empty_table()


def run(cfg: Config, dataset: str, data: str, out_dir: str, stage: str = "shards", force: bool = False,
        executor: str = "ray", address: str | None = None, progress=None, **dataset_options) -> RunResult:
    if stage == "all":
        stage = "shards"
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)} (or all)")
    t0 = time.perf_counter()
    profile = cfg.get_profile()
    os.makedirs(out_dir, exist_ok=True)
    import_plugins(cfg.plugins)  # plugins may register dataset adapters
    with RunLock(out_dir) as lock:  # one writer per output folder; refused with a message otherwise
        _remove_temp_files(out_dir)  # left by writers of a killed run
        result = _run_locked(cfg, dataset, data, out_dir, stage, force, executor, address, progress,
                             dataset_options, t0, profile, lock.run_id)
        _remove_temp_files(out_dir)  # left by attempts that failed and were retried
        return result


def _remove_temp_files(out_dir: str) -> None:
    dirs = [out_dir] + [stage_dir(out_dir, s) for s in STAGES if s != "shards"]
    removed = [n for d in dirs for n in remove_temp_files(d)]
    if removed:
        log.warning("removed %d temporary file(s) of interrupted writers in %s", len(removed), out_dir)


def _run_locked(cfg, dataset, data, out_dir, stage, force, executor, address, progress, dataset_options,
                t0, profile, run_id) -> RunResult:
    manifest = build_manifest(dataset, data, **dataset_options)
    write_manifest(manifest, os.path.join(out_dir, "manifest.parquet"))
    atomic_write_bytes(os.path.join(out_dir, "config.json"),
                       json.dumps(cfg.to_dict(), indent=1, sort_keys=True).encode())
    prefix = f"{dataset}-{profile.name}"
    tasks = shard_tasks(manifest, cfg.shards.samples_per_shard)
    result = RunResult(os.path.abspath(out_dir), prefix, stage, clips=manifest.num_rows)
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    it = (_iter_local(tasks, cfg, out_dir, prefix, stage, force) if executor == "local"
          else _iter_ray(tasks, cfg, out_dir, prefix, stage, force, address, run_id))
    for st in it:
        result.stats.append(st)
        result.skipped_shards += bool(st.get("skipped"))
        if progress is not None:
            progress(st, len(result.stats), len(tasks))
    result.shards = len(result.stats)
    result.ok = sum(s["ok"] for s in result.stats)
    result.error = sum(s["error"] for s in result.stats)
    result.filtered = sum(s["filtered"] for s in result.stats)
    table = collect_tables(out_dir, prefix, [t["shard"] for t in tasks], stage)
    d = stage_dir(out_dir, stage)
    for status, name in (("error", "errors"), ("filtered", "filtered")):  # atomic: no partial table
        write_status(os.path.join(d, f"{name}.parquet"), table.filter(pa.compute.equal(table["status"], status)).to_pylist())
    if stage == "shards":
        result.index = write_index(out_dir, prefix, result.stats, {
            "dataset": dataset, "profile": profile.name, "clips": result.clips, "ok": result.ok,
            "error": result.error, "filtered": result.filtered,
        })
    result.seconds = time.perf_counter() - t0
    return result
