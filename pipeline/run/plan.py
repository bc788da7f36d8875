"""The run: manifest -> clip work items -> stage-group operators -> staged parts -> shard
commits -> index + summary.

The unit of work is a clip: work items are short ranges of manifest rows, spread over every
worker whatever the shard count, and each finished clip is staged durably under
``OUT/_parts/`` (``parts.py``). A shard (``row // samples_per_shard``, as always) is committed
as soon as all its clips are staged (``commit.py``): tar(s) in row order, status table, stats
file last. A killed run resumes at clip granularity: the next run schedules only the rows
that have no part, commits the shards they complete, and skips the shards already done.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.status import STATUS_SCHEMA

from pipeline import storage
from pipeline.clip.runtime import import_plugins
from pipeline.config import Config
from pipeline.inputs.manifest import build_manifest, write_manifest
from pipeline.run.commit import is_done, restage_for_retry
from pipeline.run.console import ray_output_to_file
from pipeline.run.executors import Committer, LocalExecutor, RayExecutor, init_ray
from pipeline.run.fingerprint import check_resume, config_record, fingerprint
from pipeline.run.groups import describe, plan_groups
from pipeline.run.layout import NON_CLIP_REASONS, RunLayout
from pipeline.run.lock import run_lock
from pipeline.run.parts import remove_part_temp_files, remove_parts, staged_rows, staged_shards
from pipeline.run.preflight import preflight
from pipeline.shards import atomic_write_bytes, read_stats, remove_temp_files, write_index, write_status
from pipeline.steps import SetupError, clip_stages, run_stages

log = logging.getLogger(__name__)

# The circuit breaker: when the first BREAKER_WINDOW clips a run computes (or all of them, if
# fewer) fail with the same reason of NON_CLIP_REASONS, the setup is broken, not the clips:
# the run stops, commits nothing, removes those clips' parts and says why.
BREAKER_WINDOW = 16


class RunStopped(RuntimeError):
    """The circuit breaker stopped the run (a setup problem that preflight could not see)."""


def shard_tasks(num_rows: int, samples_per_shard: int) -> list[dict]:
    """Shard ``i`` holds manifest rows ``[start, stop)``."""
    n = max(1, int(samples_per_shard))
    return [{"shard": i // n, "start": i, "stop": min(i + n, num_rows)} for i in range(0, num_rows, n)]


def manifest_row_group(samples_per_shard: int, target: int = 8192) -> int:
    """Rows per manifest row group: a multiple of the shard size near ``target``, so a shard's
    rows are one small row group's slice."""
    n = max(1, int(samples_per_shard))
    return n * max(1, target // n)


def clips_per_item(pending: int, workers: int, samples_per_shard: int, per_worker: int = 16) -> int:
    """Clips per work item: about ``per_worker`` items per worker (so the tail of a run idles
    at most one item per worker), from 1 clip up to a shard."""
    return max(1, min(int(samples_per_shard), math.ceil(pending / max(1, workers * per_worker))))


def row_runs(rows) -> list[tuple[int, int]]:
    """Sorted rows as contiguous ``(start, stop)`` runs (a whole shard is one run: the driver
    holds a few numbers per shard, not one per clip)."""
    runs: list[list[int]] = []
    for r in sorted(rows):
        if runs and runs[-1][1] == r:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1])
    return [(a, b) for a, b in runs]


