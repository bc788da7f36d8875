"""Optical-flow backends and helpers on a synthetic clip with a known subpixel translation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.flow.base import FLOW_BACKENDS, FlowBackend, make_flow_backend
from stages.flow.cpu import DISFlow, FarnebackFlow
from stages.flow.ops import endpoint_error, warp

W, H, L = 576, 320, 6
DX, DY = 2.5, -1.25          # content motion per frame (px)
PAD = 48                     # texture margin around the frame
BORDER = 16                  # pixels left out of the accuracy checks


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


def translating_clip(dx: float = DX, dy: float = DY, length: int = L, seed: int = 0) -> np.ndarray:
    """(length, H, W, 3) uint8 frames; frame t+1 is frame t moved by (dx, dy)."""
    tex = smooth_texture(H + 2 * PAD, W + 2 * PAD, seed)
    frames = []
    for t in range(length):
        # frame_t(x, y) = tex(x + PAD - t*dx, y + PAD - t*dy)
        m = np.float32([[1, 0, PAD - t * dx], [0, 1, PAD - t * dy]])
        f = cv2.warpAffine(tex, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


def true_flow(n: int = L - 1) -> np.ndarray:
    f = np.zeros((n, 2, H, W), np.float32)
    f[:, 0], f[:, 1] = DX, DY
    return f


@pytest.fixture(scope="module")
def clip():
    return translating_clip()


@pytest.fixture(scope="module")
def dis_medium():
    return DISFlow("medium")


@pytest.fixture(scope="module")
def dis_flow(clip, dis_medium):
    return dis_medium.forward(clip)


def test_dis_medium_recovers_subpixel_translation(dis_flow):
    assert dis_flow.shape == (L - 1, 2, H, W)
    assert dis_flow.dtype == np.float32
    epe = endpoint_error(dis_flow, true_flow(), margin=BORDER)
    print(f"DIS medium EPE: {epe:.4f} px")
    assert epe < 0.5
    # every pair, not just on average
    for t in range(L - 1):
        assert endpoint_error(dis_flow[t], true_flow(1)[0], margin=BORDER) < 0.5


@pytest.mark.parametrize("preset", ["ultrafast", "fast"])
def test_dis_other_presets(clip, preset):
    b = make_flow_backend("dis", preset=preset)
    f = b.forward(clip[:3])
    assert f.shape == (2, 2, H, W) and f.dtype == np.float32
    assert endpoint_error(f, true_flow(2), margin=BORDER) < 0.5
    d = b.describe()
    assert d["backend"] == "dis" and d["preset"] == preset


def test_dis_reuses_its_opencv_object(clip):
    b = DISFlow("ultrafast")
    obj = b._dis
    b.forward(clip[:2])
    b.pairs(clip[1:3], clip[:2])
    assert b._dis is obj


def test_pairs_matches_forward_and_backward(clip, dis_medium, dis_flow):
    np.testing.assert_array_equal(dis_medium.pairs(clip[:-1], clip[1:]), dis_flow)
    bwd = dis_medium.backward(clip)
    np.testing.assert_array_equal(dis_medium.pairs(clip[1:], clip[:-1]), bwd)


def test_backward_is_minus_forward_for_translation(clip, dis_medium, dis_flow):
    bwd = dis_medium.backward(clip)
    assert bwd.shape == dis_flow.shape and bwd.dtype == np.float32
    assert endpoint_error(bwd, -true_flow(), margin=BORDER) < 0.5
    assert endpoint_error(bwd, -dis_flow, margin=BORDER) < 0.2


def test_farneback_runs(clip):
    b = make_flow_backend("farneback")
    assert isinstance(b, FarnebackFlow) and isinstance(b, FlowBackend)
    f = b.forward(clip[:3])
    assert f.shape == (2, 2, H, W) and f.dtype == np.float32
    assert np.all(np.isfinite(f))
    assert endpoint_error(f, true_flow(2), margin=BORDER) < 1.0
    d = b.describe()
    assert d["backend"] == "farneback"
    assert (d["pyr_scale"], d["levels"], d["winsize"], d["iterations"], d["poly_n"], d["poly_sigma"]) == \
        (0.5, 3, 15, 3, 5, 1.2)


def test_farneback_params_and_unknown_param():
    assert FarnebackFlow(winsize=21).describe()["winsize"] == 21
    with pytest.raises(ValueError, match="winsiz"):
        FarnebackFlow(winsiz=21)


def test_warp_reproduces_previous_frame(clip, dis_flow):
    inner = (slice(BORDER, H - BORDER), slice(BORDER, W - BORDER))
    for t in range(L - 1):
        prev = clip[t].astype(np.float32)
        unwarped = np.abs(clip[t + 1].astype(np.float32) - prev)[inner].mean()
        for flow_t in (true_flow(1)[0], dis_flow[t]):
            w = warp(clip[t + 1], flow_t)
            assert w.shape == clip[t + 1].shape and w.dtype == np.uint8
            err = np.abs(w.astype(np.float32) - prev)[inner]
            assert err.mean() < 2.0, (t, err.mean())
            assert err.mean() < 0.2 * unwarped
            assert np.percentile(err, 99) < 8


def test_warp_integer_flow_is_exact_shift():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    flow = np.zeros((2, 40, 50), np.float32)
    flow[0], flow[1] = 3, -2
    out = warp(img, flow)
    # out[y, x] = img[y - 2, x + 3]
    np.testing.assert_array_equal(out[2:, :-3], img[:-2, 3:])
    # grayscale, float and many-channel images keep shape and dtype
    g = warp(img[..., 0], flow)
    assert g.shape == (40, 50) and g.dtype == np.uint8
    many = rng.random((40, 50, 7)).astype(np.float32)
    wm = warp(many, flow)
    assert wm.shape == many.shape and wm.dtype == np.float32
    np.testing.assert_allclose(wm[2:, :-3], many[:-2, 3:], atol=1e-6)
    one = warp(many[..., :1], flow)
    assert one.shape == (40, 50, 1)
    with pytest.raises(ValueError):
        warp(img, flow[:, :-1])


def test_endpoint_error_values_and_margin():
    a = np.zeros((2, 2, 10, 12), np.float32)
    b = np.zeros_like(a)
    b[:, 0], b[:, 1] = 3.0, 4.0
    assert endpoint_error(a, b) == pytest.approx(5.0)
    b[:, :, 0, :] = 100.0             # border row only
    assert endpoint_error(a, b, margin=1) == pytest.approx(5.0)
    assert endpoint_error(a[0], b[0], margin=1) == pytest.approx(5.0)
    assert endpoint_error(a, b) > 5.0
    with pytest.raises(ValueError):
        endpoint_error(a, b[:, :, :5])


def test_bad_names_raise_useful_errors():
    with pytest.raises(ValueError) as e:
        DISFlow("slow")
    msg = str(e.value)
    assert "slow" in msg and all(p in msg for p in ("ultrafast", "fast", "medium"))
    with pytest.raises(ValueError) as e:
        make_flow_backend("dis", preset="turbo")
    assert "medium" in str(e.value)
    with pytest.raises(ValueError) as e:
        make_flow_backend("flownet")
    msg = str(e.value)
    assert "flownet" in msg and "dis" in msg and "farneback" in msg


def test_registry_accepts_the_worker_options():
    # the worker passes FlowConfig's generic options; CPU backends ignore them
    b = make_flow_backend("dis", preset="fast", device="auto", batch_size=8)
    assert isinstance(b, DISFlow) and b.preset == "fast"
    b = make_flow_backend("farneback", preset="medium", device="auto", batch_size=8, levels=4)
    assert b.params["levels"] == 4
    with pytest.raises(ValueError):
        make_flow_backend("dis", levels=4)
    assert {"dis", "farneback"} <= set(FLOW_BACKENDS)


def test_input_validation(clip):
    b = DISFlow("ultrafast")
    with pytest.raises(ValueError):
        b.pairs(clip[:2], clip[:1])
    with pytest.raises(ValueError):
        b.forward(clip[:2].astype(np.float32))
    with pytest.raises(ValueError):
        b.forward(clip[0])
    assert b.forward(clip[:1]).shape == (0, 2, H, W)


def test_make_flow_backend_from_settings_object():
    """One way to build the configured backend (worker and preflight): backend + preset and
    the generic options that are set; overrides replace options."""
    from types import SimpleNamespace

    from stages.flow.base import make_flow_backend_from

    s = SimpleNamespace(backend="DIS", preset="fast", checkpoint=None, source=None, device="cpu", batch_size=4)
    b = make_flow_backend_from(s)
    assert isinstance(b, DISFlow) and b.preset == "fast"
    assert make_flow_backend_from(s, device="cuda").preset == "fast"   # CPU backends ignore the device
    with pytest.raises(ValueError, match="unknown flow backend 'nope'"):
        make_flow_backend_from(SimpleNamespace(backend="nope", preset="fast"))


# ---- pair by pair (issue 25: the flow step never holds a second float32 copy of the flow)

@pytest.mark.parametrize("make", [lambda: DISFlow("fast"), lambda: FarnebackFlow()])
def test_forward_pairs_gives_forward_pair_by_pair_bit_for_bit(clip, make):
    backend = make()
    pairs = list(backend.forward_pairs(clip))
    whole = backend.forward(clip)
    assert len(pairs) == len(clip) - 1 and all(p.shape == (2, H, W) and p.dtype == np.float32 for p in pairs)
    assert np.stack(pairs).tobytes() == whole.tobytes()


def test_forward_pairs_of_a_plugin_backend(monkeypatch):
    """A backend that implements ``pairs`` gets chunks of it; one that overrides ``forward``
    alone keeps its own way of computing a clip."""
    monkeypatch.setattr(FlowBackend, "PAIRS_PER_CALL", 3)
    clip = np.ascontiguousarray(translating_clip(length=11)[:, :64, :96])

    class Pairs(FlowBackend):
        calls = []

        def pairs(self, src, dst):
            self.calls.append(len(src))
            return (dst.astype(np.float32) - src.astype(np.float32))[..., :2].transpose(0, 3, 1, 2).copy()

    class Whole(FlowBackend):
        def forward(self, frames):
            return np.full((len(frames) - 1, 2) + frames.shape[1:3], 7.0, np.float32)

    class Wrapped(DISFlow):     # wraps forward (as tests/pipeline/reliability_util's faulty backend)
        def forward(self, frames):
            return super().forward(frames) + 1.0

    p = Pairs()
    assert np.stack(list(p.forward_pairs(clip))).tobytes() == p.forward(clip).tobytes()
    assert p.calls == [3, 3, 3, 1, 10]             # forward_pairs: PAIRS_PER_CALL (3) at a time; forward: 10
    assert np.stack(list(Whole().forward_pairs(clip))).tobytes() == Whole().forward(clip).tobytes()
    w = Wrapped("fast")
    assert np.stack(list(w.forward_pairs(clip))).tobytes() == w.forward(clip).tobytes()
