"""Profiles at the new clip lengths (issue 25) end to end: a user profile given through
``--config`` with Wan's frame count and rate (81 frames at 16 fps, a 5 s span) at a reduced
size, on the embedded sample: the clips shorter than the span stay ``too_short`` records and the
summary counts them; the shards validate and the trainers' loader reads the profile's shapes."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

from pipeline.testdata.sample_data import build_sample

import reliability_util as ru  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

WAN_SMALL = {"frames": 81, "width": 160, "height": 96, "fps": 16.0}


def test_a_user_profile_through_the_config_file_end_to_end(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    build_sample(data)
    cfg = tmp_path / "profiles.yaml"
    cfg.write_text("profiles:\n  wan-small: {frames: 81, width: 160, height: 96, fps: 16}\n")
    proc = ru.cli(["--dataset", "sample", "--data", data, "--out", out, "--config", cfg, "--profile", "wan-small",
                   "--executor", "local", "--samples-per-shard", 4])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    # carphone's last frame is at 3.97 s: shorter than 80 frames at 16 fps; the others hold 5 s
    assert "too short: 1 clip(s) shorter than the profile's span of 5.00 s (wan-small: 81 frames at 16 fps)" in text
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(r["clip_id"], r["reason"]) for r in errors] == [("sample_carphone_pristine", "too_short")]
    assert "the profile needs 5.00 s (81 frames at 16 fps)" in errors[0]["message"]
    index = json.loads((out / "index.json").read_text())
    assert index["samples"] == 7 and index["url"].startswith("sample-wan-small-")
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["profiles"] == {"wan-small": WAN_SMALL}
    assert recorded["fingerprint"]["settings"]["profile"] == {"name": "wan-small", **WAN_SMALL}

    from pipeline.tools.validate import validate
    from pipeline.train import make_dataset, read_samples

    report = validate(str(out))
    assert report.ok and report.samples == 7, report.format()
    s = next(iter(read_samples(str(out))))
    assert s["meta"]["profile"] == {"name": "wan-small", **WAN_SMALL}
    assert s["frames"].shape == (81, 96, 160, 3) and s["flow"].shape == (80, 2, 96, 160)
    assert s["anchor_tracks"].shape[1:] == (81, 2) and s["entity_mask"].shape == (96, 160)
    x = next(iter(make_dataset(str(out), conditions=("dragnuwa", "dragentity"), shuffle=0, gaussian_scale="width")))
    assert x["video"].shape == (81, 3, 96, 160) and x["trajectory_map"].shape == (81, 2, 96, 160)
    assert x["entity_gaussian"].shape == (81, 1, 96, 160) and x["trajectory_tracks"].shape == (8, 81, 2)
    assert os.path.exists(out / "errors.parquet")
