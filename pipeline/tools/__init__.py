"""Inspection tools: preview sheets, run reports and stats, shard validation. They read what a run
wrote (schemas/ and the tar reader in pipeline/shards.py), never the run's internals."""
