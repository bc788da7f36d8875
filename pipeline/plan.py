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
from .shards import shard_paths, write_index
from .worker import STAGES, ClipProcessor, process_shard, stage_dir

log = logging.getLogger(__name__)


def shard_tasks(manifest: pa.Table, samples_per_shard: int) -> list[dict]:
    rows = manifest.to_pylist()
    return [{"shard": i // samples_per_shard, "rows": rows[i:i + samples_per_shard]}
            for i in range(0, len(rows), samples_per_shard)]


class ShardWorker:
    """Ray Data callable class: one instance per actor, backends loaded once."""

    def __init__(self, cfg_dict: dict, out_dir: str, prefix: str, target: str, force: bool):
        from .config import config_from_dict

        logging.basicConfig(level=logging.WARNING)
        self.cfg = config_from_dict(cfg_dict)
        self.out_dir, self.prefix, self.target, self.force = out_dir, prefix, target, force
        self.processor = ClipProcessor(self.cfg)

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard, rows_json in zip(batch["shard"], batch["rows"]):
            rows = json.loads(rows_json)
            st = process_shard(rows, int(shard), self.cfg, self.out_dir, self.prefix, self.processor,
                               self.target, self.force)
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
    for t in tasks:
        yield process_shard(t["rows"], t["shard"], cfg, out_dir, prefix, proc, target, force)


def _iter_ray(tasks: list[dict], cfg: Config, out_dir: str, prefix: str, target: str, force: bool,
              address: str | None) -> Iterator[dict]:
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
                                   target=target, force=force),
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
    manifest = build_manifest(dataset, data, **dataset_options)
    write_manifest(manifest, os.path.join(out_dir, "manifest.parquet"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1, sort_keys=True)
    prefix = f"{dataset}-{profile.name}"
    tasks = shard_tasks(manifest, cfg.shards.samples_per_shard)
    result = RunResult(os.path.abspath(out_dir), prefix, stage, clips=manifest.num_rows)
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    it = (_iter_local(tasks, cfg, out_dir, prefix, stage, force) if executor == "local"
          else _iter_ray(tasks, cfg, out_dir, prefix, stage, force, address))
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
    pq.write_table(table.filter(pa.compute.equal(table["status"], "error")), os.path.join(d, "errors.parquet"))
    pq.write_table(table.filter(pa.compute.equal(table["status"], "filtered")), os.path.join(d, "filtered.parquet"))
    if stage == "shards":
        result.index = write_index(out_dir, prefix, result.stats, {
            "dataset": dataset, "profile": profile.name, "clips": result.clips, "ok": result.ok,
            "error": result.error, "filtered": result.filtered,
        })
    result.seconds = time.perf_counter() - t0
    return result
