"""Trainers read a run's shards from object storage by the same URL the run wrote (issue 15):
``read_samples`` and ``make_dataset`` on the OUT URI (its index.json) and on a brace pattern
with pyarrow's options in the query, split over DataLoader workers; and the plain
``webdataset`` library through a ``pipe:`` URL (docs/trainers.md). Against moto's S3 server
on loopback (tests/pipeline/s3_util)."""
import collections
import sys

import pytest

from pipeline.config import Config

torch = pytest.importorskip("torch")

N = 8
PREFIX = "sample-dragnuwa-ld"


@pytest.fixture(scope="module")
def s3_run(s3, sample_run):
    """The embedded sample run to s3://, one clip per shard (8 tars)."""
    from pipeline.run.plan import run

    b = s3.bucket()
    out = s3.uri(b, "runs/sample")
    res = run(Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": 1}), "sample",
              sample_run.data, out, executor="local")
    assert res.ok == N and res.shards == N
    pattern = f"s3://{b}/runs/sample/{PREFIX}-{{000000..{N - 1:06d}}}.tar?{s3.query}"
    return out, pattern


def test_read_samples_from_the_out_uri_and_a_brace_pattern(s3_run, sample_run):
    from pipeline.train import read_samples

    out, pattern = s3_run
    keys = [s["key"] for s in read_samples(out)]
    assert len(keys) == N and set(keys) == {s["key"] for s in read_samples(sample_run.out)}
    assert [s["key"] for s in read_samples(pattern)] == keys
    s = next(iter(read_samples(pattern)))
    assert s["frames"].ndim == 4 and s["flow"].shape[0] == s["frames"].shape[0] - 1


def test_make_dataset_streams_from_s3_with_dataloader_workers(s3_run):
    from pipeline.train import make_dataset

    out, pattern = s3_run
    for url in (pattern, out):
        seen = collections.Counter()
        ds = make_dataset(url, conditions=("dragnuwa",), shuffle=4, seed=0)
        for batch in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2):
            seen.update(batch["key"])
        assert len(seen) == N and set(seen.values()) == {1}, seen


def test_plain_webdataset_reads_them_through_a_pipe_url(s3_run):
    import webdataset as wds

    from pipeline.storage import join

    out, _ = s3_run
    url = join(out, f"{PREFIX}-{{000000..{N - 1:06d}}}.tar")
    ds = wds.WebDataset(f"pipe:{sys.executable} -m pipeline.storage cat '{url}'", shardshuffle=False)
    samples = list(ds)
    assert len(samples) == N and all("flow.pfz" in s and "json" in s for s in samples)
