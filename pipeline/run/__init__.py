"""The offline run: plan, stage groups and operators, executors, per-clip staging, shard
commit, the run lock. ``from pipeline.run import run`` is the entry point the CLI calls."""
from pipeline.run.plan import RunResult, run

__all__ = ["run", "RunResult"]
