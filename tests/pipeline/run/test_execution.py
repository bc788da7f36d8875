"""Execution with clips as the unit of work (pipeline/run/): stage groups, GPU operators with
cross-clip batches on a local Ray with logical GPUs, a one-shard dataset spread over every
worker, and a kill mid-shard whose resume redoes only the clips that were not staged."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.run.groups import plan_groups

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)


# ------------------------------------------------------------------ the plan's groups
def test_cpu_default_is_one_fused_operator():
    groups = plan_groups(Config(), "shards", cluster_cpus=8, cluster_gpus=0)
    assert len(groups) == 1 and groups[0].fused and not groups[0].gpu
    assert groups[0].steps[0] == "decode" and groups[0].steps[-1] == "entity_tracks"
    assert (groups[0].min_actors, groups[0].max_actors) == (8, 8)
    # GPU backends on a cluster without GPUs: still fused (nothing waits for a GPU that is not there)
    cfg = Config().replace(**{"flow.backend": "raft", "entities.masks": "sam"})
    assert len(plan_groups(cfg, "shards", 8, 0)) == 1


def test_gpu_stages_get_their_own_operators():
    cfg = Config().replace(**{"flow.backend": "raft", "entities.masks": "sam", "entities.sam_checkpoint": "x.pth",
                              "ray.groups": {"masks": {"batch_size": 16, "num_gpus": 0.25}}})
    groups = plan_groups(cfg, "shards", cluster_cpus=16, cluster_gpus=2)
    # the flow operator also makes the backward flow of the anchors' reliability (motion rides along)
    assert [(g.name, g.steps, g.gpu) for g in groups] == [
        ("cpu", ("decode", "captions"), False), ("flow", ("flow", "motion", "anchors"), True),
        ("masks", ("entity_masks",), True), ("cpu2", ("entity_tracks",), False)]
    flow, masks = groups[1], groups[2]
    assert flow.num_gpus == 0.5 and flow.max_actors == 4 and flow.batch_size == 4
    assert masks.num_gpus == 0.25 and masks.max_actors == 8 and masks.batch_size == 16
    # without reliability the anchors are CPU work (motion, light, still rides along the flow),
    # and the entity checks' backward flow from the flow model is a GPU step of its own
    plain = plan_groups(cfg.replace(**{"trajectories.reliability": False}), "shards", 16, 2)
    assert [(g.name, g.steps) for g in plain] == [
        ("cpu", ("decode", "captions")), ("flow", ("flow", "motion")), ("cpu2", ("anchors",)),
        ("masks", ("entity_masks",)), ("tracks", ("entity_tracks",)), ("cpu3", ())]
    assert groups[0].first and groups[-1].last and not any(g.fused for g in groups)
    # --stage flow: only the steps up to flow, then a CPU group that writes the parts
    assert [g.steps for g in plan_groups(cfg, "flow", 16, 2)] == [("decode", "captions"), ("flow",), ()]
    with pytest.raises(ValueError, match="ray.groups.*'gpus' is not one of num_cpus, num_gpus"):
        Config().replace(**{"flow.backend": "raft", "ray.groups": {"flow": {"gpus": 1}}})


# ------------------------------------------------------------------ GPU operators on logical GPUs
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from torchvision.models.optical_flow import raft_small

    from stages.entities.masks_sam import build_sam_model

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), d / "raft_small.pth")
    torch.save(build_sam_model("tiny_test").state_dict(), d / "sam_tiny.pth")
    return str(d / "raft_small.pth"), str(d / "sam_tiny.pth")


SAM_PARAMS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
              "stability_score_offset": 0.0, "box_nms_thresh": 1.0}


def _model_cfg(raft, sam, **extra):
    return Config(profile="dragnuwa-ld", frames=4).replace(**{
        "shards.samples_per_shard": 3, "flow.backend": "raft", "flow.checkpoint": raft, "flow.device": "cpu",
        "flow.batch_size": 1, "entities.masks": "sam", "entities.sam_model": "tiny_test",
        "entities.sam_checkpoint": sam, "entities.device": "cpu", "entities.sam": dict(SAM_PARAMS),
        "entities.min_radius": 1.0, **extra})


@pytest.mark.slow
def test_gpu_operators_batch_clips_and_match_the_fused_path(tmp_path, model_files):
    import ray

    from pipeline.run import run

    raft, sam = model_files
    data = ru.small_dataset(tmp_path / "data", n=6, distinct=3, frames=24)
    fused = run(_model_cfg(raft, sam, **{"ray.gpu_operators": False}), "webvid", data, str(tmp_path / "fused"),
                executor="local")
    assert fused.ok == 6 and [g["name"] for g in fused.groups] == ["cpu"]
    ray.init(num_cpus=3, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ru.REPO}})
    try:
        res = run(_model_cfg(raft, sam, **{"ray.groups": {"flow": {"batch_size": 3}, "masks": {"batch_size": 3}}}),
                  "webvid", data, str(tmp_path / "gpu"), executor="ray")
    finally:
        ray.shutdown()
    assert res.ok == 6, res.reasons
    assert [g["name"] for g in res.groups] == ["cpu", "flow", "masks", "cpu2"]
    assert [g["num_gpus"] for g in res.groups if g["name"] in ("flow", "masks")] == [0.5, 0.5]
    batches = {}
    for st in res.stats:
        for op, b in st["batches"].items():
            batches.setdefault(op, []).append(b["mean_batch"])
    # the model operators saw several clips per call (Ray Data bundles what is ready)
    assert max(batches["flow"]) > 1 and max(batches["masks"]) > 1, batches
    # flow.batch_size 1: each frame pair runs alone in both paths, so the output is bit-identical
    # (test_batched_flow_differs_from_per_clip_only_by_float_noise covers larger model batches)
    assert ru.sample_hashes(str(tmp_path / "gpu")) == ru.sample_hashes(str(tmp_path / "fused"))
    assert ru.tar_bytes(str(tmp_path / "gpu")) == ru.tar_bytes(str(tmp_path / "fused"))
    ru.check_accounting(str(tmp_path / "gpu"))


def test_batched_flow_differs_from_per_clip_only_by_float_noise(model_files):
    """Pairs of several clips in one RAFT batch (``forward_many``) against each clip alone:
    float reassociation across batch sizes moves a handful of values by one stored step."""
    from pipeline.testdata.synthetic import disc, render_scene
    from schemas.sample import dequantize_flow
    from stages.flow.base import make_flow_backend

    raft = make_flow_backend("raft", checkpoint=model_files[0], device="cpu", batch_size=2)
    clips = [render_scene(160, 96, 4, [disc((60 + 10 * i, 50), 20, velocity=(1.5, -0.5))], seed=i).frames
             for i in range(3)]
    step = 1 / 16
    alone = [dequantize_flow(raft.forward(c), step) for c in clips]
    together = [dequantize_flow(f, step) for f in raft.forward_many(clips)]
    for a, b in zip(alone, together):
        d = np.abs(a - b)
        assert d.max() <= step + 1e-6 and (d > 0).mean() < 1e-3


# ------------------------------------------------------------------ one shard, every worker
@pytest.mark.slow
def test_a_dataset_of_one_shard_uses_every_worker(tmp_path):
    from pipeline.run import run

    data = ru.small_dataset(tmp_path / "data", n=8, distinct=4)
    cfg = Config(profile="dragnuwa-ld").replace(**{"ray.num_workers": 2, "entities.masks": "none"})
    res = run(cfg, "webvid", data, str(tmp_path / "o"), executor="ray")
    assert res.shards == 1 and res.ok == 8
    assert res.stats[0]["workers"] == 2, res.stats[0]
    assert not os.path.exists(os.path.join(res.out_dir, "_parts", "shards", "000000"))  # parts removed at commit


# ------------------------------------------------------------------ kill mid-shard, resume per clip
@pytest.mark.slow
def test_kill_in_the_middle_of_a_shard_resumes_only_unstaged_clips(tmp_path):
    from pipeline.run import run

    n = 8
    data = ru.small_dataset(tmp_path / "data", n=n, distinct=4)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({"profile": "dragnuwa-ld", "entities": {"masks": "none"}}))
    ref = str(tmp_path / "ref")
    run(Config(profile="dragnuwa-ld").replace(**{"entities.masks": "none"}), "webvid", data, ref, executor="local")
    out = str(tmp_path / "killed")
    parts = os.path.join(out, "_parts", "shards", "000000")
    proc = subprocess.Popen([ru.PY, "-m", "pipeline", "run", "--dataset", "webvid", "--data", str(data), "--out", out,
                             "--config", str(cfg_path), "--executor", "local"],
                            cwd=ru.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(glob.glob(os.path.join(parts, "*.part"))) < 3:
        assert proc.poll() is None and time.time() < deadline, "run ended or stalled before 3 clips were staged"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged = sorted(os.path.basename(p) for p in glob.glob(os.path.join(parts, "*.part")))
    assert 3 <= len(staged) < n and not glob.glob(os.path.join(out, "*.stats.json"))
    res = run(Config(profile="dragnuwa-ld").replace(**{"entities.masks": "none"}), "webvid", data, out,
              executor="local")
    assert (res.staged_before, res.computed) == (len(staged), n - len(staged))
    assert res.ok == n
    assert ru.tar_bytes(out) == ru.tar_bytes(ref) and ru.sample_hashes(out) == ru.sample_hashes(ref)
    assert not os.path.exists(parts) and not glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True)
    ru.check_accounting(out)


def test_work_items_cover_pending_rows_in_short_runs():
    from pipeline.run.plan import clips_per_item, row_runs, work_items

    assert row_runs([7, 3, 4, 5, 9, 8]) == [(3, 6), (7, 10)]
    items = work_items({0: [(0, 10)], 1: row_runs([12, 13, 17])}, 4)
    assert items == [{"start": 0, "stop": 4}, {"start": 4, "stop": 8}, {"start": 8, "stop": 10},
                     {"start": 12, "stop": 14}, {"start": 17, "stop": 18}]
    assert clips_per_item(64, 2, 100) == 2 and clips_per_item(10_000_000, 1000, 100) == 100
    assert clips_per_item(3, 8, 100) == 1
