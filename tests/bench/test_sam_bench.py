"""bench/sam.py runs on the CPU and fills its table (tiny_test SAM, random weights)."""
from __future__ import annotations

import pytest

pytest.importorskip("segment_anything")


def test_sam_bench_smoke():
    from bench.sam import bench_sam_amg, sam_table

    res = bench_sam_amg("tiny_test", "cpu", n_images=1, points_per_side=4,
                        configs=(("official", 64, 1, "fp32"), ("batched", 256, 1, "fp32")), width=160, height=96)
    off, ours = res["rows"]
    assert "error" not in off and "error" not in ours, res["rows"]
    assert off["speedup"] == 1.0 and ours["same_id_maps"] == 1 and ours["candidates_per_image"] >= 0
    assert 0.0 <= ours["post_share"] <= 1.0
    table = sam_table(res)
    assert "official" in table and "batched" in table and "speedup" in table
