"""VIPSeg ingest and DragEntity entities end to end: synthetic scenes with known shapes and
paths, written in VIPSeg's layout, run through the pipeline into shards, read back.

Run as a script to print the measured errors:
    .venv/bin/python tests/pipeline/inputs/test_vipseg.py
"""
from __future__ import annotations

import json
import math
import os
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:  # when run as a script
    sys.path.insert(0, ROOT)

from pipeline.inputs.adapters import VIPSEG_DEFAULT_FPS
from pipeline.inputs.manifest import build_manifest  # noqa: E402
from pipeline.testdata.synthetic import disc, rect, render_scene, vipseg_ids, write_vipseg  # noqa: E402

W, H, T = 576, 320, 16


# ------------------------------------------------------------------ adapter
def test_write_vipseg_layout(tmp_path):
    scene = render_scene(64, 48, 3, [disc((20, 20), 8), rect((40.5, 30.5), (10, 8))], seed=1)
    info = write_vipseg(tmp_path, "clip_a", scene, first_index=5, index_step=5)
    assert info["frames"] == ["00000005", "00000010", "00000015"]
    assert sorted(os.listdir(tmp_path / "imgs" / "clip_a")) == [f + ".jpg" for f in info["frames"]]
    m = cv2.imread(str(tmp_path / "panomasks" / "clip_a" / "00000010.png"), cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint16 and m.ndim == 2
    np.testing.assert_array_equal(m, vipseg_ids(scene)[1])
    assert info["ids"] == {0: 1, 1: 6100, 2: 6101}
    assert set(np.unique(m)) == {1, 6100, 6101}


def test_vipseg_adapter(tmp_path):
    scene = render_scene(64, 48, 3, [disc((20, 20), 8)], seed=1)
    for name in ("b_vid", "a_vid", "no_masks"):
        write_vipseg(tmp_path, name, scene)
    import shutil

    shutil.rmtree(tmp_path / "panomasks" / "no_masks")
    os.makedirs(tmp_path / "imgs" / ".hidden")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"path": "a_vid", "caption": "a disc"}) + "\n"
                                             + json.dumps({"path": "elsewhere", "caption": "x"}) + "\n")
    rows = build_manifest("vipseg", tmp_path).to_pylist()
    assert [r["source_id"] for r in rows] == ["a_vid", "b_vid", "no_masks"]
    assert [r["clip_id"] for r in rows] == ["vipseg_a_vid", "vipseg_b_vid", "vipseg_no_masks"]
    assert all(r["fps"] == VIPSEG_DEFAULT_FPS == 5.0 for r in rows)
    assert rows[0]["caption"] == "a disc" and rows[1]["caption"] == ""
    assert rows[0]["source"] == str(tmp_path / "imgs" / "a_vid")
    assert rows[0]["masks"] == str(tmp_path / "panomasks" / "a_vid") and rows[2]["masks"] is None
    assert all(r["error"] is None for r in rows)
    assert build_manifest("vipseg", tmp_path, fps="6").to_pylist()[0]["fps"] == 6.0
    for bad in ("0", "-1", "fast", "nan"):
        with pytest.raises(ValueError, match="fps"):
            build_manifest("vipseg", tmp_path, fps=bad)
    with pytest.raises(ValueError, match="imgs"):
        build_manifest("vipseg", tmp_path / "imgs")
    with pytest.raises(ValueError, match="captions"):
        build_manifest("vipseg", tmp_path, captions="missing.jsonl")


