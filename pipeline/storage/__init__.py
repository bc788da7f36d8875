"""Where data lives: DATA and OUT as a local folder or any URI ``pyarrow.fs`` opens
(``s3://``, ``gs://``, ``hdfs://``, ``file://``), behind one small set of functions that the
adapters, the run, the commit, the tools and the trainers' readers call.

* ``location``: the rules on location strings (``SCHEMES`` and their families, ``join`` that
  keeps a URI's query, ``redact``, ``root``, the ``Location`` type); no I/O.
* ``files``: reading and listing (``read_bytes``, ``open_stream``, ``listdir``, ``walk_files``,
  ``local_path`` ...), one pyarrow file system per process and location.
* ``writes``: atomic writes (``put_bytes``, ``AtomicFile``), removal, conditional writes and
  leftover uploads on object stores.

``python -m pipeline.storage cat URL`` writes an object to stdout. See docs/cluster.md.
"""
from .files import (exists, is_dir, listdir, local_path, open_input, open_stream, open_text, read_bytes,
                    read_json, read_parquet, read_text, resolve, walk_files)
from .location import (FILESYSTEM, LOCAL, OBJECT_STORE, OTHER, SCHEMES, Location, family, fs_key, fs_path, is_remote,
                       is_uri, join, opened_by_pyarrow, redact, redact_text, root, scheme)
from .writes import (AtomicFile, abort_uploads, makedirs, put_bytes, put_if_absent, put_if_match, remove,
                     remove_tree, s3_client, stat_object)

__all__ = [
    "LOCAL", "OBJECT_STORE", "FILESYSTEM", "OTHER", "SCHEMES", "Location", "scheme", "family", "is_uri",
    "is_remote", "opened_by_pyarrow", "root", "join", "redact", "redact_text", "fs_key", "fs_path",
    "resolve", "exists", "is_dir", "read_bytes", "read_text", "open_text", "listdir", "walk_files", "local_path",
    "open_input", "open_stream", "read_json", "read_parquet",
    "s3_client", "remove", "remove_tree", "makedirs", "put_bytes", "AtomicFile", "put_if_absent", "put_if_match",
    "stat_object", "abort_uploads",
]
