import hashlib
import os
import tarfile

import pytest
import webdataset as wds

from pipeline.shards import TarShardWriter, read_stats, write_index, write_stats


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
