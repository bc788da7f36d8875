"""``evalset``: deterministic, drawn as the trainer draws, entities and real frames kept, exports."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluate import build_evalset, read_set
from pipeline.shards import expand_urls, iter_samples
from pipeline.train.loader import usable_spans
from schemas.sample import decode_sample


def shard_samples(out: str) -> dict[str, dict]:
    return {k: decode_sample(m, key=k) for u in expand_urls(out) for k, m in iter_samples(u)}


def test_the_set_is_the_trainers_draw_and_keeps_what_evaluation_needs(eval_shards, eval_set):
    shards = shard_samples(eval_shards.out)
    es = eval_set.set
    assert [s.key for s in es.samples] == list(shards)                  # every eligible sample, shard order
    assert es.index["format"] == "trajshards-evalset" and es.index["count"] == "max"
    assert "x right, y down" in es.index["coordinates"] and "x right, y down" in open(
        os.path.join(eval_set.path, "README.md")).read()
    for s in es.samples:
        src = shards[s.key]
        assert s.profile == {"name": "dragnuwa-ld", "frames": 8, "width": 320, "height": 192, "fps": 4.0}
        c = s.conditions()
        usable = usable_spans(src["anchor_reliable"])
        assert (usable[c["anchors"], 0] & usable[c["anchors"], 1]).all()   # reliable at frames 0 and 1
        np.testing.assert_array_equal(c["span"], usable[c["anchors"]])     # each ends at its first unreliable frame
        assert len(c["anchors"]) == min(8, int((usable[:, 0] & usable[:, 1]).sum())) == s.trajectories
        tr = src["anchor_tracks"][c["anchors"]]
        np.testing.assert_array_equal(c["tracks"][c["span"]], tr[c["span"]])
        last = c["span"].sum(1) - 1
        for i, e in enumerate(last):                                       # held past the span
            assert (c["tracks"][i, e:] == c["tracks"][i, e]).all()
        np.testing.assert_array_equal(s.real_frames(), src["frames"])       # the shard's JPEGs, byte for byte
        frame0 = cv2.imread(os.path.join(s.folder, "frame0.png"))[..., ::-1]
        np.testing.assert_array_equal(frame0, src["frames"][0])
        assert open(os.path.join(s.folder, "caption.txt")).read() == src["caption"]
        np.testing.assert_array_equal(c["entity_tracks"], src["entity_tracks"])
        np.testing.assert_array_equal(c["entity_mask"], src["entity_mask"])
        assert s.entities == len(src["entity_ids"]) > 0


def test_the_same_arguments_give_the_same_set(eval_shards, tmp_path):
    a = build_evalset(eval_shards.out, str(tmp_path / "a"), n=2, seed=5)
    b = build_evalset(eval_shards.out, str(tmp_path / "b"), n=2, seed=5)
    assert a["samples"] == b["samples"] and len(a["samples"]) == 2 and a["count"] == "trainer"
    for s in a["samples"]:
        za = np.load(tmp_path / "a" / "samples" / s["key"] / "conditions.npz")
        zb = np.load(tmp_path / "b" / "samples" / s["key"] / "conditions.npz")
        assert set(za.files) == set(zb.files)
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k])
        assert 1 <= s["trajectories"] <= 8                     # n ~ U[1, N]
    seeds = {tuple(s["key"] for s in build_evalset(eval_shards.out, str(tmp_path / f"s{i}"), n=1, seed=i,
                                                   entities=False)["samples"]) for i in range(6)}
    assert len(seeds) > 1                                      # the seed chooses the samples
    assert "entity_ids" not in read_set(str(tmp_path / "s0")).samples[0].conditions()


def test_exports_in_the_published_layouts(eval_set):
    root = os.path.join(eval_set.path, "exports")
    for s in eval_set.set.samples:
        c = s.conditions()
        tracks = np.load(os.path.join(root, "wan-move", f"{s.key}_tracks.npy"))
        vis = np.load(os.path.join(root, "wan-move", f"{s.key}_visibility.npy"))
        assert tracks.shape == (1, 8, s.trajectories, 2) and tracks.dtype == np.float32
        assert vis.shape == (1, 8, s.trajectories) and vis.dtype == bool
        np.testing.assert_array_equal(tracks[0].transpose(1, 0, 2), c["tracks"])
        np.testing.assert_array_equal(vis[0].T, c["span"])
        demo = json.load(open(os.path.join(root, "draganything", s.key, "demo.json")))
        assert len(demo) == s.entities
        first = demo["0"]
        mask = cv2.imread(os.path.join(root, "draganything", s.key, first["mask_name"]), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(mask > 0, c["entity_mask"] == c["entity_ids"][0])
        np.testing.assert_allclose(first["trajectory"], c["entity_tracks"][0], atol=1e-3)
        gt = json.load(open(os.path.join(root, "draganything", "trajectories", f"{s.key}.json")))
        assert sorted(gt) == sorted(str(i) for i in c["entity_ids"]) and len(gt[str(c["entity_ids"][0])]) == 8


def test_cli_errors_exit_2(eval_shards, tmp_path):
    res = CliRunner().invoke(app, ["evalset", str(tmp_path / "none"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "error:" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    res = CliRunner().invoke(app, ["evalset", eval_shards.out, "--out", str(tmp_path / "full")])
    assert res.exit_code == 2 and "--force" in res.output
    res = CliRunner().invoke(app, ["evalset", eval_shards.out, "--out", str(tmp_path / "full"), "--force",
                                   "--n", "1", "--export", "wan-move"])
    assert res.exit_code == 0 and "1 sample(s) of 3 eligible" in res.output, res.output
    assert os.path.isdir(tmp_path / "full" / "exports" / "wan-move")
