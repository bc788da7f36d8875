"""Configuration checked when it is read: types, ranges, choice sets, unknown keys; one
ConfigError that lists every problem with its dotted key, the bad value and the valid ones;
the CLI's exit codes and --retry-errors."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
from typer.testing import CliRunner

from pipeline.config import (
    RECORD_KEY, Config, ConfigError, EntityConfig, FlowConfig, Profile, apply_overrides, config_from_dict,
    is_runtime, load_config,
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_round_trip_and_keep_attribute_access():
    cfg = Config()
    assert (cfg.flow.backend, cfg.flow.preset, cfg.entities.masks, cfg.trajectories.interval) == ("dis", "medium", "auto", 16)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert config_from_dict(data) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.get_profile().frames == 16
    new = cfg.replace(**{"flow.preset": "fast", "seed": None, "entities.void_ids": [0, 255]})
    assert new.flow.preset == "fast" and new.seed == 0 and new.entities.void_ids == (0, 255)
    assert cfg.flow.preset == "medium"          # replace copies


def test_the_issue_cases_name_key_value_and_valid_values(tmp_path):
    with pytest.raises(ConfigError) as e:
        Config().replace(**{"flow.preset": "bogus"})           # --flow-preset bogus
    assert str(e.value) == "flow.preset: 'bogus' is not one of ultrafast, fast, balanced, medium"

    path = _write(tmp_path, "step.yaml", 'flow: {step: "abc"}\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"flow.step: got 'abc', should be a valid number (in {path})"

    path = _write(tmp_path, "interval.yaml", "trajectories: {interval: -4}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "trajectories.interval: got -4, should be greater than or equal to 1" in str(e.value)


def test_every_problem_listed_in_one_error(tmp_path):
    path = _write(tmp_path, "bad.json", json.dumps({
        "frames": 1,
        "flow": {"backend": "nope", "device": "gpu", "batch_size": 0, "bogus": 1},
        "entities": {"masks": "grabcut", "tracker": "raft", "sam_model": "vit_x", "void_ids": [0, "x"],
                     "backward_flow": "raft"},
        "filters": {"min_motion": -1.0},
        "isolation": {"start_method": "fork"},
        "extra": 2,
    }))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    p = e.value.problems
    assert len(p) == 13 and str(e.value).startswith(f"13 configuration problems (in {path}):")
    assert "frames: got 1, should be greater than or equal to 2" in p
    assert any(x.startswith("flow.backend: 'nope' is not one of dis, farneback, raft, unimatch") for x in p)  # + plugins
    assert "flow.device: 'gpu' is not a device: use auto, cpu, cuda, cuda:N or mps" in p
    assert "flow.batch_size: got 0, should be greater than or equal to 1" in p
    assert "flow.bogus: unknown key; known: backend, preset, step, checkpoint, source, batch_size, device" in p
    assert "entities.masks: 'grabcut' is not one of auto, gt, sam, motion, none" in p
    assert "entities.tracker: 'raft' is not one of flow, cotracker" in p
    assert any(x.startswith("entities.sam_model: 'vit_x' is not one of vit_h, vit_l, vit_b") for x in p)
    assert "entities.void_ids[1]: got 'x', should be a valid integer" in p
    assert "entities.backward_flow: 'raft' is not one of auto, same, ultrafast, fast, balanced, medium" in p
    assert "filters.min_motion: got -1.0, should be greater than or equal to 0" in p
    assert "isolation.start_method: 'fork' is not one of spawn, forkserver" in p
    assert any(x.startswith("extra: unknown key; known: plugins, profiles, profile, frames, seed, decode, flow")
               for x in p)


def test_dotted_overrides_unknown_keys_and_bad_values_together():
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), {"foo.bar": 1, "flow.nope": 2, "trajectories.interval": 0, "entities.masks": "sam"})
    assert e.value.problems[:2] == [
        "foo.bar: unknown section 'foo'; known: profiles, decode, flow, trajectories, entities, filters, captions, shards, "
        "ray, isolation",
        "flow.nope: unknown key; known: backend, preset, step, checkpoint, source, batch_size, device"]
    assert e.value.problems[2:] == ["trajectories.interval: got 0, should be greater than or equal to 1"]


def test_strict_scalars_and_section_shape(tmp_path):
    for text, problem in [
        ("seed: true\n", "seed: got True, should be a valid integer"),
        ("entities: {enabled: 1}\n", "entities.enabled: got 1, should be a valid boolean"),
        ("flow: {step: '0.5'}\n", "flow.step: got '0.5', should be a valid number"),
        ("flow: 3\n", "flow: must be a mapping of settings, got 3"),
        ("- a\n- b\n", "the configuration must be a mapping of sections, got list"),
        ("flow: {preset: [\n", "cannot parse the YAML"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(_write(tmp_path, "c.yaml", text))
        assert str(e.value).startswith(problem), (text, str(e.value))
    cfg = load_config(_write(tmp_path, "ok.yaml", "flow: {step: 1, preset: FAST}\nshards: {samples_per_shard: 4}\n"))
    assert cfg.flow.step == 1.0 and isinstance(cfg.flow.step, float) and cfg.flow.preset == "fast"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps", "CUDA:0"])
def test_devices_accepted(device):
    assert Config().replace(**{"flow.device": device, "entities.device": device}).flow.device == device.lower()


def test_sections_built_in_code_and_assignments_are_checked_too():
    with pytest.raises(ConfigError, match=r"^entities\.masks: 'grabcut' is not one of"):
        EntityConfig(masks="grabcut")
    with pytest.raises(ConfigError, match=r"^flow\.preset: 'x' is not one of"):
        dataclasses.replace(FlowConfig(), preset="x")
    cfg = Config()
    with pytest.raises(ConfigError, match=r"^trajectories\.interval: got -4"):
        cfg.trajectories.interval = -4
    assert cfg.trajectories.interval == 16


def test_plugin_flow_backends_are_valid_names(tmp_path):
    plugin = _write(tmp_path, "myflow_plugin.py",
                    "from stages.flow import DISFlow, register_flow_backend\n"
                    "register_flow_backend('myflow', lambda preset='fast', **kw: DISFlow(preset))\n")
    with pytest.raises(ConfigError, match="'myflow' is not one of"):
        Config().replace(**{"flow.backend": "myflow"})       # before the plugin is imported
    cfg = Config().replace(**{"plugins": [plugin], "flow.backend": "myflow"})
    assert cfg.flow.backend == "myflow" and cfg.plugins == (plugin,)
    with pytest.raises(ConfigError, match=r"^plugins: cannot import plugin 'no_such_plugin_mod': ModuleNotFoundError"):
        config_from_dict({"plugins": ["no_such_plugin_mod"]})


def test_record_key_of_out_config_json_is_ignored_when_loading(tmp_path):
    data = {**Config().replace(**{"flow.preset": "fast"}).to_dict(), RECORD_KEY: {"value": "x", "settings": {}}}
    path = _write(tmp_path, "config.json", json.dumps(data))
    assert load_config(path).flow.preset == "fast"


def test_runtime_markers():
    from pipeline.config import DecodeConfig, RayConfig, ShardConfig

    assert is_runtime(RayConfig) and not is_runtime(FlowConfig)
    assert is_runtime(FlowConfig, "device") and is_runtime(FlowConfig, "batch_size")
    assert not is_runtime(FlowConfig, "preset")
    assert is_runtime(DecodeConfig, "timeout_s") and is_runtime(ShardConfig, "max_shard_bytes")
    assert not is_runtime(ShardConfig, "samples_per_shard")


# ---- the CLI ------------------------------------------------------------------------------------

def _cli(args, monkeypatch=None, result=None):
    from pipeline.cli import app

    calls = []
    if monkeypatch is not None:
        import pipeline.run as run_package

        def fake_run(cfg, dataset, data, out, **kw):
            calls.append((cfg, kw))
            return result

        monkeypatch.setattr(run_package, "run", fake_run)
    return CliRunner().invoke(app, ["run", *args]), calls


@pytest.mark.parametrize("args,message", [
    (["--flow-preset", "bogus"], "error: flow.preset: 'bogus' is not one of ultrafast, fast, balanced, medium"),
    (["--masks", "grabcut"], "error: entities.masks: 'grabcut' is not one of auto, gt, sam, motion, none"),
    (["--tracker", "raft"], "error: entities.tracker: 'raft' is not one of flow, cotracker"),
    (["--samples-per-shard", "0"], "error: shards.samples_per_shard: got 0, should be greater than or equal to 1"),
    (["--retry-errors", "internal,,bad reason"], "error: --retry-errors takes 'all' or error reasons"),
])
def test_cli_configuration_errors_exit_2_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "out"
    res, _ = _cli([*args, "--out", str(out), "--executor", "local"])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_cli_config_file_error_names_the_file(tmp_path):
    path = _write(tmp_path, "c.yaml", 'flow: {step: "abc"}\n')
    res, _ = _cli(["--config", path, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and f"error: flow.step: got 'abc', should be a valid number (in {path})" in res.output


def test_cli_dataset_option_named_like_a_run_setting_exits_2(tmp_path):
    """``-o force=1`` is an adapter option, not --force: refused by the adapter with its options."""
    from pipeline.testdata.sample_data import build_sample

    data = build_sample(str(tmp_path / "data"))
    out = tmp_path / "out"
    res, _ = _cli(["--dataset", "sample", "--data", data, "--out", str(out), "--executor", "local", "-o", "force=1"])
    assert res.exit_code == 2, res.output
    assert "dataset 'sample' has no option force (-o KEY=VALUE); its options: csv" in res.output
    assert not any(p.name.endswith((".tar", ".stats.json")) for p in out.iterdir())


def test_cli_unexpected_failure_exits_1_with_the_traceback_in_a_log(tmp_path, monkeypatch):
    """A bug in the driver is not a setup error: exit 1, one line, the traceback in a log file."""
    import re

    import pipeline.run as run_package

    def broken(*args, **kw):
        raise KeyError("a bug")

    monkeypatch.setattr(run_package, "run", broken)
    res = CliRunner().invoke(__import__("pipeline.cli", fromlist=["app"]).app, ["run", "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "the run failed unexpectedly: KeyError: 'a bug'" in line[0]
    log = re.search(r"traceback in (\S+)\)", line[0]).group(1)
    assert "KeyError: 'a bug'" in open(log).read() and "Traceback" in open(log).read()


def test_cli_retry_errors_and_exit_1_without_samples(tmp_path, monkeypatch):
    from pipeline.run import RunResult

    empty = RunResult(str(tmp_path), "sample-dragnuwa-ld", "shards", clips=8, error=8, shards=1, seconds=1.0)
    empty.reasons = {"internal": 8}
    res, calls = _cli(["--out", str(tmp_path), "--retry-errors", "internal, timeout"], monkeypatch, empty)
    assert res.exit_code == 1, res.output
    assert "errors by reason: internal 8" in res.output            # the summary is printed
    assert "error: the run had 8 clip(s) and produced no sample" in res.output
    assert calls[0][1]["retry_errors"] == ("internal", "timeout")

    good = RunResult(str(tmp_path), "sample-dragnuwa-ld", "shards", clips=8, ok=8, shards=1, seconds=1.0)
    res, calls = _cli(["--out", str(tmp_path), "--retry-errors", "all"], monkeypatch, good)
    assert res.exit_code == 0 and calls[0][1]["retry_errors"] is True
    res, calls = _cli(["--out", str(tmp_path)], monkeypatch, good)
    assert res.exit_code == 0 and "retry_errors" not in calls[0][1]   # only passed when given


def test_pyproject_declares_pydantic():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "pyproject.toml")) as f:
        assert '"pydantic>=2.7,<3"' in f.read()


def test_plugin_mask_sources_and_trackers_are_valid_names(tmp_path):
    """entities.masks and entities.tracker are checked against the registries when the
    config is read (a plugin's names count); an unknown name is refused with the valid values."""
    from pipeline.clip.loop import ClipSteps
    from stages.entities.masks import MASK_SOURCES
    from stages.entities.tracking import TRACKERS

    with pytest.raises(ConfigError, match=r"entities.masks: 'grabcut' is not one of auto, gt, sam, motion, none"):
        Config().replace(**{"entities.masks": "grabcut"})
    with pytest.raises(ConfigError, match=r"entities.tracker: 'raft' is not one of flow, cotracker"):
        Config().replace(**{"entities.tracker": "raft"})
    plugin = _write(tmp_path, "my_entities_plugin.py",
                    "from stages.entities.masks import MASK_SOURCES\n"
                    "from stages.entities.masks_motion import MotionMaskSource\n"
                    "from stages.entities.tracking import TRACKERS, FlowTracker\n"
                    "MASK_SOURCES.register('mymasks', MotionMaskSource)\n"
                    "TRACKERS.register('mytracker', lambda **kw: FlowTracker())\n")
    try:
        cfg = config_from_dict({"plugins": [plugin], "entities": {"masks": "mymasks", "tracker": "MyTracker"}})
        assert cfg.entities.masks == "mymasks" and cfg.entities.tracker == "mytracker"
        steps = ClipSteps(cfg)
        assert set(steps["entity_masks"].setup()) == {"masks.mymasks", "backward_flow"}
        assert steps["entity_masks"].source("mymasks").name == "motion" and steps["entity_tracks"].tracker.name == "flow"
        with pytest.raises(ConfigError, match=r"'grabcut' is not one of auto, gt, sam, motion, mymasks, none"):
            Config().replace(**{"entities.masks": "grabcut"})
    finally:
        MASK_SOURCES.pop("mymasks", None)
        TRACKERS.pop("mytracker", None)


# ---- profiles (issue 25) -------------------------------------------------------------------

def test_builtin_profiles_for_cogvideox_and_wan():
    cog, wan = Config(profile="cogvideox").get_profile(), Config(profile="WAN").get_profile()
    assert (cog.frames, cog.width, cog.height, cog.fps, cog.span_seconds) == (49, 720, 480, 8.0, 6.0)
    assert (wan.name, wan.frames, wan.width, wan.height, wan.fps, wan.span_seconds) == ("wan", 81, 832, 480, 16.0, 5.0)
    assert wan.as_meta() == {"name": "wan", "frames": 81, "width": 832, "height": 480, "fps": 16.0}


def test_user_profile_through_the_config_file(tmp_path):
    path = _write(tmp_path, "p.yaml", "profile: tiny\nprofiles:\n  tiny: {frames: 9, width: 160, height: 96, fps: 8}\n"
                                      "  wide-2: {frames: 17, width: 256, height: 128, fps: 12.5}\n")
    cfg = load_config(path)
    assert cfg.get_profile() == Profile("tiny", 9, 160, 96, 8.0)
    assert cfg.replace(profile="wide-2").get_profile() == Profile("wide-2", 17, 256, 128, 12.5)   # as --profile does
    assert cfg.replace(frames=5).get_profile().frames == 5
    assert cfg.replace(**{"profiles.tiny.fps": 4.0}).get_profile().fps == 4.0                  # a dotted override
    assert config_from_dict(cfg.to_dict()).get_profile() == cfg.get_profile()                 # as OUT/config.json reloads
    with pytest.raises(ConfigError) as e:
        cfg.replace(profile="nope")
    assert e.value.problems == ["profile: 'nope' is not one of dragnuwa-ld, dragnuwa-hd, svd, cogvideox, wan, tiny, "
                                "wide-2 (built-in profiles, and those of the profiles: section)"]
    with pytest.raises(ConfigError, match="profile: 'tiny' is not one of"):
        Config(profile="tiny")                                     # a user profile needs its definition


def test_user_profile_problems_are_listed_at_once(tmp_path):
    path = _write(tmp_path, "bad.yaml", "profiles:\n  wan: {frames: 9, width: 160, height: 96, fps: 8}\n"
                                        "  My.Profile: {frames: 9, width: 160, height: 96, fps: 8}\n"
                                        "  small: {frames: 1, width: 100, height: 24, fps: 0}\n"
                                        "  half: {frames: 9, width: 160}\n  flat: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    p = e.value.problems
    assert p == [
        "profiles.wan: 'wan' is a built-in profile (81 frames, 832x480, 16 fps); a user profile needs a name of its own",
        "profiles.My.Profile: 'My.Profile' is not a profile name: lower-case letters, digits, '-' and '_' "
        "(it names the shard files)",
        "profiles.small.frames: got 1, should be greater than or equal to 2",
        "profiles.small.width: got 100, should be a multiple of 8 of at least 32 px (the VAEs of the video models "
        "downsample by 8)",
        "profiles.small.height: got 24, should be a multiple of 8 of at least 32 px (the VAEs of the video models "
        "downsample by 8)",
        "profiles.small.fps: got 0, should be greater than 0",
        "profiles.half.height: missing",
        "profiles.half.fps: missing",
        "profiles.flat: must be a mapping of settings, got 3",
    ]
