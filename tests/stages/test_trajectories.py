"""Trajectory Sampler: anchors, tracking, the per-read draw and the sparse displacement map."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import stats

from stages.flow.cpu import DISFlow
from stages.trajectories import (
    anchor_grid, bilinear_sample, compute_anchors, draw_trajectories, rasterize_displacements,
    sample_delta, track_points,
)

W, H, L = 576, 320, 6
DX, DY = 2.5, -1.25
PAD = 48


def smooth_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Float RGB texture (h, w, 3) in [0, 255]: Gaussian-blurred noise at several scales."""
    rng = np.random.default_rng(seed)
    chans = []
    for _ in range(3):
        acc = np.zeros((h, w), np.float32)
        for sigma, amp in ((1.5, 0.5), (4.0, 1.0), (12.0, 1.5)):
            b = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
            acc += amp * b / b.std()
        chans.append(acc)
    tex = np.stack(chans, -1)
    tex = (tex - tex.mean()) / tex.std()
    return np.clip(128.0 + 40.0 * tex, 0, 255).astype(np.float32)


def translating_clip() -> np.ndarray:
    tex = smooth_texture(H + 2 * PAD, W + 2 * PAD)
    frames = []
    for t in range(L):
        m = np.float32([[1, 0, PAD - t * DX], [0, 1, PAD - t * DY]])
        f = cv2.warpAffine(tex, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


def const_flow(n, h, w, dx, dy):
    f = np.zeros((n, 2, h, w), np.float32)
    f[:, 0], f[:, 1] = dx, dy
    return f


# ---- delta and grid ------------------------------------------------------------------------

def test_sample_delta_range():
    rng = np.random.default_rng(0)
    d = np.array([sample_delta(rng, 16) for _ in range(3000)])
    assert d.min() == -8 and d.max() == 8
    assert set(np.unique(d)) == set(range(-8, 9))
    dx, dy = sample_delta(rng, 16)
    assert type(dx) is int and type(dy) is int
    # odd interval: [-3, 3]
    d = np.array([sample_delta(rng, 7) for _ in range(1000)])
    assert d.min() == -3 and d.max() == 3


@pytest.mark.parametrize("delta,nx,ny,first", [
    ((0, 0), 36, 20, (8, 8)),
    ((-8, -8), 36, 20, (0, 0)),
    ((8, 8), 36, 20, (0, 0)),          # k runs over all integers: x = 16k + 16 includes 0
    ((5, -3), 36, 20, (13, 5)),
])
def test_anchor_grid_counts_and_positions(delta, nx, ny, first):
    a = anchor_grid(H, W, 16, delta)
    assert a.dtype == np.float32 and a.shape == (nx * ny, 2)
    assert tuple(a[0]) == first
    np.testing.assert_array_equal(a, np.rint(a))
    assert a[:, 0].min() >= 0 and a[:, 0].max() <= W - 1
    assert a[:, 1].min() >= 0 and a[:, 1].max() <= H - 1
    # row-major: y outer, x inner
    assert tuple(a[1]) == (first[0] + 16, first[1])
    assert tuple(a[nx]) == (first[0], first[1] + 16)
    xs = np.unique(a[:, 0])
    np.testing.assert_array_equal(xs, first[0] + 16 * np.arange(nx))
    np.testing.assert_array_equal(np.unique(a[:, 1]), first[1] + 16 * np.arange(ny))


def test_anchor_grid_is_periodic_in_delta():
    # the grid is {x : (x - interval//2 - dx) % interval == 0} (the paper's Eq. 1), so
    # shifts of +interval/2 and -interval/2 give the same anchors
    np.testing.assert_array_equal(anchor_grid(H, W, 16, (8, 8)), anchor_grid(H, W, 16, (-8, -8)))
    # a width that is not a multiple of the interval: 50 px
    assert anchor_grid(20, 50, 16, (0, 0))[:, 0].tolist() == [8, 24, 40]
    assert anchor_grid(20, 50, 16, (8, 0))[:, 0].tolist() == [0, 16, 32, 48]
    assert anchor_grid(20, 50, 16, (-3, 0))[:, 0].tolist() == [5, 21, 37]
    assert anchor_grid(20, 50, 16, (0, -3))[:, 1].tolist() == [5, 5, 5]


def test_anchor_grid_includes_last_pixel_and_small_frames():
    # x = 8 + 16k + 7 = 575 = W-1 is kept
    a = anchor_grid(H, W, 16, (7, 0))
    assert a[:, 0].max() == W - 1
    assert anchor_grid(5, 5, 16, (0, 0)).shape == (0, 2)
    assert anchor_grid(20, 20, 16, (-8, 0)).tolist() == [[0.0, 8.0], [16.0, 8.0]]


# ---- sampling and tracking -----------------------------------------------------------------

def test_bilinear_sample_is_exact_for_linear_fields_and_clamps():
    h, w = 30, 40
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.stack([0.3 * xs - 0.2 * ys + 1.0, 2.0 * ys]).astype(np.float32)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, w - 1, 500), rng.uniform(0, h - 1, 500)], 1)
    v = bilinear_sample(field, pts)
    assert v.shape == (500, 2) and v.dtype == np.float32
    np.testing.assert_allclose(v[:, 0], 0.3 * pts[:, 0] - 0.2 * pts[:, 1] + 1.0, atol=1e-4)
    np.testing.assert_allclose(v[:, 1], 2.0 * pts[:, 1], atol=1e-4)
    # corners, and clamping of points outside
    edge = bilinear_sample(field, np.array([[w - 1, h - 1], [-5.0, 3.0], [100.0, -7.5]]))
    np.testing.assert_allclose(edge[0], field[:, h - 1, w - 1], atol=1e-5)
    np.testing.assert_allclose(edge[1], field[:, 3, 0], atol=1e-5)
    np.testing.assert_allclose(edge[2], field[:, 0, w - 1], atol=1e-5)
    assert bilinear_sample(field, np.zeros((0, 2))).shape == (0, 2)


