"""``validate``: passes on good shards, names the broken member of a tampered one."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.shards import TarShardWriter
from pipeline.testdata.synthetic import disc, render_scene
from pipeline.tools.validate import check_sample, validate
from schemas.sample import encode_flow, encode_jpeg, encode_sample, npz_bytes
from stages.trajectories import compute_anchors

W, H, L = 96, 64, 4


def _state(key: str, seed: int = 0, entities: bool = True) -> dict:
    scene = render_scene(W, H, L, [disc((30, 30), 10, velocity=(3, 1))], background_velocity=(1, 0), seed=seed)
    a = compute_anchors(scene.flow, interval=16, delta=(0, 0))
    meta = {"clip_id": key, "profile": {"name": "t", "frames": L, "width": W, "height": H, "fps": 4.0},
            "flow": {"step": 1 / 16}, "anchors": {"count": int(len(a["anchor_weights"]))},
            "motion": {"magnitude": {"mean": 1.5}, "camera": {"inlier_ratio": None}}}
    st = {"caption": "c", "meta": meta, "frames_jpeg": [encode_jpeg(f, 90) for f in scene.frames],
          "flow": scene.flow, "anchor_tracks": a["anchor_tracks"], "anchor_weights": a["anchor_weights"],
          "anchor_visible": a["anchor_visible"]}
    if entities:
        vis = np.ones((1, L), bool)
        st.update(entity_ids=np.array([1], np.int32), entity_mask=scene.ids[0].astype(np.uint16),
                  entity_radii=np.array([10], np.float32),
                  entity_tracks=scene.centers.transpose(1, 0, 2).astype(np.float32), entity_visibility=vis)
        meta["entities"] = {"count": 1}
    return st


def _write_shard(path_dir: str, samples: dict[str, dict[str, bytes]], name: str = "t-000000") -> str:
    """Write members as given (in key order) into ``DIR/name.tar``."""
    path = os.path.join(path_dir, name + ".tar")
    with tarfile.open(path, "w") as tf:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def good():
    """Two good samples' members (key -> {ext: bytes})."""
    return {"clip_a": encode_sample(_state("clip_a", 1)), "clip_b": encode_sample(_state("clip_b", 2))}


def test_good_shard_passes(tmp_path, good):
    path = _write_shard(str(tmp_path), good)
    rep = validate(path)
    assert rep.ok, rep.format()
    assert (rep.shards, rep.samples) == (1, 2)
    res = CliRunner().invoke(app, ["validate", path])
    assert res.exit_code == 0, res.output
    assert "1 shard(s), 2 sample(s): OK" in res.output


def test_good_shard_from_the_writer_passes(tmp_path):
    w = TarShardWriter(str(tmp_path), "w", 0)
    w.write("clip_c", encode_sample(_state("clip_c", 3, entities=False)))
    w.close()
    assert validate(str(tmp_path)).ok


def _anchors(members: dict, **change) -> bytes:
    from schemas.sample import load_npz

    a = load_npz(members["anchors.npz"])
    a.update(change)
    return npz_bytes(**a)


def _entities(members: dict, **change) -> bytes:
    from schemas.sample import load_npz

    e = load_npz(members["entities.npz"])
    e.update(change)
    return npz_bytes(**e)


def _json(members: dict, **change) -> bytes:
    meta = json.loads(members["json"])
    meta.update(change)
    return json.dumps(meta).encode()


def _tracks_outside(m):
    from schemas.sample import load_npz

    a = load_npz(m["anchors.npz"])
    t = a["tracks"].copy()
    t[3, 2] = (W + 5.0, 10.0)                # visible (all anchors are visible at t=0..)
    v = a["visible"].copy()
    v[3, 2] = True
    return {"anchors.npz": _anchors(m, tracks=t, visible=v)}


def _flow_wrong_shape(m):
    # a valid pfz stream with one pair too few (the codec cannot hold NaN at all)
    return {"flow.pfz": encode_flow(np.zeros((L - 2, 2, H, W), np.float32))}


