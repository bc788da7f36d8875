"""Where a run's files live: one object names every path under OUT.

```
OUT/
  manifest.parquet, config.json, index.json, errors.parquet, filtered.parquet, .run.lock
  P-N.tar (P-N_k.tar), P-N.parquet, P-N.stats.json      shard N of the final output (stage "shards")
  _stages/<stage>/P-N.*                                  a stage cache (``--stage flow`` ...)
  _parts/<stage>/N/<row>.part                           per-clip results staged until shard N commits
```

``P`` is ``<dataset>-<profile>``. OUT is a local folder or an object-store URI
(``pipeline.storage``); paths are joined with ``pipeline.storage.join``, which keeps a URI's query. A part is written under a temporary name and renamed when
complete; a shard is committed from its parts (tar, status table, stats file last) and its
parts folder is then removed. Nothing under a shard's final name is ever partial.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.storage import join
from pipeline.shards import shard_name, shard_paths

PARTS = "_parts"
# Error reasons that say nothing about the clip (a bug, a backend that failed): the circuit
# breaker watches them, and a clip staged with one is computed again by the next run.
NON_CLIP_REASONS = ("internal", "backend_unavailable")
STAGES_DIR = "_stages"


@dataclass(frozen=True)
class RunLayout:
    out_dir: str
    prefix: str
    stage: str = "shards"  # the output this run commits: "shards" or a stage cache

    def stage_dir(self, stage: str | None = None) -> str:
        stage = stage or self.stage
        return self.out_dir if stage == "shards" else join(self.out_dir, STAGES_DIR, stage)

    def shard_name(self, shard: int, part: int = 0) -> str:
        return shard_name(self.prefix, shard, part)

    def shard_paths(self, shard: int, stage: str | None = None) -> dict[str, str]:
        return shard_paths(self.stage_dir(stage), self.prefix, shard)

    def parts_root(self, stage: str | None = None) -> str:
        return join(self.out_dir, PARTS, stage or self.stage)

    def parts_dir(self, shard: int, stage: str | None = None) -> str:
        return join(self.parts_root(stage), f"{int(shard):06d}")

    def part_path(self, shard: int, row: int, stage: str | None = None, retry: bool = False) -> str:
        """``<row>.part``; ``<row>.retry.part`` for a clip that failed for a reason that is not
        about the clip (``NON_CLIP_REASONS``): a later run computes such a clip again."""
        return join(self.parts_dir(shard, stage), f"{int(row):09d}" + (".retry" if retry else "") + ".part")

    def manifest(self) -> str:
        return join(self.out_dir, "manifest.parquet")

    def config(self) -> str:
        return join(self.out_dir, "config.json")


def shard_of(row: int, samples_per_shard: int) -> int:
    """Shard membership: manifest row // samples_per_shard (stable across reruns)."""
    return int(row) // max(1, int(samples_per_shard))
