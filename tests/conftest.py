"""Shared pytest fixtures (append new fixtures; keep each one cheap or session-scoped)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The embedded sample processed once per session (profile dragnuwa-ld, local executor).

    Returns a namespace: ``data`` (the sample dataset folder), ``out`` (the run's output
    folder, with index.json and shards) and ``result`` (pipeline.run.RunResult).
    """
    from pipeline.config import Config
    from pipeline.run.plan import run
    from pipeline.sample_data import build_sample

    root = tmp_path_factory.mktemp("sample_run")
    data = str(root / "data")
    build_sample(data)          # returns the CSV path; the dataset root is the folder
    out = str(root / "out")
    result = run(Config(profile="dragnuwa-ld"), "sample", str(data), out, executor="local")
    return SimpleNamespace(data=str(data), out=out, result=result)
