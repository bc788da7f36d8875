"""Shard commit: once every clip of shard N is staged, write its tar(s), status table and
stats file (last: the done mark) from the parts, then remove the parts.

The tar holds the ok clips in manifest-row order, so the shard is byte-identical whatever
the worker count or the order in which its clips finished. Temporary names carry a tag
unique to the attempt; ``commit_check()`` (fencing, see ``lock.check_run``) is called before
anything is renamed into place and before the stats file is written.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

from schemas.sample import JSON
from schemas.status import STATUS_ERROR, STATUS_FILTERED, STATUS_OK

from pipeline import storage
from pipeline.storage import join
from pipeline.shards import TarShardWriter, read_indexed, read_stats, tar_index, write_stats, write_status
from pipeline.run.layout import RunLayout
from pipeline.run.parts import part_of, read_part, remove_parts

log = logging.getLogger(__name__)


def remove_file(path: str) -> bool:
    return storage.remove(path)


def remove_shard_leftovers(layout: RunLayout, shard: int) -> list[str]:
    """Remove what an interrupted commit of a not-done shard may have left: temporary files
    of its tars, status and stats, and tar parts already renamed into place (a shard is only
    valid once its stats file exists). Probes the known names (no listing)."""
    d = layout.stage_dir()
    name = layout.shard_name(shard)
    removed = [p for p in (join(d, f".{name}.parquet.tmp"), join(d, f".{name}.stats.json.tmp"))
               if remove_file(p)]
    part = 0
    while True:
        tar = layout.shard_name(shard, part) + ".tar"
        found = [p for p in (join(d, tar), join(d, f".{tar}.tmp")) if remove_file(p)]
        removed += found
        if not found and part > 0:
            break
        part += 1
    if removed:
        log.warning("shard %s: removed leftovers of an interrupted attempt: %s", name,
                    ", ".join(os.path.basename(p.partition("?")[0]) for p in removed))
    return removed


def is_done(layout: RunLayout, shard: int) -> dict | None:
    """The shard's stats when it is committed (its stats file exists), else None."""
    return read_stats(layout.shard_paths(shard)["stats"])


def commit_shard(layout: RunLayout, shard: int, start: int, stop: int, max_shard_bytes: int,
                 commit_check: Callable[[], None] | None = None, extra: dict | None = None) -> dict:
    """Commit shard ``shard`` (manifest rows ``[start, stop)``) from its staged parts; returns
    its stats. Raises FileNotFoundError when a part is missing."""
    d = layout.stage_dir()
    storage.makedirs(d)
    paths = layout.shard_paths(shard)
    remove_file(paths["stats"])
    remove_shard_leftovers(layout, shard)
    tag = f"{os.getpid()}-{os.urandom(3).hex()}"
    writer = TarShardWriter(d, layout.prefix, shard, max_shard_bytes, tmp_tag=tag)
    status_rows: list[dict] = []
    stage_seconds: dict[str, float] = {}
    entity_stats: dict = {"mask_sources": {}, "entities": 0}
    resumed: dict[str, int] = {}
    batches: dict[str, list[int]] = {}
    waits: dict[str, float] = {}
    workers: set[str] = set()
    t0 = time.perf_counter()
    try:
        for row in range(start, stop):
            head, members = read_part(part_of(layout, shard, row))
            st = dict(head["status"])
            if st["status"] == STATUS_OK:
                st["tar"] = writer.write(st["clip_id"], members)
            status_rows.append(st)
            for k, v in (head.get("timings") or {}).items():
                stage_seconds[k] = stage_seconds.get(k, 0.0) + v
            ent = head.get("entities")
            if ent and st["status"] == STATUS_OK:
                srcs = entity_stats["mask_sources"]
                srcs[ent["mask_source"]] = srcs.get(ent["mask_source"], 0) + 1
                entity_stats["entities"] += int(ent.get("count") or 0)
            if head.get("resumed_from"):
                resumed[head["resumed_from"]] = resumed.get(head["resumed_from"], 0) + 1
            for op, n in (head.get("batches") or {}).items():
                batches.setdefault(op, []).append(int(n))
            if head.get("worker"):
                workers.add(head["worker"])
            for op, v in (head.get("waits") or {}).items():
                waits[op] = waits.get(op, 0.0) + float(v)
        if commit_check is not None:
            commit_check()
        tars = writer.close()
    except BaseException:
        writer.abort()
        raise
    write_status(paths["status"], status_rows, tag)
    counts = {s: sum(r["status"] == s for r in status_rows) for s in (STATUS_OK, STATUS_ERROR, STATUS_FILTERED)}
    stats = {
        "shard": shard,
        "name": layout.shard_name(shard),
        "stage": layout.stage,
        # the stage cache most of the shard's clips were resumed from (None: computed afresh)
        "resumed_from": max(resumed, key=resumed.get) if resumed else None,
        "tars": tars,
        "tar_counts": list(writer.counts),
        "clips": stop - start,
        **counts,
        "bytes": int(sum(r["bytes"] or 0 for r in status_rows)),
        "seconds": round(sum(r["seconds"] or 0.0 for r in status_rows), 3),  # clip time, all workers
        "commit_seconds": round(time.perf_counter() - t0, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "entities": entity_stats,
        "workers": len(workers),  # processes that computed this shard's clips
        "batches": {op: {"clips": len(v), "mean_batch": round(sum(v) / len(v), 2),
                        "wait_s": round(waits.get(op, 0.0), 3)} for op, v in batches.items()},
        **(extra or {}),
    }
    if commit_check is not None:
        commit_check()
    write_stats(paths["stats"], stats, tag)  # last: marks the shard done
    remove_parts(layout, shard)
    stats["skipped"] = False
    return stats


def restage_for_retry(layout: RunLayout, shard: int, reasons) -> list[int]:
    """``--retry-errors``: stage the clips of a done shard that are kept as they are (ok
    samples with their members byte for byte, filtered clips, errors not retried) and return
    the rows to compute again (status error, with a reason in ``reasons``, or any when
    ``reasons`` is True). Nothing is staged when no clip of the shard is retried."""
    import json

    from pipeline.clip.work import ClipWork
    from pipeline.run.parts import write_part
    from stages.errors import Outcome

    paths = layout.shard_paths(shard)
    status = storage.read_parquet(paths["status"]).to_pylist()
    redo = [r["row"] for r in status
            if r["status"] == STATUS_ERROR and (reasons is True or r["reason"] in reasons)]
    if not redo:
        return []
    stats = read_stats(paths["stats"]) or {}
    index = tar_index(join(layout.stage_dir(), t) for t in stats.get("tars", []))
    keep = set(redo)
    for r in status:
        if r["row"] in keep:
            continue
        w = ClipWork(row={"clip_id": r["clip_id"], "row": r["row"]}, shard=shard,
                     outcome=Outcome(r["status"], r["reason"], r["message"]), seconds=r["seconds"] or 0.0)
        if r["status"] == STATUS_OK:
            w.members = read_indexed(index[r["clip_id"]])
            ent = json.loads(w.members[JSON.name]).get("entities")
            if ent:
                w.entities = {"mask_source": ent.get("mask_source"), "count": int(ent.get("count", 0))}
        write_part(layout, w)
    return sorted(redo)
