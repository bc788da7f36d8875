"""Kill and resume (issue 5): SIGKILL the driver (`python -m pipeline run`) at several points
of a run, rerun, and compare with an uninterrupted run: the same samples with the same
content (per-sample hashes and tar bytes), no duplicates, no missing clips, and at no moment a
partial tar under a final name. Also: a rerun skips done shards, --force redoes them, stale
temporary files of killed writers are cleaned, and no clip-isolation child outlives its
killed driver."""
import glob
import json
import os
import subprocess

import psutil
import pytest

from pipeline.config import Config

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

N_CLIPS, PER_SHARD = 8, 2
CFG = {"profile": "dragnuwa-ld", "shards": {"samples_per_shard": PER_SHARD}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pipeline.run.plan import run

    root = tmp_path_factory.mktemp("resume")
    data = ru.small_dataset(root / "data", n=N_CLIPS, distinct=4)
    # one clip that always fails: errors must survive kills and reruns too
    with open(root / "data" / "webvid.csv", "a") as f:
        f.write("gone,,PT3S,v,this file does not exist\n")
    cfg_path = root / "cfg.json"
    cfg_path.write_text(json.dumps(CFG))
    ref = root / "reference"
    run(Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": PER_SHARD}), "webvid", data, str(ref),
        executor="local")
    return root, data, cfg_path, ref


def _start(data, out, cfg_path, executor="local", extra=()):
    return subprocess.Popen([ru.PY, "-m", "pipeline", "run", "--dataset", "webvid", "--data", str(data), "--out", str(out),
                             "--config", str(cfg_path), "--executor", executor, *extra],
                            cwd=ru.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check_visible_state(out):
    """What a reader could see after a kill: every tar under a final name is complete, and
    every shard marked done (stats file) has its tars and status table."""
    for t in ru.final_tars(out):
        for key, members in ru.read_tar(t).items():  # raises on a truncated tar
            assert {"json", "txt", "flow.pfz", "anchors.npz"} <= set(members), (t, key)
    for st_path in glob.glob(os.path.join(out, "*.stats.json")):
        st = json.load(open(st_path))
        assert all(os.path.exists(os.path.join(out, t)) for t in st["tars"]), st_path
        assert os.path.exists(st_path[: -len(".stats.json")] + ".parquet")


def _stats(out):
    return glob.glob(os.path.join(out, "*.stats.json"))


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run(setup):
    root, data, cfg_path, ref = setup
    out = str(root / "killed")
    parts = os.path.join(out, "_parts", "shards", "*", "*.part")
    # (a shard's tar is written only at its commit, in a blink: the kill points are clip-level)
    points = [
        ("the manifest is written", lambda: os.path.exists(os.path.join(out, "manifest.parquet"))),
        ("a clip is staged", lambda: glob.glob(parts)),
        ("two shards are done", lambda: len(_stats(out)) >= 2),
    ]
    orphans = []
    for what, cond in points:
        orphans += ru.kill_when(_start(data, out, cfg_path), cond, what)
        _check_visible_state(out)
    # a stale temporary file like the ones a killed writer leaves
    open(os.path.join(out, ".webvid-dragnuwa-ld-000003.tar.12345-abcdef.tmp"), "wb").write(b"partial")
    # no clip-isolation child outlives its killed driver (they watch their parent)
    gone, alive = psutil.wait_procs(orphans, timeout=15)
    assert not alive, alive
    final = ru.cli(["--dataset", "webvid", "--data", data, "--out", out, "--config", cfg_path, "--executor", "local"])
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    assert f"{N_CLIPS + 1} clips -> ok {N_CLIPS}, error 1, filtered 0" in final.stdout
    assert "already done" in final.stdout and "(0 already done)" not in final.stdout
    assert not glob.glob(os.path.join(out, ".*.tmp"))
    ru.check_accounting(out)
    assert ru.sample_hashes(out) == ru.sample_hashes(ref) and len(ru.sample_hashes(ref)) == N_CLIPS
    assert ru.tar_bytes(out) == ru.tar_bytes(ref)


def test_rerun_skips_done_shards_and_force_redoes_them(setup, tmp_path):
    from pipeline.run.plan import run

    root, data, cfg_path, ref = setup
    cfg = Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": PER_SHARD})
    out = str(tmp_path / "o")
    first = run(cfg, "webvid", data, out, executor="local")
    again = run(cfg, "webvid", data, out, executor="local")
    assert again.skipped_shards == again.shards == first.shards == 5
    assert (again.ok, again.error) == (first.ok, first.error) == (N_CLIPS, 1)
    # a shard whose stats file is gone counts as not done: redone, and its stale tar replaced
    os.remove(os.path.join(out, "webvid-dragnuwa-ld-000001.stats.json"))
    stale = [os.path.join(out, n) for n in ("webvid-dragnuwa-ld-000001_1.tar",  # a renamed rollover part
                                            ".webvid-dragnuwa-ld-000001.tar.tmp",
                                            ".webvid-dragnuwa-ld-000001_1.tar.999-abc.tmp")]
    for p in stale:
        open(p, "wb").write(b"left by an interrupted attempt")
    part = run(cfg, "webvid", data, out, executor="local")
    assert part.skipped_shards == 4
    assert not any(os.path.exists(p) for p in stale)
    ru.check_accounting(out)
    forced = run(cfg, "webvid", data, out, executor="local", force=True)
    assert forced.skipped_shards == 0
    assert ru.tar_bytes(out) == ru.tar_bytes(ref)
    ru.check_accounting(out)


@pytest.mark.slow
def test_sigkill_a_ray_driver_then_rerun(setup):
    """Killing a Ray driver leaves its actors alive for a few seconds; the rerun (a new local
    Ray cluster) must neither trip over them nor let them commit over its shards."""
    root, data, cfg_path, ref = setup
    out = str(root / "killed_ray")
    ru.kill_when(_start(data, out, cfg_path, "ray", ["--workers", "2"]), lambda: len(_stats(out)) >= 1,
                 "a shard is done under Ray", timeout=600)
    _check_visible_state(out)
    final = ru.cli(["--dataset", "webvid", "--data", data, "--out", out, "--config", cfg_path, "--workers", "2"],
                   timeout=900)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    assert f"{N_CLIPS + 1} clips -> ok {N_CLIPS}, error 1, filtered 0" in final.stdout
    assert not glob.glob(os.path.join(out, ".*.tmp"))
    ru.check_accounting(out)
    assert ru.tar_bytes(out) == ru.tar_bytes(ref)
