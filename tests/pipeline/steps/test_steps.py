"""Clip steps as first-class objects (pipeline/steps/): the step list and its stages, placement
by the device kind a backend declares (never by its name), and a step or backend added by a
plugin module: one module, one registration line, run by the local and the Ray executor."""
from __future__ import annotations

import json
import textwrap

import pytest

from pipeline.config import Config, config_from_dict
from pipeline.run.groups import plan_groups
from pipeline.steps import STEPS, clip_stages, operator_names, run_stages, stage_of, steps_for
from pipeline.steps.entity_masks import EntityMasksStep
from pipeline.steps.entity_tracks import EntityTracksStep

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

BRIGHTNESS_PLUGIN = '''
"""A plugin step: the mean brightness of every frame into meta["brightness"]."""
import numpy as np

from pipeline.steps import Step, register_step


class BrightnessStep(Step):
    name = "brightness"
    stage = "brightness"

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        self.decimals = 3

    def run(self, samples, rows):
        for s in samples:
            s.meta["brightness"] = [round(float(f.mean()), self.decimals) for f in s.frames]
        return samples


register_step("brightness", BrightnessStep, after="motion")
'''

TORCH_FLOW_PLUGIN = '''
"""A plugin flow backend that declares it runs on torch (DIS underneath, so it runs anywhere)."""
from stages.flow.base import register_flow_backend
from stages.flow.cpu import DISFlow


class TorchishFlow(DISFlow):
    name = "torchish"
    device_kind = "torch"      # what the planner reads: no name list anywhere

    def __init__(self, preset="fast", **options):
        super().__init__("fast")


register_flow_backend("torchish", TorchishFlow)
register_flow_backend("torchish_lambda", lambda preset="fast", **kw: TorchishFlow(), device_kind="torch")
'''


def test_the_step_list_names_every_stage_once():
    assert list(STEPS) == ["decode", "captions", "flow", "motion", "anchors", "entity_masks", "entity_tracks"]
    assert clip_stages() == ("decode", "captions", "flow", "motion", "trajectories", "entities")
    assert run_stages()[-1] == "shards"
    assert stage_of(EntityMasksStep) == stage_of(EntityTracksStep) == "entities"
    assert [s.name for s in steps_for(Config(), "flow")] == ["decode", "captions", "flow"]
    off = Config().replace(**{"entities.masks": "none"})
    assert [s.name for s in steps_for(off)][-2:] == ["anchors", "entity_tracks"]   # no masks step
    assert operator_names() == ("cpu", "decode", "captions", "flow", "anchors", "masks", "tracks")
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        steps_for(Config(), "nope")


def test_placement_follows_the_declared_device_kind(tmp_path):
    """A plugin flow backend that declares torch gets the flow operator with its anchors (the
    backward flow is the model's); the same backend declared cpu stays in the fused group."""
    plugin = tmp_path / "torchish_plugin.py"
    plugin.write_text(TORCH_FLOW_PLUGIN)
    cfg = config_from_dict({"plugins": [str(plugin)], "flow": {"backend": "torchish"}, "entities": {"masks": "none"}})
    groups = plan_groups(cfg, "shards", cluster_cpus=8, cluster_gpus=2)
    assert [(g.name, g.steps, g.gpu) for g in groups] == [
        ("cpu", ("decode", "captions"), False), ("flow", ("flow", "motion", "anchors"), True),
        ("cpu2", ("entity_tracks",), False)]
    assert [g.name for g in plan_groups(cfg, "shards", 8, 0)] == ["cpu"]     # no GPU: one fused group
    from stages.flow.base import FLOW_BACKENDS

    assert FLOW_BACKENDS.device_kind("torchish") == FLOW_BACKENDS.device_kind("torchish_lambda") == "torch"
    same = plan_groups(cfg.replace(**{"flow.backend": "torchish_lambda"}), "shards", 8, 2)
    assert [(g.name, g.steps) for g in same] == [(g.name, g.steps) for g in groups]
    assert FLOW_BACKENDS.device_kind("raft") == "torch" and FLOW_BACKENDS.device_kind("dis") == "cpu"


