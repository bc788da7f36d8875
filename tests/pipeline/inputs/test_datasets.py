"""Dataset adapters -> manifest, storage URIs, and the embedded sample (real files, real decord)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time

import pyarrow.fs as pafs
import pytest

from pipeline import storage
from pipeline.inputs.adapters import ADAPTERS, register_adapter
from pipeline.inputs.manifest import build_manifest, read_manifest, write_manifest
from pipeline.inputs.listing import format_duration, make_clip_id, parse_duration, unique_clip_ids
from pipeline.testdata.synthetic import random_scene, write_mp4
from schemas.manifest import MANIFEST_SCHEMA

KEY = re.compile(r"^[A-Za-z0-9_-]+$")
WEBVID_COLUMNS = ["videoid", "contentUrl", "duration", "page_dir", "name"]


@pytest.fixture(scope="module")
def tiny_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    write_mp4(path, random_scene(0, width=64, height=48, num_frames=4).frames, fps=8)
    return path


def _put(tiny_mp4, root, rel):
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_mp4, dst)
    return dst


def _write_csv(path, rows, columns=WEBVID_COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)


def _reason(err):
    return None if err is None else err.split(":", 1)[0]


def _check_table(t, n):
    assert t.schema.equals(MANIFEST_SCHEMA)
    assert t.num_rows == n
    d = t.to_pydict()
    assert d["row"] == list(range(n))
    assert len(set(d["clip_id"])) == n
    assert all(KEY.match(c) and "." not in c for c in d["clip_id"])
    return t.to_pylist()


# --------------------------------------------------------------------------- clip ids
def test_make_clip_id():
    assert make_clip_id("webvid", "1066692580") == "webvid_1066692580"
    a, b = make_clip_id("webvid", "a.b"), make_clip_id("webvid", "a_b")
    assert a != b and KEY.match(a) and a.startswith("webvid_a_b_")
    assert make_clip_id("webvid", "a.b") == a  # stable
    assert make_clip_id("x", "a/b") != make_clip_id("x", "a.b")
    for sid in ["", "..", "ünï cødé", "x" * 500, "a\x00b"]:
        cid = make_clip_id("videohd", sid)
        assert KEY.match(cid) and len(cid) < 150


def test_unique_clip_ids_never_collide():
    ids, dup_of = unique_clip_ids("w", ["X", "X", "X_dup1", "X", "Y"])
    assert len(set(ids)) == 5
    assert ids[0] == "w_X" and ids[2] == "w_X_dup1"  # the real id keeps its natural key
    assert ids[1] == "w_X_dup2" and ids[3] == "w_X_dup3"
    assert dup_of == [None, 0, None, 0, None]


def test_parse_and_format_duration():
    assert parse_duration("PT00H00M11S") == 11.0
    assert parse_duration("PT1M5.5S") == 65.5
    assert parse_duration("pt00h01m00s") == 60.0
    assert parse_duration("12.5") == 12.5
    assert parse_duration("00:01:02") == 62.0
    for bad in ["", "PT", "P", "PTxxS", "-PT5S", "PT-5S", "-3", "PT25H00M00S", "P2D", "nan", "inf", "PT0S", None]:
        assert parse_duration(bad) is None, bad
    for s in [11.0, 5.28, 4.004, 3725.5]:
        assert parse_duration(format_duration(s)) == pytest.approx(s, abs=1e-3)
    assert format_duration(11) == "PT00H00M11S"


# --------------------------------------------------------------------------- webvid
@pytest.fixture
def webvid_data(tmp_path, tiny_mp4):
    root = tmp_path / "data"
    _put(tiny_mp4, root, "000001_000050/1001.mp4")
    _put(tiny_mp4, root, "videos/1002.mp4")                 # flat layout
    _put(tiny_mp4, root, "000001_000050/v.1.mp4")
    _put(tiny_mp4, root, "000001_000050/1001_dup1.mp4")
    (tmp_path / "outside.mp4").write_bytes(b"secret")
    rows = [
        ["1001", "http://x/1001", "PT00H00M11S", "000001_000050", "A cat on a sofa"],
        ["1002", "", "PT00H00M07S", "000001_000050", "flat layout file"],
        ["1003", "", "PT00H00M05S", "000001_000050", "no file anywhere"],
        ["1001", "", "PT00H00M11S", "000001_000050", "duplicate of the first"],
        ["1004", "", "PT00H00M05S", "../..", "escapes the root"],
        ["../outside", "", "PT00H00M05S", "", "videoid escapes"],
        ["1005", "", "PT00H00M05S", "/etc", "absolute page_dir"],
        ["1006", "", "PTxxS", "000001_000050", "bad duration"],
        ["1007", "", "-PT00H00M05S", "000001_000050", "negative duration"],
        ["1008", "", "PT99H00M00S", "000001_000050", "absurd duration"],
        ["1009", "", "PT00H00M05S", "000001_000050", ""],
        ["1010", "", "PT00H00M05S", "000001_000050", "bell\x07 cr\r\nnew\tline ünïcödé 🎬 中文\x1b[0m\x7f"],
        ["v.1", "", "PT00H00M05S", "000001_000050", "dotted id"],
        ["1001_dup1", "", "PT00H00M05.5S", "000001_000050", "id that looks like a dup key"],
        ["1001", "", "PT00H00M11S", "000001_000050", "second duplicate"],
    ]
    _write_csv(root / "webvid.csv", rows)
    return root, rows


def test_webvid_adapter(webvid_data):
    root, rows = webvid_data
    recs = _check_table(build_manifest("webvid", str(root)), len(rows))
    by = {i: r for i, r in enumerate(recs)}
    assert [r["source_id"] for r in recs] == [r[0] for r in rows]  # CSV order, nothing dropped
    assert all(r["dataset"] == "webvid" for r in recs)

    assert by[0]["clip_id"] == "webvid_1001" and by[0]["error"] is None
    assert by[0]["source"] == os.path.join(str(root), "000001_000050", "1001.mp4")
    assert by[0]["duration"] == 11.0 and by[0]["caption"] == "A cat on a sofa"
    assert by[1]["source"] == os.path.join(str(root), "videos", "1002.mp4") and by[1]["error"] is None
    # neither file: first candidate kept, the decoder reports it
    assert by[2]["source"] == os.path.join(str(root), "000001_000050", "1003.mp4") and by[2]["error"] is None

    assert _reason(by[3]["error"]) == "duplicate_id" and by[3]["clip_id"] == "webvid_1001_dup2"
    assert _reason(by[14]["error"]) == "duplicate_id" and by[14]["clip_id"] == "webvid_1001_dup3"
    assert by[13]["clip_id"] == "webvid_1001_dup1" and by[13]["error"] is None  # a real id keeps its key
    assert by[13]["duration"] == 5.5

    for i in (4, 5, 6):
        assert _reason(by[i]["error"]) == "unsafe_path", by[i]
        assert by[i]["source"] == ""
    for i in (7, 8, 9):
        assert by[i]["duration"] is None and by[i]["error"] is None
    assert by[10]["caption"] == "" and by[10]["error"] is None
    assert by[11]["caption"] == "bell  cr \nnew\tline ünïcödé 🎬 中文 [0m "
    assert by[12]["error"] is None and "." not in by[12]["clip_id"]
    assert by[12]["source"].endswith("v.1.mp4")


def test_webvid_csv_discovery_and_options(tmp_path, tiny_mp4):
    root = tmp_path / "d"
    _put(tiny_mp4, root, "p/1.mp4")
    _write_csv(root / "results_2M_val.csv", [["1", "", "PT00H00M03S", "p", "one"]])
    t = build_manifest("webvid", root)  # the only CSV at the top
    assert t.num_rows == 1 and t["error"][0].as_py() is None
    _write_csv(root / "other.csv", [["2", "", "", "p", "two"]])
    with pytest.raises(ValueError, match="csv="):
        build_manifest("webvid", root)
    t = build_manifest("webvid", root, csv="other.csv")
    assert t["source_id"].to_pylist() == ["2"]
    t = build_manifest("webvid", str(root), csv=str(root / "results_2M_val.csv"))
    assert t["source_id"].to_pylist() == ["1"]
    with pytest.raises(ValueError):
        build_manifest("webvid", root, csv="nope.csv")
    with pytest.raises(ValueError):
        build_manifest("webvid", tmp_path / "empty-nonexistent")
    with pytest.raises(ValueError, match="has no option captions .*its options: csv"):
        build_manifest("webvid", root, csv="other.csv", captions="x")


def test_webvid_missing_columns_is_a_run_error(tmp_path):
    _write_csv(tmp_path / "webvid.csv", [["1", "x"]], columns=["contentUrl", "page_dir"])
    with pytest.raises(ValueError) as e:
        build_manifest("webvid", tmp_path)
    assert "videoid" in str(e.value) and "name" in str(e.value)


def test_webvid_via_file_uri_and_sample_name(webvid_data):
    root, rows = webvid_data
    t = build_manifest("sample", "file://" + str(root))
    recs = _check_table(t, len(rows))
    assert all(r["dataset"] == "sample" and r["clip_id"].startswith("sample_") for r in recs)
    assert recs[0]["source"] == "file://" + str(root) + "/000001_000050/1001.mp4"
    assert recs[1]["source"].endswith("/videos/1002.mp4")
    with storage.local_path(recs[0]["source"]) as p:
        assert os.path.samefile(p, root / "000001_000050" / "1001.mp4")


def test_unknown_dataset_and_registration(tmp_path):
    with pytest.raises(ValueError) as e:
        build_manifest("nope", tmp_path)
    for name in ("webvid", "sample", "videohd"):
        assert name in str(e.value)

    @register_adapter("toy")
    def toy(dataset, data, *, n=2):
        return [{"clip_id": make_clip_id(dataset, str(i)), "dataset": dataset, "source": f"{data}/{i}",
                 "source_id": str(i), "fps": 10.0} for i in range(n)]
    try:
        t = build_manifest("toy", "/x", n=3)
        assert t.num_rows == 3 and t["row"].to_pylist() == [0, 1, 2] and t["fps"][0].as_py() == 10.0
        assert t["caption"][0].as_py() is None and t.schema.equals(MANIFEST_SCHEMA)
    finally:
        ADAPTERS.pop("toy")


def test_manifest_parquet_round_trip(webvid_data, tmp_path):
    root, _ = webvid_data
    t = build_manifest("webvid", root)
    path = write_manifest(t, tmp_path / "out" / "nested" / "manifest.parquet")
    back = read_manifest(path)
    assert back.equals(t) and back.schema.equals(MANIFEST_SCHEMA)
    assert back.schema.metadata[b"manifest_version"] == b"1"
    assert sorted(os.listdir(tmp_path / "out" / "nested")) == ["manifest.parquet"]  # no temp left
    back2 = read_manifest("file://" + str(tmp_path / "out" / "nested" / "manifest.parquet"))
    assert back2.equals(t)


# --------------------------------------------------------------------------- videohd
@pytest.fixture
def videohd_root(tmp_path, tiny_mp4):
    root = tmp_path / "hd"
    for rel in ["a.mp4", "sub/b.MKV", "sub/deep/c.webm", "d e.mov", "z.avi", ".hidden/x.mp4", "sub/._junk.mp4"]:
        _put(tiny_mp4, root, rel)
    (root / "notes.txt").write_text("not a video")
    (tmp_path / "escape.mp4").write_bytes(b"x")
    return root


def _check_videohd(recs, root):
    ids = [r["source_id"] for r in recs]
    # videos in sorted path order first, then unmatched caption entries in file order
    assert ids[:5] == ["a.mp4", "d e.mov", "sub/b.MKV", "sub/deep/c.webm", "z.avi"]
    by = {(r["source_id"], _reason(r["error"])): r for r in recs}
    assert by[("a.mp4", None)]["caption"] == "a caption"
    assert by[("sub/b.MKV", None)]["caption"] == "b caption"
    assert by[("sub/deep/c.webm", None)]["caption"] == ""  # no caption: empty, not an error
    assert by[("d e.mov", None)]["caption"] == "spaced"
    assert by[("z.avi", None)]["caption"] == ""
    assert by[("a.mp4", None)]["source"] == os.path.join(str(root), "a.mp4")
    assert by[("sub/deep/c.webm", None)]["source"] == os.path.join(str(root), "sub", "deep", "c.webm")
    miss = by[("missing/m.mp4", "missing_file")]
    assert miss["caption"] == "gone" and miss["source"] == os.path.join(str(root), "missing", "m.mp4")
    assert by[("a.mp4", "duplicate_id")]["clip_id"] == "videohd_a_mp4_" + by[("a.mp4", None)]["clip_id"][-8:] + "_dup1"
    unsafe = [r for r in recs if _reason(r["error"]) == "unsafe_path"]
    assert len(unsafe) == 1 and unsafe[0]["source"] == ""
    assert all(r["dataset"] == "videohd" for r in recs)
    return by


def test_videohd_jsonl(videohd_root):
    lines = [
        json.dumps({"path": "a.mp4", "caption": "a caption"}),
        json.dumps({"path": "sub\\b.MKV", "caption": "b caption"}),   # backslashes accepted
        json.dumps({"path": "./d e.mov", "caption": "spaced"}),
        json.dumps({"path": "missing/m.mp4", "caption": "gone"}),
        json.dumps({"path": "a.mp4", "caption": "again"}),
        json.dumps({"path": "../escape.mp4", "caption": "out"}),
        "{not json",
        "",
        json.dumps({"caption": "no path"}),
    ]
    (videohd_root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recs = _check_table(build_manifest("videohd", videohd_root), 5 + 5)
    _check_videohd(recs, videohd_root)
    invalid = [r for r in recs if _reason(r["error"]) == "invalid_input"]
    assert len(invalid) == 2 and all(r["source"] == "" for r in invalid)


def test_videohd_csv_and_explicit_option(videohd_root, tmp_path):
    rows = [["a.mp4", "a caption"], ["sub/b.MKV", "b caption"], ["d e.mov", "spaced"],
            ["missing/m.mp4", "gone"], ["a.mp4", "again"], ["../escape.mp4", "out"]]
    _write_csv(videohd_root / "captions.csv", rows, columns=["path", "caption"])
    recs = _check_table(build_manifest("videohd", str(videohd_root)), 5 + 3)
    _check_videohd(recs, videohd_root)

    # explicit captions= outside DATA; no captions file at all -> every caption empty
    (videohd_root / "captions.csv").rename(tmp_path / "caps.csv")
    recs = _check_table(build_manifest("videohd", videohd_root, captions=str(tmp_path / "caps.csv")), 8)
    _check_videohd(recs, videohd_root)
    recs = _check_table(build_manifest("videohd", videohd_root), 5)
    assert all(r["caption"] == "" and r["error"] is None for r in recs)
    with pytest.raises(ValueError):
        build_manifest("videohd", videohd_root, captions="nope.jsonl")
    with pytest.raises(ValueError):
        build_manifest("videohd", tmp_path / "missing-root")


# --------------------------------------------------------------------------- storage URIs
def test_io_helpers(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("héllo", encoding="utf-8")
    (tmp_path / "d" / "e" / "c.bin").write_bytes(b"\x00\x01")
    fs, p = storage.resolve("relative/x")
    assert isinstance(fs, pafs.LocalFileSystem) and os.path.isabs(p)
    assert storage.join("s3://bucket/root/", "a", "b.mp4") == "s3://bucket/root/a/b.mp4"
    assert storage.join("s3://bucket/root?region=eu", "a") == "s3://bucket/root/a?region=eu"
    assert storage.join("gs://bucket", "x/y") == "gs://bucket/x/y"
    assert storage.join(str(tmp_path), "d", "b.txt") == os.path.join(str(tmp_path), "d", "b.txt")
    base = "file://" + str(tmp_path)
    assert storage.exists(storage.join(base, "d", "b.txt")) and not storage.exists(storage.join(base, "nope"))
    assert storage.read_text(storage.join(base, "d", "b.txt")) == "héllo"
    assert storage.read_bytes(str(tmp_path / "d" / "e" / "c.bin")) == b"\x00\x01"
    assert storage.listdir(storage.join(base, "d")) == ["b.txt", "e"]
    assert storage.walk_files(tmp_path / "d") == ["b.txt", "e/c.bin"]
    with pytest.raises(FileNotFoundError):
        storage.listdir(tmp_path / "nope", missing_ok=False)


def test_local_path_downloads_remote_files(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"video bytes")
    remote = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())  # not a LocalFileSystem
    monkeypatch.setattr(storage.files, "resolve", lambda uri: (remote, "clip.mp4"))
    with storage.local_path("s3://bucket/clip.mp4") as p:
        assert p != str(tmp_path / "clip.mp4") and p.endswith(".mp4")
        assert open(p, "rb").read() == b"video bytes"
    assert not os.path.exists(p)
    with pytest.raises(RuntimeError):
        with storage.local_path("s3://bucket/clip.mp4") as p2:
            raise RuntimeError("boom")
    assert not os.path.exists(p2)


# --------------------------------------------------------------------------- the embedded sample
def test_build_sample(tmp_path):
    decord = pytest.importorskip("decord")
    from pipeline.testdata.sample_data import build_sample

    out = tmp_path / "sample"
    csv_path = build_sample(out)
    assert csv_path == str(out / "webvid.csv")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and list(rows[0]) == WEBVID_COLUMNS
    assert len({r["videoid"] for r in rows}) == 8 and all(r["name"] for r in rows)
    for r in rows:
        path = out / r["page_dir"] / f"{r['videoid']}.mp4"
        vr = decord.VideoReader(str(path))
        assert len(vr) > 0 and vr[0].shape[2] == 3
        real = len(vr) / vr.get_avg_fps()
        assert abs(parse_duration(r["duration"]) - real) < 0.1, (r, real)
    synth = [r for r in rows if r["videoid"].startswith("synth_")]
    assert len(synth) == 5 and all(r["duration"] == "PT00H00M06S" for r in synth)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert total < 10 * 2**20

    t = build_manifest("sample", out)
    recs = _check_table(t, 8)
    assert all(r["error"] is None and os.path.exists(r["source"]) for r in recs)

    # idempotent: a second run rebuilds nothing and writes the same CSV
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    first_csv = open(csv_path, "rb").read()
    t0 = time.monotonic()
    assert build_sample(out) == csv_path
    assert time.monotonic() - t0 < 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == before
    assert open(csv_path, "rb").read() == first_csv
    # a damaged clip is rebuilt
    damaged = out / "synthetic" / "synth_002.mp4"
    damaged.write_bytes(b"truncated")
    build_sample(out)
    assert len(decord.VideoReader(str(damaged))) == 144


# --------------------------------------------------------------------------- large manifests
def test_webvid_csv_edge_cases(tmp_path, tiny_mp4):
    """The column-wise CSV reading keeps the row-wise semantics: BOM, CRLF, blank lines,
    short rows, a repeated header name (the last column wins), quoted newlines, bad UTF-8,
    '.' components in page_dir."""
    root = tmp_path / "data"
    _put(tiny_mp4, root, "a/b/1.mp4")
    _put(tiny_mp4, root, "videos/3.mp4")
    lines = [
        b"\xef\xbb\xbfvideoid,name,page_dir,name,duration",
        b"1,first,./a/./b,kept caption,PT00H00M11S",
        b"",
        b"2,x,.,\"two\r\nlines\",11",
        b"3,x,.",                      # short row: no caption, no duration
        b"4,x,a//b,bad \xff byte,00:00:07",
        b"  ",                         # blank (whitespace only)
        b"5,x,./..,escapes,5",
    ]
    (root / "webvid.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")
    recs = _check_table(build_manifest("webvid", root), 5)
    assert [r["source_id"] for r in recs] == ["1", "2", "3", "4", "5"]
    assert recs[0]["source"] == str(root / "a" / "b" / "1.mp4") and recs[0]["caption"] == "kept caption"
    assert recs[0]["duration"] == 11.0 and recs[0]["error"] is None
    assert recs[1]["source"] == str(root / "2.mp4") and recs[1]["caption"] == "two \nlines"
    assert recs[1]["duration"] == 11.0
    assert recs[2]["source"] == str(root / "videos" / "3.mp4")  # flat layout fallback
    assert recs[2]["caption"] == "" and recs[2]["duration"] is None
    assert recs[3]["source"] == str(root / "a" / "b" / "4.mp4") and recs[3]["caption"] == "bad \ufffd byte"
    assert recs[3]["duration"] == 7.0
    assert _reason(recs[4]["error"]) == "unsafe_path" and recs[4]["source"] == ""


def test_rows_to_table_columns_equal_rows():
    from pipeline.inputs.manifest import rows_to_table

    rows = [{"clip_id": f"t_{i}", "dataset": "t", "source": f"/v/{i}.mp4", "source_id": str(i),
             "caption": None if i % 2 else f"c{i}", "duration": 1.5 * i or None, "error": None, "extra": 1}
            for i in range(7)]
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    a, b = rows_to_table(rows), rows_to_table(cols)
    assert a.equals(b) and b.schema.equals(MANIFEST_SCHEMA) and b["fps"].null_count == 7
    with pytest.raises(ValueError, match="unequal length"):
        rows_to_table({**cols, "source": cols["source"][:-1]})
    bad = dict(cols, clip_id=["t_0", "t_1", "t.2", "t_1"])
    with pytest.raises(ValueError, match=r"invalid clip_id 't\.2'"):
        rows_to_table({k: v[:4] for k, v in bad.items()})
    with pytest.raises(ValueError, match="repeated clip_id 't_1'"):
        rows_to_table({k: v[:4] for k, v in dict(cols, clip_id=["t_0", "t_1", "t_1", "t.3"]).items()})


def test_manifest_rows_reads_slices_across_row_groups(tmp_path):
    from pipeline.inputs.manifest import ManifestRows, rows_to_table
    from pipeline.run.plan import manifest_row_group, shard_tasks

    n = 25
    t = rows_to_table({"clip_id": [f"t_{i}" for i in range(n)], "dataset": ["t"] * n,
                       "source": [f"/v/{i}" for i in range(n)], "source_id": [str(i) for i in range(n)]})
    path = write_manifest(t, tmp_path / "m.parquet", row_group_size=8)
    r = ManifestRows(path)
    assert r.num_rows == n
    for a, b in [(0, 25), (5, 19), (8, 16), (24, 25), (3, 3)]:
        assert r.rows(a, b) == t.slice(a, b - a).to_pylist()
    for a, b in [(-1, 3), (3, 2), (20, 26)]:
        with pytest.raises(ValueError, match="outside"):
            r.rows(a, b)
    r.close()
    tasks = shard_tasks(n, 10)
    assert tasks == [{"shard": 0, "start": 0, "stop": 10}, {"shard": 1, "start": 10, "stop": 20},
                     {"shard": 2, "start": 20, "stop": 25}]
    assert shard_tasks(0, 10) == []
    assert manifest_row_group(100) == 8100 and manifest_row_group(10000) == 10000 and manifest_row_group(3) % 3 == 0
