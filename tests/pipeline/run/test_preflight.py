"""Preflight: every configured backend is built once, through the workers' own factories,
before any clip is scheduled; a broken setup is one SetupError with the backend's message
and the fix, and nothing is left under OUT."""
from __future__ import annotations

import os
import time

import pytest

from pipeline.config import Config
from pipeline.run.preflight import SetupError, check_device, check_out_dir, devices_requested, format_preflight, preflight


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_default_cpu_config_is_cheap_and_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    t0 = time.perf_counter()
    desc = preflight(Config(), str(out))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    preflight(Config(), str(out))
    again = time.perf_counter() - t0
    assert first < 2.0 and again < 0.5, (first, again)   # first: imports of cv2 and the stages
    assert out.is_dir() and os.listdir(out) == []      # created, probe removed
    assert desc["flow"] == "dis medium" and desc["tracker"] == "flow"
    assert desc["masks.gt"] == "gt" and desc["masks.motion"] == "motion-seg-v1"  # auto without SAM
    assert desc["backward_flow"] == "dis balanced"
    assert format_preflight(desc).startswith("setup ok (")


def test_stage_and_disabled_entities_build_only_what_is_used(tmp_path):
    raft_no_weights = Config().replace(**{"flow.backend": "raft"})
    assert set(preflight(raft_no_weights, str(tmp_path), stage="decode")) == {"out", "decode", "seconds"}
    desc = preflight(Config().replace(**{"entities.masks": "none"}), str(tmp_path))
    assert "flow" in desc and "tracker" not in desc and not any(k.startswith("masks") for k in desc)
    desc = preflight(Config().replace(**{"entities.masks": "gt"}), str(tmp_path), stage="trajectories")
    assert "tracker" not in desc


def test_the_decoder_is_built_and_tried(tmp_path, monkeypatch):
    """decode.backend: the decoder is built and decodes a clip before any clip is scheduled;
    with decord hidden (its import fails), auto takes pyav and says why, and decord asked
    for by name is a setup error that says how to install it."""
    import sys

    from stages.decoders import installed_decoders

    for name in installed_decoders():
        desc = preflight(Config().replace(**{"decode.backend": name}), str(tmp_path), stage="decode")
        assert desc["decode"].split()[0] == name
    if "decord" in installed_decoders():
        assert preflight(Config(), str(tmp_path), stage="decode")["decode"].startswith("decord ")
    monkeypatch.setitem(sys.modules, "decord", None)
    desc = preflight(Config(), str(tmp_path), stage="decode")
    assert desc["decode"].startswith("pyav ") and "(auto: decord does not import (" in desc["decode"]
    assert "decode pyav" in format_preflight(desc)
    with pytest.raises(SetupError) as e:
        preflight(Config().replace(**{"decode.backend": "decord"}), str(tmp_path))
    msg = str(e.value)
    assert msg.startswith("cannot set up the decoder 'decord': decoder 'decord' needs the 'decord' package")
    assert "pip install -e '.[decord]'" in msg and "to fix:" in msg
    # a device the decoder cannot use (here: no CUDA; on a GPU machine: pyav is CPU only)
    with pytest.raises(SetupError, match="decode.device"):
        preflight(Config().replace(**{"decode.backend": "pyav", "decode.device": "cuda"}), str(tmp_path))


