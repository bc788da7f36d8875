"""Where a trainer's samples come from: ``read_samples(url)`` (decoded samples, a webdataset
pipeline split across nodes and DataLoader workers) and the stages ``make_dataset`` starts with:
this rank's and worker's shards (exactly once per epoch, or resampled), the tar reader that opens
object-store shards (``s3://``, ``gs://``: ``shard_samples``, through ``pipeline.storage``), the
sample shuffle buffer, the per-rank sample limit, and the per-process state they share (seed,
epoch, passes)."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import webdataset as wds

from pipeline import storage
from pipeline.shards import expand_urls
from schemas.sample import decode_sample

def _open_shards(data: Iterable[dict], handler=wds.reraise_exception) -> Iterator[dict]:
    """webdataset's ``url_opener``, with object-store URLs opened as pyarrow streams."""
    for sample in data:
        url = sample["url"]
        try:
            # object stores and remote file systems through pyarrow (credentials from the
            # environment, options in the query); files, pipe:, http ... through webdataset
            if storage.opened_by_pyarrow(url):
                sample.update(stream=storage.open_stream(url))
            else:
                sample.update(stream=wds.gopen(url))
        except Exception as exn:  # noqa: BLE001 - the handler decides, as webdataset's does
            exn.args = exn.args + (storage.redact(url),)
            if handler(exn):
                continue
            break
        yield sample


def _shard_samples(src: Iterable[dict], handler=wds.reraise_exception) -> Iterator[dict]:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    files = tar_file_expander(_open_shards(src, handler), handler=handler)
    return group_by_keys(files, handler=handler)


# ``wds.tarfile_to_samples`` for local and object-store shards alike
shard_samples = wds.filters.pipelinefilter(_shard_samples)


def _decode(raw: dict) -> dict:
    members = {k: v for k, v in raw.items() if not k.startswith("__")}
    return decode_sample(members, key=raw["__key__"])


def read_samples(url, shuffle_shards: bool = False):
    """Decoded samples of the shards at ``url`` (see module docstring)."""
    urls = expand_urls(url)
    if any(storage.opened_by_pyarrow(u) for u in urls):
        stages = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker]
        if shuffle_shards:
            stages.append(wds.shuffle(100))
        return wds.DataPipeline(*stages, shard_samples(), wds.map(_decode))
    ds = wds.WebDataset(urls, shardshuffle=shuffle_shards, empty_check=False,
                        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker)
    return ds.map(_decode)



class SourceState:
    """Mutable per-dataset state shared by the pipeline stages of one process (pickled with
    the dataset into each DataLoader worker): the epoch set by the trainer and the number of
    passes this copy has made (persistent workers make several)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self.epoch = 0
        self.passes = -1          # passes since the last set_epoch (0 during the first one)
        self.rank = self.worker = 0

    def rng(self, *parts: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()          # fresh OS entropy: distinct per worker and pass
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, self.epoch, max(self.passes, 0), *parts])


def world_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else torch.distributed when initialised, else the
    RANK / WORLD_SIZE environment variables, else (0, 1)."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("pass both rank and world_size, or neither")
        r, w = int(rank), int(world_size)
    else:
        r, w = 0, 1
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                r, w = dist.get_rank(), dist.get_world_size()
            elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
                r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except ImportError:
            if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
                r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"invalid rank {r} for world size {w}")
    return r, w


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current torch DataLoader worker ((0, 1) outside one)."""
    try:
        import torch.utils.data
    except ImportError:
        return 0, 1
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardSource:
    """First pipeline stage: this rank's and worker's shards, as ``dict(url=...)``.

    Finite mode: the shard list (permuted by (seed, epoch) when ``shuffle_shards`` and a seed
    is set, identically on every rank) is split round-robin by rank, then by worker: every
    shard, hence every sample, is read exactly once per epoch across ranks x workers.
    Resampled mode: shards are drawn uniformly with replacement, forever.
    """

    def __init__(self, urls: list[str], state: SourceState, rank, world_size, shuffle_shards: bool, resampled: bool):
        self.urls, self.state = list(urls), state
        self.rank, self.world_size = rank, world_size
        self.shuffle_shards, self.resampled = shuffle_shards, resampled

    def __call__(self) -> Iterator[dict]:
        st = self.state
        st.passes += 1
        rank, world = world_info(self.rank, self.world_size)
        worker, nworkers = worker_info()
        st.rank, st.worker = rank, worker
        if self.resampled:
            rng = st.rng(1, rank, worker)
            while True:
                yield {"url": self.urls[int(rng.integers(len(self.urls)))]}
        consumers = world * nworkers
        if len(self.urls) < consumers:
            raise ValueError(
                f"fewer shards than readers: {len(self.urls)} shard(s) for world_size {world} x "
                f"{nworkers} DataLoader worker(s) = {consumers}; each reader needs at least one shard "
                "(use fewer workers, write smaller shards, or make_dataset(..., resampled=True))")
        urls = list(self.urls)
        if self.shuffle_shards and st.seed is not None:
            np.random.default_rng([int(st.seed) & 0xFFFFFFFF, st.epoch, st.passes, 2]).shuffle(urls)
        mine = urls[rank::world][worker::nworkers]
        if self.shuffle_shards and st.seed is None:
            np.random.default_rng().shuffle(mine)
        for u in mine:
            yield {"url": u}


class SampleShuffle:
    """Sample shuffle buffer over the raw (still encoded) samples."""

    def __init__(self, size: int, state: SourceState):
        self.size, self.state = int(size), state

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        if self.size < 2:
            yield from src
            return
        rng = None
        buf: list[dict] = []
        for s in src:
            if rng is None:   # after the shard source has started: rank and worker are known
                rng = self.state.rng(3, self.state.rank, self.state.worker)
            if len(buf) < self.size:
                buf.append(s)
                continue
            i = int(rng.integers(len(buf)))
            buf[i], s = s, buf[i]
            yield s
        if rng is not None:
            rng.shuffle(buf)
        yield from buf


class SampleLimit:
    """Stops after ``n`` samples per rank per pass, split exactly among the workers."""

    def __init__(self, n: int):
        self.n = int(n)

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        worker, nworkers = worker_info()
        quota = self.n // nworkers + (1 if worker < self.n % nworkers else 0)
        if quota <= 0:
            return
        for i, s in enumerate(src):
            yield s
            if i + 1 >= quota:
                return
