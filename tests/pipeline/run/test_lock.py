"""One writer per output folder (pipeline/run/lock.py): a second run is refused with a clear
message while the first is alive, and a run that died (SIGKILL) never leaves the folder
locked. Real processes, real flock."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.config import Config
from pipeline.run.lock import LOCK_NAME, RunLock, RunLocked, RunSuperseded, check_run, lock_info

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from pipeline.run.lock import RunLock
lock = RunLock({out!r}).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(out):
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=ru.REPO, out=str(out))], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_lock_is_refused_and_released_lock_is_reusable(tmp_path):
    with RunLock(tmp_path) as a:
        info = lock_info(tmp_path)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["run_id"] == a.run_id
        with pytest.raises(RunLocked) as e:
            RunLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(e.value) and "in use by another run" in str(e.value)
    assert lock_info(tmp_path) == {} and (tmp_path / LOCK_NAME).exists()  # emptied, never deleted
    with RunLock(tmp_path) as b:
        assert lock_info(tmp_path)["run_id"] == b.run_id != a.run_id


def test_plan_run_is_refused_while_another_process_holds_the_folder(tmp_path):
    from pipeline.run.plan import run

    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunLocked) as e:
            run(Config(), "sample", str(tmp_path / "nothing"), str(tmp_path), executor="local")
        assert f"pid {holder.pid}" in str(e.value)
        assert not (tmp_path / "manifest.parquet").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    # The holder died by SIGKILL: the kernel dropped its flock, the folder is free again.
    with RunLock(tmp_path):
        assert lock_info(tmp_path)["pid"] == os.getpid()


def test_stale_lock_files(tmp_path):
    path = tmp_path / LOCK_NAME
    # same host, dead pid, no flock held -> stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0, "command": "x"}))
    with RunLock(tmp_path):
        pass
    # another host with a fresh heartbeat (file systems whose locks do not cross hosts) -> active
    path.write_text(json.dumps({"pid": 1, "host": "some-other-host", "started": time.time(), "command": "x"}))
    with pytest.raises(RunLocked) as e:
        RunLock(tmp_path).acquire()
    assert "some-other-host" in str(e.value) and "heartbeat" in str(e.value)
    # ... and silent for longer than stale_after_s -> dead
    old = time.time() - 3600
    os.utime(path, (old, old))
    with RunLock(tmp_path, stale_after_s=60):
        pass


def test_heartbeat_touches_the_lock_file(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.05):
        path = tmp_path / LOCK_NAME
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.time() + 10
        while os.stat(path).st_mtime < old + 1 and time.time() < deadline:
            time.sleep(0.05)
        assert os.stat(path).st_mtime > old + 1


def test_fencing_stops_a_superseded_run_from_committing(tmp_path):
    with RunLock(tmp_path) as a:
        check_run(str(tmp_path), a.run_id)
    with RunLock(tmp_path):
        with pytest.raises(RunSuperseded):
            check_run(str(tmp_path), a.run_id)


@pytest.mark.slow
def test_cli_refuses_a_second_run_and_a_killed_run_does_not_block(tmp_path):
    """Two real `python -m pipeline run` on one folder: the second exits 2 with a message
    naming the first; after the first is SIGKILLed, a rerun works and completes the output."""
    data = ru.small_dataset(tmp_path / "data", n=2, distinct=1)
    # a clip that hangs in the flow stage keeps the first run busy (the plugin's blue clip)
    ru.write_clip(tmp_path / "data" / "v" / "hang.mp4", ru.uniform_frames((0, 0, 255)), 12)
    with open(tmp_path / "data" / "webvid.csv", "a") as f:
        f.write("hang,,PT3S,v,keeps the run busy\n")
    cfg = Config(profile="dragnuwa-ld").replace(**{
        "plugins": [ru.write_plugin(tmp_path)], "flow.backend": "faulty", "isolation.stage_timeout_s": 1.0,
        "isolation.retries": 0, "entities.enabled": False})
    cfg_busy = cfg.replace(**{"isolation.stage_timeout_s": 300.0})
    (tmp_path / "busy.json").write_text(json.dumps(cfg_busy.to_dict()))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "out"
    args = ["--dataset", "webvid", "--data", data, "--out", out, "--executor", "local"]
    first = subprocess.Popen([ru.PY, "-m", "pipeline", "run", *map(str, args), "--config", str(tmp_path / "busy.json")],
                             cwd=ru.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not lock_info(out).get("pid") == first.pid and time.time() < deadline:
            time.sleep(0.1)
        assert lock_info(out)["pid"] == first.pid
        second = ru.cli([*args, "--config", tmp_path / "cfg.json"], timeout=300)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"is in use by another run: pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = ru.cli([*args, "--config", tmp_path / "cfg.json"], timeout=300)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-3000:]
    assert "3 clips -> ok 2, error 1, filtered 0" in third.stdout
    ru.check_accounting(out)
    assert lock_info(out) == {}