def test_tracks_from_constant_flow_are_exact():
    h, w, n = 60, 80, 7
    d = (1.5, -0.75)
    flow = const_flow(n - 1, h, w, *d)
    pts = np.array([[20.0, 40.0], [33.25, 50.5], [60.0, 30.0]], np.float32)
    tracks, vis = track_points(pts, flow)
    assert tracks.shape == (3, n, 2) and tracks.dtype == np.float32
    assert vis.shape == (3, n) and vis.dtype == bool and vis.all()
    expect = pts[:, None, :] + np.arange(n)[None, :, None] * np.array(d, np.float32)
    np.testing.assert_allclose(tracks, expect, atol=1e-5)


def test_tracking_samples_flow_at_the_current_position():
    # dx depends on y, dy is constant: x must use y_t, not y_0
    h, w, n = 60, 80, 5
    ys = np.arange(h, dtype=np.float32)[:, None]
    flow = np.zeros((n - 1, 2, h, w), np.float32)
    flow[:, 0] = 0.1 * ys
    flow[:, 1] = 2.0
    tracks, vis = track_points(np.array([[10.0, 10.0]]), flow)
    x, y = 10.0, 10.0
    for t in range(1, n):
        x, y = x + 0.1 * y, y + 2.0
        np.testing.assert_allclose(tracks[0, t], (x, y), atol=1e-4)
    assert vis.all()


def test_visibility_turns_false_and_stays_false():
    h, w = 20, 30
    flow = np.zeros((5, 2, h, w), np.float32)
    flow[0, 0] = 4.0     # step 0: right by 4
    flow[1, 0] = 4.0     # step 1: right by 4 -> x = 28 + 4 = 32 > 29 leaves (for x0 = 24)
    flow[2, 0] = -10.0   # step 2: would bring it back inside: must not
    pts = np.array([[24.0, 10.0], [5.0, 10.0], [-1.0, 3.0], [29.0, 19.0]], np.float32)
    tracks, vis = track_points(pts, flow)
    # point 0: 24 -> 28 -> 32 (out) -> frozen
    assert vis[0].tolist() == [True, True, False, False, False, False]
    np.testing.assert_allclose(tracks[0, :, 0], [24, 28, 32, 32, 32, 32])
    np.testing.assert_allclose(tracks[0, :, 1], 10.0)
    # point 1 stays inside: 5 -> 9 -> 13 -> 3 -> 3 -> 3
    assert vis[1].all()
    np.testing.assert_allclose(tracks[1, :, 0], [5, 9, 13, 3, 3, 3])
    # point 2 starts outside: never visible, coordinates kept
    assert not vis[2].any()
    np.testing.assert_allclose(tracks[2], np.tile([-1.0, 3.0], (6, 1)))
    # point 3 starts on the last pixel (inside), leaves at step 0
    assert vis[3].tolist() == [True, False, False, False, False, False]
    # once invisible, never visible again
    for row in vis:
        first_off = np.argmin(row) if not row.all() else len(row)
        assert not row[first_off:].any()


