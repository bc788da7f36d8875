"""--stage flow keeps its output; a later full run resumes from it and gives the same shards."""
import os

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.train import read_samples
from pipeline.run.plan import run
from pipeline.testdata.sample_data import build_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    build_sample(str(d))
    return str(d)


def _by_key(out):
    return {s["key"]: s for s in read_samples(out)}


def test_stage_flow_then_shards_resumes_and_matches_direct_run(sample, tmp_path):
    cfg = Config(profile="dragnuwa-ld").replace(**{"shards.samples_per_shard": 4})
    staged, direct = str(tmp_path / "staged"), str(tmp_path / "direct")
    r1 = run(cfg, "sample", sample, staged, stage="flow", executor="local")
    assert r1.ok == 8 and r1.index is None
    assert os.path.exists(os.path.join(staged, "_stages", "flow", "sample-dragnuwa-ld-000000.stats.json"))
    assert not any(n.endswith(".tar") for n in os.listdir(staged))
    r2 = run(cfg, "sample", sample, staged, stage="shards", executor="local")
    assert r2.ok == 8 and all(s["resumed_from"] == "flow" for s in r2.stats)
    run(cfg, "sample", sample, direct, executor="local")
    a, b = _by_key(staged), _by_key(direct)
    assert a.keys() == b.keys() and len(a) == 8
    for k in a:
        np.testing.assert_array_equal(a[k]["frames"], b[k]["frames"])
        np.testing.assert_array_equal(a[k]["flow"], b[k]["flow"])
        np.testing.assert_array_equal(a[k]["anchor_tracks"], b[k]["anchor_tracks"])


def test_unknown_stage_is_refused(sample, tmp_path):
    from pipeline.steps import SetupError

    with pytest.raises(SetupError, match="unknown stage"):
        run(Config(), "sample", sample, str(tmp_path / "o"), stage="nope", executor="local")
