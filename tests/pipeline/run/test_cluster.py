"""A two-node Ray cluster on this machine (issue 5): `ray start --head` plus a second node
with `ray start --address`, one CPU each; `python -m pipeline run --address ...` with two
workers (one per node: each needs the node's only CPU) gives the same shards (per-sample
content hashes and tar bytes) as the local executor. The driver ships the repo to the
cluster as the job's runtime_env working_dir; the test checks the workers got it.

The same cluster writes to object storage (issue 15): with ``--out s3://...`` (moto's S3
server on loopback, tests/pipeline/s3_util) the nodes share no output folder, and the shards
equal the local run's too. Every node gets the (dummy) S3 credentials from its environment,
as a KubeRay pod would.

Teardown stops exactly the processes of this cluster (found by its own temp dir, by pid),
never other Ray instances on the machine. RAY_AUTH_MODE is set explicitly for every
command: Ray 2.60 turns token authentication on for a head when ~/.ray/auth_token exists,
and every node and driver must then agree on it.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile

import psutil
import pytest

from pipeline.config import Config

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)
import s3_util  # noqa: E402

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(ru.PY), "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str) -> None:
    """Terminate (then kill) every process whose command line names this cluster's temp dir,
    with their children."""
    procs = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in a for a in (p.info["cmdline"] or [])):
                procs.add(p)
                procs.update(p.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs), timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, **s3_util.CREDENTIALS, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        head = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp_dir}",
                               "--include-dashboard=false", "--disable-usage-stats"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-3000:]
        node = subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert node.returncode == 0, node.stdout[-2000:] + node.stderr[-3000:]
        yield address, temp_dir, env
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _raylets(temp_dir):
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "raylet" and any(temp_dir in a for a in (p.info["cmdline"] or []))]


def test_two_node_cluster_run_equals_the_local_run(cluster, tmp_path):
    from pipeline.run.plan import run

    address, temp_dir, env = cluster
    assert len(_raylets(temp_dir)) == 2  # two nodes
    data = ru.small_dataset(tmp_path / "data", n=4, distinct=2)
    cfg = Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": 1})
    local = tmp_path / "local"
    run(cfg, "webvid", data, str(local), executor="local")

    out = tmp_path / "cluster"
    proc = subprocess.run([ru.PY, "-m", "pipeline", "run", "--dataset", "webvid", "--data", str(data), "--out", str(out),
                           "--profile", "dragnuwa-ld", "--samples-per-shard", "1", "--workers", "2",
                           "--address", address],
                          cwd=ru.REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "4 clips -> ok 4, error 0, filtered 0" in proc.stdout
    ru.check_accounting(out)
    assert ru.sample_hashes(out) == ru.sample_hashes(local)
    assert ru.tar_bytes(out) == ru.tar_bytes(local)
    # the repo went to the cluster as the job's working_dir (packages pipeline/, stages/, schemas/)
    pkgs = {os.path.realpath(p) for p in glob.glob(os.path.join(temp_dir, "session_*", "runtime_resources",
                                                                 "working_dir_files", "_ray_pkg_*")) if os.path.isdir(p)}
    assert pkgs, "no working_dir package was unpacked on the cluster"
    for pkg in pkgs:
        for mod in ("pipeline/run/plan.py", "pipeline/clip/isolation.py", "stages/decode.py", "schemas/sample.py"):
            assert os.path.exists(os.path.join(pkg, mod)), (pkg, mod)
        assert not os.path.exists(os.path.join(pkg, ".venv"))


def test_two_node_cluster_writes_to_s3_with_no_shared_output_folder(cluster, s3, tmp_path):
    from pipeline.run.plan import run

    address, temp_dir, env = cluster
    data = ru.small_dataset(tmp_path / "data", n=4, distinct=2)
    cfg = Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": 1})
    local = tmp_path / "local"
    run(cfg, "webvid", data, str(local), executor="local")

    b = s3.bucket()
    out = s3.uri(b, "cluster")
    cwd = tmp_path / "cwd"  # the driver's folder: it must stay empty
    cwd.mkdir()
    proc = subprocess.run([ru.PY, "-m", "pipeline", "run", "--dataset", "webvid", "--data", str(data), "--out", out,
                           "--profile", "dragnuwa-ld", "--samples-per-shard", "1", "--workers", "2",
                           "--address", address],
                          cwd=str(cwd), env={**env, "PYTHONPATH": ru.REPO}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "4 clips -> ok 4, error 0, filtered 0" in proc.stdout
    keys = s3.keys(b)
    assert len([k for k in keys if k.endswith(".tar")]) == 4
    assert not [k for k in keys if "/_parts/" in k or os.path.basename(k).startswith(".")], keys
    assert s3.uploads(b) == [] and os.listdir(cwd) == []
    dl = s3.download(b, "cluster", tmp_path / "dl")
    ru.check_accounting(dl)
    assert ru.sample_hashes(dl) == ru.sample_hashes(local)
    assert ru.tar_bytes(dl) == ru.tar_bytes(local)