def test_tracks_from_dis_flow_follow_the_true_motion():
    clip = translating_clip()
    flow = DISFlow("medium").forward(clip)
    res = compute_anchors(flow, interval=16, delta=(3, -5))
    tracks, vis = res["anchor_tracks"], res["anchor_visible"]
    p0 = tracks[:, 0]
    truth = p0[:, None, :] + np.arange(L)[None, :, None] * np.array([DX, DY], np.float32)
    margin = 16
    keep = np.all((truth[..., 0] >= margin) & (truth[..., 0] <= W - 1 - margin)
                  & (truth[..., 1] >= margin) & (truth[..., 1] <= H - 1 - margin), axis=1)
    assert keep.sum() > 500
    err = np.linalg.norm(tracks[keep] - truth[keep], axis=-1)
    print(f"DIS track error: mean {err.mean():.4f} px, max {err.max():.4f} px")
    assert err.max() < 0.5
    assert vis[keep].all()
    np.testing.assert_allclose(res["anchor_weights"][keep], np.hypot(DX, DY), atol=0.3)
    # anchors that the true motion carries out of the frame (x_0 + 5*DX > W-1 or y < 0) are
    # flagged invisible by the end
    gone = (truth[:, -1, 0] > W - 1 + 1) | (truth[:, -1, 1] < -1)
    assert gone.any() and not vis[gone, -1].any()


def test_compute_anchors_outputs():
    h, w, n = 64, 96, 4
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.zeros((n - 1, 2, h, w), np.float32)
    flow[:, 0] = 0.01 * xs          # magnitude varies over the frame
    flow[:, 1] = -0.02 * ys
    res = compute_anchors(flow, interval=16, rng=np.random.default_rng(3))
    a = anchor_grid(h, w, 16, res["delta"])
    assert set(res) >= {"anchor_tracks", "anchor_weights", "anchor_visible", "delta", "interval"}
    assert res["interval"] == 16
    assert all(type(v) is int and -8 <= v <= 8 for v in res["delta"])
    A = len(a)
    assert res["anchor_tracks"].shape == (A, n, 2) and res["anchor_tracks"].dtype == np.float32
    assert res["anchor_visible"].shape == (A, n) and res["anchor_visible"].dtype == bool
    assert res["anchor_weights"].shape == (A,) and res["anchor_weights"].dtype == np.float32
    np.testing.assert_array_equal(res["anchor_tracks"][:, 0], a)
    np.testing.assert_allclose(res["anchor_weights"], np.hypot(0.01 * a[:, 0], 0.02 * a[:, 1]), rtol=1e-5)
    # same seed, same delta; explicit delta is used as given
    assert compute_anchors(flow, 16, rng=np.random.default_rng(3))["delta"] == res["delta"]
    assert compute_anchors(flow, 16, delta=(-8, 8))["delta"] == (-8, 8)
    with pytest.raises(ValueError):
        compute_anchors(flow[0], 16, delta=(0, 0))


# ---- the per-read draw ---------------------------------------------------------------------

def test_draw_count_is_uniform_in_1_to_N():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 2.0, 200)
    sizes = []
    for _ in range(4000):
        idx = draw_trajectories(weights, rng, max_n=8)
        assert len(np.unique(idx)) == len(idx)
        sizes.append(len(idx))
    sizes = np.array(sizes)
    assert sizes.min() == 1 and sizes.max() == 8
    counts = np.bincount(sizes, minlength=9)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_draw_frequencies_follow_the_weights():
    weights = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 5.0, 10.0], np.float32)
    rng = np.random.default_rng(123)
    draws = 20000
    counts = np.zeros(len(weights), np.int64)
    for _ in range(draws):
        idx = draw_trajectories(weights, rng, max_n=1)
        assert len(idx) == 1
        counts[idx] += 1
    assert counts[weights == 0].sum() == 0
    pos = weights > 0
    expected = draws * weights[pos] / weights[pos].sum()
    assert stats.chisquare(counts[pos], expected).pvalue > 1e-3


def test_draw_never_picks_zero_weights_when_enough_positive():
    rng = np.random.default_rng(5)
    weights = np.zeros(30)
    weights[::3] = rng.uniform(0.5, 3.0, 10)
    for _ in range(2000):
        idx = draw_trajectories(weights, rng, max_n=8)
        assert 1 <= len(idx) <= 8
        assert np.all(weights[idx] > 0)
        assert idx.dtype == np.int64


