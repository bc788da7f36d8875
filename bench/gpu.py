"""GPU benchmark of the model backends, with random weights (no downloads): one script, one table.

    python bench/gpu.py                 # on a GPU machine: about 3-5 minutes
    python bench/gpu.py --cpu --quick   # tiny sizes on the CPU (checks that everything runs)
    python bench/gpu.py --only sam --budget-s 500   # only the SAM section (ViT-H/L/B)
    python bench/gpu.py --unimatch-source ~/src/unimatch   # also UniMatch (source only)

Prints, at the profile size 576x320 (HD):

* flow pairs/s per backend, model, precision (fp32 / bf16 autocast) and batch size: RAFT
  small and large (``stages.flow.models.RAFTFlow``), UniMatch when its source folder is given;
  the random weights are saved to a temporary checkpoint and loaded through the backend's
  real loading code, as a user's weights file would be;
* SAM automatic masks, seconds per clip (first frame) at ViT-H/L/B, 32x32 points:
  segment-anything's SamAutomaticMaskGenerator against ours (``stages.entities.sam_amg``), encoder
  batch 1 and 4, decoder batch 256 and 1024, fp32 and bf16, with the share of time outside
  the networks ("post"), through the pipeline's mask source (``bench/sam.py``);
* CoTracker3 seconds per clip (16 frames, 8 queries) when the ``cotracker`` package is
  importable (else the reason it was skipped);
* the GPU stages end to end (``bench_e2e``): JPEG decode on the device, RAFT large forward
  and backward flow, SAM ViT-H automatic masks, for batches of 1, 4 and 8 clips: clips/s
  per GPU and GPU busy %;
* GPU utilisation during each measurement (``nvidia-smi`` sampled every 0.1 s, else
  ``torch.cuda.utilization``) and peak GPU memory.

Random weights give the cost, not the quality: for accuracy use real checkpoints (the CPU
benchmark ``python -m bench`` measures flow error on clips of known motion). Results also
go to bench/results/gpu-<time>.json. A time budget (``--budget-s``) skips what is left.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


# ----------------------------------------------------------------------------- utilisation
class GpuSampler:
    """Samples GPU utilisation (%) and memory in a thread while a measurement runs."""

    def __init__(self, device, interval: float = 0.1):
        self.device = device
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = None
        self.source = None
        if device.type != "cuda":
            return
        self.index = device.index if device.index is not None else 0
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
        else:
            try:
                import torch

                torch.cuda.utilization(self.index)
                self.source = "torch.cuda.utilization"
            except Exception:
                self.source = None

    def _read(self) -> float | None:
        try:
            if self.source == "nvidia-smi":
                out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                return float(out.stdout.strip().splitlines()[0])
            if self.source:
                import torch

                return float(torch.cuda.utilization(self.index))
        except Exception:
            return None
        return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            v = self._read()
            if v is not None:
                self.samples.append(v)

    def __enter__(self):
        if self.source:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"util_mean": None, "util_max": None, "util_source": self.source}
        return {"util_mean": round(float(np.mean(self.samples)), 1), "util_max": round(float(np.max(self.samples)), 1),
                "util_source": self.source}


# ----------------------------------------------------------------------------- helpers
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(device, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with GpuSampler(device) as smp:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        secs = time.perf_counter() - t0
    out = {"seconds": round(secs, 4), "repeats": repeats, **smp.summary()}
    if device.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


def _clip(width: int, height: int, frames: int, seed: int = 0) -> np.ndarray:
    from pipeline.testdata.synthetic import random_scene

    return random_scene(seed, width=width, height=height, num_frames=frames, max_pan=4.0).frames


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def ok(self, need: float = 0.0) -> bool:
        return self.left() > need


# ----------------------------------------------------------------------------- flow
def bench_raft(device, tmp: str, width: int, height: int, combos, pairs: int, budget: Budget,
               models=("small", "large"), iters: int = 12) -> list[dict]:
    """``combos``: (precision, batch size) pairs to measure for each model."""
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    from stages.flow.base import make_flow_backend

    clip = _clip(width, height, pairs + 1, seed=1)
    rows = []
    for model in models:
        torch.manual_seed(0)
        net = (raft_small if model == "small" else raft_large)(weights=None, progress=False)
        ckpt = os.path.join(tmp, f"raft_{model}_random.pth")
        torch.save(net.state_dict(), ckpt)
        del net
        for prec, bs in combos:
            row = {"backend": "raft", "model": f"raft_{model}", "precision": prec, "batch_size": bs,
                   "size": f"{width}x{height}", "iters": iters}
            if not budget.ok(15):
                rows.append({**row, "skipped": "time budget"})
                continue
            try:
                be = make_flow_backend("raft", checkpoint=ckpt, device=str(device), batch_size=bs,
                                       precision=prec, model=model, iters=iters)
                m = _measure(device, lambda: be.forward(clip), repeats=1 if device.type == "cpu" else 2,
                             warmup=0 if device.type == "cpu" else 1)
                n = pairs * m["repeats"]
                rows.append({**row, **m, "pairs_per_s": round(n / m["seconds"], 2)})
                del be
            except Exception as e:  # e.g. out of memory at a large batch: report and go on
                rows.append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def bench_unimatch(device, tmp: str, source: str | None, width: int, height: int, combos,
                   pairs: int, budget: Budget) -> list[dict]:
    import torch

    from stages.flow.base import make_flow_backend
    from stages.flow.models import UNIMATCH_MODELS, import_unimatch

    if not source:
        return [{"backend": "unimatch", "skipped": "no --unimatch-source given (UniMatch is source-only: "
                                                  "git clone https://github.com/autonomousvision/unimatch)"}]
    try:
        cls = import_unimatch(source)
    except ImportError as e:
        return [{"backend": "unimatch", "skipped": str(e)[:300]}]
    clip = _clip(width, height, pairs + 1, seed=2)
    model = "scale2-regrefine6"
    torch.manual_seed(0)
    net = cls(feature_channels=128, num_head=1, ffn_dim_expansion=4, num_transformer_layers=6, task="flow",
              **UNIMATCH_MODELS[model]["build"])
    ckpt = os.path.join(tmp, f"gmflow-{model}-random.pth")
    torch.save({"model": net.state_dict()}, ckpt)
    del net
    rows = []
    for prec, bs in combos:
        row = {"backend": "unimatch", "model": model, "precision": prec, "batch_size": bs, "size": f"{width}x{height}"}
        if not budget.ok(15):
            rows.append({**row, "skipped": "time budget"})
            continue
        try:
            be = make_flow_backend("unimatch", checkpoint=ckpt, source=source, device=str(device), batch_size=bs,
                                   precision=prec, model=model)
            m = _measure(device, lambda: be.forward(clip), repeats=1 if device.type == "cpu" else 2,
                         warmup=0 if device.type == "cpu" else 1)
            rows.append({**row, **m, "pairs_per_s": round(pairs * m["repeats"] / m["seconds"], 2)})
            del be
        except Exception as e:
            rows.append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_dis_reference(width: int, height: int, pairs: int) -> list[dict]:
    """The CPU flow of this machine for comparison (one process, OpenCV's default threads)."""
    from stages.flow.cpu import DISFlow

    clip = _clip(width, height, pairs + 1, seed=1)
    rows = []
    for preset in ("fast", "balanced", "medium"):
        be = DISFlow(preset)
        be.forward(clip[:2])
        t0 = time.perf_counter()
        be.forward(clip)
        s = time.perf_counter() - t0
        rows.append({"backend": "dis (CPU)", "model": preset, "precision": "-", "batch_size": 1,
                     "size": f"{width}x{height}", "seconds": round(s, 4), "pairs_per_s": round(pairs / s, 2)})
    return rows


# ----------------------------------------------------------------------------- SAM
def bench_sam(device, model_types, n_images: int, points_per_side: int, configs, budget: Budget) -> list[dict]:
    """segment-anything's automatic mask generator vs ours (``stages.entities.sam_amg``) through the
    ``sam`` mask source, per model size: ``bench.sam.bench_sam_amg`` (random weights with
    rescaled logits, thresholds calibrated to keep 30 % x 50 % of the candidates)."""
    import torch

    from bench.sam import bench_sam_amg

    out = []
    for mt in model_types:
        if not budget.ok(30):
            out.append({"model": f"sam_{mt}", "rows": [], "skipped": "time budget"})
            continue
        try:
            res = bench_sam_amg(mt, str(device), n_images, points_per_side, configs,
                                budget_s=max(0.0, budget.left() - 20))
        except Exception as e:
            res = {"model": mt, "rows": [], "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        out.append(res)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- the GPU stages end to end
def bench_e2e(device, tmp: str, width: int, height: int, frames: int, clips: int, batches, budget: Budget,
              raft_model: str = "large", sam_model: str = "vit_h", points_per_side: int = 32) -> list[dict]:
    """The GPU side of the pipeline's GPU plan at real sizes, random weights, one GPU: per
    batch of B clips, what the GPU operators do (``pipeline.run``): decode the stored JPEGs
    on the device (``torchvision.io.decode_jpeg``), RAFT forward flow of every pair of the B
    clips in one call (``forward_many``) and the backward flow (anchor reliability, entity
    checks), then SAM's automatic masks of the B first frames (``stages.entities.sam_amg``, image
    embeddings batched). Clips/s per GPU and GPU busy % (utilisation sampled during the run)
    for B = 1 against the larger batches. CoTracker3 is not included: it is not installable
    here (source only; ``bench_cotracker`` measures it where the package is present)."""
    import cv2
    import torch
    import torchvision
    from torchvision.models.optical_flow import raft_large, raft_small

    from bench.sam import calibrate, make_model
    from stages.entities.sam_amg import BatchedMaskGenerator
    from stages.flow.base import make_flow_backend

    torch.manual_seed(0)
    ckpt = os.path.join(tmp, f"raft_{raft_model}_e2e.pth")
    torch.save((raft_large if raft_model == "large" else raft_small)(weights=None).state_dict(), ckpt)
    raft = make_flow_backend("raft", checkpoint=ckpt, device=str(device), batch_size=16)
    jpegs = []
    for k in range(clips):
        fr = _clip(width, height, frames, seed=100 + k)
        jpegs.append([cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in fr])
    first = np.stack([cv2.imdecode(np.frombuffer(j[0], np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for j in jpegs])
    sam = make_model(sam_model, str(device), first[0])
    params = calibrate(sam, first[0], points_per_side, 0.3, 0.5)
    rows = []
    for b in batches:
        if not budget.ok(60):
            rows.append({"stage": "e2e", "batch_clips": b, "skipped": "time budget"})
            continue
        amg = BatchedMaskGenerator(sam, points_per_batch=256, encoder_batch=b, **params)

        def run_all():
            for i in range(0, clips, b):
                group = jpegs[i:i + b]
                if device.type == "cuda":
                    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for c in group for j in c]
                    dec = torchvision.io.decode_jpeg(data, device=device)
                    vids = [torch.stack(dec[k * frames:(k + 1) * frames]).permute(0, 2, 3, 1).cpu().numpy()
                            for k in range(len(group))]
                else:
                    vids = [np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                                      for j in c]) for c in group]
                raft.forward_many(vids)
                for v in vids:
                    raft.backward(v)
                amg.generate_many([v[0] for v in vids])

        m = _measure(device, run_all, repeats=1, warmup=0 if b > 1 else 1)
        rows.append({"stage": "e2e", "batch_clips": b, "clips": clips, "size": f"{width}x{height}", "frames": frames,
                     "raft": raft_model, "sam": sam_model, "points_per_side": points_per_side,
                     "clips_per_s": round(clips / m["seconds"], 3), **m})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = next((r for r in rows if r.get("batch_clips") == 1 and "clips_per_s" in r), None)
    for r in rows:
        if base and "clips_per_s" in r:
            r["vs_batch_1"] = round(r["clips_per_s"] / base["clips_per_s"], 2)
    return rows


# ----------------------------------------------------------------------------- CoTracker
def bench_cotracker(device, tmp: str, width: int, height: int, frames: int, queries: int, clips: int,
                    budget: Budget) -> list[dict]:
    row = {"stage": "cotracker", "size": f"{width}x{height}", "frames": frames, "queries": queries, "clips": clips}
    try:
        import cotracker  # noqa: F401
        from cotracker.predictor import CoTrackerPredictor
    except ImportError as e:
        return [{**row, "skipped": f"the cotracker package is not importable ({e}); it is source-only: "
                                  "pip install git+https://github.com/facebookresearch/co-tracker (CC BY-NC 4.0)"}]
    if not budget.ok(20):
        return [{**row, "skipped": "time budget"}]
    import torch

    try:
        from stages.entities.tracking import CoTrackerTracker
    except ImportError as e:
        return [{**row, "skipped": f"stages.entities.tracking.CoTrackerTracker not available ({e})"}]
    try:
        torch.manual_seed(0)
        # random weights: the predictor builds its model without loading when checkpoint is None
        pred = CoTrackerPredictor(checkpoint=None)
        ckpt = os.path.join(tmp, "cotracker3_offline_random.pth")
        torch.save(pred.model.state_dict(), ckpt)
        del pred
        tr = CoTrackerTracker(checkpoint=ckpt, device=str(device))
        vids = [_clip(width, height, frames, seed=20 + i) for i in range(clips)]
        rng = np.random.default_rng(0)
        centers = np.stack([rng.uniform(0, width - 1, queries), rng.uniform(0, height - 1, queries)], 1).astype(np.float32)

        def run():
            for v in vids:
                tr.track(v, centers)

        m = _measure(device, run, repeats=1, warmup=0 if device.type == "cpu" else 1)
        return [{**row, **m, "seconds_per_clip": round(m["seconds"] / clips, 3)}]
    except Exception as e:
        return [{**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}]


# ----------------------------------------------------------------------------- report
def _table(res: dict) -> str:
    lines = [f"trajshards GPU benchmark: {res['device_name']} ({res['device']}), torch {res['torch']}, "
             f"{res['seconds']} s, random weights (cost only)"]
    lines.append("flow pairs/s at " + res["flow_size"])
    lines.append(f"  {'backend':<10} {'model':<18} {'prec':<5} {'batch':>5} {'pairs/s':>9} {'util% mean/max':>15} {'mem GB':>7}")
    for r in res["flow"]:
        if "skipped" in r or "error" in r:
            lines.append(f"  {r.get('backend', ''):<10} {r.get('model', ''):<18} {r.get('precision', ''):<5} "
                         f"{r.get('batch_size', ''):>5}  {'skipped: ' + r['skipped'] if 'skipped' in r else 'error: ' + r['error']}")
            continue
        util = "-" if r.get("util_mean") is None else f"{r['util_mean']:.0f}/{r['util_max']:.0f}"
        lines.append(f"  {r['backend']:<10} {r['model']:<18} {r['precision']:<5} {r['batch_size']:>5} "
                     f"{r['pairs_per_s']:>9.1f} {util:>15} {r.get('peak_mem_gb', '-'):>7}")
    from bench.sam import sam_table

    for res_sam in res["sam"]:
        if "skipped" in res_sam or "error" in res_sam:
            lines.append(f"SAM {res_sam['model']}: {res_sam.get('skipped') or res_sam.get('error')}")
        else:
            lines.append(sam_table(res_sam))
    lines.append("CoTracker, seconds per clip")
    for r in res["cotracker"]:
        if "skipped" in r or "error" in r:
            lines.append(f"  {'skipped: ' + r['skipped'] if 'skipped' in r else 'error: ' + r['error']}")
            continue
        util = "-" if r.get("util_mean") is None else f"{r['util_mean']:.0f}/{r['util_max']:.0f}"
        lines.append(f"  {r['size']} {r['frames']} frames, {r['queries']} queries: {r['seconds_per_clip']:.3f} s/clip, "
                     f"util% {util}, mem {r.get('peak_mem_gb', '-')} GB")
    if res.get("e2e"):
        lines.append("GPU stages end to end (JPEG decode, RAFT forward + backward, SAM automatic masks), random weights:")
        for r in res["e2e"]:
            if "skipped" in r:
                lines.append(f"  batch {r['batch_clips']} clips: skipped: {r['skipped']}")
                continue
            util = "-" if r.get("util_mean") is None else f"{r['util_mean']:.0f}/{r['util_max']:.0f}"
            lines.append(f"  batch {r['batch_clips']} clips ({r['raft']} RAFT, sam_{r['sam']}, {r['size']} x "
                         f"{r['frames']}): {r['clips_per_s']:.3f} clips/s per GPU ({r.get('vs_batch_1', '-')}x batch 1), "
                         f"GPU busy % {util}, mem {r.get('peak_mem_gb', '-')} GB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (tiny sizes with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few batch sizes (a check that it runs)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda, or cpu with --cpu)")
    ap.add_argument("--unimatch-source", default=os.environ.get("UNIMATCH_SOURCE"),
                    help="UniMatch source folder (else UniMatch is skipped)")
    ap.add_argument("--budget-s", type=float, default=280.0, help="stop starting measurements after this")
    ap.add_argument("--only", nargs="+", choices=("flow", "sam", "cotracker", "e2e"), default=None,
                    help="run only these sections (e.g. --only sam)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own; 1 with --cpu --quick, which only checks that it runs)")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="JSON output folder")
    args = ap.parse_args(argv)

    import torch

    t0 = time.perf_counter()
    threads = args.threads if args.threads else (1 if args.cpu and args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    if args.device:
        device = torch.device(args.device)
    elif args.cpu or not torch.cuda.is_available():
        device = torch.device("cpu")
        if not args.cpu:
            print("no CUDA device: running on the CPU (use --cpu --quick for a short check)", file=sys.stderr)
    else:
        device = torch.device("cuda", 0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    quick = args.quick
    budget = Budget(float("inf") if quick else args.budget_s)  # quick: every section runs once
    if quick:
        w, h, pairs = 128, 128, 2
        combos, models = [("fp32", 1), ("fp32", 2), ("bf16", 2)], ("small",)
        sam_models, sam_images, sam_points = ("tiny_test",), 2, 8
        sam_configs = (("official", 64, 1, "fp32"), ("batched", 256, 1, "fp32"), ("batched", 256, 2, "fp32"))
        co = dict(width=128, height=128, frames=4, queries=2, clips=1)
        uni_combos = [("fp32", 1)]
        e2e = dict(width=128, height=96, frames=3, clips=2, batches=(1, 2), raft_model="small",
                   sam_model="tiny_test", points_per_side=4)
    else:
        w, h, pairs = 576, 320, 32
        combos = [(p, b) for p in ("fp32", "bf16") for b in (1, 4, 8, 16, 32)]
        models = ("small", "large")
        sam_models, sam_images, sam_points = ("vit_h", "vit_l", "vit_b"), 4, 32
        sam_configs = (("official", 64, 1, "fp32"), ("batched", 256, 1, "fp32"), ("batched", 256, 4, "fp32"),
                       ("batched", 1024, 4, "fp32"), ("batched", 256, 4, "bf16"))
        co = dict(width=576, height=320, frames=16, queries=8, clips=3)
        uni_combos = [(p, b) for p in ("fp32", "bf16") for b in (1, 4, 8, 16)]
        e2e = dict(width=576, height=320, frames=16, clips=8, batches=(1, 4, 8))
    res: dict[str, Any] = {"device": str(device), "device_name": name, "torch": torch.__version__, "quick": quick,
                           "torch_threads": torch.get_num_threads(),
                           "flow_size": f"{w}x{h}", "flow_pairs_per_measure": pairs}
    tmp = tempfile.mkdtemp(prefix="bench-gpu-")
    try:
        only = set(args.only or ("flow", "sam", "cotracker", "e2e"))
        res["flow"], res["sam"], res["cotracker"], res["e2e"] = [], [], [], []
        if "flow" in only:
            print(f"[gpu bench] flow (RAFT) on {name}", file=sys.stderr, flush=True)
            res["flow"] = bench_raft(device, tmp, w, h, combos, pairs, budget, models=models,
                                     iters=2 if quick else 12)
            print("[gpu bench] flow (UniMatch)", file=sys.stderr, flush=True)
            res["flow"] += bench_unimatch(device, tmp, args.unimatch_source, w, h, uni_combos, pairs, budget)
            res["flow"] += bench_dis_reference(w, h, pairs)
        if "sam" in only:
            print("[gpu bench] SAM", file=sys.stderr, flush=True)
            res["sam"] = bench_sam(device, sam_models, sam_images, sam_points, sam_configs, budget)
        if "cotracker" in only:
            print("[gpu bench] CoTracker", file=sys.stderr, flush=True)
            res["cotracker"] = bench_cotracker(device, tmp, budget=budget, **co)
        if "e2e" in only:
            print("[gpu bench] GPU stages end to end (RAFT + SAM, batch 1 vs batched)", file=sys.stderr, flush=True)
            res["e2e"] = bench_e2e(device, tmp, budget=budget, **e2e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    table = _table(res)
    res["table"] = table
    print(table)
    try:
        os.makedirs(args.results, exist_ok=True)
        path = os.path.join(args.results, f"gpu-{'quick-' if quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1, default=str)
        print(f"[gpu bench] wrote {path}", file=sys.stderr)
    except OSError as e:
        print(f"[gpu bench] could not write results: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