def work_items(runs_by_shard: dict[int, list[tuple[int, int]]], size: int) -> list[dict]:
    """The pending runs of rows cut into work items of at most ``size`` rows."""
    size = max(1, int(size))
    return [{"start": i, "stop": min(i + size, stop)}
            for shard in sorted(runs_by_shard) for start, stop in runs_by_shard[shard]
            for i in range(start, stop, size)]


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
    groups: list = field(default_factory=list)      # the operators of the plan (names, resources)
    staged_before: int = 0                           # clips found staged by an earlier run (not redone)
    computed: int = 0                                # clips this run computed
    reasons: dict = field(default_factory=dict)      # error/filtered reason -> count
    ray_logs: str | None = None
    setup: dict | None = None                        # what preflight built (pipeline/run/preflight.py)
    retried: int = 0                                 # clips redone by --retry-errors
    profile: dict | None = None                      # the resolved profile (Profile.as_meta)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def run(cfg: Config, dataset: str, data: str, out_dir: str, stage: str = "shards", force: bool = False,
        executor: str = "ray", address: str | None = None, progress=None, retry_errors=None,
        options: dict | None = None, **dataset_options) -> RunResult:
    """Run the pipeline; see the module docstring. ``retry_errors``: None, True (redo every
    clip whose status is error) or reasons to redo. The dataset adapter's options come in
    ``options`` (the CLI's ``-o KEY=VALUE``: any name, ``force`` included) and as keywords. Raises ``SetupError`` before anything is
    scheduled when the setup is broken (a backend, OUT, the dataset, settings that differ
    from the done shards'), and ``RunStopped`` when the circuit breaker trips."""
    if stage == "all":
        stage = "shards"
    if stage not in run_stages():
        raise SetupError(f"unknown stage {stage!r}; stages: {', '.join(run_stages())} (or all)")
    if executor not in ("ray", "local"):
        raise SetupError(f"unknown executor {executor!r}; choose ray or local")
    t0 = time.perf_counter()
    import_plugins(cfg.plugins)  # plugins may register dataset adapters
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # every backend built once, devices and OUT checked, before any clip (SetupError)
    setup = preflight(cfg, out_dir, stage=stage, local_devices=(executor == "local" or not address))
    if retry_errors is not None and retry_errors is not True:
        retry_errors = tuple(retry_errors)
    with run_lock(storage.root(out_dir)) as lock:  # one writer per OUT; refused with a message otherwise
        layout = RunLayout(storage.root(out_dir), f"{dataset}-{cfg.get_profile().name}", stage)
        _remove_temp_files(layout)  # left by writers of a killed run
        job = Run(cfg, layout, executor, address, lock.run_id, progress)
        job.plan(dataset, data, {**(options or {}), **dataset_options}, force, retry_errors)
        job.execute()
        result = job.finish(dataset, t0)
        result.setup = setup
        _remove_temp_files(layout)  # left by attempts that failed and were retried
        return result


def _remove_temp_files(layout: RunLayout) -> None:
    dirs = [layout.out_dir] + [layout.stage_dir(s) for s in run_stages() if s != "shards"]
    removed = [n for d in dirs for n in remove_temp_files(d)] + remove_part_temp_files(layout)
    if storage.is_remote(layout.out_dir):  # a manifest upload cut short; uploads never completed
        removed += [n for n in storage.listdir(layout.out_dir)
                    if n.startswith("manifest.parquet.tmp-") and storage.remove(storage.join(layout.out_dir, n))]
        removed += ["(upload)"] * storage.abort_uploads(layout.out_dir)
    if removed:
        log.warning("removed %d temporary file(s) of interrupted writers in %s", len(removed),
                    storage.redact(layout.out_dir))


def _list_dataset(dataset: str, data: str, options: dict):
    """The manifest of the dataset; a dataset that cannot be listed at all is a setup error."""
    try:
        return build_manifest(dataset, data, **options)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        raise SetupError(f"cannot list dataset {dataset!r} at {storage.redact(data)}: {e}") from e


