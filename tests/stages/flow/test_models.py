"""Torch flow backends on the CPU: RAFT with random weights loaded through the real loading
code (a temp checkpoint file), UniMatch's source import and its errors."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from pipeline.testdata.synthetic import disc, render_scene, write_mp4  # noqa: E402
from stages.flow.base import FLOW_BACKENDS, FlowBackend, make_flow_backend  # noqa: E402
from stages.flow.models import (  # noqa: E402
    RAFT_WEIGHTS_HELP, UNIMATCH_HELP, RAFTFlow, UniMatchFlow, load_state_dict,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture(scope="module")
def raft_small_ckpt(tmp_path_factory):
    """A random-weight torchvision raft_small saved as a user's checkpoint file would be."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def clip():
    """(5, 100, 140, 3) uint8: a textured disc moving over a panning background (sizes not
    multiples of 8 and below RAFT's 128 px minimum, so padding and cropping are exercised)."""
    return render_scene(140, 100, 5, [disc((70, 50), 20, velocity=(1.5, -0.5))],
                        background_velocity=(0.5, 0.25), seed=1).frames


@pytest.fixture(scope="module")
def raft(raft_small_ckpt):
    return make_flow_backend("raft", preset="fast", checkpoint=raft_small_ckpt, device="cpu", batch_size=2)


