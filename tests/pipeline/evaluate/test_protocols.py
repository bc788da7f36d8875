"""The protocols' rules on small arrays: queries, frame selection, which pairs count."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.protocols import PROTOCOLS, cotracker_grid, frame_selection, get_protocol, make_queries, score


def test_every_protocol_records_its_parameters():
    assert list(PROTOCOLS) == ["objmc", "draganything", "motionpro", "ino"]
    for p in PROTOCOLS.values():
        params = p.params()
        assert params["name"] == p.name and params["source"] and params["frames"] in ("exact", "truncate",
                                                                                       "prefix", "linspace")
    with pytest.raises(ValueError, match="unknown protocol 'x'; known: objmc, draganything"):
        get_protocol("x")


def test_objmc_counts_span_frames_after_frame_0():
    p = PROTOCOLS["objmc"]
    ref = np.zeros((2, 4, 2))
    span = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    tracked = np.ones((2, 4, 2)) * [3.0, 4.0]
    err, mask = score(p, ref, span, tracked)
    np.testing.assert_array_equal(mask, [[0, 1, 1, 0], [0, 1, 0, 0]])
    assert np.all(err[mask] == 5.0) and np.all(err[~mask] == 0)


def test_draganything_counts_every_frame_and_truncates_to_integers():
    p = PROTOCOLS["draganything"]
    ref = np.zeros((1, 4, 2))
    tracked = np.full((1, 3, 2), 0.9)                    # a 3-frame video: zip pairs 3 frames
    err, mask = score(p, ref, np.zeros((1, 4), bool), tracked)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0]])
    assert np.all(err[mask] == 0.0)                       # 0.9 -> 0 (the script stores int(x))


def test_grid_queries_are_the_nearest_cotracker_grid_points():
    grid = cotracker_grid(100, 576, 320)
    assert grid.shape == (10000, 2)
    np.testing.assert_allclose(grid[0], [8 * 575 / 511, 8 * 319 / 383])      # margin 512/64 at 384x512
    np.testing.assert_allclose(grid[-1], [504 * 575 / 511, 376 * 319 / 383])
    q, scored = make_queries(PROTOCOLS["draganything"], np.array([[100.2, 50.7], [0.0, 0.0]]), 576, 320)
    d = np.linalg.norm(grid - [100.2, 50.7], axis=1)
    np.testing.assert_allclose(q[0], grid[np.argmin(d)])
    np.testing.assert_allclose(q[1], grid[0])
    assert list(scored) == [0, 1]


def test_motionpro_blocks_keep_the_start_point():
    q, scored = make_queries(PROTOCOLS["motionpro"], np.array([[20.7, 30.2], [2.0, 40.0]]), 576, 320)
    np.testing.assert_array_equal(q[scored[0]], [20, 30])
    np.testing.assert_array_equal(q[scored[1]], [2, 40])
    assert scored[0] == 36                                # the script's index 36 of an 8x8 block
    assert len(q) == 64 + 6 * 8                           # the second block is cut at x = 0, as the script's
    np.testing.assert_array_equal(q[:2], [[16, 26], [16, 27]])   # x outer, y inner


def test_frame_rules():
    assert frame_selection(PROTOCOLS["objmc"], 8, 8)[0].tolist() == list(range(8))
    idx, note, err = frame_selection(PROTOCOLS["objmc"], 9, 8)
    assert idx is None and "9 frames" in err and "exactly 8" in err
    idx, note, err = frame_selection(PROTOCOLS["draganything"], 5, 8)
    assert idx.tolist() == [0, 1, 2, 3, 4] and "zip" in note
    idx, note, err = frame_selection(PROTOCOLS["motionpro"], 10, 8)
    assert idx.tolist() == list(range(8)) and "first 8" in note
    assert frame_selection(PROTOCOLS["motionpro"], 7, 8)[2] is not None
    idx, note, err = frame_selection(PROTOCOLS["ino"], 49, 8)
    assert idx.tolist() == np.linspace(0, 48, 8).astype(int).tolist() and "linspace" in note