# ------------------------------------------------------------------ end to end
def scenes() -> dict:
    """name -> (scene, source fps). All at the profile size except 'scaled' (720x400 -> 0.8)."""
    return {
        # two shapes staying, a disc whose center leaves at t=12, a rect leaving entirely
        "leaving": render_scene(W, H, T, [disc((150.4, 160.7), 40.3, velocity=(3.2, 1.1)),
                                          rect((400.5, 120.5), (90, 60), velocity=(-4.3, 2.0)),
                                          disc((500, 250), 30, velocity=(6.5, 0.4)),
                                          rect((60.5, 60.5), (40, 30), velocity=(-7.0, 0.0))],
                                background_velocity=(1.25, -0.5), seed=5),
        # a rect sweeping over a disc (z-order: later shapes occlude), a disc on a curved path
        "occlusion": render_scene(W, H, T, [disc((300.2, 170.6), 45.5, velocity=(1.0, 0.5)),
                                            disc((120, 250), 28.7,
                                                 path=[(120 + 9 * t, 250 - 40 * math.sin(t / 5)) for t in range(T)]),
                                            rect((110.5, 160.5), (60, 120), velocity=(16, 0.0))],
                                  background_velocity=(0.5, -0.25), seed=9),
        # the same kind of scene at 720x400: masks resized with the frames (nearest neighbour)
        "scaled": render_scene(720, 400, T, [disc((220.5, 200.5), 50, velocity=(4.0, -1.5)),
                                             rect((520.5, 180.5), (100, 80), velocity=(-3.0, 2.0))],
                               background_velocity=(-1.0, 0.5), seed=7),
    }


def build_dataset(root) -> dict:
    sc = scenes()
    for name, scene in sc.items():
        write_vipseg(root, name, scene)
    # a video without panomasks: --masks auto falls back to motion masks for it
    write_vipseg(root, "zz_nomasks", sc["occlusion"])
    import shutil

    shutil.rmtree(os.path.join(root, "panomasks", "zz_nomasks"))
    return sc


def measure(samples: list[dict], sc: dict) -> dict:
    """Per scene: center / radius errors of the thing entities at frame 0 against the analytic
    shapes, and the track error over (entity, frame) pairs the tracker calls visible, against
    the known paths; plus visibility checks."""
    out = {}
    for s in samples:
        name = s["meta"]["source_id"]
        if name not in sc:
            continue
        scene = sc[name]
        g = s["meta"]
        sx, sy = g["resize_scale"]
        cx, cy = g["crop_offset"]
        idx = np.asarray(g["source_frame_indices"])
        to_prof = lambda p: np.stack([(p[..., 0] + 0.5) * sx - 0.5 - cx, (p[..., 1] + 0.5) * sy - 0.5 - cy], -1)  # noqa: E731
        rows = []
        for k, eid in enumerate(s["entity_ids"]):
            if eid < 6100:      # the background entity: its center has no analytic value
                continue
            j = int(eid) - 6100
            shape = scene.shapes[j]
            path = to_prof(scene._centers64[idx, j])
            r_true = (shape.radius if shape.kind == "disc" else min(shape.size) / 2) * sx
            tr, vis = s["entity_tracks"][k], s["entity_visibility"][k]
            c_err = float(np.linalg.norm(tr[0] - path[0]))
            truth = tr[0][None] + (path - path[0])     # the center moves rigidly with its shape
            t_err = np.linalg.norm(tr - truth, axis=-1)
            leaves = np.flatnonzero((truth[:, 0] < 0) | (truth[:, 0] > W - 1) | (truth[:, 1] < 0) | (truth[:, 1] > H - 1))
            rows.append({"id": int(eid), "kind": shape.kind, "center_err": c_err,
                         "radius_err": float(s["entity_radii"][k] - r_true),
                         "track_err_mean": float(t_err[vis].mean()), "track_err_max": float(t_err[vis].max()),
                         "visible_frames": int(vis.sum()),
                         "left_at": int(leaves[0]) if leaves.size else None,
                         "invisible_after_leaving": bool(not vis[leaves[0]:].any()) if leaves.size else None})
        allv = [(r["track_err_mean"], r["visible_frames"]) for r in rows]
        out[name] = {"entities": rows,
                     "max_center_err": max(r["center_err"] for r in rows),
                     "max_abs_radius_err": max(abs(r["radius_err"]) for r in rows),
                     "track_err_mean": sum(m * n for m, n in allv) / sum(n for _, n in allv),
                     "track_err_max": max(r["track_err_max"] for r in rows)}
    return out


def run_pipeline(data, out, **kw):
    from pipeline.config import Config
    from pipeline.run.plan import run

    cfg = Config(profile="dragnuwa-hd").replace(**{"shards.samples_per_shard": 2})
    return run(cfg, "vipseg", str(data), str(out), executor="local", fps=4, **kw)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    from pipeline.train import read_samples

    root = tmp_path_factory.mktemp("vipseg")
    sc = build_dataset(str(root / "data"))
    res = run_pipeline(root / "data", root / "out")
    samples = sorted(read_samples(str(root / "out")), key=lambda s: s["key"])
    return root, sc, res, samples


