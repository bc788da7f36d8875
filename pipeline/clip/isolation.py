"""Clip isolation: each clip's stages run in a long-lived child process of the worker.

A decoder (or any stage) that segfaults, aborts, runs out of memory or hangs on one clip
takes down only the child: the worker sees the child die (or its stage time limit pass),
kills it, starts a fresh one and retries the clip a bounded number of times; after that the
clip is recorded as an error with reason ``crashed`` or ``timeout`` and the shard goes on.

``IsolatedRunner(cfg)`` runs the steps of the first stage group of a run
(``pipeline.run.runner.GroupRunner``) on one clip at a time::

    runner = IsolatedRunner(cfg, encoded=True)
    try:
        runner(work, ["decode", "captions", ...])  # a ClipWork (work.py), updated in place
    finally:
        runner.close()

Protocol (a ``multiprocessing`` pipe; the child is started with ``spawn`` by default, so it
shares no threads or library state with the worker): the child sends ``("ready", pid)``; for
each job ``("run", work, step names, encoded)`` it runs the one loop
(``pipeline.clip.loop.ClipSteps``), sends ``("step", name)`` before each step and finally
``("done", work)``: the clip with its sample, or its ``Outcome`` when it failed or was
filtered (the same record everywhere). Time limits are per step: ``decode.timeout_s`` for
decode, ``isolation.stage_timeout_s`` for the others (a child's start-up is not counted).
The child exits when the worker closes the pipe or dies.

With ``encoded=True`` (what the executors use for a fused group) the child also encodes the
sample's tar members and sends them (``ClipWork.members``, with a sample holding only the
meta) instead of the whole clip: about 2 MB through the pipe instead of 30 MB of arrays per HD
clip.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

from stages.errors import ClipError

from pipeline.clip.work import ClipWork
from pipeline.config import Config

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0  # a child that is not ready by then counts as crashed


class _ChildLost(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class IsolatedRunner:
    """Runs a clip's steps in a child process, one clip at a time (see module doc).

    Counters: ``starts`` (children started), ``crashes``, ``timeouts``."""

    def __init__(self, cfg: Config, retries: int | None = None, decode_timeout_s: float | None = None,
                 stage_timeout_s: float | None = None, start_method: str | None = None, encoded: bool = False):
        iso = cfg.isolation
        self.cfg = cfg
        self.encoded = bool(encoded)
        self.retries = max(0, int(iso.retries if retries is None else retries))
        self.decode_timeout_s = float(cfg.decode.timeout_s if decode_timeout_s is None else decode_timeout_s)
        self.stage_timeout_s = float(iso.stage_timeout_s if stage_timeout_s is None else stage_timeout_s)
        self.start_method = start_method or iso.start_method
        self._cfg_dict = cfg.to_dict()
        self._proc = None
        self._conn = None
        self.starts = self.crashes = self.timeouts = 0

    # ------------------------------------------------------------------ child lifecycle
    @property
    def child_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def _start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context(self.start_method)
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_child_main, args=(child, self._cfg_dict, os.getpid()),
                           name="clip-isolation", daemon=False)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if parent.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    msg = parent.recv()
                except (EOFError, OSError):
                    proc.join(5)
                    code = proc.exitcode
                    self._kill()
                    raise _ChildLost("crashed", f"isolation child failed to start ({describe_exit(code)})")
                if msg[0] == "ready":
                    return
                if msg[0] == "fatal":
                    self._kill()
                    raise RuntimeError(f"isolation child failed to start: {msg[1]}")
            elif time.monotonic() > deadline:
                self._kill()
                raise _ChildLost("timeout", f"isolation child not ready after {STARTUP_TIMEOUT_S:g} s")

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(10)

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        if self._proc is None:
            return
        try:
            self._conn.send(("stop",))
            self._proc.join(5)
        except (OSError, EOFError, BrokenPipeError):
            pass
        self._kill()

    def __del__(self):  # best effort; workers call close()
        try:
            self._kill()
        except Exception:
            pass

    # ------------------------------------------------------------------ running clips
    def _limit(self, stage: str) -> float:
        return self.decode_timeout_s if stage == "decode" else self.stage_timeout_s

    def _run_once(self, work: ClipWork, names: list[str]) -> ClipWork:
        self._conn.send(("run", work, list(names), self.encoded))
        step = "start"
        deadline = time.monotonic() + self._limit("decode")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.timeouts += 1
                raise _ChildLost("timeout", f"stage {step} did not finish within {self._limit(step):g} s")
            if self._conn.poll(min(remaining, 1.0)):
                try:
                    msg = self._conn.recv()
                except (EOFError, OSError):
                    self._proc.join(5)
                    self.crashes += 1
                    raise _ChildLost("crashed", f"worker process {describe_exit(self._proc.exitcode)} "
                                                f"in stage {step}")
                if msg[0] == "step":
                    step = msg[1]
                    deadline = time.monotonic() + self._limit(step)
                elif msg[0] == "done":
                    return msg[1]
            elif not self._proc.is_alive():
                self.crashes += 1
                raise _ChildLost("crashed", f"worker process {describe_exit(self._proc.exitcode)} in stage {step}")

    def __call__(self, work: ClipWork, names: list[str]) -> ClipWork:
        """Run the steps ``names`` on one clip in the child; ``work`` takes the child's results
        (its sample or encoded members, timings, outcome). A child that crashes or passes a time
        limit is replaced and the clip retried; after that the clip ends ``crashed`` / ``timeout``."""
        attempts = 1 + self.retries
        lost: _ChildLost | None = None
        for attempt in range(1, attempts + 1):
            try:
                if self._proc is None:
                    self._start()
                work.absorb(self._run_once(work, names))
                return work
            except _ChildLost as e:
                lost = e
                self._kill()  # the next attempt (or clip) gets a fresh child
                log.warning("clip %s: %s (attempt %d of %d)", work.clip_id, e, attempt, attempts)
        return work.fail(ClipError(lost.reason, f"{lost.message}; gave up after {attempts} attempt(s)"))


# ---------------------------------------------------------------------- the child
def _exit_with_parent(ppid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            os._exit(0)


def _child_main(conn, cfg_dict: dict, ppid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the child stops
    threading.Thread(target=_exit_with_parent, args=(ppid,), daemon=True).start()
    try:
        from pipeline.config import config_from_dict
        from schemas.sample import Sample

        from pipeline.clip.loop import ClipSteps, encode

        steps = ClipSteps(config_from_dict(cfg_dict))
    except BaseException as e:  # noqa: BLE001 - reported to the worker
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            return
        _, work, names, encoded = msg
        try:
            steps.run([work], names, on_step=lambda name: conn.send(("step", name)))
            if encoded and not work.done:
                work.members = encode(work)
                work.sample = Sample(key=work.sample.key, meta=work.sample.meta)
        except Exception as e:  # noqa: BLE001 - encoding failed: recorded as the clip's outcome
            work.fail(e)
        conn.send(("done", work))