def _plugin_config(tmp_path, plugin_text, name, **extra) -> tuple[str, dict]:
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(textwrap.dedent(plugin_text))
    cfg = {"plugins": [str(plugin)], "profile": "dragnuwa-ld", "shards": {"samples_per_shard": 3},
           "entities": {"masks": "none"}, **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return str(path), cfg


@pytest.mark.slow
def test_a_plugin_step_runs_in_the_local_and_the_ray_executor(tmp_path):
    from pipeline.run import run

    data = ru.small_dataset(tmp_path / "data", n=6, distinct=3, frames=24)
    _, raw = _plugin_config(tmp_path, BRIGHTNESS_PLUGIN, "brightness_plugin")
    try:
        cfg = config_from_dict(raw)
        assert clip_stages().index("brightness") == clip_stages().index("motion") + 1
        local = run(cfg, "webvid", data, str(tmp_path / "local"), executor="local")
        # the Ray workers import the plugin themselves (config ``plugins``)
        proc = ru.cli(["--dataset", "webvid", "--data", data, "--out", tmp_path / "ray", "--config",
                       tmp_path / "brightness_plugin.json", "--workers", "2"], timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    finally:
        STEPS.pop("brightness", None)
    assert local.ok == 6 and all("brightness" in st["stage_seconds"] for st in local.stats)
    assert all(st["stages"][4] == "brightness" for st in local.stats)
    for out in (tmp_path / "local", tmp_path / "ray"):
        for members in (m for tar in ru.final_tars(out) for m in ru.read_tar(tar).values()):
            meta = json.loads(members["json"])
            assert len(meta["brightness"]) == 8 and "brightness" in meta["stages_done"]
    assert ru.sample_hashes(tmp_path / "ray") == ru.sample_hashes(tmp_path / "local")


@pytest.mark.slow
def test_a_torch_plugin_flow_backend_gets_its_own_gpu_operator(tmp_path):
    """On a local Ray with logical GPUs the torch-declared plugin backend runs in a flow
    operator of its own, with the same samples as the fused path."""
    import ray

    from pipeline.run import run

    data = ru.small_dataset(tmp_path / "data", n=6, distinct=3, frames=24)
    _, raw = _plugin_config(tmp_path, TORCH_FLOW_PLUGIN, "torchish_plugin2", flow={"backend": "torchish"})
    cfg = config_from_dict(raw)
    fused = run(cfg.replace(**{"ray.gpu_operators": False}), "webvid", data, str(tmp_path / "fused"), executor="local")
    ray.shutdown()  # an earlier test's local Ray has no logical GPUs
    ray.init(num_cpus=3, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ru.REPO}})
    try:
        res = run(cfg, "webvid", data, str(tmp_path / "gpu"), executor="ray")
    finally:
        ray.shutdown()
    assert res.ok == fused.ok == 6, res.reasons
    assert [(g["name"], g["steps"]) for g in res.groups] == [
        ("cpu", ["decode", "captions"]), ("flow", ["flow", "motion", "anchors"]), ("cpu2", ["entity_tracks"])]
    assert [g["num_gpus"] for g in res.groups] == [0.0, 1.0, 0.0]
    assert ru.sample_hashes(str(tmp_path / "gpu")) == ru.sample_hashes(str(tmp_path / "fused"))


def test_anchor_trackers_are_placed_by_their_device_kind():
    """CoTracker anchors (torch) get an operator of their own, batched across clips; the CPU
    trackers stay with the CPU work, or beside a flow model that makes their backward flow."""
    cot = Config().replace(**{"trajectories.tracker": "cotracker", "entities.masks": "none"})
    assert [(g.name, g.steps, g.gpu) for g in plan_groups(cot, "shards", 8, 1)] == [
        ("cpu", ("decode", "captions", "flow", "motion"), False), ("anchors", ("anchors",), True),
        ("cpu2", ("entity_tracks",), False)]
    assert plan_groups(cot.replace(**{"trajectories.batch_size": 4}), "shards", 8, 1)[1].batch_size == 4
    raft = Config().replace(**{"flow.backend": "raft", "entities.masks": "none"})
    assert [g.steps for g in plan_groups(raft, "shards", 8, 1)][:2] == [("decode", "captions"),
                                                                       ("flow", "motion", "anchors")]
    from pipeline.clip.loop import ClipSteps

    assert ClipSteps(cot)["anchors"].batched and not ClipSteps(Config())["anchors"].batched
