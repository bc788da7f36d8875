"""``stats`` (summary table + plots), run progress with ETA, the run's closing summary."""
from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from pipeline.run.plan import RunResult
from pipeline.run.progress import RunProgress, format_run_summary
from pipeline.tools.report import PLOT_FILES, collect, distribution, format_report, write_plots


def _stats(shard, ok=2, error=0, filtered=0, skipped=False, secs=None):
    return {"shard": shard, "ok": ok, "error": error, "filtered": filtered, "clips": ok + error + filtered,
            "seconds": 1.5, "skipped": skipped, "tars": [f"x-{shard:06d}.tar"], "tar_counts": [ok],
            "stage_seconds": secs or {"decode": 1.0, "flow": 2.0, "motion": 0.25, "trajectories": 0.05,
                                      "entities": 0.7}}


def test_distribution():
    d = distribution([1, 2, 3, None, float("nan"), 4])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["min"] == 1 and d["max"] == 4
    assert distribution([])["mean"] is None


def test_progress_plain_lines_with_eta():
    buf = io.StringIO()
    p = RunProgress(stream=buf, use_rich=False)
    p(_stats(0), 1, 4)
    p(_stats(1, ok=1, error=1), 2, 4)
    p(_stats(2, skipped=True), 3, 4)
    p.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[1/4 shards 25%] shard 000000")
    assert "ETA" in lines[0] and "elapsed" in lines[0]
    assert "ok 3 error 1 filtered 0" in lines[1]
    assert "skipped (done)" in lines[2]
    assert "decode" in lines[0] and "flow" in lines[0]          # time share per stage
    assert lines[1].rstrip().endswith(tuple("0123456789"))


def test_progress_rich_bar_renders_and_closes():
    buf = io.StringIO()
    p = RunProgress(stream=buf, use_rich=True, width=200)
    p(_stats(0), 1, 2)
    p(_stats(1), 2, 2)
    p.close()
    out = buf.getvalue()
    assert "shards" in out and "2/2" in out and "ok 4" in out and "ETA 0:00:00" in out


def test_progress_defaults_to_plain_when_not_a_tty():
    buf = io.StringIO()                      # StringIO.isatty() is False
    p = RunProgress(stream=buf)
    p(_stats(0), 1, 1)
    p.close()
    assert buf.getvalue().startswith("[1/1 shards")


def test_run_summary_table():
    res = RunResult(out_dir="/o", prefix="sample-dragnuwa-ld", stage="shards", clips=5, ok=3, error=1,
                    filtered=1, shards=2, seconds=2.0,
                    index={"url": "sample-dragnuwa-ld-{000000..000001}.tar", "samples": 3},
                    stats=[_stats(0), _stats(1, ok=1, error=1, filtered=1)])
    text = format_run_summary(res)
    assert "5 clips -> ok 3, error 1, filtered 1 in 2 shards (0 already done)" in text
    assert "shards: /o/sample-dragnuwa-ld-{000000..000001}.tar  (3 samples)" in text
    assert "errors: /o/errors.parquet" in text and "filtered: /o/filtered.parquet" in text
    # throughput per stage: 3 ok clips over 2 s of flow = 1.50 clips/s
    flow_row = next(line for line in text.splitlines() if line.startswith("flow"))
    assert flow_row.split()[1:] == ["4.00", "50%", "0.75"]
    order = [line.split()[0] for line in text.splitlines()
             if line.split() and line.split()[0] in ("decode", "flow", "motion", "trajectories", "entities")]
    assert order == ["decode", "flow", "motion", "trajectories", "entities"]
    assert "errors by reason" not in text and "Ray's logs" not in text   # attributes not set


def test_run_summary_reasons_setup_and_ray_logs():
    res = RunResult(out_dir="/o", prefix="p", stage="shards", clips=9, error=9, shards=1, seconds=1.0)
    res.reasons = {"timeout": 2, "internal": 5, "decode_error": 2}
    res.setup = {"out": "/o (writable)", "flow": "dis medium", "tracker": "flow", "seconds": "0.01"}
    res.ray_logs = "/tmp/ray/session_latest/logs"
    text = format_run_summary(res)
    assert "errors by reason: internal 5, decode_error 2, timeout 2" in text
    assert "setup ok (0.01 s): flow dis medium | tracker flow" in text
    assert text.splitlines()[-1] == "Ray's logs: /tmp/ray/session_latest/logs"


def test_stats_on_folder_without_run(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    with pytest.raises(FileNotFoundError):
        collect(str(tmp_path))
    res = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert res.exit_code == 2 and "no shard stats" in res.output


@pytest.mark.slow
def test_stats_of_the_sample_run(sample_run, tmp_path):
    s = collect(sample_run.out)
    r = sample_run.result
    c = s["counts"]
    assert (c["clips"], c["ok"], c["error"], c["filtered"]) == (r.clips, r.ok, r.error, r.filtered)
    assert c["samples_read"] == r.ok and c["frames"] == 8 * r.ok
    assert c["tar_bytes"] > c["sample_bytes"] > 0
    d = s["distributions"]
    assert d["anchors per clip"]["n"] == r.ok and d["anchors per clip"]["min"] == 240   # 320x192 / 16
    assert d["flow |f| mean"]["n"] == r.ok and d["flow |f| mean"]["max"] > 0
    assert 0 < d["anchor visibility"]["mean"] <= 1
    # trackability (issue 14): every sample of a schema-2 run has checked anchors
    assert d["anchors reliable through"]["n"] == r.ok and 0 < d["anchors reliable through"]["mean"] <= 1
    assert c["unverified_anchors"] == 0 and c["no_reliable_anchor"] <= r.ok
    assert len(s["visibility_by_frame"]["anchors reliable"]) == 8
    if c["with_entities"]:
        assert d["entity radius"]["min"] > 0
    assert set(s["stages"]) >= {"decode", "flow", "motion", "trajectories"}
    text = format_report(s)
    for needle in ("clips", "ok", "filtered", "anchors per clip", "entity radius", "camera inlier ratio",
                   "scene cuts", "stage", "anchors reliable through", "flow failures", "no reliable anchor"):
        assert needle in text
    paths = write_plots(s, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == list(PLOT_FILES)
    for p in paths:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150


@pytest.mark.slow
def test_stats_cli_on_sample_run(sample_run, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    plots = str(tmp_path / "p")
    res = CliRunner().invoke(app, ["stats", sample_run.out, "--plots", plots])
    assert res.exit_code == 0, res.output
    assert f"{sample_run.result.clips}" in res.output and "per clip" in res.output
    assert sorted(os.listdir(plots)) == sorted(PLOT_FILES)
    res = CliRunner().invoke(app, ["stats", sample_run.out, "--json", "--no-plots"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["counts"]["ok"] == sample_run.result.ok and "raw" not in data