@pytest.mark.slow
def test_entities_from_vipseg_shards_match_the_analytic_scenes(e2e):
    root, sc, res, samples = e2e
    assert res.ok == 4 and res.error == 0
    m = measure(samples, sc)
    for name in ("leaving", "occlusion"):      # profile-size scenes: the must-show bounds
        assert m[name]["max_center_err"] <= 0.5, m[name]
        assert m[name]["max_abs_radius_err"] <= 1.0, m[name]
        assert m[name]["track_err_mean"] <= 1.0, m[name]
    assert m["scaled"]["max_center_err"] <= 0.75 and m["scaled"]["max_abs_radius_err"] <= 1.0
    assert m["scaled"]["track_err_mean"] <= 1.0
    leaving = {r["id"]: r for r in m["leaving"]["entities"]}
    assert leaving[6102]["left_at"] == 12 and leaving[6102]["invisible_after_leaving"]
    assert leaving[6103]["left_at"] == 9 and leaving[6103]["invisible_after_leaving"]
    assert all(r["visible_frames"] == T for r in m["leaving"]["entities"][:2])
    occ = {r["id"]: r for r in m["occlusion"]["entities"]}
    assert occ[6100]["visible_frames"] < T      # the sweeping rect hides the big disc's center
    for s in samples:
        e = s["meta"]["entities"]
        assert s["entity_mask"].shape == (H, W) and s["entity_tracks"].shape[1:] == (T, 2)
        if s["meta"]["source_id"] == "zz_nomasks":
            assert (e["mask_source"], e["model"]) == ("motion", "motion-seg-v1")
        else:
            assert (e["mask_source"], e["model"], e["tracker"]) == ("gt", None, "flow")
            assert s["entity_ids"][0] == 1 and e["kinds"][0] == "stuff"
    # the run's stats say which source `auto` chose
    counts: dict = {}
    for st in res.stats:
        for k, v in st["entities"]["mask_sources"].items():
            counts[k] = counts.get(k, 0) + v
    assert counts == {"gt": 3, "motion": 1}


@pytest.mark.slow
def test_entities_are_the_same_when_resumed_from_a_stage_cache(e2e):
    from pipeline.train import read_samples

    root, sc, res, samples = e2e
    out = root / "resumed"
    first = run_pipeline(root / "data", out, stage="flow")
    assert first.ok == 4
    second = run_pipeline(root / "data", out)
    assert all(st["resumed_from"] == "flow" for st in second.stats)
    again = sorted(read_samples(str(out)), key=lambda s: s["key"])
    assert [s["key"] for s in again] == [s["key"] for s in samples]
    for a, b in zip(samples, again):
        for k in ("entity_ids", "entity_mask", "entity_radii", "entity_tracks", "entity_visibility"):
            np.testing.assert_array_equal(a[k], b[k])


if __name__ == "__main__":
    import tempfile

    from pipeline.train import read_samples

    with tempfile.TemporaryDirectory() as d:
        sc = build_dataset(os.path.join(d, "data"))
        run_pipeline(os.path.join(d, "data"), os.path.join(d, "out"))
        samples = sorted(read_samples(os.path.join(d, "out")), key=lambda s: s["key"])
        for name, v in measure(samples, sc).items():
            print(f"{name}: max center err {v['max_center_err']:.3f} px, max |radius err| "
                  f"{v['max_abs_radius_err']:.3f} px, track err mean {v['track_err_mean']:.3f} px "
                  f"(max {v['track_err_max']:.3f}) over visible (entity, frame) pairs")
            for r in v["entities"]:
                print(f"   id {r['id']} {r['kind']}: center {r['center_err']:.3f} radius {r['radius_err']:+.3f} "
                      f"track mean {r['track_err_mean']:.3f} max {r['track_err_max']:.3f} "
                      f"visible {r['visible_frames']}/{T} left_at {r['left_at']} "
                      f"invisible_after_leaving {r['invisible_after_leaving']}")
