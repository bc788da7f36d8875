"""Data contracts: manifest, per-shard status table, per-sample shard layout."""
from .manifest import MANIFEST_SCHEMA, MANIFEST_VERSION  # noqa: F401
from .sample import SCHEMA_VERSION  # noqa: F401
from .status import STATUS_SCHEMA  # noqa: F401