class Run:
    """One run under the lock: what is left to do (``plan``), the executor over it
    (``execute``), and the closing tables (``finish``)."""

    def __init__(self, cfg: Config, layout: RunLayout, executor: str, address: str | None, run_id: str,
                 progress=None):
        self.cfg, self.layout, self.executor, self.address, self.run_id = cfg, layout, executor, address, run_id
        self.progress = progress
        self.tasks: list[dict] = []
        self.pending: dict[int, list[tuple[int, int]]] = {}  # shard -> runs of rows to compute
        self.left: dict[int, int] = {}                       # shard -> clips still to finish
        self.ready: list[dict] = []                          # shards whose clips are all staged already
        self.manifest_path = ""
        self.result: RunResult | None = None

    # ---- what is left to do
    def plan(self, dataset: str, data: str, options: dict, force: bool, retry_errors) -> None:
        cfg, layout = self.cfg, self.layout
        manifest = _list_dataset(dataset, data, options)
        self.manifest_path = write_manifest(manifest, layout.manifest(),
                                            row_group_size=manifest_row_group(cfg.shards.samples_per_shard))
        self.tasks = shard_tasks(manifest.num_rows, cfg.shards.samples_per_shard)
        res = self.result = RunResult(storage.redact(layout.out_dir), layout.prefix, layout.stage, clips=manifest.num_rows)
        del manifest  # the operators read their rows from the manifest file (ManifestRows)
        with_parts = staged_shards(layout)
        for t in self.tasks:
            s = t["shard"]
            done = None if force else is_done(layout, s)
            if done is not None and retry_errors is not None and done.get("error"):
                redo = restage_for_retry(layout, s, retry_errors)
                if redo:
                    res.retried += len(redo)
                    self.pending[s], self.left[s] = row_runs(redo), len(redo)
                    continue
            if done is not None:
                done["skipped"] = True
                res.stats.append(done)
                res.skipped_shards += 1
                if s in with_parts:
                    remove_parts(layout, s)  # a straggler of a killed run staged into a done shard
                continue
            if force and s in with_parts:
                remove_parts(layout, s)
                with_parts.discard(s)
            staged = staged_rows(layout, s) if s in with_parts else set()
            rows = [(t["start"], t["stop"])] if not staged else row_runs(
                r for r in range(t["start"], t["stop"]) if r not in staged)
            n_rows = sum(b - a for a, b in rows)
            res.staged_before += t["stop"] - t["start"] - n_rows
            if n_rows:
                self.pending[s], self.left[s] = rows, n_rows
            else:
                self.ready.append(t)
        if not force:  # the done shards (and staged clips) must have been made with these settings
            fps = [st.get("fingerprint") for st in res.stats]
            if with_parts:
                fps.append(None)  # staged clips: made with the settings OUT/config.json records
            check_resume(read_stats(layout.config()), fps, cfg, out_dir=storage.redact(layout.out_dir))
        atomic_write_bytes(layout.config(), json.dumps(config_record(cfg), indent=1, sort_keys=True).encode())

    def _committed(self, stats_list: list[dict]) -> None:
        for st in stats_list:
            self.result.stats.append(st)
            if self.progress is not None:
                self.progress(st, len(self.result.stats), len(self.tasks))

    # ---- the work
    def execute(self) -> None:
        cfg, layout, res = self.cfg, self.layout, self.result
        n_pending = sum(self.left.values())
        use_ray = self.executor == "ray" and n_pending + len(self.ready) > 0
        with ray_output_to_file(use_ray and cfg.ray.quiet) as ray_out:
            cpus, gpus = float(os.cpu_count() or 1), 0.0
            if use_ray:
                import ray

                logs = init_ray(self.address)
                res.ray_logs = ray_out.move_to(logs) if ray_out is not None else logs
                resources = ray.cluster_resources()
                cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
            groups = plan_groups(cfg, layout.stage, cpus, gpus)
            res.groups = describe(groups)
            items = work_items(self.pending, clips_per_item(n_pending, groups[0].max_actors, cfg.shards.samples_per_shard))
            manifest = self.manifest_path if storage.is_uri(self.manifest_path) else os.path.abspath(self.manifest_path)
            committer = Committer(layout, cfg.shards.max_shard_bytes, self.run_id if use_ray else None, use_ray,
                                  extra={"fingerprint": fingerprint(cfg), "stages": list(clip_stages())},
                                  retries=cfg.ray.retries)
            for t in self.ready:
                self._committed(committer.submit(t["shard"], t["start"], t["stop"]))
            if items:
                ex = (RayExecutor(groups, cfg, layout, manifest, self.run_id) if use_ray
                      else LocalExecutor(groups, cfg, layout, manifest))
                self._consume(ex.run(items), committer, min(BREAKER_WINDOW, n_pending))
            self._committed(committer.drain())
        missing = [s for s, n in self.left.items() if n > 0]
        if missing:  # an executor that ended early: never report such a run as complete
            raise RuntimeError(f"the executor ended with {sum(self.left[s] for s in missing)} clip(s) of shard(s) "
                               f"{missing[:10]} not finished; rerun to resume")

    def _consume(self, results, committer: Committer, window: int) -> None:
        """Count finished clips, watch the first ``window`` (the circuit breaker) and commit each
        shard whose clips are all staged (after the window has passed)."""
        by_shard = {t["shard"]: t for t in self.tasks}
        clip_progress = getattr(self.progress, "clip", None)
        first: list[dict] = []
        held: list[int] = []  # shards complete before the breaker's window passed
        for r in results:
            s = r["shard"]
            self.left[s] -= 1
            self.result.computed += 1
            if clip_progress is not None:
                clip_progress(r)
            if len(first) < window:
                first.append(r)
                if len(first) == window:
                    _breaker(first, self.layout)
            if self.left[s] == 0:
                held.append(s)
            if len(first) >= window:
                for h in held:
                    t = by_shard[h]
                    self._committed(committer.submit(h, t["start"], t["stop"]))
                held = []
            self._committed(committer.poll())

    # ---- the closing tables
    def finish(self, dataset: str, t0: float) -> RunResult:
        res, layout = self.result, self.layout
        res.stats.sort(key=lambda st: st["shard"])
        res.shards = len(res.stats)
        res.ok = sum(s["ok"] for s in res.stats)
        res.error = sum(s["error"] for s in res.stats)
        res.filtered = sum(s["filtered"] for s in res.stats)
        table = collect_tables(layout, [t["shard"] for t in self.tasks], ("error", "filtered"))
        for reason in table.column("reason").to_pylist():
            res.reasons[reason] = res.reasons.get(reason, 0) + 1
        d = layout.stage_dir()
        for status, name in (("error", "errors"), ("filtered", "filtered")):  # atomic: no partial table
            write_status(storage.join(d, f"{name}.parquet"),
                         table.filter(pa.compute.equal(table["status"], status)).to_pylist())
        if layout.stage == "shards":
            res.index = write_index(layout.out_dir, layout.prefix, res.stats, {
                "dataset": dataset, "profile": self.cfg.get_profile().name, "clips": res.clips, "ok": res.ok,
                "error": res.error, "filtered": res.filtered,
            })
        res.profile = self.cfg.get_profile().as_meta()
        res.seconds = time.perf_counter() - t0
        return res


