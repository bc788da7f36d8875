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

On an object store (``s3://``, ``gs://``: ``pipeline.storage``) there is no flock; the lock
is a lease object ``OUT/.run.lock`` (``ObjectRunLock``) holding the run id, host, pid and
command, rewritten every ``HEARTBEAT_S`` (its last-modified time is the heartbeat):

* on S3 with boto3 it is taken with a conditional create (``If-None-Match: *``), a dead
  holder's lease is taken over with ``If-Match`` on the ETag that was read, and each
  heartbeat is an ``If-Match`` rewrite, so two runs can never both hold it (a run whose
  heartbeat finds the lease changed stops heartbeating and its workers are fenced);
* elsewhere (``gs://``, s3 without boto3: pyarrow has no conditional write) the lease is
  best effort: a run checks for a live lease, writes its own, waits ``SETTLE_S`` and
  reads it back; two runs started within that window may both proceed.

A lease counts as live while its holder's process runs (same host) or while its heartbeat
is younger than ``STALE_AFTER_S`` (another host; the age is the store's clock minus the
object's last-modified time, so host clocks do not matter). ``check_run`` reads the lease.
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

from pipeline import storage
from pipeline.storage import join
from pipeline.steps import SetupError

LOCK_NAME = ".run.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
SETTLE_S = 2.0  # best-effort leases: the wait before reading one's own lease back


class RunLocked(SetupError):
    """Another run is writing to the same output folder (a setup error: exit status 2)."""


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
            f"{storage.redact_text(str(info.get('command', '?')))})")


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
            mine = _holder_info(self.run_id)
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


def _holder_info(run_id: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": storage.redact_text(" ".join(sys.argv))[:500], "run_id": run_id}


class ObjectRunLock:
    """The lease of an OUT on an object store (module docstring); the same interface as
    :class:`RunLock`."""

    def __init__(self, out_dir: str, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S,
                 settle_s: float = SETTLE_S):
        self.out_dir = out_dir
        self.path = join(out_dir, LOCK_NAME)
        self.heartbeat_s, self.stale_after_s, self.settle_s = heartbeat_s, stale_after_s, settle_s
        self.run_id = uuid.uuid4().hex
        self.conditional: bool | None = None   # whether the store took conditional writes
        self.lost = False                      # a heartbeat found the lease taken by another run
        self._etag: str | None = None
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._held

    def _refuse(self, info: dict, age: float) -> RunLocked:
        return RunLocked(
            f"{storage.redact(self.out_dir)} is in use by another run: {_describe(info)}; its lease "
            f"was renewed {age:.0f} s ago. Wait for it to finish (or stop it); a lease that is not "
            f"renewed for {self.stale_after_s:g} s (or whose process on this host has ended) is free.")

    def _live(self, info: dict, age: float) -> bool:
        if not info.get("run_id"):
            return False
        if info.get("host") == socket.gethostname() and info.get("pid"):
            return _pid_alive(int(info["pid"]))
        return age < self.stale_after_s

    def acquire(self) -> "ObjectRunLock":
        if self._held:
            raise RuntimeError("lock already held by this object")
        mine = _holder_info(self.run_id)
        data = json.dumps(mine).encode()
        created = storage.put_if_absent(self.path, data)
        self.conditional = created is not None
        if created:
            self._etag = created
        else:
            cur = storage.stat_object(self.path)
            if cur is not None:
                body, etag, age = cur
                try:
                    info = json.loads(body) if body.strip() else {}
                except ValueError:
                    info = {}
                if self._live(info, age):
                    raise self._refuse(info, age)
            if self.conditional:  # take over the dead holder's lease, unless someone just did
                new = (storage.put_if_match(self.path, data, cur[1]) if cur is not None
                       else storage.put_if_absent(self.path, data))
                if not new:
                    raise RunLocked(f"{storage.redact(self.out_dir)} was just taken by another run; "
                                    f"retry in a moment to see who holds it")
                self._etag = new
            else:  # best effort: write, let a concurrent writer land, read back
                storage.put_bytes(self.path, data)
                time.sleep(self.settle_s)
                back = storage.read_json(self.path) or {}
                if back.get("run_id") != self.run_id:
                    raise self._refuse(back, 0.0)
        self._held, self.lost = True, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(mine,), name="run-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self, mine: dict) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                if not self._held:
                    return
                data = json.dumps({**mine, "heartbeat": time.time()}).encode()
                try:
                    if self.conditional:
                        new = storage.put_if_match(self.path, data, self._etag)
                        if not new:
                            self.lost = True
                            import logging

                            logging.getLogger(__name__).error(
                                "the lease of %s was taken by another run: this run's workers stop committing",
                                storage.redact(self.out_dir))
                            return
                        self._etag = new
                    else:
                        storage.put_bytes(self.path, data)
                except Exception:  # noqa: BLE001 - a missed heartbeat; the next one retries
                    pass

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._held = False
            if not self.lost and (storage.read_json(self.path) or {}).get("run_id") == self.run_id:
                storage.remove(self.path)

    def __enter__(self) -> "ObjectRunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_lock(out_dir: str, **kw) -> "RunLock | ObjectRunLock":
    """The lock for ``out_dir``: a flock'ed file locally, a lease object on an object store."""
    return ObjectRunLock(out_dir, **kw) if storage.is_remote(out_dir) else RunLock(out_dir, **kw)


def lock_info(out_dir: str) -> dict:
    """Who holds (or last held) the lock of ``out_dir``: {} when free and released cleanly."""
    if storage.is_remote(out_dir):
        info = storage.read_json(join(out_dir, LOCK_NAME))
        return info if isinstance(info, dict) else {}
    return _read_info(os.path.join(os.path.abspath(out_dir), LOCK_NAME))


def check_run(out_dir: str, run_id: str) -> None:
    """Raise :class:`RunSuperseded` when the lock of ``out_dir`` names another run."""
    held_by = lock_info(out_dir).get("run_id")
    if held_by != run_id:
        raise RunSuperseded(f"{storage.redact(out_dir)} now belongs to run {held_by or '(none)'}, not to this "
                            f"worker's run {run_id}: not committing")
