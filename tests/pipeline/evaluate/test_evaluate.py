"""``evaluate`` on synthetic scenes with known motion (flow tracker, CPU): generated videos made
from the set's real frames with a known error, written as H.264 mp4 and read back by decord."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluate import evaluate
from pipeline.evaluate.videos import write_video
from pipeline.testdata.generated import frozen, reversed_clip, translated


def write_videos(folder, eval_set, make=lambda f: f, keys=None) -> str:
    os.makedirs(folder, exist_ok=True)
    for s in eval_set.set.samples:
        if keys is None or s.key in keys:
            write_video(os.path.join(folder, f"{s.key}.mp4"), make(eval_set.real[s.key]), 4.0)
    return str(folder)


def run(eval_set, videos, out, **kw) -> dict:
    return evaluate(eval_set.path, videos, str(out), **{"plots": False, "overlays": 0, **kw})


def rows(out) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(os.path.join(str(out), "samples.parquet")).to_pylist()}


@pytest.fixture(scope="module")
def identity(eval_set, tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("identity"), eval_set)


def test_the_real_frames_score_within_half_a_pixel(eval_set, identity, tmp_path):
    s = evaluate(eval_set.path, identity, str(tmp_path / "r"), floor=True, overlays=1)
    # measured 0.055 px (floor 0.038 px): the same DIS flow on the H.264 round trip of the frames
    assert s["objmc"] <= 0.5 and s["evaluated"] == 3 and s["missing"] == [] and s["errors"] == {}
    assert s["protocol"]["name"] == "objmc" and not s["protocol"]["frame0"] and s["protocol"]["span_only"]
    assert s["tracker"]["name"] == "flow" and s["tracker"]["version"].startswith("opencv")
    assert s["tracker"]["weights_digest"] is None
    w, h = eval_set.set.samples[0].size
    assert math.isclose(s["objmc_norm"], s["objmc"] / math.hypot(w, h), rel_tol=1e-9)
    assert s["floor"]["objmc"] <= s["objmc"] + 0.05 and s["floor"]["evaluated"] == 3
    assert s["per_frame"][0] is None and len(s["per_frame"]) == eval_set.set.samples[0].length   # frame 0 not scored
    # the pairs are exactly the span frames t >= 1 of every conditioning point
    pairs = sum(int(s_.conditions()["span"][:, 1:].sum()) for s_ in eval_set.set.samples)
    assert s["pairs"] == pairs
    r = rows(tmp_path / "r")
    assert set(r) == {x.key for x in eval_set.set.samples}
    for row in r.values():
        assert row["objmc"] <= 0.5 and row["error"] is None and row["frames"] == row["frames_used"] == 8
        assert row["floor_objmc"] is not None and row["size"] == "320x192" and row["resized"] is None
    files = json.load(open(tmp_path / "r" / "summary.json"))["files"]
    for f in files["plots"] + files["overlays"]:
        assert os.path.getsize(tmp_path / "r" / f) > 1000, f
    assert any(f.startswith("overlays/best1_") for f in files["overlays"])
    assert any(f.startswith("overlays/worst1_") for f in files["overlays"])
    z = np.load(tmp_path / "r" / "tracks" / f"{eval_set.set.samples[0].key}.npz")
    assert z["tracked"].shape == z["reference"].shape and z["mask"].shape == z["error"].shape


def test_frames_translated_by_d_score_its_length(eval_set, tmp_path):
    dx, dy = 3.0, -4.0
    videos = write_videos(tmp_path / "v", eval_set, lambda f: translated(f, dx, dy))
    s = run(eval_set, videos, tmp_path / "r")
    assert abs(s["objmc"] - math.hypot(dx, dy)) <= 0.3, s["objmc"]     # measured 5.03
    assert all(abs(v - 5.0) <= 0.6 for v in s["per_frame"][1:] if v is not None), s["per_frame"]


def test_time_reversed_and_frozen_videos_score_much_larger(eval_set, identity, tmp_path):
    base = run(eval_set, identity, tmp_path / "id")["objmc"]
    rev = run(eval_set, write_videos(tmp_path / "rev", eval_set, reversed_clip), tmp_path / "r")["objmc"]
    still = run(eval_set, write_videos(tmp_path / "fz", eval_set, frozen), tmp_path / "f")["objmc"]
    assert rev > 5.0 and rev > 20 * base, (rev, base)                   # measured 13.9 vs 0.05
    # frozen: the mean distance of the conditioning points from their start (the tracker sees no motion)
    want = []
    for smp in eval_set.set.samples:
        c = smp.conditions()
        d = np.linalg.norm(c["tracks"] - c["tracks"][:, :1], axis=-1)
        m = c["span"].copy()
        m[:, 0] = False
        want.append(d[m])
    assert abs(still - float(np.concatenate(want).mean())) < 0.3, still


def test_missing_undecodable_and_wrong_frame_count(eval_set, tmp_path):
    a, b, c = (x.key for x in eval_set.set.samples)
    videos = write_videos(tmp_path / "v", eval_set, keys={a})
    write_video(os.path.join(videos, f"{b}.mp4"), eval_set.real[b][:-1], 4.0)          # one frame short
    (tmp_path / "v" / f"{c}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 20)
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", videos, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output                               # one sample was evaluated
    s = json.load(open(tmp_path / "r" / "summary.json"))
    assert s["evaluated"] == 1 and s["missing"] == [] and s["errors"] == {"frame_count": 1, "unreadable": 1}
    r = rows(tmp_path / "r")
    assert r[a]["objmc"] <= 0.5 and r[b]["reason"] == "frame_count" and "7 frames" in r[b]["error"]
    assert r[c]["reason"] == "unreadable" and r[c]["objmc"] is None
    assert "error frame_count: 1" in res.output and "error unreadable: 1" in res.output
    # one video missing: counted, listed and printed, never silently skipped
    os.remove(os.path.join(videos, f"{b}.mp4"))
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", videos, "--out", str(tmp_path / "m")])
    s = json.load(open(tmp_path / "m" / "summary.json"))
    assert s["missing"] == [b] and s["evaluated"] == 1 and f"missing videos: {b}" in res.output
    assert rows(tmp_path / "m")[b]["reason"] == "missing"
    # the Frame In-N-Out protocol resamples instead: every frame doubled (2L - 1 frames) -> the originals
    write_video(os.path.join(videos, f"{b}.mp4"), np.repeat(eval_set.real[b], 2, axis=0)[:-1], 8.0)
    s = run(eval_set, videos, tmp_path / "ino", protocol="ino")
    row = rows(tmp_path / "ino")[b]
    assert row["error"] is None and row["resampled"] == "15 frames resampled to 8 (linspace)"
    assert row["frames"] == 15 and row["frames_used"] == 8 and row["objmc"] < 0.5


def test_no_video_at_all_exits_1_and_an_unreadable_set_exits_2(eval_set, tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", str(tmp_path / "empty"),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no sample was evaluated" in res.output
    assert json.load(open(tmp_path / "r" / "summary.json"))["missing"] == [x.key for x in eval_set.set.samples]
    for bad in (tmp_path / "nothing", tmp_path / "empty"):
        res = CliRunner().invoke(app, ["evaluate", str(bad), "--videos", str(tmp_path / "empty"),
                                       "--out", str(tmp_path / "x")])
        assert res.exit_code == 2 and "error:" in res.output and "evaluation set" in res.output, res.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "index.json").write_text("{not json")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "broken"), "--videos", str(tmp_path / "empty"),
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "cannot be read" in res.output
    res = CliRunner().invoke(app, ["evaluate", eval_set.path, "--videos", str(tmp_path / "empty"),
                                   "--out", str(tmp_path / "x"), "--protocol", "nope"])
    assert res.exit_code == 2 and "unknown protocol" in res.output


def test_size_is_resized_when_only_the_scale_differs(eval_set, tmp_path):
    import cv2

    a, b = (x.key for x in eval_set.set.samples[:2])
    videos = tmp_path / "v"
    videos.mkdir()
    write_video(str(videos / f"{a}.mp4"), np.stack([cv2.resize(f, (640, 384), interpolation=cv2.INTER_CUBIC)
                                                    for f in eval_set.real[a]]), 4.0)
    write_video(str(videos / f"{b}.mp4"), np.ascontiguousarray(eval_set.real[b][:, :, :256]), 4.0)   # 256x192
    run(eval_set, str(videos), tmp_path / "r")
    r = rows(tmp_path / "r")
    assert r[a]["resized"] == "resized from 640x384" and r[a]["objmc"] < 0.5
    assert r[b]["reason"] == "size_mismatch" and "another aspect" in r[b]["error"]


def test_published_protocols_on_the_real_frames(eval_set, identity, tmp_path):
    ours = run(eval_set, identity, tmp_path / "o")
    mp = run(eval_set, identity, tmp_path / "mp", protocol="motionpro")
    per = [r["objmc"] for r in rows(tmp_path / "mp").values()]
    assert mp["protocol"]["aggregate"] == "per_video" and math.isclose(mp["objmc"], np.mean(per))
    assert mp["pairs"] == ours["pairs"] and mp["objmc"] < 0.5          # anchors start on integer pixels
    ino = run(eval_set, identity, tmp_path / "ino", protocol="ino", floor=True)
    assert ino["floor"]["objmc"] == 0.0                                 # the same tracker on the same frames
    assert ino["objmc"] < 1.0 and ino["protocol"]["frame0"] and not ino["protocol"]["span_only"]
    n = sum(x.trajectories for x in eval_set.set.samples)
    assert ino["pairs"] == n * 8                                        # every point, every frame
    da = run(eval_set, identity, tmp_path / "da", protocol="draganything", floor=True)
    k = sum(x.entities for x in eval_set.set.samples)
    assert da["pairs"] == k * 8 and da["per_frame"][0] is not None     # every entity, frame 0 included
    # grid snapping (100 x 100 over 320x192: 3.1 x 1.9 px steps) and integer coordinates cost about 1 px
    # here, on the real frames as well: measured 1.12 px, floor 1.11 px
    assert 0.3 < da["objmc"] < 2.0 and 0.3 < da["floor"]["objmc"] < 2.0


def test_the_demo_script_prints_the_three_figures(eval_set, tmp_path, capsys):
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    from bench.evaluate_demo import main

    assert main([eval_set.path, str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in
             ("real", "shifted", "frozen")}
    assert set(lines) == {"real", "shifted", "frozen"}
    assert float(lines["real"][1]) < 0.5 and abs(float(lines["shifted"][1]) - 5.0) < 0.3
    assert float(lines["frozen"][1]) > 5 * float(lines["real"][1])
    assert os.path.exists(tmp_path / "reports" / "frozen" / "summary.json")
