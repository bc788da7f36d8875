"""Shards of synthetic scenes with known motion, built once by the real pipeline (videohd
layout, LD profile, local executor), and an evaluation set drawn from them."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.testdata.synthetic import disc, rect, render_scene, write_mp4

W, H, FRAMES = 320, 192, 12      # the LD profile size at 4 fps: profile frame t = source frame start + t


def _scenes():
    return {
        "pan_disc": render_scene(W, H, FRAMES, [disc((110, 90), 30, velocity=(3.0, 1.0)),
                                                rect((230.5, 120.5), (50, 36), velocity=(-2.0, 1.5))],
                                 background_velocity=(1.5, -0.75), seed=11),
        "two_rects": render_scene(W, H, FRAMES, [rect((90.5, 70.5), (60, 40), velocity=(2.5, 2.0)),
                                                 rect((220.5, 130.5), (44, 44), velocity=(-3.0, -1.0))],
                                  background_velocity=(-1.0, 0.5), seed=12),
        "slow": render_scene(W, H, FRAMES, [disc((160, 96), 40, velocity=(1.5, -1.0))],
                             background_velocity=(2.0, 1.0), seed=13),
    }


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory):
    from pipeline.config import Config
    from pipeline.run.plan import run

    root = tmp_path_factory.mktemp("eval_shards")
    data = root / "data"
    (data / "videos").mkdir(parents=True)
    lines = []
    for name, scene in _scenes().items():
        write_mp4(str(data / "videos" / f"{name}.mp4"), scene.frames, 4)
        lines.append(json.dumps({"path": f"videos/{name}.mp4", "caption": f"synthetic {name}"}))
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "out"
    res = run(Config(profile="dragnuwa-ld"), "videohd", str(data), str(out), executor="local")
    assert res.ok == 3, res.stats
    return SimpleNamespace(out=str(out), root=root)


@pytest.fixture(scope="session")
def eval_set(eval_shards):
    """The set (count "max": up to 8 trajectories per sample) and its samples' real frames."""
    from pipeline.evaluate import build_evalset, read_set

    path = str(eval_shards.root / "set")
    build_evalset(eval_shards.out, path, seed=0, count="max", exports=("draganything", "wan-move"))
    es = read_set(path)
    return SimpleNamespace(path=path, set=es, real={s.key: s.real_frames() for s in es.samples})
