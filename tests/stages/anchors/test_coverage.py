"""Coverage of the trainers' draw (stages/anchors/coverage.py): hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest

from stages.anchors.coverage import coverage, reliable_prefix, roundtrip_to_anchor, step_lengths, weighted_percentile


def _line(x0, y0, dx, length):
    t = np.arange(length, dtype=np.float32)[:, None]
    return np.array([x0, y0], np.float32) + t * np.array([dx, 0.0], np.float32)


def test_three_anchors_by_hand():
    L = 5
    tracks = np.stack([_line(0, 0, 2, L), _line(0, 10, 1, L), _line(0, 20, 4, L)])   # steps 2, 1, 4 px
    visible = np.ones((3, L), bool)
    visible[2, 3:] = False                          # anchor 2 leaves the frame after 2 steps
    reliable = np.array([[1, 1, 1, 0, 1],          # anchor 0: 2 reliable steps (the later 1 does not count)
                         [0, 1, 1, 1, 1],          # anchor 1: not reliable at frame 0 -> not drawable
                         [1, 1, 1, 1, 1]], bool)   # anchor 2: reliable while visible: 2 steps
    w = np.array([1.0, 2.0, 3.0])
    c = coverage(tracks, visible, reliable, w)
    assert c["drawable"] == 2
    assert c["drawable_share"] == pytest.approx(4 / 6)
    assert c["mean_span"] == pytest.approx((1 * 2 + 2 * 0 + 3 * 2) / 6 / (L - 1))
    # path: reliable 1*4 + 0 + 3*8 = 28; unfiltered 1*8 + 2*4 + 3*8 = 40
    assert c["drawn_path_share"] == pytest.approx(28 / 40)
    assert c["path_px"] == pytest.approx(28 / 6) and c["reference_path_px"] == pytest.approx(40 / 6)
    # every in-frame anchor reliable: the paper's draw, share 1
    full = coverage(tracks, visible, visible, w)
    assert full["drawable_share"] == full["drawn_path_share"] == 1.0


def test_reference_tracks_set_the_denominator():
    L = 3
    tracks = np.stack([_line(0, 0, 1, L)])
    ref = np.stack([_line(0, 0, 3, L)])
    vis = np.ones((1, L), bool)
    c = coverage(tracks, vis, vis, np.ones(1), reference=(ref, vis))
    assert c["drawn_path_share"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        coverage(tracks, vis, vis, -np.ones(1))
    with pytest.raises(ValueError):
        coverage(tracks, vis, vis[:, :2], np.ones(1))
    empty = coverage(tracks, vis, vis, np.zeros(1))
    assert empty["drawable_share"] is None and empty["drawn_path_share"] is None


def test_round_trip_from_the_last_reliable_frame():
    L, h, w = 4, 20, 40
    tracks = np.stack([_line(5, 5, 2, L), _line(5, 10, 2, L), _line(5, 15, 2, L)])
    reliable = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    back = np.zeros((L - 1, 2, h, w), np.float32)
    back[:, 0] = -2.0                                   # the exact inverse: error 0
    err, drawable = roundtrip_to_anchor(tracks, reliable, back)
    np.testing.assert_array_equal(drawable, [True, True, False])
    np.testing.assert_allclose(err[:2], 0.0, atol=1e-6)
    assert np.isnan(err[2])
    back[:, 0] = -1.5                                   # 0.5 px per step comes back short
    err, _ = roundtrip_to_anchor(tracks, reliable, back)
    np.testing.assert_allclose(err[:2], [1.5, 0.5], atol=1e-5)   # from frame 3 and from frame 1
    back[:, 0] = 30.0                                   # the chain leaves the frame
    err, _ = roundtrip_to_anchor(tracks, reliable, back)
    assert np.isinf(err[0])


def test_weighted_percentile_and_helpers():
    v = np.array([1.0, 2.0, 3.0, np.nan, 10.0])
    w = np.array([1.0, 1.0, 1.0, 5.0, 0.0])
    assert weighted_percentile(v, w, 50) == 2.0
    assert weighted_percentile(v, w, 90) == 3.0
    assert weighted_percentile([1.0, 100.0], [9.0, 1.0], 90) == 1.0
    assert weighted_percentile([1.0, 100.0], [9.0, 1.0], 95) == 100.0
    assert weighted_percentile([np.nan], [1.0], 50) is None
    np.testing.assert_array_equal(reliable_prefix(np.array([[1, 0, 1], [1, 1, 1]], bool)),
                                  [[True, False, False], [True, True, True]])
    np.testing.assert_allclose(step_lengths(np.array([[[0, 0], [3, 4], [3, 4]]], float)), [[5.0, 0.0]])
