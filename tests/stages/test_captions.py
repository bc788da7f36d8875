"""stages.captions: the caption rule, the up-front checks, and BLIP-2 from a local folder
(a tiny random-weight model saved by tests/conftest.py save_tiny_blip2, loaded through the
same Blip2Captioner code a user's folder goes through)."""
import hashlib
import os
import socket
import sys

import numpy as np
import pytest

from stages.captions import (CAPTION_INSTALL_HELP, Blip2Captioner, check_caption_settings, check_model_dir,
                             choose_caption, merge_captions, resolve_frames)


def _clips(n, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (length, 40, 56, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("mode, caption, available, expected", [
    ("auto", "a dog runs", True, "dataset"),
    ("auto", "a dog runs", False, "dataset"),
    ("auto", "", True, "blip2"),
    ("auto", "  \n", True, "blip2"),     # blank counts as missing
    ("auto", None, False, "none"),
    ("dataset", "a dog", True, "dataset"),
    ("dataset", "", True, "none"),        # never generated in dataset mode
    ("blip2", "a dog", True, "blip2"),    # replaces dataset captions
    ("none", "a dog", True, "none"),
])
def test_choose_caption(mode, caption, available, expected):
    assert choose_caption(mode, caption, available) == expected


def test_choose_caption_rejects_bad_settings():
    with pytest.raises(ValueError, match="auto, dataset, blip2, none"):
        choose_caption("blip", "x", True)
    with pytest.raises(ValueError, match="--caption-model"):
        choose_caption("blip2", "x", False)


def test_frames_and_merge_rule():
    assert resolve_frames(("first",), 16) == [0]
    assert resolve_frames(("first", "mid", "last"), 16) == [0, 7, 15]
    assert resolve_frames((0, "mid", -1), 8) == [0, 3, 7]
    assert resolve_frames(("first", "mid", "last"), 1) == [0]      # repeated indices captioned once
    with pytest.raises(ValueError, match="outside"):
        resolve_frames((20,), 16)
    with pytest.raises(ValueError, match="first, mid, last"):
        resolve_frames(("middle",), 16)
    assert merge_captions(["a dog", "a  dog ", "", "a cat"]) == "a dog; a cat"
    assert merge_captions(["", ""]) == ""


# ---------------------------------------------------------------- up-front checks
def test_missing_or_incomplete_folder_fails_up_front(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        Blip2Captioner(tmp_path / "nope")
    assert "hf download" in str(e.value) and "nothing is downloaded" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_caption_settings("auto", str(tmp_path / "nope"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"incomplete: missing weights .*image processor.*tokenizer"):
        check_model_dir(tmp_path / "half")
    with pytest.raises(ValueError, match="needs --caption-model"):
        check_caption_settings("blip2", None)
    with pytest.raises(ValueError, match="auto, dataset, blip2, none"):
        check_caption_settings("bogus", None)
    check_caption_settings("auto", None)                          # no model: nothing to check
    check_caption_settings("dataset", str(tmp_path / "nope"))     # the model is not used


def test_transformers_missing_says_how_to_install(tmp_path, monkeypatch):
    d = tmp_path / "blip2"
    d.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        (d / name).write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)      # `import transformers` now raises ImportError
    with pytest.raises(ImportError) as e:
        Blip2Captioner(d)
    assert CAPTION_INSTALL_HELP in str(e.value) and "pip install -e '.[captions]'" in str(e.value)
    with pytest.raises(ImportError, match=r"\.\[captions\]"):
        check_caption_settings("auto", str(d))


# ---------------------------------------------------------------- the model
def test_loads_offline_and_records_provenance(tiny_blip2, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the captioner tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cap = Blip2Captioner(tiny_blip2, device="cpu", max_new_tokens=6)
    texts = cap.caption_many(_clips(4))
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert any(texts) and len(set(texts)) > 1, texts          # the images reach the model
    assert os.environ.get("HF_HUB_OFFLINE") is None or os.environ["HF_HUB_OFFLINE"] == "1"
    digest = hashlib.sha256(open(os.path.join(tiny_blip2, "model.safetensors"), "rb").read()).hexdigest()[:12]
    assert cap.describe() == {"source": "blip2", "model": f"tiny-blip2@{digest}", "prompt": None,
                              "frames": ["first"], "max_new_tokens": 6}
    assert cap._precision == "fp32" and str(cap._device) == "cpu"


def test_batching_gives_the_same_captions_as_batch_1(tiny_blip2):
    clips = _clips(5, seed=1)
    kw = dict(device="cpu", max_new_tokens=6, frames=("first", "mid", "last"))
    one = Blip2Captioner(tiny_blip2, batch_size=1, **kw).caption_many(clips)
    many = Blip2Captioner(tiny_blip2, batch_size=8, **kw).caption_many(clips)   # 15 images: batches 8 + 7
    assert one == many
    singles = Blip2Captioner(tiny_blip2, batch_size=4, **kw)
    assert [singles.caption(c) for c in clips] == one
    # The merge rule: each clip's caption is its frames' distinct captions joined by "; ".
    per_frame = singles.caption_images([c[i] for c in clips[:1] for i in (0, 2, 5)])
    assert one[0] == merge_captions(per_frame)


def test_prompt_is_not_part_of_the_caption(tiny_blip2):
    cap = Blip2Captioner(tiny_blip2, device="cpu", max_new_tokens=5, prompt="a photo of")
    texts = cap.caption_many(_clips(3, seed=2))
    assert all(not t.startswith("a photo of") for t in texts if t), texts
    assert cap.describe()["prompt"] == "a photo of"


def test_bad_settings_are_rejected(tiny_blip2):
    with pytest.raises(ValueError, match="batch_size"):
        Blip2Captioner(tiny_blip2, batch_size=0)
    with pytest.raises(ValueError, match="first, mid, last"):
        Blip2Captioner(tiny_blip2, frames=("middle",))
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        Blip2Captioner(tiny_blip2, device="cpu", dtype="fp16").load()
