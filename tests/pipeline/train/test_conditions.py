"""Condition builders (pipeline/train/conditions.py): Gaussian presets, filters, DragNUWA and DragEntity maps."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.train.conditions import (
    GAUSSIAN_PRESETS, GaussianFilter, dense_flow_condition, entity_gaussian_map, entity_index_map,
    entity_loss_mask, entity_sigma, gaussian_filter, gaussian_kernel_1d, resolve_gaussian, trajectory_map,
)


def one_track(x0, y0, dx, dy, length=3):
    """One track moving by (dx, dy) per frame, as (A=1, L, 2) tracks and (1, L) visibility."""
    t = np.arange(length, dtype=np.float32)[:, None]
    tracks = (np.array([[x0, y0]], np.float32) + t * np.array([[dx, dy]], np.float32))[None]
    return tracks, np.ones((1, length), bool)


# ---- DragNUWA: presets -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["paper", "release", "motionctrl"])
def test_preset_peak_and_sum(name):
    filt = GAUSSIAN_PRESETS[name]
    size = 224                          # the 199-tap kernel fits entirely around the center pixel
    dx, dy = 3.0, -2.0
    tracks, vis = one_track(112, 112, dx, dy, length=2)
    m = trajectory_map(tracks, vis, [0], size, size, name)
    assert m.shape == (2, 2, size, size) and m.dtype == torch.float32
    assert torch.count_nonzero(m[0]) == 0, "frame 0 must be the prepended zero frame"
    g = gaussian_kernel_1d(filt, dtype=torch.float64)
    kernel_sum = float(g.sum()) ** 2
    center = float(g[filt.kernel_size // 2]) ** 2
    for c, d in ((0, dx), (1, dy)):
        plane = m[1, c].double()
        # the maximum sits at the track's pixel of frame 0 and equals d * center weight
        assert float(plane[112, 112]) == pytest.approx(d * center, rel=1e-5)
        assert float(plane.abs().max()) == pytest.approx(abs(d) * center, rel=1e-5)
        assert float(plane.sum()) == pytest.approx(d * kernel_sum, rel=1e-4)
    if filt.normalize == "peak":                      # paper / release: center weight 1
        assert float(m[1, 0, 112, 112]) == pytest.approx(dx, rel=1e-6)
        sigma = filt.sigma
        assert float(m[1, 0].sum()) == pytest.approx(dx * 2 * math.pi * sigma ** 2, rel=1e-3)
    else:                                             # motionctrl: kernel sums to 1
        assert float(m[1, 0].sum()) == pytest.approx(dx, rel=1e-5)
        assert float(m[1, 0, 112, 112]) == pytest.approx(dx / (2 * math.pi * filt.sigma ** 2), rel=1e-3)
    # the filtered map has the kernel's footprint: zero beyond half the kernel size
    half = filt.kernel_size // 2
    row = m[1, 0, 112]
    assert row[112 + half] != 0 and (112 + half + 1 >= size or row[112 + half + 1] == 0)


def test_presets_are_the_documented_settings():
    assert GAUSSIAN_PRESETS["paper"] == GaussianFilter(99, 10.0, "peak")
    assert GAUSSIAN_PRESETS["release"] == GaussianFilter(199, 20.0, "peak")
    assert GAUSSIAN_PRESETS["motionctrl"] == GaussianFilter(99, 10.0, "sum")
    assert resolve_gaussian({"kernel_size": 31, "sigma": 4}) == GaussianFilter(31, 4.0, "peak")
    assert resolve_gaussian((15, 2.0, "sum")) == GaussianFilter(15, 2.0, "sum")
    assert resolve_gaussian(None) is None
    with pytest.raises(ValueError, match="odd"):
        GaussianFilter(98, 10.0)
    with pytest.raises(ValueError, match="unknown Gaussian preset"):
        resolve_gaussian("nuwa")
    with pytest.raises(ValueError, match="normalize"):
        GaussianFilter(9, 1.0, "max")


@pytest.mark.parametrize("filt", [GAUSSIAN_PRESETS["paper"], GAUSSIAN_PRESETS["motionctrl"], GaussianFilter(7, 1.5)])
def test_filter_methods_agree_with_opencv(filt):
    """sparse, separable and fft filtering equal cv2.filter2D (zero border) with the 2D kernel,
    also for points near the border where the kernel is cut."""
    rng = np.random.default_rng(0)
    h, w = 60, 90
    x = np.zeros((3, h, w), np.float32)
    for plane in x:
        ys, xs = rng.integers(0, h, 6), rng.integers(0, w, 6)
        plane[ys, xs] = rng.normal(0, 3, 6)
    x[0, 0, 0], x[1, h - 1, w - 2] = 5.0, -4.0        # corners
    g = gaussian_kernel_1d(filt, dtype=torch.float64).numpy()
    k2 = np.outer(g, g)
    ref = np.stack([cv2.filter2D(p.astype(np.float64), -1, k2, borderType=cv2.BORDER_CONSTANT) for p in x])
    for method in ("sparse", "separable", "fft", "auto"):
        out = gaussian_filter(torch.from_numpy(x), filt, method=method).numpy()
        assert out.shape == x.shape
        np.testing.assert_allclose(out, ref, atol=2e-5 * max(1.0, np.abs(ref).max()), err_msg=method)


def test_trajectory_map_methods_agree_and_raw_map():
    rng = np.random.default_rng(1)
    a, length, h, w = 12, 5, 48, 64
    tracks = (np.cumsum(rng.normal(0, 2, (a, length, 2)), 1) + [30, 20]).astype(np.float32)
    vis = rng.random((a, length)) > 0.2
    idx = np.array([0, 3, 5, 7])
    raw = trajectory_map(tracks, vis, idx, h, w, None)
    for t in range(length - 1):
        for k in idx:
            if vis[k, t] and vis[k, t + 1]:
                px, py = int(np.floor(tracks[k, t, 0] + 0.5)), int(np.floor(tracks[k, t, 1] + 0.5))
                later = [j for j in idx[list(idx).index(k) + 1:] if vis[j, t] and vis[j, t + 1]
                         and (int(np.floor(tracks[j, t, 0] + 0.5)), int(np.floor(tracks[j, t, 1] + 0.5))) == (px, py)]
                if not later and 0 <= px < w and 0 <= py < h:
                    np.testing.assert_allclose(raw[t + 1, :, py, px].numpy(), tracks[k, t + 1] - tracks[k, t], atol=1e-5)
    maps = [trajectory_map(tracks, vis, idx, h, w, GaussianFilter(21, 3.0), method=m) for m in ("sparse", "separable", "fft")]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], atol=1e-5, rtol=1e-5)


def test_invisible_tracks_contribute_nothing():
    tracks, vis = one_track(20, 20, 2, 1, length=4)
    vis[0, 2] = False                                    # steps 1->2 and 2->3 touch an invisible frame
    m = trajectory_map(tracks, vis, [0], 40, 40, "paper")
    assert torch.count_nonzero(m[1]) > 0
    assert torch.count_nonzero(m[2]) == 0 and torch.count_nonzero(m[3]) == 0
    assert torch.count_nonzero(trajectory_map(tracks, np.zeros_like(vis), [0], 40, 40, "paper")) == 0


@pytest.mark.parametrize("method", ["sparse", "separable", "fft"])
@pytest.mark.parametrize("preset", sorted(GAUSSIAN_PRESETS))
def test_a_trajectory_ends_at_its_first_unreliable_frame(method, preset):
    """With the loader's usable spans as the mask, no displacement past the first unreliable
    frame reaches the map, whatever the preset and method (the filter works per frame)."""
    from pipeline.train.loader import usable_spans

    tracks, _ = one_track(30, 30, 3, -2, length=6)
    reliable = np.array([[1, 1, 1, 0, 1, 1]], bool)     # a later frame passing again does not count
    usable = usable_spans(reliable)
    m = trajectory_map(tracks, usable, [0], 64, 64, preset, method=method)
    assert torch.count_nonzero(m[1]) > 0 and torch.count_nonzero(m[2]) > 0
    for t in (3, 4, 5):                                  # steps 2->3, 3->4, 4->5 leave the reliable span
        assert float(m[t].abs().max()) == 0.0


def test_dense_flow_condition():
    f = torch.randn(3, 2, 5, 6)
    c = dense_flow_condition(f)
    assert c.shape == (4, 2, 5, 6) and torch.count_nonzero(c[0]) == 0 and torch.equal(c[1:], f)
    with pytest.raises(ValueError):
        dense_flow_condition(torch.zeros(3, 3, 5, 6))


# ---- DragEntity --------------------------------------------------------------------------------

def test_entity_gaussian_radius_rule():
    h, w = 80, 100
    centers = np.array([[[30.0, 40.0], [50.0, 40.0]]], np.float32)      # K=1, L=2
    r = 12.0
    g = entity_gaussian_map(centers, [r], np.ones((1, 2), bool), h, w)
    assert g.shape == (2, 1, h, w)
    assert float(g[0, 0, 40, 30]) == pytest.approx(1.0) and float(g.max()) == pytest.approx(1.0)
    # sigma = r / 3: exp(-4.5) on the circle, exp(-0.5) at one sigma
    assert float(g[0, 0, 40, 42]) == pytest.approx(math.exp(-4.5), rel=1e-4)
    assert float(g[0, 0, 44, 30]) == pytest.approx(math.exp(-0.5), rel=1e-4)
    assert float(g[1, 0, 40, 50]) == pytest.approx(1.0)                 # follows the tracked center
    assert torch.allclose(entity_sigma([r]), torch.tensor([[4.0, 4.0]]))
    assert torch.allclose(entity_sigma(torch.tensor([[12.0, 6.0]]), 0.5), torch.tensor([[6.0, 3.0]]))
    # invisible frame -> nothing; two entities combine by max (never above 1)
    vis = np.array([[True, False]])
    g2 = entity_gaussian_map(centers, [r], vis, h, w)
    assert torch.count_nonzero(g2[1]) == 0
    both = entity_gaussian_map(np.array([[[30.0, 40.0]], [[33.0, 40.0]]], np.float32), [r, r],
                               np.ones((2, 1), bool), h, w)
    assert float(both.max()) == pytest.approx(1.0)


def test_entity_index_map_paints_circles_small_on_top():
    h, w = 60, 80
    centers = np.array([[[40.0, 30.0], [45.0, 30.0]], [[40.0, 30.0], [10.0, 10.0]]], np.float32)
    vis = np.array([[True, True], [True, False]])
    idx = entity_index_map(centers, [15.0, 5.0], vis, [7, 3], h, w)
    assert idx.shape == (2, h, w) and idx.dtype == torch.int64
    assert int(idx[0, 30, 40]) == 3                     # the smaller entity is painted on top
    assert int((idx[0] == 3).sum()) == 81               # integer points in a radius-5 disc
    assert int((idx[0] == 7).sum()) + 81 == 709         # ... and in a radius-15 disc
    assert int(idx[1, 30, 45]) == 7 and int((idx[1] == 3).sum()) == 0   # invisible: not painted
    assert int(idx[0, 30, 56]) == 0 and int(idx[0, 30, 55]) == 7
    # per-axis radii paint an ellipse
    e = entity_index_map(centers[:1, :1], torch.tensor([[10.0, 5.0]]), vis[:1, :1], [1], h, w)
    assert int(e[0, 30, 50]) == 1 and int(e[0, 36, 40]) == 0 and int(e[0, 35, 40]) == 1


def test_loss_mask_modes():
    h, w = 40, 50
    mask0 = np.zeros((h, w), np.uint16)
    mask0[10:20, 10:16] = 4                               # entity 4: a 10x6 block
    mask0[30:35, 40:45] = 9                               # entity 9
    centers = np.array([[[13.0, 15.0], [16.2, 13.8], [20.0, 15.0]],
                        [[42.0, 32.0], [42.0, 32.0], [42.0, 32.0]]], np.float32)
    vis = np.array([[True, True, True], [True, True, False]])
    m = entity_loss_mask(mask0, [4, 9], centers, vis, mode="shift")
    assert m.shape == (3, 1, h, w) and set(torch.unique(m).tolist()) == {0.0, 1.0}
    assert torch.equal(m[0, 0] > 0, torch.from_numpy(mask0 > 0))
    exp1 = np.zeros((h, w), bool)
    exp1[9:19, 13:19] = True                              # moved by round(3.2, -1.2) = (3, -1)
    exp1[30:35, 40:45] = True
    assert torch.equal(m[1, 0] > 0, torch.from_numpy(exp1))
    exp2 = np.zeros((h, w), bool)
    exp2[10:20, 17:23] = True                             # entity 9 invisible at t=2: left out
    assert torch.equal(m[2, 0] > 0, torch.from_numpy(exp2))
    first = entity_loss_mask(mask0, [4, 9], centers, vis, mode="first")
    assert torch.equal(first[1, 0] > 0, torch.from_numpy(mask0 > 0))
    circ = entity_loss_mask(mask0, [4, 9], centers, vis, radii=[3.0, 2.0], mode="circle")
    assert bool(circ[1, 0, 14, 16]) and not bool(circ[1, 0, 14, 11])
    with pytest.raises(ValueError):
        entity_loss_mask(mask0, [4, 9], centers, vis, mode="circle")
