import hashlib
import os
import tarfile

import pytest
import webdataset as wds

import io

from pipeline.shards import (TarShardWriter, iter_samples, member_order, read_indexed, read_stats, tar_index,
                             write_index, write_stats)


def _members(i, size=100):
    return {"txt": f"caption {i}".encode(), "json": b"{}", "f000.jpg": bytes([i % 256]) * size}


def test_writer_is_atomic_and_deterministic(tmp_path):
    digests = []
    for run in range(2):
        d = tmp_path / f"r{run}"
        d.mkdir()
        w = TarShardWriter(str(d), "ds-p", 3)
        w.write("a", _members(1))
        assert not (d / "ds-p-000003.tar").exists(), "tar visible under its final name before close"
        assert (d / ".ds-p-000003.tar.tmp").exists()
        w.write("b", _members(2))
        assert w.close() == ["ds-p-000003.tar"]
        assert not list(d.glob(".*.tmp"))
        digests.append(hashlib.sha256((d / "ds-p-000003.tar").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    samples = list(wds.WebDataset(str(tmp_path / "r0" / "ds-p-000003.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["a", "b"]
    assert samples[1]["txt"] == b"caption 2"


def test_writer_rolls_over_at_max_bytes(tmp_path):
    w = TarShardWriter(str(tmp_path), "p", 0, max_bytes=5000)
    for i in range(6):
        w.write(f"k{i}", _members(i, size=1500))
    names = w.close()
    assert names[0] == "p-000000.tar" and names[1] == "p-000000_1.tar"
    assert sum(w.counts) == 6
    for n in names:
        assert os.path.getsize(tmp_path / n) < 5000 + 4 * 1024 + 10240
    keys = [m.name.split(".")[0] for n in names for m in tarfile.open(tmp_path / n)]
    assert sorted(set(keys)) == [f"k{i}" for i in range(6)]


def test_bad_keys_are_refused(tmp_path):
    w = TarShardWriter(str(tmp_path), "p", 0)
    for key in ["a.b", "", "x/y"]:
        with pytest.raises(ValueError):
            w.write(key, _members(0))
    w.abort()
    assert not list(tmp_path.iterdir())


def test_abort_leaves_nothing(tmp_path):
    w = TarShardWriter(str(tmp_path), "p", 0)
    w.write("a", _members(0))
    w.abort()
    assert not list(tmp_path.iterdir())


def test_stats_and_index(tmp_path):
    write_stats(str(tmp_path / "s.stats.json"), {"shard": 0})
    assert read_stats(str(tmp_path / "s.stats.json")) == {"shard": 0}
    assert read_stats(str(tmp_path / "missing.json")) is None
    stats = [{"shard": i, "tars": [f"ds-p-{i:06d}.tar"], "tar_counts": [2]} for i in range(3)]
    idx = write_index(str(tmp_path), "ds-p", stats, {})
    assert idx["samples"] == 6 and idx["url"] == "ds-p-{000000..000002}.tar"
    assert (tmp_path / "index.json").exists()


# ---------------------------------------------------------------- the tar reader
def _shard(tmp_path, n=3):
    w = TarShardWriter(str(tmp_path), "r", 0)
    for i in range(n):
        w.write(f"k{i}", {**_members(i), "flow.pfz": bytes([i]) * 7, "anchors.npz": b"A" * (i + 1)})
    return str(tmp_path / w.close()[0])


def test_iter_samples_gives_each_sample_in_order(tmp_path):
    path = _shard(tmp_path)
    got = list(iter_samples(path))
    assert [k for k, _ in got] == ["k0", "k1", "k2"]
    assert got[1][1] == {**_members(1), "flow.pfz": bytes([1]) * 7, "anchors.npz": b"AA"}
    # the same as the index reader and webdataset
    index = tar_index([path])
    assert {k: read_indexed(index[k]) for k in index} == dict(got)
    wds_samples = list(wds.WebDataset(path, shardshuffle=False))
    assert [s["__key__"] for s in wds_samples] == [k for k, _ in got]


def test_iter_samples_member_filter_skips_the_others(tmp_path):
    path = _shard(tmp_path)
    only = list(iter_samples(path, members=("json", "anchors.npz")))
    assert [sorted(m) for _, m in only] == [["anchors.npz", "json"]] * 3
    pred = list(iter_samples(path, members=lambda name: name.endswith(".jpg")))
    assert [sorted(m) for _, m in pred] == [["f000.jpg"]] * 3
    none = list(iter_samples(path, members=()))            # a sample with nothing kept is still there
    assert none == [("k0", {}), ("k1", {}), ("k2", {})]


def test_iter_samples_reads_open_files_and_streams(tmp_path):
    path = _shard(tmp_path)
    want = list(iter_samples(path))
    with open(path, "rb") as f:
        assert list(iter_samples(f)) == want

    class Stream(io.RawIOBase):     # an object-storage body: read only, front to back
        def __init__(self, data):
            self._b = io.BytesIO(data)

        def readable(self):
            return True

        def seekable(self):
            return False

        def readinto(self, buf):
            chunk = self._b.read(min(len(buf), 1000))
            buf[:len(chunk)] = chunk
            return len(chunk)

    data = open(path, "rb").read()
    assert list(iter_samples(Stream(data))) == want
    assert [sorted(m) for _, m in iter_samples(Stream(data), members={"txt"})] == [["txt"]] * 3


def test_iter_samples_reports_tar_problems(tmp_path):
    path = str(tmp_path / "bad.tar")
    with tarfile.open(path, "w") as tf:
        def add(name, data=b"x", kind=tarfile.REGTYPE):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("a.txt", b"1")
        add("a.json", b"{}")
        add("a.txt", b"2")                       # duplicate: the last copy is kept
        add("b.txt")
        add("noext")                             # not KEY.EXT: skipped
        add("b.link", kind=tarfile.SYMTYPE)      # not a regular file: skipped
        add("a.flow.pfz", b"late")               # a's members again: a second run of a
    problems = []
    got = list(iter_samples(path, on_problem=problems.append))
    assert got == [("a", {"txt": b"2", "json": b"{}"}), ("b", {"txt": b"x"}), ("a", {"flow.pfz": b"late"})]
    assert [(p.key, p.member) for p in problems] == [("a", "txt"), ("noext", None), ("b", "link"), ("a", None)]
    assert "duplicate" in problems[0].problem and "KEY.EXT" in problems[1].problem
    assert "regular" in problems[2].problem and "contiguous" in problems[3].problem
    assert list(iter_samples(path)) == got       # without a listener the problems are ignored


def test_truncated_tar_raises(tmp_path):
    w = TarShardWriter(str(tmp_path), "t", 0)
    w.write("k0", {"txt": b"x" * 3000, "json": b"{}"})
    data = open(tmp_path / w.close()[0], "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:1500])                 # inside the first member's data
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        list(iter_samples(str(cut)))


def test_member_order_is_the_writers(tmp_path):
    names = ["json", "entities.npz", "f001.jpg", "anchors.npz", "extra.bin", "flow.pfz", "f000.jpg", "txt"]
    assert sorted(names, key=member_order) == ["txt", "extra.bin", "f000.jpg", "f001.jpg", "flow.pfz",
                                               "anchors.npz", "entities.npz", "json"]
