"""The trainers' side: read shards by URL.

``read_samples(url)`` yields decoded samples (numpy arrays); it is a webdataset pipeline
(a torch IterableDataset), so it can go straight into a ``torch.utils.data.DataLoader``:
shards are split across DataLoader workers, each sample is read once per epoch.

``url`` may be a tar path, a brace pattern (``out/x-{000000..000009}.tar``), a list of
those, or an output folder (its ``index.json`` lists the shards).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterable

from schemas.sample import decode_sample


def expand_urls(url: str | Iterable[str]) -> list[str]:
    if not isinstance(url, str):
        out = []
        for u in url:
            out.extend(expand_urls(u))
        return out
    if os.path.isdir(url):
        index = os.path.join(url, "index.json")
        if os.path.exists(index):
            with open(index) as f:
                shards = json.load(f)["shards"]
            return [os.path.join(url, s["url"]) for s in shards]
        return sorted(glob.glob(os.path.join(url, "*.tar")))
    from braceexpand import braceexpand

    urls = list(braceexpand(url))
    if any(ch in url for ch in "*?[") and "://" not in url:
        urls = sorted(p for u in urls for p in glob.glob(u))
    if not urls:
        raise FileNotFoundError(f"no shards match {url!r}")
    return urls


def _decode(raw: dict) -> dict:
    members = {k: v for k, v in raw.items() if not k.startswith("__")}
    return decode_sample(members, key=raw["__key__"])


def read_samples(url, shuffle_shards: bool = False):
    """Decoded samples of the shards at ``url`` (see module docstring)."""
    import webdataset as wds

    urls = expand_urls(url)
    ds = wds.WebDataset(urls, shardshuffle=shuffle_shards, empty_check=False,
                        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker)
    return ds.map(_decode)
