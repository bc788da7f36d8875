"""The manifest: one row per input clip, the contract between dataset adapters and the run.

Adapters (``pipeline.inputs.adapters``) produce it; the run reads nothing else about the inputs.
"""
from __future__ import annotations

import pyarrow as pa

MANIFEST_VERSION = 1

MANIFEST_SCHEMA = pa.schema(
    [
        # Stable, unique sample key: [A-Za-z0-9_-] only (no dots: webdataset splits keys there).
        pa.field("clip_id", pa.string(), nullable=False),
        # Position in the manifest; shard assignment is ``row // shard_size``.
        pa.field("row", pa.int64(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        # Where the video is: a file path/URI, or for frame-folder datasets (VIPSeg) the folder.
        pa.field("source", pa.string(), nullable=False),
        # The id in the source dataset (WebVid videoid, relative path, VIPSeg video name).
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=True),
        # Duration in seconds as the dataset states it (may be absent or wrong).
        pa.field("duration", pa.float64(), nullable=True),
        # Source frame rate when the dataset states it (frame folders); else read from the file.
        pa.field("fps", pa.float64(), nullable=True),
        # Folder of per-frame ground-truth id maps (VIPSeg panomasks), or null.
        pa.field("masks", pa.string(), nullable=True),
        # Adapter-level problem found while listing (e.g. path escapes the data root): the
        # run records the clip as an error with this message instead of processing it.
        pa.field("error", pa.string(), nullable=True),
    ],
    metadata={b"manifest_version": str(MANIFEST_VERSION).encode()},
)