def test_draw_caps_n_and_handles_all_zero_and_empty():
    rng = np.random.default_rng(6)
    weights = np.zeros(20)
    weights[[2, 7, 11]] = 1.0
    seen = set()
    for _ in range(500):
        idx = draw_trajectories(weights, rng, max_n=8)
        assert 1 <= len(idx) <= 3 and set(idx.tolist()) <= {2, 7, 11}
        seen.add(len(idx))
    assert seen == {1, 2, 3}
    zeros = np.zeros(5)
    picked = set()
    for _ in range(500):
        idx = draw_trajectories(zeros, rng, max_n=8)
        assert 1 <= len(idx) <= 5 and len(np.unique(idx)) == len(idx)
        picked.update(idx.tolist())
    assert picked == set(range(5))
    assert draw_trajectories(np.zeros(0), rng, max_n=8).shape == (0,)
    with pytest.raises(ValueError):
        draw_trajectories(np.array([1.0, -1.0]), rng)
    with pytest.raises(ValueError):
        draw_trajectories(np.ones(3), rng, max_n=0)


# ---- rasterisation -------------------------------------------------------------------------

def test_rasterize_displacements_places_vectors():
    h, w = 12, 16
    tracks = np.array([
        [[2.0, 3.0], [3.5, 3.0], [4.5, 4.25], [6.0, 5.0]],      # always visible
        [[10.0, 8.0], [12.0, 9.0], [15.5, 9.0], [17.0, 9.0]],   # leaves the frame at t=3
        [[1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]],       # not drawn
    ], np.float32)
    visible = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    out = rasterize_displacements(tracks, visible, np.array([0, 1]), h, w)
    assert out.shape == (4, 2, h, w) and out.dtype == np.float32
    assert not out[0].any()
    expect = np.zeros_like(out)
    # track 0: from (2,3) -> written at (x=2, y=3) of slot 1, etc.; 3.5 rounds half up to 4
    expect[1, :, 3, 2] = (1.5, 0.0)
    expect[2, :, 3, 4] = (1.0, 1.25)
    expect[3, :, 4, 5] = (1.5, 0.75)      # (4.5, 4.25) -> pixel (5, 4)
    # track 1: visible at t=0,1,2 only; its t=2 -> 3 step is dropped
    expect[1, :, 8, 10] = (2.0, 1.0)
    expect[2, :, 9, 12] = (3.5, 0.0)
    np.testing.assert_allclose(out, expect)
    # nothing from the undrawn track
    assert np.count_nonzero(np.any(out != 0, axis=1)) == 5


def test_rasterize_end_to_end_on_constant_flow():
    h, w, n = 64, 96, 5
    flow = const_flow(n - 1, h, w, 2.0, 1.0)
    res = compute_anchors(flow, interval=16, delta=(0, 0))
    rng = np.random.default_rng(0)
    idx = draw_trajectories(res["anchor_weights"], rng, max_n=8)
    out = rasterize_displacements(res["anchor_tracks"], res["anchor_visible"], idx, h, w)
    assert not out[0].any()
    for k in idx:
        for t in range(n - 1):
            x, y = res["anchor_tracks"][k, t]
            if res["anchor_visible"][k, t] and res["anchor_visible"][k, t + 1]:
                np.testing.assert_allclose(out[t + 1, :, int(y), int(x)], (2.0, 1.0))
    assert np.count_nonzero(out[1:, 0]) == res["anchor_visible"][idx, 1:].sum()


# ---- reliability (forward-backward checks) ---------------------------------------------------

from stages.trajectories import (  # noqa: E402
    FB_ROUNDTRIP_PX, FB_STEP_PX, anchor_reliability, compose_flows, fb_errors, roundtrip_errors, trackability,
)


def test_consistent_flows_keep_every_in_frame_anchor_reliable():
    fwd = const_flow(5, 40, 60, 3.0, -1.0)
    res = compute_anchors(fwd, interval=8, delta=(0, 0), backward_flow=-fwd)
    rel, vis = res["anchor_reliable"], res["anchor_visible"]
    assert rel.dtype == bool and rel.shape == vis.shape
    # a step into the frame passes; leaving the frame ends reliability (and visibility)
    np.testing.assert_array_equal(rel[:, 1:], vis[:, 1:])
    np.testing.assert_array_equal(rel[:, 0], rel[:, 1])
    assert not (rel & ~vis).any()
    assert compute_anchors(fwd, interval=8, delta=(0, 0))["anchor_reliable"] is None


