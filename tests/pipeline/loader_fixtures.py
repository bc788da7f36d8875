"""Shared helpers (no tests here): real shards of synthetic scenes with exact ground truth.

Import by path from the loader/conditions/interop tests:

    fx = load_fixtures()   # see _import_fixtures in those files
    scenes = fx.write_scene_shards(tmp_path, shards=2, per_shard=3)
"""
from __future__ import annotations

import os

import numpy as np

from pipeline.shards import TarShardWriter
from pipeline.testdata.synthetic import disc, rect, render_scene
from schemas.sample import dequantize_flow, encode_jpeg, encode_sample
from stages.trajectories import compute_anchors

PREFIX = "synth-test"


def make_scene(seed: int, width: int = 160, height: int = 96, frames: int = 6):
    """A disc and a rect moving linearly over a panning background (all velocities known)."""
    rng = np.random.default_rng(seed)
    r = 0.18 * min(width, height)
    shapes = [
        disc((rng.uniform(0.3, 0.45) * width, rng.uniform(0.35, 0.65) * height), r,
             velocity=(rng.uniform(1.0, 2.5), rng.uniform(-1.0, 1.0))),
        rect((rng.uniform(0.6, 0.75) * width, rng.uniform(0.35, 0.65) * height), (1.6 * r, 1.2 * r),
             velocity=(rng.uniform(-2.0, -0.5), rng.uniform(-0.8, 0.8))),
    ]
    bg = (rng.uniform(-1.0, 1.0), rng.uniform(-0.6, 0.6))
    return render_scene(width, height, frames, shapes, background_velocity=bg, seed=seed)


def scene_sample(scene, key: str, caption: str = "", entities: bool = True, quality: int = 95) -> dict:
    """A processed sample (encode_sample's input) of a rendered scene, with the exact flow,
    the anchors tracked on it, and the shapes as entities (ids 1..K, incircle radii).
    The anchors are marked reliable wherever visible (the flow is exact); tests of the
    reliability rules set ``anchor_reliable`` themselves."""
    flow = dequantize_flow(scene.flow)
    anchors = compute_anchors(flow, interval=16, delta=(0, 0))
    L, H, W = scene.num_frames, scene.height, scene.width
    s = {
        "caption": caption or f"scene {key}",
        "meta": {"clip_id": key, "profile": {"frames": L, "width": W, "height": H}},
        "frames_jpeg": [encode_jpeg(f, quality) for f in scene.frames],
        "flow": flow,
        **{k: anchors[k] for k in ("anchor_tracks", "anchor_weights", "anchor_visible")},
        "anchor_reliable": anchors["anchor_visible"].copy(),
    }
    if entities:
        k = scene.num_shapes
        radii = [sh.radius if sh.kind == "disc" else min(sh.size) / 2 for sh in scene.shapes]
        centers = np.transpose(scene.centers, (1, 0, 2))                     # (K, L, 2)
        inside = (centers[..., 0] >= 0) & (centers[..., 0] <= W - 1) & (centers[..., 1] >= 0) & (centers[..., 1] <= H - 1)
        s.update(entity_ids=np.arange(1, k + 1, dtype=np.int32), entity_mask=scene.ids[0],
                 entity_radii=np.asarray(radii, np.float32), entity_tracks=centers.astype(np.float32),
                 entity_visibility=inside & scene.visible.T)
    return s


def write_scene_shards(out_dir, shards: int = 2, per_shard: int = 3, width: int = 160, height: int = 96,
                       frames: int = 6, entities: bool = True, seed: int = 0, prefix: str = PREFIX):
    """Write ``shards`` tars of ``per_shard`` scene samples; returns {key: scene}."""
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    scenes = {}
    for sh in range(shards):
        w = TarShardWriter(out_dir, prefix, sh)
        for i in range(per_shard):
            key = f"s{sh:03d}_{i:03d}"
            scene = make_scene(seed * 100_003 + sh * 1000 + i, width, height, frames)
            w.write(key, encode_sample(scene_sample(scene, key, entities=entities)))
            scenes[key] = scene
        w.close()
    return scenes


def shard_urls(out_dir, prefix: str = PREFIX) -> list[str]:
    return sorted(os.path.join(str(out_dir), n) for n in os.listdir(str(out_dir))
                  if n.startswith(prefix) and n.endswith(".tar"))
