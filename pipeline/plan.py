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
from .datasets import ManifestRows, build_manifest, write_manifest
from .shards import atomic_write_bytes, remove_temp_files, shard_paths, write_index, write_status
from .io import is_uri
from .isolation import make_clip_runner
from .lock import RunLock, check_run
from .worker import STAGES, ClipProcessor, import_plugins, process_shard, stage_dir

log = logging.getLogger(__name__)


def shard_tasks(num_rows: int, samples_per_shard: int) -> list[dict]:
    """Shard ``i`` holds manifest rows ``[start, stop)``: the task names the rows, and whoever
    runs it reads them (``ManifestRows``), so the plan stays small at 10M clips."""
    n = max(1, int(samples_per_shard))
    return [{"shard": i // n, "start": i, "stop": min(i + n, num_rows)} for i in range(0, num_rows, n)]


def manifest_row_group(samples_per_shard: int, target: int = 8192) -> int:
    """Rows per manifest row group: a multiple of the shard size near ``target``, so a shard's
    rows are one small row group's slice."""
    n = max(1, int(samples_per_shard))
    return n * max(1, target // n)


class ShardWorker:
    """Ray Data callable class: one instance per actor, backends loaded once."""

    def __init__(self, cfg_dict: dict, out_dir: str, prefix: str, target: str, force: bool,
                 manifest: str, run_id: str | None = None):
        from .config import config_from_dict

        logging.basicConfig(level=logging.WARNING)
        self.cfg = config_from_dict(cfg_dict)
        self.out_dir, self.prefix, self.target, self.force = out_dir, prefix, target, force
        # Fencing: a straggler of a killed driver must not commit over a newer run (lock.py).
        self.commit_check = (lambda: check_run(out_dir, run_id)) if run_id else None
        self.processor = ClipProcessor(self.cfg)
        self.runner = make_clip_runner(self.cfg)  # clips run in a child process (isolation)
        self.manifest = ManifestRows(manifest)

    def __del__(self):
        if getattr(self, "runner", None) is not None:
            self.runner.close()

    def __call__(self, batch: dict) -> dict:
        out = []
        for shard, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
            rows = self.manifest.rows(int(start), int(stop))
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


def _iter_local(tasks: list[dict], manifest_path: str, cfg: Config, out_dir: str, prefix: str, target: str,
                force: bool) -> Iterator[dict]:
    proc = ClipProcessor(cfg)
    runner = make_clip_runner(cfg)
    manifest = ManifestRows(manifest_path)
    try:
        for t in tasks:
            yield process_shard(manifest.rows(t["start"], t["stop"]), t["shard"], cfg, out_dir, prefix, proc,
                                target, force, clip_runner=runner)
    finally:
        manifest.close()
        if runner is not None:
            runner.close()


def _iter_ray(tasks: list[dict], manifest_path: str, cfg: Config, out_dir: str, prefix: str, target: str,
              force: bool, address: str | None, run_id: str | None = None) -> Iterator[dict]:
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
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
    ds = ds.map_batches(
        ShardWorker,
        fn_constructor_kwargs=dict(cfg_dict=cfg.to_dict(), out_dir=os.path.abspath(out_dir), prefix=prefix,
                                   target=target, force=force, run_id=run_id,
                                   manifest=manifest_path if is_uri(manifest_path) else os.path.abspath(manifest_path)),
        batch_size=1,
        concurrency=workers,
        num_cpus=r.num_cpus_per_worker,
        num_gpus=r.num_gpus_per_worker or None,
        ray_remote_args_fn=lambda: {"max_restarts": r.retries, "max_task_retries": r.retries},
    )
    for row in ds.iter_rows():
        yield json.loads(row["stats"])


def collect_tables(out_dir: str, prefix: str, shards: list[int], stage: str,
                   statuses: tuple[str, ...] | None = None) -> pa.Table:
    """The shards' status tables in shard order; only the rows with one of ``statuses`` when
    given (filtered shard by shard: a 10M-clip run keeps only its failures in memory)."""
    d = stage_dir(out_dir, stage)
    tables = []
    for s in shards:
        t = pq.read_table(shard_paths(d, prefix, s)["status"], schema=STATUS_SCHEMA)
        if statuses is not None:
            t = t.filter(pa.compute.is_in(t["status"], value_set=pa.array(statuses, t.schema.field("status").type)))
        tables.append(t)
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
    manifest_path = write_manifest(manifest, os.path.join(out_dir, "manifest.parquet"),
                                   row_group_size=manifest_row_group(cfg.shards.samples_per_shard))
    atomic_write_bytes(os.path.join(out_dir, "config.json"),
                       json.dumps(cfg.to_dict(), indent=1, sort_keys=True).encode())
    prefix = f"{dataset}-{profile.name}"
    tasks = shard_tasks(manifest.num_rows, cfg.shards.samples_per_shard)
    result = RunResult(os.path.abspath(out_dir), prefix, stage, clips=manifest.num_rows)
    del manifest  # the shard loops read their rows from the manifest file (ManifestRows)
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    it = (_iter_local(tasks, manifest_path, cfg, out_dir, prefix, stage, force) if executor == "local"
          else _iter_ray(tasks, manifest_path, cfg, out_dir, prefix, stage, force, address, run_id))
    for st in it:
        result.stats.append(st)
        result.skipped_shards += bool(st.get("skipped"))
        if progress is not None:
            progress(st, len(result.stats), len(tasks))
    result.shards = len(result.stats)
    result.ok = sum(s["ok"] for s in result.stats)
    result.error = sum(s["error"] for s in result.stats)
    result.filtered = sum(s["filtered"] for s in result.stats)
    table = collect_tables(out_dir, prefix, [t["shard"] for t in tasks], stage, ("error", "filtered"))
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
