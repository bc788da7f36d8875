"""The shards are plain webdataset tars: the webdataset library, Hugging Face datasets
("webdataset" builder) and ray.data.read_webdataset read every sample without conversion."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from schemas.sample import decode_flow, decode_sample


import loader_fixtures as fx  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

L, H, W = 4, 40, 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop")
    scenes = fx.write_scene_shards(d, shards=3, per_shard=4, width=W, height=H, frames=L)
    urls = fx.shard_urls(d)
    # the reference: every sample decoded by our own reader
    from pipeline.train import read_samples

    ref = {s["key"]: s for s in read_samples(urls)}
    assert set(ref) == set(scenes) and len(ref) == 12
    return urls, ref


def _check_members(key, ref, flow_bytes, entities_npz, meta, caption):
    r = ref[key]
    np.testing.assert_array_equal(decode_flow(flow_bytes), r["flow"])
    assert meta["clip_id"] == key and caption == r["caption"]
    if isinstance(entities_npz, (bytes, bytearray)):
        with np.load(io.BytesIO(entities_npz), allow_pickle=False) as z:
            entities_npz = {k: z[k] for k in z.files}
    np.testing.assert_array_equal(np.asarray(entities_npz["tracks"], np.float32), r["entity_tracks"])
    np.testing.assert_array_equal(np.asarray(entities_npz["mask"]), r["entity_mask"])


def test_plain_webdataset_reads_all_samples(shards):
    import webdataset as wds

    urls, ref = shards
    seen = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        seen[s["__key__"]] = s
        assert decode_sample({k: v for k, v in s.items() if not k.startswith("__")})["frames"].shape == (L, H, W, 3)
        _check_members(s["__key__"], ref, s["flow.pfz"], s["entities.npz"], json.loads(s["json"]), s["txt"].decode())
    assert set(seen) == set(ref)
    # its decoders apply too: .jpg -> RGB arrays, .json -> dict
    s = next(iter(wds.WebDataset(urls[0], shardshuffle=False).decode("rgb8")))
    assert s["f000.jpg"].shape == (H, W, 3) and isinstance(s["json"], dict)


def test_huggingface_datasets_reads_all_samples(shards, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    urls, ref = shards
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == len(ref)
    assert set(ds["__key__"]) == set(ref)
    assert {f"f{i:03d}.jpg" for i in range(L)} | {"txt", "json", "flow.pfz", "anchors.npz", "entities.npz"} <= set(ds.column_names)
    for row in ds:
        key = row["__key__"]
        img = np.asarray(row["f000.jpg"].convert("RGB"))
        assert img.shape == (H, W, 3)
        assert np.abs(img.astype(int) - ref[key]["frames"][0].astype(int)).mean() < 1.0   # same JPEG, any decoder
        _check_members(key, ref, row["flow.pfz"], row["entities.npz"], row["json"], row["txt"])


@pytest.mark.slow
def test_ray_data_reads_all_samples(shards):
    import ray

    urls, ref = shards
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        started = True
    try:
        rows = ray.data.read_webdataset(urls).take_all()
    finally:
        if started:
            ray.shutdown()
    assert len(rows) == len(ref) and {r["__key__"] for r in rows} == set(ref)
    for row in rows:
        key = row["__key__"]
        assert row["f000.jpg"].shape == (H, W, 3)
        np.testing.assert_allclose(row["f001.jpg"].astype(float), ref[key]["frames"][1].astype(float), atol=8)
        _check_members(key, ref, row["flow.pfz"], row["entities.npz"], row["json"], row["txt"])
        frames = np.stack([row[f"f{i:03d}.jpg"] for i in range(L)])
        assert frames.shape == (L, H, W, 3) and frames.dtype == np.uint8
