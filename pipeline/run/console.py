"""A clean console for Ray runs: Ray's own output goes to a file in Ray's log folder.

Ray writes to the driver's stderr from C++ (core worker lines such as the actor-restart
notice) and from Python loggers it set up at import (token authentication, Ray Data's
progress and execution notes). ``ray_output_to_file()`` points file descriptor 2 at
``<ray session>/logs/trajshards-driver.log`` for the life of the Ray part of a run, and
gives Python's ``sys.stderr`` a stream on the original terminal, so our progress lines and
errors (which write to the current ``sys.stderr``) stay on screen while Ray's do not.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager

LOG_NAME = "trajshards-driver.log"


class CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time of the write."""

    def write(self, s):
        return sys.stderr.write(s)

    def flush(self):
        return sys.stderr.flush()

    def isatty(self):
        return bool(getattr(sys.stderr, "isatty", lambda: False)())

    def fileno(self):
        return sys.stderr.fileno()

    @property
    def encoding(self):
        return getattr(sys.stderr, "encoding", "utf-8")


class RayOutput:
    def __init__(self, path: str):
        self.path = path

    def move_to(self, folder: str | None) -> str:
        """Move the log into Ray's session log folder once Ray knows it (same file: the
        descriptor stays valid)."""
        if folder:
            dest = os.path.join(folder, LOG_NAME)
            try:
                os.replace(self.path, dest)
                self.path = dest
            except OSError:
                pass
        return self.path


@contextmanager
def ray_output_to_file(enabled: bool = True):
    if not enabled:
        yield None
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor at all: nothing to redirect
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="trajshards-ray-", suffix=".log")
    old = sys.stderr
    try:
        old.flush()
    except (OSError, ValueError):
        pass
    console = open(saved, "w", buffering=1, closefd=False, encoding=getattr(old, "encoding", None) or "utf-8",
                   errors="replace")
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = console
    # Ray's console handler (PlainRayHandler, on the "ray" and "ray.data" loggers, re-created
    # by ray.init) writes to the sys.stderr of the moment: send its records to the log too
    log_stream = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")
    to_log = logging.StreamHandler(log_stream)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    try:
        from ray._private.log import PlainRayHandler
    except ImportError:
        PlainRayHandler = None
    orig_emit = PlainRayHandler.emit if PlainRayHandler is not None else None
    if PlainRayHandler is not None:
        PlainRayHandler.emit = lambda self, record: to_log.emit(record)
    try:
        yield RayOutput(path)
    finally:
        if PlainRayHandler is not None:
            PlainRayHandler.emit = orig_emit
        log_stream.flush()
        try:
            console.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = old
