"""The run's progress on the console (``RunProgress``, the ``progress`` callback of
``pipeline.run.run``) and its closing summary (``format_run_summary``)."""
from __future__ import annotations

import math
from collections import Counter

from pipeline.steps import clip_stages
from pipeline.tools.report import text_table


def _hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _stage_order(names) -> list[str]:
    names, stages = set(names), clip_stages()
    return [k for k in stages if k in names] + sorted(names - set(stages))


class RunProgress:
    """The ``progress`` callback of ``pipeline.run.run``: one call per finished shard.

    On a terminal (and with rich importable) it is a live bar with elapsed time, ETA,
    clip counts and the share of time per stage; otherwise one plain line per shard with
    the same figures. ETA = elapsed / shards done x shards left (shards skipped as already
    done count as done, so a resumed run's early ETA is optimistic). Call ``close()`` at the
    end.
    """

    def __init__(self, stream=None, use_rich: bool | None = None, label: str = "shards", width: int | None = None):
        import time

        self._time = time.perf_counter
        self.t0 = self._time()
        if stream is None:  # the stderr of the moment (pipeline.run.console swaps it during Ray runs)
            from pipeline.run.console import CurrentStderr

            stream = CurrentStderr()
        self.stream = stream
        if use_rich is None:
            use_rich = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.counts: Counter = Counter()
        self.clips_seen = 0
        self.clip_every_s = 10.0
        self._last_line = self.t0
        self.stage_seconds: Counter = Counter()
        self._rich = None
        if use_rich:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                pass
            else:
                from rich.table import Column

                # The counts/stage text is cut to what the fixed columns leave (see __call__).
                self._rich = Progress(TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                                      BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                                      TextColumn("ETA {task.fields[eta]}"),
                                      TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)),
                                      console=Console(file=self.stream, width=width), transient=False)
                self._rich.start()
                self._task = self._rich.add_task(label, total=None, info="starting...", eta="--:--")

    def info(self, compact: bool = False) -> str:
        c = self.counts
        elapsed = self._time() - self.t0
        rate = c["clips"] / elapsed if elapsed > 0 else 0.0
        total = sum(self.stage_seconds.values())
        shares = " ".join(f"{k} {self.stage_seconds[k] / total:.0%}" for k in _stage_order(self.stage_seconds)) \
            if total > 0 else ""
        if compact:
            return f"ok {c['ok']} err {c['error']} filt {c['filtered']} | {rate:.2f} clips/s" + (
                f" | {shares}" if shares else "")
        return (f"ok {c['ok']} error {c['error']} filtered {c['filtered']} | {rate:.2f} clips/s"
                + (f" | time: {shares}" if shares else ""))

    def __call__(self, st: dict, done: int, total: int) -> None:
        for k in ("ok", "error", "filtered", "clips"):
            self.counts[k] += int(st.get(k) or 0)
        if not st.get("skipped"):
            self.stage_seconds.update(st.get("stage_seconds") or {})
        elapsed = self._time() - self.t0
        eta = elapsed / done * (total - done) if done else None
        if self._rich is not None:
            room = max(10, self._rich.console.width - 58)
            info = self.info(compact=True)
            self._rich.update(self._task, total=total, completed=done, eta=_hms(eta),
                              info=info if len(info) <= room else info[:room - 1] + "…")
            return
        self._last_line = self._time()
        tag = "skipped (done)" if st.get("skipped") else f"{st.get('seconds', 0.0):.1f}s"
        print(f"[{done}/{total} {self.label} {done / max(total, 1):.0%}] shard {int(st['shard']):06d} {tag} | "
              f"{self.info()} | elapsed {_hms(elapsed)} ETA {_hms(eta)}", file=self.stream, flush=True)

    def clip(self, r: dict) -> None:
        """One clip computed (``pipeline.run`` calls it per clip): shards of many clips are
        long, so a plain stream gets a line at most every ``clip_every_s`` seconds between
        shard lines, and the rich bar shows the count."""
        self.clips_seen += 1
        now = self._time()
        if self._rich is not None:
            self._rich.update(self._task, description=f"{self.label} ({self.clips_seen} clips)")
            return
        if now - self._last_line >= self.clip_every_s:
            self._last_line = now
            elapsed = now - self.t0
            print(f"  ... {self.clips_seen} clip(s) computed | {self.clips_seen / max(elapsed, 1e-9):.2f} clips/s | "
                  f"elapsed {_hms(elapsed)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


TOO_SHORT = "too_short"   # the decoder's reason for a clip shorter than the profile's span (stages.decode)


def too_short_line(count: int, profile: dict | None) -> str:
    """The summary's line on the clips too short for the profile: with 81 frames at 16 fps a
    clip needs 5 s between its first and last sampled frame, and a dataset of short clips loses
    many of them (they stay error records: a rerun at another profile may use them)."""
    span = ""
    if profile and profile.get("fps"):
        span = (f" of {(profile['frames'] - 1) / profile['fps']:.2f} s ({profile['name']}: "
                f"{profile['frames']} frames at {profile['fps']:g} fps)")
    return f"too short: {count} clip(s) shorter than the profile's span{span}, recorded as errors ({TOO_SHORT})"


def format_run_summary(res) -> str:
    """The closing summary of ``python -m pipeline run`` (a ``plan.RunResult``): counts,
    time and throughput per stage (from the shards' ``stage_seconds``), where the output is.
    Optional attributes, shown when set: ``reasons`` ({error reason: clips}, most frequent
    first; the ``too_short`` clips get a line of their own with ``profile``'s span), ``setup``
    (``preflight.preflight``'s descriptions), ``ray_logs`` (Ray's log folder)."""
    lines = [f"\n{res.prefix}: {res.clips} clips -> ok {res.ok}, error {res.error}, filtered {res.filtered} "
             f"in {res.shards} shards ({res.skipped_shards} already done) | {res.seconds:.1f} s, "
             f"{res.clips_per_second:.2f} clips/s"]
    reasons = getattr(res, "reasons", None) or {}
    if reasons:
        lines.append("errors by reason: " + ", ".join(
            f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
    if reasons.get(TOO_SHORT):
        lines.append(too_short_line(reasons[TOO_SHORT], getattr(res, "profile", None)))
    setup = getattr(res, "setup", None)
    if setup:
        from pipeline.run.preflight import format_preflight

        lines.append(format_preflight(setup))
    secs: Counter = Counter()
    ok_done = 0
    for st in res.stats:
        secs.update(st.get("stage_seconds") or {})
        ok_done += int(st.get("ok") or 0)
    total = sum(secs.values())
    if total > 0:
        rows = [[k, f"{secs[k]:.2f}", f"{secs[k] / total:.0%}",
                 f"{ok_done / secs[k]:.2f}" if secs[k] > 0 else "-"] for k in _stage_order(secs)]
        lines += ["", text_table(["stage", "seconds (all workers)", "share", "clips/s per worker"], rows), ""]
    sources: Counter = Counter()
    entities = 0
    for st in res.stats:
        ent = st.get("entities") or {}
        sources.update(ent.get("mask_sources") or {})
        entities += int(ent.get("entities") or 0)
    if sources:
        used = ", ".join(f"{k} for {v} clip(s)" for k, v in sorted(sources.items()))
        lines.append(f"entities: {entities} in {sum(sources.values())} clips; mask source used: {used}")
    sub = "" if res.stage == "shards" else f"_stages/{res.stage}/"
    if res.index:
        lines.append(f"shards: {res.out_dir}/{res.index['url'] or 'index.json'}  ({res.index['samples']} samples)")
    else:
        lines.append(f"stage '{res.stage}' output kept in {res.out_dir}/_stages/{res.stage}")
    if res.error:
        lines.append(f"errors: {res.out_dir}/{sub}errors.parquet")
    if res.filtered:
        lines.append(f"filtered: {res.out_dir}/{sub}filtered.parquet")
    if res.index:
        stats = "" if "://" in res.out_dir else f"stats {res.out_dir} | "  # stats reads local folders
        lines.append(f"look at it: python -m pipeline {stats}preview {res.out_dir} --out DIR | "
                     f"validate {res.out_dir}")
    ray_logs = getattr(res, "ray_logs", None)
    if ray_logs:
        lines.append(f"Ray's logs: {ray_logs}")
    return "\n".join(lines)
