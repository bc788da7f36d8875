"""Determinism (issue 5): which clip goes to which shard, and every byte of every shard,
depend only on the manifest, the config and the seed: not on the executor, the worker count,
clip isolation, scheduling or reruns. Shards are compared byte for byte."""
import json
import os

import pytest

from pipeline.config import Config

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

SAMPLES_PER_SHARD = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ru.small_dataset(tmp_path_factory.mktemp("det_data"), n=6, distinct=3)


def _cfg(**over):
    return Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": SAMPLES_PER_SHARD, **over})


def _fingerprint(out):
    """Everything of a finished run that must not vary: tar bytes, index shards, and the
    status rows less their compute time."""
    index = json.load(open(os.path.join(out, "index.json")))
    status = sorted((r["clip_id"], r["row"], r["shard"], r["status"], r["reason"], r["tar"], r["bytes"])
                    for r in ru.status_rows(out))
    return ru.tar_bytes(out), index["shards"], status


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    from pipeline.run.plan import run

    out = str(tmp_path_factory.mktemp("det_local"))
    run(_cfg(), "webvid", data, out, executor="local")
    return out


def test_local_runs_are_byte_identical_with_and_without_isolation_and_on_force(data, reference, tmp_path):
    from pipeline.run.plan import run

    fp = _fingerprint(reference)
    assert len(fp[0]) == 3 and sum(s["samples"] for s in fp[1]) == 6
    # shard membership is row // samples_per_shard of the manifest order
    for clip_id, row, shard, *_ in fp[2]:
        assert shard == row // SAMPLES_PER_SHARD
    out = str(tmp_path / "plain")
    run(_cfg(**{"isolation.enabled": False}), "webvid", data, out, executor="local")
    assert _fingerprint(out) == fp
    before = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in os.listdir(out) if p.endswith(".tar")}
    res = run(_cfg(), "webvid", data, out, executor="local", force=True)
    assert res.skipped_shards == 0 and _fingerprint(out) == fp
    assert all(os.stat(os.path.join(out, p)).st_mtime_ns != t for p, t in before.items())  # really rewritten


def test_sample_meta_has_no_run_dependent_fields(reference):
    from schemas.sample import decode_sample

    for t in ru.final_tars(reference):
        for key, members in ru.read_tar(t).items():
            meta = decode_sample(members, key)["meta"]
            assert not {"timings", "pid", "hostname", "seconds", "time"} & set(meta), sorted(meta)
    stats = json.load(open(os.path.join(reference, "webvid-dragnuwa-ld-000000.stats.json")))
    assert set(stats["stage_seconds"]) >= {"decode", "flow", "trajectories"}  # timings live in the stats


@pytest.mark.slow
def test_one_and_two_ray_workers_give_identical_shards(data, reference, tmp_path):
    import ray

    from pipeline.run.plan import run

    try:
        outs = []
        for workers in (1, 2):
            out = str(tmp_path / f"ray{workers}")
            res = run(_cfg(**{"ray.num_workers": workers}), "webvid", data, out, executor="ray")
            assert res.ok == 6
            outs.append(out)
    finally:
        ray.shutdown()
    fp = _fingerprint(reference)
    assert _fingerprint(outs[0]) == fp
    assert _fingerprint(outs[1]) == fp
