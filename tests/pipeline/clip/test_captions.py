"""Captions in the pipeline (issue 16): a VideoHD folder where one clip has a dataset caption
and the others none, run with ``--captions auto --caption-model DIR`` (a tiny random-weight
BLIP-2 from tests/conftest.py): the captioned clip keeps its text (``meta.caption.source ==
"dataset"``), the others get BLIP-2 text (``source == "blip2"``) in their ``.txt`` member."""
import dataclasses
import glob
import json
import tarfile

import pytest

from pipeline.config import CaptionConfig, Config, load_config
from pipeline.inputs.manifest import build_manifest
from pipeline.testdata.synthetic import random_scene, write_mp4
from pipeline.clip.loop import ClipSteps

DATASET_CAPTION = "a red ball rolls to the left"


@pytest.fixture(scope="module")
def videohd(tmp_path_factory):
    root = tmp_path_factory.mktemp("videohd")
    for i, name in enumerate(("a.mp4", "b.mp4", "sub/c.mp4")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_mp4(root / name, random_scene(i, width=160, height=96, num_frames=12).frames, fps=6)  # 2 s
    (root / "captions.jsonl").write_text(json.dumps({"path": "a.mp4", "caption": DATASET_CAPTION}) + "\n")
    return root


def _cfg(model, **captions):
    cfg = Config(profile="dragnuwa-ld")
    return dataclasses.replace(cfg, captions=CaptionConfig(model=model, **captions))


def _rows(root):
    return sorted(build_manifest("videohd", root).to_pylist(), key=lambda r: r["source_id"])


def test_captions_step_auto_keeps_dataset_captions_and_fills_the_rest(videohd, tiny_blip2):
    proc = ClipSteps(_cfg(tiny_blip2, device="cpu", max_new_tokens=5))
    step = proc["captions"]
    states = [proc.process(r, until="captions").sample for r in _rows(videohd)]
    a, b, c = states
    assert a.caption == DATASET_CAPTION
    assert a.meta["caption"] == {"source": "dataset", "model": None, "prompt": None, "frames": None,
                                    "max_new_tokens": None}
    digest = step.captioner.describe()["model"]
    assert digest.startswith("tiny-blip2@") and len(digest.split("@")[1]) == 12
    for s in (b, c):
        assert s.meta["caption"] == {"source": "blip2", "model": digest, "prompt": None, "frames": [0],
                                     "max_new_tokens": 5}
        assert s.meta["caption_empty"] == (not s.caption.strip())
    # The batched call a GPU operator makes gives the same captions as one clip at a time.
    rows = _rows(videohd)
    fresh = [proc.process(r, until="decode") for r in rows]
    proc.run(fresh, ["captions"])                               # the three clips in one model call
    assert [w.sample.caption for w in fresh] == [s.caption for s in states]
    assert [w.stages_done for w in fresh] == [["decode", "captions"]] * 3
    rest = proc.process(rows[1], until="flow", sample=fresh[1].sample)  # goes on after the batched call
    assert "captions" not in rest.timings and rest.stages_done == ["decode", "captions", "flow"]
    # It captioned the frames the shard stores (the JPEG round trip), first frame by default.
    assert step.captioner.caption_many([b.frames[:1]]) == [b.caption]


def test_modes_dataset_blip2_none(videohd, tiny_blip2):
    rows = _rows(videohd)
    dataset = ClipSteps(_cfg(tiny_blip2, source="dataset"))
    s = [dataset.process(r, until="captions").sample for r in rows]
    assert [x.meta["caption"]["source"] for x in s] == ["dataset", "none", "none"]
    assert [x.meta["caption_empty"] for x in s] == [False, True, True] and dataset["captions"].captioner is None
    blip2 = ClipSteps(_cfg(tiny_blip2, source="blip2", device="cpu", max_new_tokens=4, frames=("first", "last")))
    s = [blip2.process(r, until="captions").sample for r in rows]
    assert [x.meta["caption"]["source"] for x in s] == ["blip2"] * 3
    assert s[0].meta["caption"]["frames"] == [0, 7]
    none = ClipSteps(_cfg(None, source="none"))
    s = none.process(rows[0], until="captions").sample
    assert s.caption == "" and s.meta["caption"]["source"] == "none" and s.meta["caption_empty"]
    auto_no_model = ClipSteps(_cfg(None))          # today's behaviour: dataset or empty
    s = [auto_no_model.process(r, until="captions").sample for r in rows]
    assert [x.meta["caption"]["source"] for x in s] == ["dataset", "none", "none"]


def test_the_captioner_comes_from_the_registry(tiny_blip2):
    """The captions step builds its captioner as ``CAPTIONERS`` entry "blip2" (so a plugin's
    replacement is used), once per process, with the caption settings as options; ``dataset``
    builds none."""
    from stages.captions import CAPTIONERS, Blip2Captioner

    made = []
    CAPTIONERS.register("blip2", lambda **kw: made.append(kw) or "fake captioner")
    try:
        step = ClipSteps(_cfg(tiny_blip2, source="blip2", device="cpu", max_new_tokens=4))["captions"]
        assert step.captioner == "fake captioner" and step.captioner == "fake captioner" and len(made) == 1
        assert made[0] == {"model_dir": tiny_blip2, "device": "cpu", "batch_size": 8, "prompt": None,
                           "max_new_tokens": 4, "frames": ("first",), "dtype": "auto"}
        assert ClipSteps(_cfg(tiny_blip2, source="dataset"))["captions"].captioner is None and len(made) == 1
    finally:
        CAPTIONERS.register("blip2", Blip2Captioner)


def test_missing_model_folder_fails_before_any_clip(tmp_path):
    from pipeline.steps import SetupError

    with pytest.raises(SetupError, match="caption model folder .* does not exist"):
        ClipSteps(_cfg(str(tmp_path / "nope")))["captions"].setup()
    with pytest.raises(SetupError, match="needs --caption-model"):
        ClipSteps(_cfg(None, source="blip2"))["captions"].setup()


def test_config_section_from_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("captions: {source: blip2, model: /m, frames: [first, mid, -1], batch_size: 4}\n")
    c = load_config(p).captions
    assert (c.source, c.model, c.frames, c.batch_size) == ("blip2", "/m", ("first", "mid", -1), 4)


def test_cli_run_auto_with_caption_model(videohd, tiny_blip2, tmp_path):
    """The issue's "must show": one sample keeps its dataset text, the others get BLIP-2's."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("captions: {device: cpu, max_new_tokens: 5}\nisolation: {enabled: false}\n")
    res = CliRunner().invoke(app, ["run", "--dataset", "videohd", "--data", str(videohd), "--out", str(out),
                                   "--executor", "local", "--profile", "dragnuwa-ld", "--masks", "none",
                                   "--config", str(cfg), "--captions", "auto", "--caption-model", tiny_blip2])
    assert res.exit_code == 0, res.output
    samples = {}
    for tar in glob.glob(str(out / "*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    assert len(samples) == 3
    by_source = {}
    for members in samples.values():
        meta = json.loads(members["json"])
        by_source.setdefault(meta["caption"]["source"], []).append((meta, members["txt"].decode()))
    assert sorted((k, len(v)) for k, v in by_source.items()) == [("blip2", 2), ("dataset", 1)]
    meta, text = by_source["dataset"][0]
    assert text == DATASET_CAPTION and meta["source_id"] == "a.mp4" and not meta["caption_empty"]
    for meta, text in by_source["blip2"]:
        assert meta["caption"]["model"].startswith("tiny-blip2@") and meta["caption_empty"] == (not text.strip())
    assert "captions" in meta["stages_done"]


@pytest.mark.parametrize("flags, message", [
    (["--captions", "blip2"], "needs --caption-model"),
    (["--caption-model", "no/such/folder"], "does not exist"),
    (["--captions", "bogus"], "auto, dataset, blip2, none"),
])
def test_cli_bad_caption_settings_fail_before_any_clip(videohd, tmp_path, flags, message):
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--dataset", "videohd", "--data", str(videohd), "--out", str(out),
                                   "--executor", "local", *flags])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not glob.glob(str(out / "*.tar"))
