"""One writer per output folder: ``OUT/.run.lock``.

A run holds an exclusive ``fcntl.flock`` on the lock file for its whole life; the kernel
drops it when the process ends in any way (SIGKILL included), so a dead run never leaves the
folder locked. The file also says who holds it (pid, host, start time, command) for the
refusal message, and its mtime is a heartbeat (touched every ``HEARTBEAT_S``): on shared
file systems whose locks do not reach other hosts, a holder on another host with a fresh
heartbeat still counts as active, and one silent for ``STALE_AFTER_S`` counts as dead.

The file is never deleted (deleting a flock'ed file lets two runs lock different inodes);
releasing empties it.

Fencing: each run has a ``run_id`` (in the lock file). Workers of a killed driver can live on
for a few seconds (Ray notices the driver's death late); before they commit a shard they call
``check_run(out_dir, run_id)``, which raises :class:`RunSuperseded` once a newer run holds the
folder, so a dead run's stragglers never overwrite a live run's shards.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid

LOCK_NAME = ".run.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class RunLocked(ValueError):
    """Another run is writing to the same output folder (a ValueError: the CLI prints it)."""


class RunSuperseded(RuntimeError):
    """This worker's run no longer holds the output folder: it must not commit anything."""


def _read_info(path: str) -> dict:
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"pid {info.get('pid')} on {info.get('host')} (started {when}: "
            f"{info.get('command', '?')})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(out_dir): ...``; raises :class:`RunLocked` when another run is active."""

    def __init__(self, out_dir: str, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.out_dir = os.path.abspath(out_dir)
        self.path = os.path.join(self.out_dir, LOCK_NAME)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._fd: int | None = None
        self.run_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        import fcntl

        if self._fd is not None:
            raise RuntimeError("lock already held by this object")
        os.makedirs(self.out_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            flocked = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise RunLocked(
                        f"{self.out_dir} is in use by another run: {_describe(_read_info(self.path))}. "
                        f"Wait for it to finish (or stop it); a run that died releases the lock by itself."
                    ) from None
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                flocked = False  # no flock on this file system: pid and heartbeat are all there is
            info = _read_info(self.path)
            if info and info.get("pid") and self._holder_active(info, flocked):
                raise RunLocked(
                    f"{self.out_dir} is in use by another run: {_describe(info)}; its heartbeat is "
                    f"fresh (file locks do not reach across hosts here). It counts as dead once "
                    f"{self.path} is {self.stale_after_s:g} s old."
                )
            mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "command": " ".join(sys.argv)[:500], "run_id": self.run_id}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _holder_active(self, info: dict, flocked: bool) -> bool:
        """Is the recorded holder still running, although we could take the flock (or the
        file system has none)? On one host the flock is authoritative (the holder died, or
        its pid was recycled); across hosts the heartbeat decides."""
        if info.get("host") == socket.gethostname():
            return not flocked and info.get("pid") != os.getpid() and _pid_alive(int(info["pid"]))
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except OSError:
            return False
        return age < self.stale_after_s

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_info(out_dir: str) -> dict:
    """Who holds (or last held) the lock of ``out_dir``: {} when free and released cleanly."""
    return _read_info(os.path.join(os.path.abspath(out_dir), LOCK_NAME))


def check_run(out_dir: str, run_id: str) -> None:
    """Raise :class:`RunSuperseded` when the lock of ``out_dir`` names another run."""
    held_by = lock_info(out_dir).get("run_id")
    if held_by != run_id:
        raise RunSuperseded(f"{out_dir} now belongs to run {held_by or '(none)'}, not to this worker's "
                            f"run {run_id}: not committing")
