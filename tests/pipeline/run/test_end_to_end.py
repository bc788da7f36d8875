"""`make shards` on the embedded sample under a local Ray, read back by webdataset and a DataLoader."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    data, out = tmp / "sample", tmp / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        ["make", "-C", REPO, "shards", f"DATA={data}", f"OUT={out}", "PROFILE=dragnuwa-ld",
         f"PY={sys.executable}", "ARGS=--workers 2"],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data, out, proc.stdout


pytestmark = pytest.mark.slow


def test_make_shards_writes_complete_shards(sample_run):
    data, out, stdout = sample_run
    assert "8 clips -> ok 8, error 0, filtered 0" in stdout
    index = json.loads((out / "index.json").read_text())
    assert index["samples"] == 8 and len(index["shards"]) == 4
    for s in index["shards"]:
        stem = s["url"][:-4]
        assert (out / s["url"]).exists() and (out / f"{stem}.stats.json").exists() and (out / f"{stem}.parquet").exists()
    assert not list(out.glob(".*.tmp"))


def test_plain_webdataset_reads_every_sample(sample_run):
    import webdataset as wds

    _, out, _ = sample_run
    urls = sorted(str(p) for p in out.glob("*.tar"))
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert all("." not in k for k in keys)


def test_read_samples_in_dataloader_with_two_workers(sample_run):
    import torch

    from pipeline.train import read_samples

    _, out, _ = sample_run
    ds = read_samples(str(out))
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = collections.Counter()
    for s in dl:  # the DataLoader converts numpy arrays to tensors
        seen[s["key"]] += 1
        L = s["meta"]["profile"]["frames"]
        frames, flow = np.asarray(s["frames"]), np.asarray(s["flow"])
        assert frames.shape == (L, 192, 320, 3) and frames.dtype == np.uint8
        assert flow.shape == (L - 1, 2, 192, 320) and flow.dtype == np.float32
        A = len(s["anchor_weights"])
        assert tuple(s["anchor_tracks"].shape) == (A, L, 2) and tuple(s["anchor_visible"].shape) == (A, L)
        assert len(s["meta"]["source_frame_indices"]) == L
    assert len(seen) == 8 and set(seen.values()) == {1}


def test_rerun_skips_done_shards(sample_run):
    data, out, _ = sample_run
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--data", str(data), "--out", str(out),
                           "--profile", "dragnuwa-ld", "--samples-per-shard", "2", "--executor", "local"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(4 already done)" in proc.stdout
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