def _breaker(first: list[dict], layout: RunLayout) -> None:
    """Trip when every clip of the window failed with one reason that is not about the clip."""
    reasons = {(r["status"], r["reason"]) for r in first}
    if len(reasons) != 1:
        return
    status, reason = next(iter(reasons))
    if status != "error" or reason not in NON_CLIP_REASONS:
        return
    for r in first:  # nothing of theirs is kept: the next run computes them again
        for retry in (False, True):
            storage.remove(layout.part_path(r["shard"], r["row"], retry=retry))
    raise RunStopped(
        f"stopped: the first {len(first)} clip(s) of this run all failed with reason {reason!r}"
        f"{': ' + first[0]['message'] if first[0].get('message') else ''}. That is a setup or code "
        f"problem, not a clip problem, so nothing was marked done; fix it and rerun (the clips "
        f"are computed again).")


def collect_tables(layout: RunLayout, shards: list[int], statuses: tuple[str, ...] | None = None) -> pa.Table:
    """The shards' status tables in shard order; only the rows with one of ``statuses`` when
    given (filtered shard by shard: a 10M-clip run keeps only its failures in memory)."""
    tables = []
    for s in shards:
        t = storage.read_parquet(layout.shard_paths(s)["status"], schema=STATUS_SCHEMA)
        if statuses is not None:
            t = t.filter(pa.compute.is_in(t["status"], value_set=pa.array(statuses, t.schema.field("status").type)))
        tables.append(t)
    return pa.concat_tables(tables) if tables else STATUS_SCHEMA.empty_table()
