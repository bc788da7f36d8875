"""Per-clip results staged durably under ``OUT/_parts/<stage>/<shard>/<row>.part``.

A part is a small tar: ``work.json`` (the clip's status row, timings, what it was resumed
from, batch sizes, entity summary) and, for a clip that became a sample, its encoded tar
members under their member names. It is written under a temporary name (``.<row>.part.<tag>.tmp``)
and renamed when complete, so a part that exists is whole (on an object store: one
upload, ``pipeline.storage``). A killed run's staged clips are
never recomputed: the next run lists the parts and schedules only the rows without one.
"""
from __future__ import annotations

import io
import json
import os
import tarfile

from schemas.status import STATUS_ERROR

from pipeline import storage
from pipeline.run.layout import NON_CLIP_REASONS, RunLayout
from pipeline.clip.work import ClipWork

_WORK = "work.json"


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_part(layout: RunLayout, work: ClipWork, fsync: bool = True) -> str:
    """Stage one finished clip; returns the part's path."""
    assert work.done, "only finished clips are staged"
    head = {"status": work.status_row(), "timings": work.timings, "resumed_from": work.resumed_from,
            "batches": work.batches, "waits": work.waits, "entities": work.entities, "worker": work.worker}
    members = [(_WORK, json.dumps(head, sort_keys=True).encode())]
    members += sorted((work.members or {}).items())
    path = layout.part_path(work.shard, work.index,
                            retry=work.status == STATUS_ERROR and work.reason in NON_CLIP_REASONS)
    storage.makedirs(layout.parts_dir(work.shard))
    storage.put_bytes(path, _tar_bytes(members), tag=f"{os.getpid()}-{os.urandom(3).hex()}", fsync=fsync)
    return path


def read_part(path: str) -> tuple[dict, dict[str, bytes]]:
    """(head, members) of a staged part."""
    head, members = None, {}
    with storage.open_input(path) as f, tarfile.open(fileobj=f) as tf:
        for m in tf:
            data = tf.extractfile(m).read()
            if m.name == _WORK:
                head = json.loads(data)
            else:
                members[m.name] = data
    if head is None:
        raise ValueError(f"{path}: not a clip part (no {_WORK})")
    return head, members


def staged_rows(layout: RunLayout, shard: int) -> set[int]:
    """Rows of ``shard`` that have a complete part (not counting ``.retry.part``: those are
    computed again)."""
    names = storage.listdir(layout.parts_dir(shard))
    return {int(n[:9]) for n in names if n.endswith(".part") and not n.startswith(".") and not n.endswith(".retry.part")}


def part_of(layout: RunLayout, shard: int, row: int) -> str:
    """The part to commit for a row: its computed part, else its ``.retry.part``."""
    path = layout.part_path(shard, row)
    return path if storage.exists(path) else layout.part_path(shard, row, retry=True)


def staged_shards(layout: RunLayout) -> set[int]:
    return {int(n) for n in storage.listdir(layout.parts_root()) if n.isdigit()}


def remove_parts(layout: RunLayout, shard: int) -> None:
    storage.remove_tree(layout.parts_dir(shard))


def remove_part_temp_files(layout: RunLayout) -> list[str]:
    """Temporary parts of killed writers (call only while holding the run lock)."""
    from pipeline.shards import remove_temp_files

    return [n for shard in staged_shards(layout) for n in remove_temp_files(layout.parts_dir(shard))]
