"""Per-shard status table: every clip of a shard appears exactly once; the names of the per-clip stages."""
from __future__ import annotations

import pyarrow as pa

# Per-clip stages in order (the keys of a shard's ``stage_seconds`` and of ``--stage``);
# "shards" is the final output (all stages + the shard writer).
CLIP_STAGES = ("decode", "captions", "flow", "motion", "trajectories", "entities")
STAGES = CLIP_STAGES + ("shards",)

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_FILTERED = "filtered"

STATUS_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("shard", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | error | filtered
        pa.field("reason", pa.string(), nullable=True),  # error/filter class, e.g. "too_short"
        pa.field("message", pa.string(), nullable=True),
        pa.field("tar", pa.string(), nullable=True),  # tar file name holding the sample (ok only)
        pa.field("bytes", pa.int64(), nullable=True),  # bytes of the sample's members
        pa.field("seconds", pa.float64(), nullable=True),  # compute time of the clip
    ]
)
