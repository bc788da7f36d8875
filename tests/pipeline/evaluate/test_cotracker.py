"""``evaluate --tracker cotracker``: the user's checkpoint loaded through the user's code path
(``CoTrackerPredictor(checkpoint=PATH)`` inside stages.entities.tracking.CoTrackerTracker) with a
random-weight CoTracker3 saved to a file; without the package, a setup error naming the install."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluate import evaluate
from pipeline.evaluate.videos import write_video

HAVE_COTRACKER = importlib.util.find_spec("cotracker") is not None


@pytest.mark.skipif(HAVE_COTRACKER, reason="cotracker is installed here")
def test_without_the_package_the_evaluation_does_not_start(eval_set, tmp_path):
    (tmp_path / "v").mkdir()
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", str(tmp_path / "v"), "--out",
                                   str(tmp_path / "r"), "--tracker", "cotracker", "--cotracker-checkpoint",
                                   str(tmp_path / "scaled_offline.pth")])
    assert res.exit_code == 2, res.output
    assert "pip install git+https://github.com/facebookresearch/co-tracker" in res.output
    assert "CC BY-NC" in res.output and not (tmp_path / "r" / "summary.json").exists()


def test_an_unknown_tracker_is_a_setup_error(eval_set, tmp_path):
    (tmp_path / "v").mkdir()
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", str(tmp_path / "v"), "--out",
                                   str(tmp_path / "r"), "--tracker", "raft"])
    assert res.exit_code == 2 and "unknown tracker 'raft'" in res.output


@pytest.mark.skipif(not HAVE_COTRACKER, reason="the cotracker package (source only) is not installed here")
def test_cotracker_with_random_weights_through_the_users_loading_code(eval_set, tmp_path):
    import torch
    from cotracker.predictor import CoTrackerPredictor

    torch.manual_seed(0)
    ckpt = tmp_path / "scaled_offline.pth"
    torch.save(CoTrackerPredictor(checkpoint=None).model.state_dict(), str(ckpt))   # as a user's weights file
    sample = eval_set.set.samples[0]
    videos = tmp_path / "v"
    videos.mkdir()
    write_video(str(videos / f"{sample.key}.mp4"), eval_set.real[sample.key], 4.0)
    s = evaluate(eval_set.path, str(videos), str(tmp_path / "r"), protocol="ino", tracker="cotracker",
                 cotracker_checkpoint=str(ckpt), device="cpu", floor=True, overlays=1)
    assert s["tracker"]["name"] == "cotracker" and s["tracker"]["version"].startswith("cotracker ")
    assert s["tracker"]["weights_digest"] == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert s["tracker"]["checkpoint"] == "scaled_offline.pth" and s["tracker"]["device"] == "cpu"
    assert s["evaluated"] == 1 and len(s["missing"]) == len(eval_set.set.samples) - 1
    assert np.isfinite(s["objmc"]) and s["floor"]["objmc"] == 0.0
    z = np.load(tmp_path / "r" / "tracks" / f"{sample.key}.npz")
    # CoTracker returns the query itself at its query frame: frame 0 of every track is the query
    np.testing.assert_allclose(z["tracked"][:, 0], z["queries"][:len(z["tracked"])], atol=1e-3)
    assert json.load(open(tmp_path / "r" / "summary.json"))["files"]["overlays"]
    assert os.path.exists(tmp_path / "r" / "samples.parquet")
