"""Cost of BLIP-2 captions (stages/captions.py), without downloading anything.

    python bench/captions.py                 # tiny model measured + OPT-2.7b estimated (CPU, ~2 min)
    python bench/captions.py --model DIR     # also a real BLIP-2 folder through Blip2Captioner

Prints seconds per caption:

* ``tiny``: the tests' random-weight BLIP-2 (tests/conftest.py ``save_tiny_blip2``), saved to
  a temporary folder and captioned through ``Blip2Captioner`` at the HD profile size, batch 1
  and 8, 30 new tokens: the pipeline's own overhead (processor, generate loop);
* ``opt-2.7b estimate``: single layers of BLIP-2 OPT-2.7b's real sizes with random weights
  (ViT-g layer: 1408 wide, 257 tokens, x 39; OPT-2.7b decoder layer: 2560 wide, x 32 for the
  33-token prefill and each of 30 one-token steps; the 50272-word LM head per step), each
  timed alone (CPU seconds, best of 3) and summed. The Q-Former (0.1 B parameters on 32
  queries, under 2 % of the FLOPs) and the attention over the growing cache are left out;
* ``--model DIR``: that folder, on ``--device`` (auto: CUDA when present).

CPU seconds are process time (all threads); on a busy machine wall time is longer.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from stages.captions import Blip2Captioner  # noqa: E402


def _clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 320, 576, 3), dtype=np.uint8) for _ in range(n)]


def per_caption(cap: Blip2Captioner, clips: list[np.ndarray]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per caption of ``cap.caption_many(clips)`` after a warm-up."""
    cap.caption_many(clips[:1])
    c, w = time.process_time(), time.perf_counter()
    cap.caption_many(clips)
    return (time.process_time() - c) / len(clips), (time.perf_counter() - w) / len(clips)


def estimate_opt27b(batch_sizes=(1, 8), new_tokens: int = 30) -> list[str]:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    torch.manual_seed(0)
    cfg = Blip2Config(vision_config=dict(num_hidden_layers=1), qformer_config=dict(num_hidden_layers=1),
                      text_config=dict(model_type="opt", hidden_size=2560, ffn_dim=10240, num_attention_heads=32,
                                       num_hidden_layers=1, word_embed_proj_dim=2560, vocab_size=50272),
                      num_query_tokens=32)
    m = Blip2ForConditionalGeneration(cfg).eval()
    vision, text = m.vision_model.encoder.layers[0], m.language_model.model.decoder.layers[0]
    head = m.language_model.lm_head

    def best(f, n=3):
        with torch.inference_mode():
            f()
            out = []
            for _ in range(n):
                c = time.process_time()
                f()
                out.append(time.process_time() - c)
        return min(out)

    lines = []
    for bs in batch_sizes:
        xv, xp, x1 = torch.randn(bs, 257, 1408), torch.randn(bs, 33, 2560), torch.randn(bs, 1, 2560)
        tv, tp, t1, th = best(lambda: vision(xv)), best(lambda: text(xp)), best(lambda: text(x1)), best(lambda: head(x1))
        total = 39 * tv + 32 * tp + th + new_tokens * (32 * t1 + th)
        lines.append(f"opt-2.7b estimate, fp32 CPU, batch {bs}: {total / bs:.1f} CPU-s per caption "
                     f"(vision {39 * tv / bs:.1f}, text {(total - 39 * tv) / bs:.1f}; layers measured: "
                     f"ViT-g {tv:.3f} s, OPT prefill {tp:.3f} s, OPT step {t1:.4f} s, head {th:.4f} s)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a real BLIP-2 folder to measure as well")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--no-estimate", action="store_true")
    a = ap.parse_args()
    from tests.conftest import save_tiny_blip2

    clips = _clips(a.clips)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_blip2(os.path.join(tmp, "tiny-blip2"))
        for bs in (1, 8):
            cpu, wall = per_caption(Blip2Captioner(folder, device="cpu", batch_size=bs, max_new_tokens=30), clips)
            print(f"tiny, CPU, batch {bs}: {cpu:.3f} CPU-s, {wall:.3f} s wall per caption", flush=True)
    if not a.no_estimate:
        for line in estimate_opt27b():
            print(line, flush=True)
    if a.model:
        for bs in (1, 8):
            cap = Blip2Captioner(a.model, device=a.device, batch_size=bs, max_new_tokens=30)
            cpu, wall = per_caption(cap, clips[: max(bs, 8)])
            print(f"{cap.describe()['model']} on {cap._device} ({cap._precision}), batch {bs}: "
                  f"{cpu:.2f} CPU-s, {wall:.2f} s wall per caption", flush=True)


if __name__ == "__main__":
    main()
