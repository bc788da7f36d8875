"""The pipeline tests' helper modules (``loader_fixtures``, ``reliability_util``) import by
name: pytest runs with ``--import-mode=importlib``, which puts no test folder on sys.path."""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
