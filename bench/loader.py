"""Benchmark of the trainers' loader (pipeline.train.loader.make_dataset) per profile.

    .venv/bin/python bench/loader.py [--profiles dragnuwa-hd,cogvideox,wan] [--samples 8] [--passes 1]

For each profile (frames and size of ``pipeline.config.PROFILES``) it writes ``--samples``
synthetic samples (two moving shapes over a panning background, placed in proportion to the
frame; exact flow, anchors and two entities) into 4 shards in a temp folder, then prints:

- samples/s of ``make_dataset`` through a ``torch.utils.data.DataLoader`` with 0 workers (the
  main process, torch on ``--threads`` threads, default 1: one core) and 2 workers (two
  cores), for conditions "dragnuwa" and "dragnuwa"+"dragentity", paper augmentation on
  (after one warm-up pass; ``--passes`` timed passes over all samples). Batches of
  ``--batch-size`` (default 2) at the HD size; of 1 with ``prefetch_factor`` 1 above it,
  where one dragnuwa+dragentity sample is 0.7 GB (cogvideox) to 1.4 GB (wan) of float32
  tensors;
- the time to build one trajectory map (8 drawn tracks) per Gaussian preset and filter
  method at the profile size, with the presets in pixels (``gaussian_scale="none"``) and
  scaled with the width (``"width"``; median of ``--repeats``), and, for scale, the time to
  filter a dense map of that size.

A figure printer, not a test: nothing is asserted. Note the machine's load (printed) when
reading the numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.config import PROFILES  # noqa: E402
from pipeline.train.conditions import GAUSSIAN_PRESETS, gaussian_filter, scale_gaussian, trajectory_map  # noqa: E402
from pipeline.train import make_dataset, read_samples  # noqa: E402
from pipeline.shards import TarShardWriter  # noqa: E402
from pipeline.testdata.synthetic import disc, rect, render_scene  # noqa: E402
from schemas.sample import dequantize_flow, encode_jpeg, encode_sample  # noqa: E402
from stages.trajectories import compute_anchors, draw_trajectories  # noqa: E402

HD = PROFILES["dragnuwa-hd"]


def synthetic_sample(seed: int, key: str, L: int, H: int, W: int) -> dict:
    """A sample of L frames of W x H: shapes placed and moving in proportion to the HD layout."""
    rng = np.random.default_rng(seed)
    sx, sy = W / HD.width, H / HD.height
    shapes = [disc((rng.uniform(150, 250) * sx, rng.uniform(120, 200) * sy), 50 * sy,
                   velocity=(rng.uniform(2, 6) * sx, rng.uniform(-2, 2) * sy)),
              rect((rng.uniform(350, 450) * sx, rng.uniform(120, 200) * sy), (110 * sx, 80 * sy),
                   velocity=(rng.uniform(-6, -2) * sx, rng.uniform(-2, 2) * sy))]
    scene = render_scene(W, H, L, shapes, background_velocity=(rng.uniform(-3, 3) * sx, rng.uniform(-2, 2) * sy),
                         seed=seed)
    flow = dequantize_flow(scene.flow)
    anchors = compute_anchors(flow, interval=16, rng=rng)
    centers = np.transpose(scene.centers, (1, 0, 2)).astype(np.float32)
    inside = (centers[..., 0] >= 0) & (centers[..., 0] <= W - 1) & (centers[..., 1] >= 0) & (centers[..., 1] <= H - 1)
    return {
        "caption": f"synthetic clip {key}", "meta": {"clip_id": key},
        "frames_jpeg": [encode_jpeg(f, 95) for f in scene.frames], "flow": flow,
        **{k: anchors[k] for k in ("anchor_tracks", "anchor_weights", "anchor_visible")},
        "anchor_reliable": anchors["anchor_visible"],    # exact flow: every in-frame step holds
        "entity_ids": np.array([1, 2], np.int32), "entity_mask": scene.ids[0],
        "entity_radii": np.array([50.0 * sy, 40.0 * sy], np.float32), "entity_tracks": centers,
        "entity_visibility": inside & scene.visible.T,
    }


def write_shards(out_dir: str, samples: int, L: int, H: int, W: int, shards: int = 4) -> list[str]:
    per = -(-samples // shards)
    i = 0
    for sh in range(shards):
        w = TarShardWriter(out_dir, "bench", sh)
        for _ in range(per):
            if i < samples:
                key = f"c{i:05d}"
                w.write(key, encode_sample(synthetic_sample(i, key, L, H, W)))
                i += 1
        w.close()
    return sorted(os.path.join(out_dir, n) for n in os.listdir(out_dir) if n.endswith(".tar"))


def loader_rate(urls, conditions, workers: int, passes: int, batch_size: int | None, shape: tuple,
                prefetch: int | None = None) -> float:
    ds = make_dataset(urls, conditions=conditions, augment=True)
    extra = {"prefetch_factor": prefetch} if workers and prefetch else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                     persistent_workers=workers > 0, **extra)
    for _ in dl:                                   # warm-up pass (worker start, caches)
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(passes):
        for s in dl:
            n += 1 if batch_size is None else len(s["key"])
            assert s["video"].shape[-4:] == shape
    return n / (time.perf_counter() - t0)


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_figures(name: str, args) -> None:
    p = PROFILES[name]
    L, H, W = p.frames, p.height, p.width
    big = L * H * W > HD.frames * HD.height * HD.width
    samples = args.samples if not big else max(4, args.samples // 2)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        t0 = time.perf_counter()
        urls = write_shards(tmp, samples, L, H, W)
        size_mb = sum(os.path.getsize(u) for u in urls) / 1e6
        print(f"\n== {name}: {samples} samples ({L}x{H}x{W}) in {len(urls)} shards, {size_mb:.1f} MB, "
              f"written in {time.perf_counter() - t0:.1f} s")

        bs = (args.batch_size or None) if not big else 1
        prefetch = None if not big else 1
        print(f"loader throughput (DataLoader, batch_size={bs}{', prefetch_factor=1' if prefetch else ''}, "
              "paper augmentation):")
        print(f"  {'conditions':<24} {'workers':>7} {'samples/s':>10} {'per core':>9}")
        for conditions in (("dragnuwa",), ("dragnuwa", "dragentity")):
            for workers in (0, 2):
                rate = loader_rate(urls, conditions, workers, args.passes, bs, (L, 3, H, W), prefetch)
                cores = max(1, workers) if workers else args.threads
                print(f"  {'+'.join(conditions):<24} {workers:>7} {rate:>10.2f} {rate / cores:>9.2f}")

        s = next(iter(read_samples(urls[0])))
        rng = np.random.default_rng(0)
        idx = np.zeros(0, np.int64)
        while len(idx) < 8:
            idx = draw_trajectories(s["anchor_weights"], rng, 8)
        print(f"one trajectory map ({L}x2x{H}x{W}, {len(idx)} tracks; median of {args.repeats}):")
        print(f"  {'preset':<11} {'scale':>5} {'kernel':>6} {'sigma':>5} {'norm':>5}  {'sparse ms':>9} "
              f"{'separable ms':>12} {'fft ms':>8}")
        for pname, f0 in GAUSSIAN_PRESETS.items():
            for scale in ("none", "width"):
                f = scale_gaussian(f0, W, scale)
                if scale == "width" and f is f0:
                    continue
                ms = [1000 * median_time(lambda m=m: trajectory_map(s["anchor_tracks"], s["anchor_visible"], idx, H, W,
                                                                    f, method=m), args.repeats)
                      for m in ("sparse", "separable", "fft")]
                print(f"  {pname:<11} {scale:>5} {f.kernel_size:>6} {f.sigma:>5.1f} {f.normalize:>5}  {ms[0]:>9.1f} "
                      f"{ms[1]:>12.1f} {ms[2]:>8.1f}")
        raw = trajectory_map(s["anchor_tracks"], s["anchor_visible"], idx, H, W, None)
        ms = 1000 * median_time(lambda: trajectory_map(s["anchor_tracks"], s["anchor_visible"], idx, H, W, None),
                                args.repeats)
        print(f"  (rasterising alone, no filter: {ms:.1f} ms)")
        dense = torch.randn_like(raw)
        for pname in ("paper", "release"):
            f = GAUSSIAN_PRESETS[pname]
            ms = [1000 * median_time(lambda m=m: gaussian_filter(dense, f, method=m), max(1, args.repeats // 2))
                  for m in ("separable", "fft")]
            print(f"  dense {L}x2x{H}x{W} map, {pname}: separable {ms[0]:.0f} ms, fft {ms[1]:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="dragnuwa-hd,cogvideox,wan", help="comma-separated built-in profiles")
    ap.add_argument("--samples", type=int, default=8, help="samples per profile (halved, at least 4, above HD)")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2, help="DataLoader batch size at HD (0 = batch_size=None)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in the main process (DataLoader workers always use 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    for name in [p for p in args.profiles.split(",") if p]:
        profile_figures(name, args)


if __name__ == "__main__":
    main()
