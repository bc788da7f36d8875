"""A broken setup stops the run before the first clip and marks nothing done; a resume that
knows what it resumes; the circuit breaker; --retry-errors (issue 13), through the real CLI
and the real pipeline on the embedded sample and small generated datasets."""
from __future__ import annotations

import glob
import json
import os
import time

import pytest

from pipeline.config import Config

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

# Fails every clip (reason internal) while FLAKY_FLAG names an existing file and the clip is
# the uniformly red one (or every clip, with FLAKY_ALL set): a backend that breaks at run
# time in a way no preflight can see.
FLAKY_PLUGIN = '''
import os

from stages.flow.base import register_flow_backend
from stages.flow.cpu import DISFlow


class FlakyFlow(DISFlow):
    name = "flaky"

    def forward(self, frames):
        flag = os.environ.get("FLAKY_FLAG", "")
        red = frames[..., 0].mean() > 200 and frames[..., 1].mean() < 40
        if flag and os.path.exists(flag) and (red or os.environ.get("FLAKY_ALL")):
            raise RuntimeError("the flaky backend failed")
        return super().forward(frames)


register_flow_backend("flaky", lambda preset="ultrafast", **kw: FlakyFlow(preset=preset))
'''


def _outputs(out):
    return glob.glob(os.path.join(out, "*.stats.json")) + glob.glob(os.path.join(out, "*.tar"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from pipeline.testdata.sample_data import build_sample

    d = tmp_path_factory.mktemp("sample")
    build_sample(str(d / "data"))
    return d


def _base(sample, out):
    return ["--dataset", "sample", "--data", sample / "data", "--out", out, "--executor", "local",
            "--profile", "dragnuwa-ld", "--samples-per-shard", "4"]


@pytest.mark.slow
def test_broken_setups_stop_before_any_clip_then_the_fixed_rerun_gives_every_sample(sample, tmp_path):
    out = tmp_path / "o"
    bad_step = tmp_path / "step.yaml"
    bad_step.write_text('flow: {step: "abc"}\n')
    bad_interval = tmp_path / "interval.yaml"
    bad_interval.write_text("trajectories: {interval: -4}\n")
    cases = [
        (["--flow-preset", "bogus"], "flow.preset: 'bogus' is not one of"),
        (["--flow", "raft"], "flow.checkpoint"),
        (["--masks", "sam", "--sam-checkpoint", "/no/such/file"], "/no/such/file"),
        (["--config", bad_step], "flow.step: got 'abc'"),
        (["--config", bad_interval], "trajectories.interval: got -4"),
    ]
    for extra, message in cases:
        t0 = time.time()
        res = ru.cli([*_base(sample, out), *extra])
        assert res.returncode != 0, (extra, res.stdout, res.stderr)
        assert message in res.stderr, (extra, res.stderr)
        assert time.time() - t0 < 60
        assert not _outputs(str(out)), extra
        assert "Traceback" not in res.stderr
    fixed = ru.cli(_base(sample, out))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "8 clips -> ok 8" in fixed.stdout
    # another content setting on the done folder: refused, naming the setting
    other = ru.cli([*_base(sample, out), "--flow-preset", "fast"])
    assert other.returncode == 2 and "flow.preset: 'medium' -> 'fast'" in other.stderr
    assert "--force" in other.stderr and "--out NEW_FOLDER" in other.stderr
    cfg = json.load(open(out / "config.json"))
    assert cfg["flow"]["preset"] == "medium" and cfg["fingerprint"]["value"]   # not overwritten
    # settings that do not change content (workers, executor) resume fine
    again = ru.cli([*_base(sample, out), "--workers", "1"])
    assert again.returncode == 0 and "2 already done" in again.stdout, again.stderr[-2000:]


@pytest.mark.slow
def test_without_decord_the_run_decodes_with_pyav(sample, tmp_path):
    """decord hidden in every process of the run (its import fails, as on aarch64 or macOS):
    asking for it by name stops the run before any clip with the install command (exit 2);
    the default (auto) runs every clip on pyav, says so in the setup line and the meta, and
    gives the same frames, flow and anchors as decord."""
    from schemas.sample import decode_sample

    env = ru.hide_modules_env(tmp_path / "site", "decord")
    cfg = tmp_path / "decord.yaml"
    cfg.write_text("decode: {backend: decord}\n")
    res = ru.cli([*_base(sample, tmp_path / "o1"), "--config", cfg], env=env)
    assert res.returncode == 2 and "cannot set up the decoder 'decord'" in res.stderr, res.stderr[-2000:]
    assert "pip install -e '.[decord]'" in res.stderr and not _outputs(str(tmp_path / "o1"))
    res = ru.cli(_base(sample, tmp_path / "o2"), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "decode pyav" in res.stdout and "(auto: decord does not import" in res.stdout
    assert "8 clips -> ok 8" in res.stdout
    samples = [decode_sample(m, k) for t in ru.final_tars(tmp_path / "o2") for k, m in ru.read_tar(t).items()]
    assert len(samples) == 8 and all(s["meta"]["decoder"]["backend"] == "pyav" for s in samples)
    from stages.decoders import installed_decoders

    if "decord" in installed_decoders():
        res = ru.cli(_base(sample, tmp_path / "o3"))
        assert res.returncode == 0 and "decode decord" in res.stdout, res.stderr[-3000:]
        a, b = ru.read_tar(ru.final_tars(tmp_path / "o2")[0]), ru.read_tar(ru.final_tars(tmp_path / "o3")[0])
        for key in a:
            assert {n: v for n, v in a[key].items() if n != "json"} == {n: v for n, v in b[key].items() if n != "json"}


def _flaky_dataset(root):
    root = str(root)
    rows = []
    for k in range(4):
        vid = f"clip{k}"
        ru.write_clip(os.path.join(root, "v", f"{vid}.mp4"), ru.scene_frames(200 + k, frames=30))
        rows.append((vid, "v", "PT00H00M03S", f"clip {k}"))
    ru.write_clip(os.path.join(root, "v", "red.mp4"), ru.uniform_frames((250, 10, 10), 320, 192))
    rows.insert(2, ("red", "v", "PT00H00M03S", "the red one"))
    ru.write_csv(os.path.join(root, "webvid.csv"), rows)
    plugin = os.path.join(root, "flaky_plugin.py")
    with open(plugin, "w") as f:
        f.write(FLAKY_PLUGIN)
    return root, plugin


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    """(data, config with the flaky backend, the flag file that makes it fail (present), OUT)."""
    data, plugin = _flaky_dataset(tmp_path / "data")
    flag = tmp_path / "fail-now"
    flag.write_text("x")
    monkeypatch.setenv("FLAKY_FLAG", str(flag))
    cfg = Config(plugins=(plugin,), profile="dragnuwa-ld").replace(**{
        "flow.backend": "flaky", "entities.masks": "none", "shards.samples_per_shard": 2})
    return data, cfg, flag, str(tmp_path / "o")


@pytest.mark.slow
def test_retry_errors_redoes_a_clip_that_failed_once(flaky):
    from pipeline.run import run

    data, cfg, flag, out = flaky
    first = run(cfg, "webvid", data, out, executor="local")
    assert (first.ok, first.error, first.reasons) == (4, 1, {"internal": 1})
    before = ru.sample_hashes(out)
    shard_of_red = [r for r in ru.status_rows(out) if r["clip_id"].endswith("red")][0]["shard"]
    flag.unlink()  # the backend works again
    again = run(cfg, "webvid", data, out, executor="local")
    assert again.ok == 4 and again.skipped_shards == again.shards  # a plain rerun keeps the error
    fixed = run(cfg, "webvid", data, out, executor="local", retry_errors=("internal",))
    assert (fixed.ok, fixed.error, fixed.retried, fixed.computed) == (5, 0, 1, 1)
    after = ru.sample_hashes(out)
    assert {k: v for k, v in after.items() if not k.endswith("red")} == before   # ok samples byte-identical
    rows = ru.status_rows(out)
    assert len(rows) == 5 and len({r["clip_id"] for r in rows}) == 5 and all(r["status"] == "ok" for r in rows)
    assert [r for r in rows if r["clip_id"].endswith("red")][0]["shard"] == shard_of_red
    assert fixed.skipped_shards == fixed.shards - 1
    ru.check_accounting(out)


@pytest.mark.slow
def test_the_circuit_breaker_stops_a_run_whose_backend_fails_every_clip(flaky, monkeypatch):
    from pipeline.run import run
    from pipeline.run.plan import RunStopped

    data, cfg, flag, out = flaky
    monkeypatch.setenv("FLAKY_ALL", "1")
    with pytest.raises(RunStopped, match="all failed with reason 'internal': RuntimeError: the flaky backend failed"):
        run(cfg, "webvid", data, out, executor="local")
    assert not _outputs(out) and not glob.glob(os.path.join(out, "_parts", "*", "*", "*.part"))
    flag.unlink()
    res = run(cfg, "webvid", data, out, executor="local")
    assert res.ok == 5 and res.computed == 5
