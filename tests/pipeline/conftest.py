"""The pipeline tests' helper modules (``loader_fixtures``, ``reliability_util``) import by
name: pytest runs with ``--import-mode=importlib``, which puts no test folder on sys.path."""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def s3():
    """A loopback S3 server (moto) for the session: ``s3_util.S3Server``."""
    pytest.importorskip("moto.server")
    import s3_util

    with s3_util.s3_server() as server:
        yield server