TAMPERS = {
    # name: (change, member named, words in the problem)
    "anchor outside frame": (_tracks_outside, "anchors.npz", "outside the 96x64 frame"),
    "anchor weights dtype": (lambda m: {"anchors.npz": _anchors(m, weights=np.ones(24, np.float64))},
                             "anchors.npz", "weights: dtype float64"),
    "anchor tracks nan": (lambda m: {"anchors.npz": _anchors(
        m, tracks=np.where(np.arange(24)[:, None, None] == 5, np.nan, _load(m, "anchors.npz")["tracks"]).astype(
            np.float32))}, "anchors.npz", "non-finite"),
    "anchor array missing": (lambda m: {"anchors.npz": npz_bytes(tracks=_load(m, "anchors.npz")["tracks"],
                                                                 weights=_load(m, "anchors.npz")["weights"])},
                             "anchors.npz", "array 'visible' missing"),
    "flow truncated": (lambda m: {"flow.pfz": m["flow.pfz"][:40]}, "flow.pfz", "not decodable"),
    "flow wrong shape": (_flow_wrong_shape, "flow.pfz", "shape (2, 2, 64, 96), expected (3, 2, 64, 96)"),
    "frame missing": (lambda m: {"f002.jpg": None}, "f002.jpg", "member missing"),
    "frame not jpeg": (lambda m: {"f001.jpg": b"not a jpeg"}, "f001.jpg", "not a decodable JPEG"),
    "frame wrong size": (lambda m: {"f003.jpg": encode_jpeg(np.zeros((32, 48, 3), np.uint8), 90)}, "f003.jpg",
                         "decoded shape (32, 48, 3)"),
    "schema version": (lambda m: {"json": _json(m, schema_version=99)}, "json", "schema_version 99 unknown"),
    "json broken": (lambda m: {"json": b"{not json"}, "json", "not valid JSON"),
    "json nan": (lambda m: {"json": m["json"].replace(b'"mean": 1.5', b'"mean": NaN')}, "json",
                 "non-finite number at motion.magnitude.mean"),
    "clip id": (lambda m: {"json": _json(m, clip_id="other")}, "json", "differs from the key"),
    "caption not utf8": (lambda m: {"txt": b"\xff\xfe\xfa"}, "txt", "not UTF-8"),
    "anchors missing": (lambda m: {"anchors.npz": None}, "anchors.npz", "member missing"),
    "entity radius negative": (lambda m: {"entities.npz": _entities(m, radii=np.array([-1], np.float32))},
                               "entities.npz", "radii: 1 negative"),
    "entity visibility shape": (lambda m: {"entities.npz": _entities(m, visibility=np.ones((1, L + 1), bool))},
                                "entities.npz", "visibility: shape (1, 5), expected (1, 4)"),
    "entity mask stray id": (lambda m: {"entities.npz": _entities(m, mask=np.full((H, W), 7, np.uint16))},
                             "entities.npz", "mask: values [7] are not entity ids"),
    "entity outside": (lambda m: {"entities.npz": _entities(
        m, tracks=np.full((1, L, 2), -30.0, np.float32))}, "entities.npz", "visible point(s) outside"),
    "entities member missing": (lambda m: {"entities.npz": None}, "entities.npz", "member missing but meta"),
}


def _load(m, name):
    from schemas.sample import load_npz

    return load_npz(m[name])


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_shard_names_the_broken_member(tmp_path, good, name):
    change, member, words = TAMPERS[name]
    samples = {k: dict(v) for k, v in good.items()}
    for ext, data in change(samples["clip_b"]).items():
        if data is None:
            del samples["clip_b"][ext]
        else:
            samples["clip_b"][ext] = data
    path = _write_shard(str(tmp_path), samples)
    rep = validate(path)
    assert not rep.ok
    hits = [v for v in rep.violations if v.key == "clip_b" and v.member == member and words in v.problem]
    assert hits, rep.format()
    assert all(v.key == "clip_b" for v in rep.violations), rep.format()   # the good sample stays clean
    res = CliRunner().invoke(app, ["validate", path])
    assert res.exit_code == 1
    assert f"t-000000.tar: clip_b.{member}: " in res.output
    assert "FAILED" in res.output


def test_tar_level_problems(tmp_path, good):
    # a sample split in two runs of the tar, a duplicated member and a stray unknown member
    a, b = good["clip_a"], good["clip_b"]
    path = os.path.join(str(tmp_path), "t-000001.tar")
    with tarfile.open(path, "w") as tf:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for ext, data in a.items():
            add(f"clip_a.{ext}", data)
        add("clip_a.extra.bin", b"x")
        for ext, data in b.items():
            add(f"clip_b.{ext}", data)
        add("clip_a.txt", b"again")
    rep = validate(path)
    text = rep.format()
    assert any("not contiguous" in v.problem and v.key == "clip_a" for v in rep.violations), text
    assert any(w.member == "extra.bin" and "unknown member" in w.problem for w in rep.warnings), text


def test_truncated_tar_is_reported(tmp_path, good):
    path = _write_shard(str(tmp_path), good)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2 + 100])
    rep = validate(path)
    assert not rep.ok
    assert any(v.key is None or "unreadable" in v.problem or "member" in v.problem for v in rep.violations)


def test_index_count_mismatch(tmp_path, good):
    _write_shard(str(tmp_path), good, "t-000000")
    with open(os.path.join(str(tmp_path), "index.json"), "w") as f:
        json.dump({"schema_version": 1, "shards": [{"url": "t-000000.tar", "samples": 3}]}, f)
    rep = validate(str(tmp_path))
    assert [str(v) for v in rep.violations] == ["index.json: t-000000.tar holds 2 samples, index says 3"]


def test_check_sample_without_entities_is_fine(good):
    members = dict(good["clip_a"])
    del members["entities.npz"]
    meta = json.loads(members["json"])
    meta["entities"] = None
    members["json"] = json.dumps(meta).encode()
    bad, warn = check_sample("clip_a", members)
    assert bad == [] and warn == []


def test_validate_missing_url(tmp_path):
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "none-{000000..000001}.tar")])
    assert res.exit_code == 1
    assert "shard file missing" in res.output


@pytest.mark.slow
def test_validate_sample_run(sample_run, tmp_path):
    res = CliRunner().invoke(app, ["validate", sample_run.out])
    assert res.exit_code == 0, res.output
    assert f"{sample_run.result.ok} sample(s): OK" in res.output
    # tamper one member of the real shard: the report names it
    src = os.path.join(sample_run.out, sample_run.result.index["shards"][0]["url"])
    dst = os.path.join(str(tmp_path), "bad-000000.tar")
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        victim = None
        for m in tin:
            data = tin.extractfile(m).read()
            if m.name.endswith(".anchors.npz") and victim is None:
                victim = m.name
                data = data[: len(data) // 2]
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    res = CliRunner().invoke(app, ["validate", dst])
    assert res.exit_code == 1
    assert f"bad-000000.tar: {victim}: not a loadable npz" in res.output