def test_out_dir_problems(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(SetupError) as e:
        preflight(Config(), str(afile / "out"))
    assert f"cannot set up the output folder {afile / 'out'}" in str(e.value) and "--out" in str(e.value)
    uri = "file://" + str(tmp_path / "uri_out")
    assert check_out_dir(uri) == f"{uri} (writable)"
    assert os.listdir(tmp_path / "uri_out") == []


def test_raft_without_or_with_a_missing_weights_file(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(SetupError) as e:
        preflight(Config().replace(**{"flow.backend": "raft"}), str(tmp_path))
    msg = str(e.value)
    assert msg.startswith("cannot set up the flow backend 'raft': RAFT needs a checkpoint file (flow.checkpoint=PATH)")
    assert "to fix: set flow.checkpoint" in msg
    with pytest.raises(SetupError, match="RAFT checkpoint '/no/such/raft.pth' does not exist"):
        preflight(Config().replace(**{"flow.backend": "raft", "flow.checkpoint": "/no/such/raft.pth"}), str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def raft_small_ckpt(tmp_path_factory):
    """A random-weight torchvision raft_small saved as a user's checkpoint file would be."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.models.optical_flow")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "raft_small_random.pth"
    torch.save(tv.raft_small(weights=None).state_dict(), path)
    return str(path)


def test_raft_with_weights_and_devices(tmp_path, raft_small_ckpt):
    cfg = Config().replace(**{"flow.backend": "raft", "flow.checkpoint": raft_small_ckpt, "flow.device": "cpu"})
    desc = preflight(cfg, str(tmp_path))
    assert desc["flow"] == "raft raft_small on cpu"
    assert desc["backward_flow"] == "raft raft_small on cpu"   # backward_flow auto = the model backend
    cuda = cfg.replace(**{"flow.device": "cuda:99" if _cuda() else "cuda"})
    assert devices_requested(cuda) == {"flow.device": cuda.flow.device}
    with pytest.raises(SetupError) as e:
        preflight(cuda, str(tmp_path))
    assert e.value.args[0].startswith(f"cannot set up flow.device={cuda.flow.device}: ")
    assert "to fix: set flow.device to cpu or auto" in str(e.value)
    # a remote cluster's GPUs are not the driver's: the weights are checked on the CPU
    assert preflight(cuda, str(tmp_path), local_devices=False)["flow"] == "raft raft_small on cpu"


def test_check_device():
    assert check_device("auto", "x.device") == "auto" and check_device(None, "x.device") == "auto"
    assert check_device("cpu", "x.device") == "cpu"
    if not _cuda():
        with pytest.raises(SetupError, match="CUDA is not available on this machine"):
            check_device("cuda:0", "entities.device")


def test_sam_checkpoint_missing_and_real(tmp_path):
    with pytest.raises(SetupError) as e:
        preflight(Config().replace(**{"entities.masks": "sam", "entities.sam_checkpoint": "/no/such/file"}),
                  str(tmp_path))
    assert str(e.value).startswith("cannot set up the 'sam' mask source: SAM checkpoint /no/such/file does not exist")
    assert "--sam-checkpoint" in str(e.value) and "--masks motion" in str(e.value)

    torch = pytest.importorskip("torch")
    from stages.entities.masks_sam import build_sam_model

    torch.manual_seed(0)
    path = str(tmp_path / "tiny_sam.pth")
    torch.save(build_sam_model("tiny_test").state_dict(), path)
    sam = {"entities.sam_checkpoint": path, "entities.sam_model": "tiny_test", "entities.device": "cpu"}
    desc = preflight(Config().replace(**{"entities.masks": "sam", **sam}), str(tmp_path / "out"))
    assert desc["masks.sam"] == "sam_tiny_test on cpu" and "backward_flow" in desc   # the flow tracker's
    desc = preflight(Config().replace(**{"entities.masks": "auto", **sam}), str(tmp_path / "out"))
    assert "masks.sam" in desc and "masks.gt" in desc and "masks.motion" not in desc
    # a checkpoint of another model type
    with pytest.raises(SetupError, match="does not fit model type 'vit_b'"):
        preflight(Config().replace(**{"entities.masks": "sam", **sam, "entities.sam_model": "vit_b"}), str(tmp_path))


def test_cotracker_without_its_package(tmp_path):
    pytest.importorskip("torch")
    try:
        import cotracker  # noqa: F401
        pytest.skip("cotracker is installed here")
    except ImportError:
        pass
    with pytest.raises(SetupError) as e:
        preflight(Config().replace(**{"entities.tracker": "cotracker"}), str(tmp_path))
    assert str(e.value).startswith("cannot set up the 'cotracker' tracker: the 'cotracker' tracker needs the CoTracker package")
    assert "--tracker flow" in str(e.value)


def test_a_plugin_backend_that_fails_reports_its_own_message(tmp_path):
    plugin = tmp_path / "broken_flow_plugin.py"
    plugin.write_text("from stages.flow import register_flow_backend\n"
                      "def make(**kw):\n"
                      "    raise RuntimeError('the broken backend needs a licence key')\n"
                      "register_flow_backend('broken', make)\n")
    cfg = Config().replace(**{"plugins": [str(plugin)], "flow.backend": "broken"})
    with pytest.raises(SetupError, match="cannot set up the flow backend 'broken': the broken backend needs a licence key"):
        preflight(cfg, str(tmp_path / "out"))