def test_an_inconsistent_step_ends_the_span_for_good():
    h, w, steps = 40, 60, 5
    fwd = const_flow(steps, h, w, 1.0, 0.0)
    back = -fwd
    back[2, :, :, 30:] += 3.0            # step 2 -> 3 disagrees in the right half of frame 3
    pts = np.array([[10.0, 20.0], [35.0, 20.0]], np.float32)
    tracks, vis = track_points(pts, fwd)
    err = fb_errors(tracks, vis, back)
    assert err.shape == (2, steps)
    np.testing.assert_allclose(err[0], 0.0, atol=1e-6)
    assert err[1, 2] == pytest.approx(np.hypot(3.0, 3.0), abs=1e-5) and err[1, 3] < 1e-6
    rel = anchor_reliability(tracks, vis, back)
    assert rel[0].all()
    # the second point is reliable up to frame 2, then never again (later steps are fine)
    np.testing.assert_array_equal(rel[1], [True, True, True, False, False, False])


def test_first_step_failing_makes_frame_0_unreliable():
    fwd = const_flow(3, 20, 20, 1.0, 0.0)
    back = -fwd
    back[0] += 2.0
    tracks, vis = track_points(np.array([[5.0, 5.0]]), fwd)
    rel = anchor_reliability(tracks, vis, back)
    assert not rel.any()          # an anchor drawn must give at least one displacement


def test_small_per_step_errors_that_add_up_fail_the_round_trip():
    steps = 8
    fwd = const_flow(steps, 30, 200, 2.0, 0.0)
    back = -fwd + np.float32(0.4)        # 0.4 px per step: passes a 1 px step test
    tracks, vis = track_points(np.array([[20.0, 15.0]]), fwd)
    rt = roundtrip_errors(tracks, vis, back)
    np.testing.assert_allclose(rt[0], 0.4 * np.hypot(1, 1) * np.arange(steps + 1), atol=1e-4)
    only_steps = anchor_reliability(tracks, vis, back, step_px=FB_STEP_PX, roundtrip_px=None)
    assert only_steps.all()
    rel = anchor_reliability(tracks, vis, back, step_px=FB_STEP_PX, roundtrip_px=FB_ROUNDTRIP_PX)
    last_ok = int(np.floor(FB_ROUNDTRIP_PX / (0.4 * np.hypot(1, 1))))
    np.testing.assert_array_equal(rel[0], np.arange(steps + 1) <= last_ok)
    with pytest.raises(ValueError):
        anchor_reliability(tracks, vis, back, step_px=0.0)


def test_translation_clip_with_dis_is_reliable_inside_the_frame():
    frames = translating_clip()
    dis = DISFlow("medium")
    fwd, back = dis.forward(frames), DISFlow("balanced").backward(frames)
    res = compute_anchors(fwd, interval=16, delta=(0, 0), backward_flow=back)
    vis, rel = res["anchor_visible"], res["anchor_reliable"]
    inner = np.all((res["anchor_tracks"][..., 0] > 24) & (res["anchor_tracks"][..., 0] < W - 25)
                   & (res["anchor_tracks"][..., 1] > 24) & (res["anchor_tracks"][..., 1] < H - 25), axis=1)
    assert rel[inner, -1].mean() >= 0.95
    stats = trackability(vis, rel)
    assert stats["reliable_through"] >= 0.8 and len(stats["reliable_per_frame"]) == L


def test_compose_flows_follows_the_first_field():
    h, w = 30, 40
    a = np.zeros((2, h, w), np.float32)
    a[0] = 2.0                                        # 2 px right
    b = np.zeros((2, h, w), np.float32)
    b[1] = np.arange(w, dtype=np.float32)[None, :] * 0.1   # dy depends on x
    c = compose_flows([a, b])
    # a pixel at x moves to x+2, where b moves it down by 0.1 * (x + 2)
    np.testing.assert_allclose(c[0, :, :-3], 2.0)
    np.testing.assert_allclose(c[1, 5, :-3], 0.1 * (np.arange(w - 3) + 2), atol=1e-5)
    np.testing.assert_array_equal(compose_flows([a]), a)
    with pytest.raises(ValueError):
        compose_flows([])


def test_trackability_statistics():
    vis = np.ones((4, 3), bool)
    vis[3, 2] = False                               # leaves the frame
    rel = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 1, 0]], bool)
    t = trackability(vis, rel)
    assert t["count"] == 4 and t["in_frame_through"] == 3
    assert t["reliable_through"] == pytest.approx(1 / 3, abs=1e-4)
    assert t["reliable_through_all"] == 0.25
    assert t["reliable_per_frame"] == [0.75, 0.75, pytest.approx(1 / 3, abs=1e-4)]
    assert t["reliable_start"] == 3 and t["reliable_end"] == 1
    assert t["reliable_while_visible"] == 0.5            # anchors 0 and 3 (followed until it left)
    old = trackability(vis, None)
    assert old["reliable_through"] is None and old["in_frame_through"] == 3
    assert old["reliable_while_visible"] is None
