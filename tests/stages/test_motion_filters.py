"""Run-time motion filters end to end: real mp4 files -> pipeline run -> filtered table."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config, EntityConfig, FilterConfig
from pipeline.run.plan import run
from pipeline.testdata.synthetic import disc, render_scene, write_mp4

W, H, FPS, T = 320, 192, 24, 54   # 2.25 s at 24 fps; the dragnuwa-ld span is 1.75 s


def _write_dataset(root: str) -> dict[str, str]:
    """webvid-layout dataset of four clips with known motion; returns videoid -> expected."""
    clips = {
        # a static camera, nothing moves
        "static": render_scene(W, H, T, [disc((160, 96), 30)], seed=1).frames,
        # a camera pan at 0.5 px per video frame = 3 px per sampled pair
        "pan": render_scene(W, H, T, [], background_velocity=(0.5, 0.0), seed=2).frames,
        # an object moving over a static background
        "object": render_scene(W, H, T, [disc((60, 96), 45, velocity=(2.5, 0.0))], seed=3).frames,
        # a cut at 1 s: always inside the sampled span
        "cut": np.concatenate([render_scene(W, H, T, [], background_velocity=(0.3, 0), seed=4).frames[:FPS],
                               render_scene(W, H, T, [], background_velocity=(-0.3, 0), seed=40).frames[FPS:]]),
    }
    os.makedirs(os.path.join(root, "v"), exist_ok=True)
    for vid, frames in clips.items():
        write_mp4(os.path.join(root, "v", vid + ".mp4"), frames, FPS)
    with open(os.path.join(root, "webvid.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "name", "page_dir"])
        for vid in clips:
            w.writerow([vid, f"synthetic {vid}", "v"])
    return {"static": "low_motion", "pan": "camera_motion", "object": "ok", "cut": "scene_cut"}


@pytest.mark.slow
def test_filters_reject_to_filtered_table(tmp_path):
    expected = _write_dataset(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    cfg = Config(profile="dragnuwa-ld", entities=EntityConfig(enabled=False),
                 filters=FilterConfig(min_motion=0.3, max_camera_motion=1.5, drop_cuts=True))
    res = run(cfg, "webvid", str(tmp_path / "data"), out, executor="local")
    assert (res.ok, res.error, res.filtered) == (1, 0, 3)
    filtered = pq.read_table(os.path.join(out, "filtered.parquet")).to_pylist()
    by_reason = {r["reason"]: r for r in filtered}
    assert set(by_reason) == {"low_motion", "camera_motion", "scene_cut"}
    for vid, reason in expected.items():
        if reason != "ok":
            row = by_reason[reason]
            assert vid in row["clip_id"], (vid, row)
            assert row["message"]
    assert "--drop-cuts" in by_reason["scene_cut"]["message"]

    # the kept clip carries its statistics in the meta
    from pipeline.train import read_samples

    (sample,) = list(read_samples(out))
    assert "object" in sample["key"]
    m = sample["meta"]["motion"]
    assert m["magnitude"]["mean"] >= 0.3 and m["camera"]["speed"] <= 1.5 and not m["cut"]["detected"]
    json.dumps(m, allow_nan=False)

    # and the stats report lists the rejects by reason
    from pipeline.tools.report import collect, format_report

    summary = collect(out)
    assert summary["filtered"] == {"low_motion": 1, "camera_motion": 1, "scene_cut": 1}
    text = format_report(summary)
    assert "low_motion 1" in text and "scene_cut 1" in text and "camera_motion 1" in text

    # without filters every clip is kept, and the cut clip is flagged in its meta
    out2 = str(tmp_path / "out2")
    res2 = run(Config(profile="dragnuwa-ld", entities=EntityConfig(enabled=False)), "webvid",
               str(tmp_path / "data"), out2, executor="local")
    assert (res2.ok, res2.filtered) == (4, 0)
    flags = {s["key"]: s["meta"]["motion"]["cut"]["detected"] for s in read_samples(out2)}
    assert [k for k, v in flags.items() if v] == [k for k in flags if "cut" in k]