def test_registered_lazily_without_importing_torch_for_cpu_backends():
    assert {"raft", "unimatch"} <= set(FLOW_BACKENDS)
    code = ("import sys; from stages.flow import make_flow_backend; make_flow_backend('dis', preset='fast'); "
            "make_flow_backend('farneback'); assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_raft_forward_shapes_dtype_finite(raft, clip):
    assert isinstance(raft, RAFTFlow) and isinstance(raft, FlowBackend)
    flow = raft.forward(clip)
    assert flow.shape == (4, 2, 100, 140)
    assert flow.dtype == np.float32
    assert np.all(np.isfinite(flow))
    assert flow.std() > 0  # not a constant (the model really ran)


def test_raft_describe(raft, raft_small_ckpt):
    d = raft.describe()
    assert d["backend"] == "raft" and d["model"] == "raft_small"  # detected from the weights
    assert d["checkpoint"] == os.path.basename(raft_small_ckpt)
    assert len(d["checkpoint_sha256"]) == 12
    assert d["precision"] == "fp32" and d["device"] == "cpu" and d["batch_size"] == 2 and d["iters"] == 12


def test_raft_batching_matches_one_pair_at_a_time(raft, raft_small_ckpt, clip):
    one = make_flow_backend("raft", preset="fast", checkpoint=raft_small_ckpt, device="cpu", batch_size=1)
    batched = raft.forward(clip)                       # batches of 2 pairs
    single = np.concatenate([one.pairs(clip[i:i + 1], clip[i + 1:i + 2]) for i in range(len(clip) - 1)])
    scale = max(1.0, float(np.abs(single).max()))
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(one.forward(clip), single, rtol=0, atol=1e-4 * scale)


def test_raft_pairs_backward_and_forward_many_agree(raft, clip):
    fwd = raft.forward(clip)
    np.testing.assert_allclose(raft.pairs(clip[:-1], clip[1:]), fwd, rtol=0, atol=1e-4 * max(1, np.abs(fwd).max()))
    bwd = raft.backward(clip)
    ref = raft.pairs(clip[1:], clip[:-1])
    np.testing.assert_allclose(bwd, ref, rtol=0, atol=1e-4 * max(1, np.abs(ref).max()))
    other = clip[::-1].copy()
    many = raft.forward_many([clip, other[:3]])        # 4 + 2 pairs across two clips
    assert [m.shape[0] for m in many] == [4, 2]
    np.testing.assert_allclose(many[0], fwd, rtol=0, atol=1e-4 * max(1, np.abs(fwd).max()))
    ref2 = raft.forward(other[:3])
    np.testing.assert_allclose(many[1], ref2, rtol=0, atol=1e-4 * max(1, np.abs(ref2).max()))
    with pytest.raises(ValueError, match="one frame size"):
        raft.forward_many([clip, clip[:, :90]])


def test_raft_bf16_autocast_on_cpu(raft_small_ckpt, clip):
    b = make_flow_backend("raft", checkpoint=raft_small_ckpt, device="cpu", precision="bf16", iters=2)
    flow = b.forward(clip[:3])
    assert flow.dtype == np.float32 and flow.shape == (2, 2, 100, 140) and np.all(np.isfinite(flow))
    assert b.describe()["precision"] == "bf16" and b.describe()["iters"] == 2
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        make_flow_backend("raft", checkpoint=raft_small_ckpt, device="cpu", precision="fp16")


def test_raft_loads_wrapped_dataparallel_checkpoints(tmp_path, raft_small_ckpt, clip, raft):
    sd = torch.load(raft_small_ckpt, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, wrapped)
    assert set(load_state_dict(str(wrapped), "RAFT")) == set(sd)
    b = make_flow_backend("raft", checkpoint=str(wrapped), device="cpu", batch_size=2, model="small")
    np.testing.assert_array_equal(b.forward(clip[:2]), raft.forward(clip[:2]))


def test_raft_checkpoint_errors(tmp_path, raft_small_ckpt):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as e:
        make_flow_backend("raft", preset="fast", checkpoint=str(missing), device="cpu")
    assert str(missing) in str(e.value) and "Raft_Large_Weights" in str(e.value)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        make_flow_backend("raft", preset="fast", device="cpu")
    bad = tmp_path / "bad.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bad)
    with pytest.raises(ValueError, match="does not match torchvision raft"):
        make_flow_backend("raft", checkpoint=str(bad), device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        make_flow_backend("raft", checkpoint=str(junk), device="cpu")
    with pytest.raises(ValueError, match="does not match torchvision raft_large"):
        make_flow_backend("raft", checkpoint=raft_small_ckpt, device="cpu", model="large")
    with pytest.raises(ValueError, match="unknown option"):
        make_flow_backend("raft", checkpoint=raft_small_ckpt, device="cpu", turbo=True)
    with pytest.raises(ValueError, match="precision"):
        make_flow_backend("raft", checkpoint=raft_small_ckpt, device="cpu", precision="int8")
    assert "get_state_dict" in RAFT_WEIGHTS_HELP


def test_raft_through_the_worker(tmp_path, raft_small_ckpt):
    """The pipeline's flow step creates the backend from the config and runs it."""
    from pipeline.clip.loop import ClipSteps
    from pipeline.config import Config, FlowConfig

    scene = render_scene(336, 192, 12, [disc((150, 90), 30, velocity=(6, 2))], background_velocity=(2, 0), seed=4)
    path = write_mp4(tmp_path / "clip.mp4", scene.frames, 6)
    cfg = Config(profile="dragnuwa-ld", flow=FlowConfig(backend="raft", checkpoint=raft_small_ckpt, device="cpu",
                                                        batch_size=4))
    row = {"clip_id": "c0", "row": 0, "dataset": "t", "source_id": "c0", "source": str(path), "caption": "x"}
    state = ClipSteps(cfg).apply(["decode", "flow"], None, row)
    assert state.flow.shape == (7, 2, 192, 320) and state.flow.dtype == np.float32
    assert state.meta["flow"]["backend"] == "raft" and state.meta["flow"]["model"] == "raft_small"


# ------------------------------------------------------------------------------- UniMatch
def test_unimatch_missing_source_says_how_to_get_it(tmp_path):
    with pytest.raises(ImportError) as e:
        make_flow_backend("unimatch", preset="fast", checkpoint=str(tmp_path / "w.pth"), device="cpu")
    assert "git clone https://github.com/autonomousvision/unimatch" in str(e.value)
    assert "flow.source" in str(e.value)
    with pytest.raises(ImportError) as e:
        make_flow_backend("unimatch", checkpoint=str(tmp_path / "w.pth"), source=str(tmp_path), device="cpu")
    assert "no unimatch/unimatch.py" in str(e.value) and "git clone" in str(e.value)
    assert "MODEL_ZOO" in UNIMATCH_HELP


# A stand-in for the UniMatch source folder with the same constructor and forward signature
# (a tiny conv net), so that the backend's import, loading, padding and cropping code runs.
_STANDIN = '''
import torch
from torch import nn


class UniMatch(nn.Module):
    def __init__(self, num_scales=1, feature_channels=128, upsample_factor=8, num_head=1,
                 ffn_dim_expansion=4, num_transformer_layers=6, reg_refine=False, task="flow"):
        super().__init__()
        self.num_scales, self.reg_refine = num_scales, reg_refine
        self.net = nn.Conv2d(6, 2, 3, padding=1)
        if reg_refine:
            self.refine_proj = nn.Conv2d(128, 256, 1)

    def forward(self, img0, img1, attn_type, attn_splits_list, corr_radius_list, prop_radius_list,
                num_reg_refine=1, pred_bidir_flow=False, task="flow"):
        assert len(attn_splits_list) == self.num_scales and img0.shape[-1] % 32 == 0 and img0.shape[-2] % 32 == 0
        return {"flow_preds": [self.net(torch.cat([img0, img1], 1) / 255.0)]}
'''


@pytest.fixture
def unimatch_source(tmp_path):
    root = tmp_path / "unimatch_src"
    (root / "unimatch").mkdir(parents=True)
    (root / "unimatch" / "__init__.py").write_text("")
    (root / "unimatch" / "unimatch.py").write_text(textwrap.dedent(_STANDIN))
    yield str(root)
    for name in [m for m in sys.modules if m == "unimatch" or m.startswith("unimatch.")]:
        del sys.modules[name]
    if str(root) in sys.path:
        sys.path.remove(str(root))


def test_unimatch_from_source_folder(unimatch_source, tmp_path, clip):
    sys.path.insert(0, unimatch_source)
    try:
        from unimatch.unimatch import UniMatch
    finally:
        sys.path.remove(unimatch_source)
    torch.manual_seed(0)
    ckpt = tmp_path / "gmflow-scale2-regrefine6-test.pth"
    torch.save({"model": UniMatch(num_scales=2, upsample_factor=4, reg_refine=True).state_dict()}, ckpt)
    b = make_flow_backend("unimatch", preset="fast", checkpoint=str(ckpt), source=unimatch_source, device="cpu",
                          batch_size=3)
    assert isinstance(b, UniMatchFlow) and b.pad_multiple == 32
    flow = b.forward(clip)
    assert flow.shape == (4, 2, 100, 140) and flow.dtype == np.float32 and np.all(np.isfinite(flow))
    d = b.describe()
    assert d["backend"] == "unimatch" and d["model"] == "scale2-regrefine6" and d["num_reg_refine"] == 6
    with pytest.raises(ValueError, match="does not match UniMatch scale1"):
        make_flow_backend("unimatch", checkpoint=str(ckpt), source=unimatch_source, device="cpu", model="scale1")


def test_raft_forward_pairs_are_forward_in_its_batches(raft, clip):
    pairs = list(raft.forward_pairs(clip))
    assert len(pairs) == 4 and all(p.shape == (2, 100, 140) for p in pairs)
    assert np.stack(pairs).tobytes() == raft.forward(clip).tobytes()     # the same batches of 2 pairs
