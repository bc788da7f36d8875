"""OUT on object storage (issue 15), against a real S3-protocol server on loopback (moto,
tests/pipeline/s3_util): a full run of the embedded sample to ``s3://`` writes its tars,
status tables, stats, index, manifest and config there and nothing to local disk, with the
endpoint in no file and no output line; two runs on one prefix are refused (the lease
object, a conditional create); a dead holder's lease is taken over and its workers fenced;
a run SIGKILLed mid-way resumes to members identical to an uninterrupted run, with no
temporary object, staged part, lease or incomplete upload left."""
import json
import os
import socket
import subprocess
import time

import pytest

from pipeline import storage
from pipeline.config import Config
from pipeline.storage import join
from pipeline.run.lock import ObjectRunLock, RunLocked, RunSuperseded, check_run

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

PREFIX = "sample-dragnuwa-ld"


def _cli(args, cwd, **kw):
    """``python -m pipeline run`` from an empty folder (the worktree's code on PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": ru.REPO}
    return subprocess.Popen([ru.PY, "-m", "pipeline", "run", *map(str, args)], cwd=str(cwd), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _no_secrets(s3, text: str, what: str) -> None:
    assert "endpoint_override" not in text and str(s3.port) not in text, f"{what} names the endpoint"


def test_a_run_to_s3_writes_everything_there_and_nothing_locally(s3, sample_run, tmp_path):
    b = s3.bucket()
    out = s3.uri(b, "runs/sample")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _cli(["--dataset", "sample", "--data", sample_run.data, "--out", out, "--profile", "dragnuwa-ld",
                 "--executor", "local"], cwd)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "8 clips -> ok 8" in stdout and f"s3://{b}/runs/sample/" in stdout
    keys = s3.keys(b)
    assert keys == sorted(f"runs/sample/{n}" for n in (
        "config.json", "errors.parquet", "filtered.parquet", "index.json", "manifest.parquet",
        f"{PREFIX}-000000.tar", f"{PREFIX}-000000.parquet", f"{PREFIX}-000000.stats.json")), keys
    assert s3.uploads(b) == []
    assert os.listdir(cwd) == [] and not os.path.exists(os.path.join(ru.REPO, "s3:"))  # nothing local
    _no_secrets(s3, stdout + stderr, "the run's output")
    for k in keys:
        _no_secrets(s3, s3.get(b, k).decode("latin-1"), k)
    dl = s3.download(b, "runs/sample", tmp_path / "dl")
    ru.check_accounting(dl)
    assert ru.sample_hashes(dl) == ru.sample_hashes(sample_run.out)
    assert ru.tar_bytes(dl) == ru.tar_bytes(sample_run.out)
    index = json.loads(s3.get(b, "runs/sample/index.json"))
    assert index["samples"] == 8 and index["url"] == f"{PREFIX}-{{000000..000000}}.tar"
    # the inspection tools: validate reads the URI; stats says how to get a local copy
    from pipeline.tools.report import report
    from pipeline.tools.validate import validate

    rep = validate(out)
    assert rep.ok and rep.samples == 8 and rep.shards == 1, rep.format(20)
    _no_secrets(s3, rep.format(20), "validate's report")
    with pytest.raises(FileNotFoundError, match="object store: copy it first"):
        report(out)


def test_two_runs_on_one_prefix_are_refused(s3, sample_run, tmp_path):
    b = s3.bucket()
    out = s3.uri(b, "run")
    with ObjectRunLock(out) as held:
        assert held.conditional  # S3 with boto3: If-None-Match: *
        with pytest.raises(RunLocked, match="in use by another run"):
            ObjectRunLock(out).acquire()
        proc = _cli(["--dataset", "sample", "--data", sample_run.data, "--out", out, "--executor", "local"], tmp_path)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "is in use by another run" in stderr, stdout + stderr
        _no_secrets(s3, stdout + stderr, "the refusal")
        lease = json.loads(s3.get(b, "run/.run.lock"))
        assert lease["run_id"] == held.run_id and lease["pid"] == os.getpid()
        _no_secrets(s3, json.dumps(lease), "the lease")
        assert s3.keys(b) == ["run/.run.lock"]  # the refused run wrote nothing
    assert s3.keys(b) == []  # released: the lease is gone


def test_a_dead_holders_lease_is_taken_over_and_its_workers_fenced(s3):
    b = s3.bucket()
    out = s3.uri(b, "run")
    lease = join(out, ".run.lock")
    # a holder on another host that stopped renewing its lease
    storage.put_bytes(lease, json.dumps({"run_id": "dead", "host": "elsewhere", "pid": 1, "started": 0,
                                         "command": "x"}).encode())
    with pytest.raises(RunLocked, match="renewed"):
        ObjectRunLock(out).acquire()  # fresh for the default 60 s
    time.sleep(2.5)
    lock = ObjectRunLock(out, stale_after_s=1.0, heartbeat_s=0.2).acquire()
    check_run(out, lock.run_id)
    with pytest.raises(RunSuperseded):
        check_run(out, "dead")  # the dead run's stragglers commit nothing
    # heartbeats renew the lease; one that finds it taken stops, and fences this run's workers
    etag = storage.stat_object(lease)[1]
    time.sleep(0.6)
    assert storage.stat_object(lease)[1] != etag
    storage.put_bytes(lease, json.dumps({"run_id": "usurper", "host": "elsewhere"}).encode())
    time.sleep(0.6)
    assert lock.lost
    with pytest.raises(RunSuperseded):
        check_run(out, lock.run_id)
    lock.release()
    assert json.loads(s3.get(b, "run/.run.lock"))["run_id"] == "usurper"  # not ours to delete
    # a holder on this host whose process has ended: free at once
    dead = subprocess.Popen(["true"])
    dead.wait()
    storage.put_bytes(lease, json.dumps({"run_id": "gone", "host": socket.gethostname(), "pid": dead.pid}).encode())
    with ObjectRunLock(out) as again:
        assert json.loads(s3.get(b, "run/.run.lock"))["run_id"] == again.run_id


def _check_visible_state(s3, b, prefix, tmp):
    """What a trainer could see after a kill: every tar under a final name is complete; every
    shard marked done has its tars and status table."""
    dl = s3.download(b, prefix, tmp)
    for t in ru.final_tars(dl):
        for key, members in ru.read_tar(t).items():  # raises on a truncated tar
            assert {"json", "txt", "flow.pfz", "anchors.npz"} <= set(members), (t, key)
    keys = set(s3.keys(b))
    for k in keys:
        if k.endswith(".stats.json"):
            st = json.loads(s3.get(b, k))
            assert all(f"{prefix}/{t}" in keys for t in st["tars"]) and k[:-len(".stats.json")] + ".parquet" in keys


@pytest.mark.slow
def test_sigkill_then_resume_on_s3_equals_an_uninterrupted_run(s3, sample_run, tmp_path):
    from pipeline.run.plan import run

    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({"profile": "dragnuwa-ld", "shards": {"samples_per_shard": 2}}))
    ref = str(tmp_path / "reference")
    run(Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": 2}), "sample", sample_run.data, ref,
        executor="local")
    b = s3.bucket()
    out = s3.uri(b, "killed")
    args = ["--dataset", "sample", "--data", sample_run.data, "--out", out, "--config", cfg_path, "--executor", "local"]
    points = [("a clip is staged", lambda: any("/_parts/" in k for k in s3.keys(b))),
              ("a shard is done", lambda: any(k.endswith(".stats.json") for k in s3.keys(b)))]
    for i, (what, cond) in enumerate(points):
        ru.kill_when(_cli(args, tmp_path), cond, what, poll_s=0.05)
        _check_visible_state(s3, b, "killed", tmp_path / f"after-kill-{i}")
    assert "killed/.run.lock" in s3.keys(b)  # a SIGKILLed driver leaves its lease
    # what interrupted writers leave: an upload never completed, a temporary object
    s3.client.create_multipart_upload(Bucket=b, Key=f"killed/{PREFIX}-000003.tar")
    s3.client.put_object(Bucket=b, Key=f"killed/.{PREFIX}-000003.tar.123-abcdef.tmp", Body=b"partial")
    final = _cli(args, tmp_path)
    stdout, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "8 clips -> ok 8, error 0, filtered 0" in stdout and "(0 already done)" not in stdout, stdout
    keys = s3.keys(b)
    assert not [k for k in keys if os.path.basename(k).startswith(".") or "/_parts/" in k], keys
    assert s3.uploads(b) == []
    dl = s3.download(b, "killed", tmp_path / "final")
    ru.check_accounting(dl)
    assert ru.sample_hashes(dl) == ru.sample_hashes(ref) and len(ru.sample_hashes(ref)) == 8
    assert ru.tar_bytes(dl) == ru.tar_bytes(ref)


def test_a_stage_cache_on_s3_is_resumed_from(s3, sample_run, tmp_path):
    """``--stage flow`` to s3:// keeps its output under OUT/_stages/flow/ there; the full run
    resumes from it (tar index and members read back from the store) and matches the
    local run's samples."""
    from pipeline.run.plan import run
    from pipeline.train import read_samples

    b = s3.bucket()
    out = s3.uri(b, "staged")
    cfg = Config(profile="dragnuwa-ld")
    r1 = run(cfg, "sample", sample_run.data, out, stage="flow", executor="local")
    assert r1.ok == 8 and f"staged/_stages/flow/{PREFIX}-000000.stats.json" in s3.keys(b)
    r2 = run(cfg, "sample", sample_run.data, out, executor="local")
    assert r2.ok == 8 and all(s["resumed_from"] == "flow" for s in r2.stats)
    mine = {s["key"]: s for s in read_samples(out)}
    ref = {s["key"]: s for s in read_samples(sample_run.out)}
    assert mine.keys() == ref.keys() and len(mine) == 8
    for k in mine:
        assert (mine[k]["flow"] == ref[k]["flow"]).all() and (mine[k]["frames"] == ref[k]["frames"]).all()


def test_without_conditional_writes_the_lease_is_best_effort(s3, monkeypatch):
    """gs:// or s3 without boto3: write, settle, read back; a live lease still refuses."""
    monkeypatch.setenv("TRAJSHARDS_NO_BOTO3", "1")
    b = s3.bucket()
    out = s3.uri(b, "run")
    with ObjectRunLock(out, settle_s=0.1) as held:
        assert held.conditional is False
        assert json.loads(s3.get(b, "run/.run.lock"))["run_id"] == held.run_id
        with pytest.raises(RunLocked, match="in use by another run"):
            ObjectRunLock(out, settle_s=0.1).acquire()
        check_run(out, held.run_id)
    assert "run/.run.lock" not in s3.keys(b)
