"""Per-shard status table: every clip of a shard appears exactly once, with its outcome
(``stages.errors.Outcome``: status, reason, message). The clip stages are the steps'
(``pipeline.steps.clip_stages``)."""
from __future__ import annotations

import pyarrow as pa

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
