"""make_dataset on real shards of synthetic scenes: consistent augmentation, conditions,
splitting across workers and ranks, dropout, errors."""
from __future__ import annotations

import collections
import itertools
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.train.augment import AugmentConfig, CropFlip
from pipeline.train.conditions import trajectory_map
from pipeline.train import make_dataset, read_samples
from pipeline.shards import TarShardWriter
from pipeline.testdata.synthetic import disc, rect, render_scene
from schemas.sample import encode_sample


import loader_fixtures as fx  # noqa: E402 (tests/pipeline/conftest.py puts this folder on sys.path)

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0)


@pytest.fixture(scope="module")
def motion_shard(tmp_path_factory):
    """One sample with large known motion: a disc and a rect over a panning background."""
    d = tmp_path_factory.mktemp("motion")
    scene = render_scene(192, 112, 6, [disc((70, 50), 20, velocity=(4.0, 2.0)),
                                       rect((140, 60), (36, 28), velocity=(-3.0, 1.0))],
                         background_velocity=(3.0, -1.5), seed=5)
    w = TarShardWriter(str(d), "motion", 0)
    w.write("a", encode_sample(fx.scene_sample(scene, "a")))
    w.close()
    return str(d / "motion-000000.tar"), scene


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """5 shards x 3 tiny samples (uneven over 4 readers)."""
    d = tmp_path_factory.mktemp("small")
    scenes = fx.write_scene_shards(d, shards=5, per_shard=3, width=64, height=40, frames=3)
    return str(d), scenes


def sample_at(img: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of img (C, H, W) at points (N, 2) xy -> (N, C)."""
    c, h, w = img.shape
    grid = torch.stack([(pts[:, 0] + 0.5) / w * 2 - 1, (pts[:, 1] + 0.5) / h * 2 - 1], -1)[None, None]
    return F.grid_sample(img[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T


def backward_warp(img: torch.Tensor, flow: torch.Tensor):
    """img (C, H, W) sampled at p + flow(p): equals the previous frame where the flow is right."""
    c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pts = torch.stack([xs + flow[0], ys + flow[1]], -1).reshape(-1, 2)
    warped = sample_at(img, pts).T.reshape(c, h, w)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
    return warped, inside.reshape(h, w)


def uniform_flow(f: torch.Tensor) -> torch.Tensor:
    """Pixels whose flow is constant within a radius of (max |flow| + 2) px: away from motion
    boundaries, so neither occluded nor disoccluded between t and t+1."""
    rad = int(np.ceil(float(f.abs().max()))) + 2
    mx = F.max_pool2d(f[None], 2 * rad + 1, 1, rad)[0]
    mn = -F.max_pool2d(-f[None], 2 * rad + 1, 1, rad)[0]
    return (mx - mn).amax(0) < 0.05


def warp_error(video255: torch.Tensor, flow: torch.Tensor) -> float:
    errs = []
    for t in range(video255.shape[0] - 1):
        warped, inside = backward_warp(video255[t + 1], flow[t + 1])
        ok = inside & uniform_flow(flow[t + 1])
        assert ok.float().mean() > 0.3
        errs.append(float((warped - video255[t]).abs().mean(0)[ok].mean()))
    return float(np.mean(errs))


# ---- consistent augmentation (must show) --------------------------------------------------------

@pytest.mark.parametrize("aug,size", [
    (AugmentConfig(scale=(0.5, 0.7), ratio=(1.2, 2.2), hflip=1.0, **NO_JITTER), (80, 144)),   # strong, anisotropic
    (AugmentConfig(hflip=1.0, **NO_JITTER), None),                                             # paper crop + flip
])
@pytest.mark.parametrize("seed", [0, 1])
def test_augmented_flow_warps_frames_and_tracks_follow_the_scene(motion_shard, aug, size, seed):
    url, scene = motion_shard
    ds = make_dataset(url, conditions=("dragnuwa", "dragentity"), augment=aug, size=size, seed=seed, shuffle=0)
    (s,) = list(ds)
    stored = next(iter(read_samples(url)))
    L = scene.num_frames
    H, W = size or (scene.height, scene.width)
    assert s["video"].shape == (L, 3, H, W) and s["flow"].shape == (L, 2, H, W)
    assert float(s["video"].min()) >= -1 and float(s["video"].max()) <= 1
    assert bool(s["flip"]) and torch.count_nonzero(s["flow"][0]) == 0
    x0, y0, cw, ch = (int(v) for v in s["crop"])
    assert (cw, ch) != (scene.width, scene.height) or size is not None
    cf = CropFlip(x0, y0, cw, ch, W, H, True)

    # 1. warping frame t+1 back by the returned flow reproduces frame t (0-255 scale)
    v = (s["video"] + 1) * 127.5
    flow = s["flow"]
    err = warp_error(v, flow)
    assert err < 2.0, f"warp error {err:.2f} with the returned flow"
    assert warp_error(v, torch.zeros_like(flow)) > 4 * err            # the clip really moves
    unflipped = flow.clone()
    unflipped[:, 0] *= -1                                           # dx not negated by the flip
    assert warp_error(v, unflipped) > 4 * err
    assert warp_error(v, flow * 1.2) > 1.8 * err                     # vectors not rescaled

    # 2. entity tracks land on the same scene points: the texture around each tracked center
    #    is the same in every frame (the shapes are rigid)
    offs = torch.stack(torch.meshgrid(torch.arange(-3.0, 4.0), torch.arange(-3.0, 4.0), indexing="xy"), -1).reshape(-1, 2)
    n_ent = int(s["num_entities"])
    assert n_ent == 2
    same, moved = [], []
    for k in range(n_ent):
        c = s["entity_tracks"][k]
        ref = sample_at(v[0], c[0] + offs)
        for t in range(1, L):
            if not (s["entity_visible"][k, t] and s["entity_visible"][k, 0]):
                continue
            same.append(float((sample_at(v[t], c[t] + offs) - ref).abs().mean()))
            moved.append(float((sample_at(v[t], c[t] + offs + torch.tensor([3.0, 0.0])) - ref).abs().mean()))
    assert len(same) >= 5
    assert max(same) < 2.5 and np.mean(moved) > 3 * np.mean(same), (same, moved)
    # ... and they are the stored tracks mapped by the crop box and the flip
    ids = s["entity_ids"][:n_ent].numpy()
    np.testing.assert_allclose(s["entity_tracks"][:n_ent].numpy(), cf.points(stored["entity_tracks"][ids - 1]), atol=1e-4)
    sx, sy = W / cw, H / ch
    expected = np.stack([(stored["entity_tracks"][..., 0] - x0 + 0.5) * sx - 0.5,
                         (stored["entity_tracks"][..., 1] - y0 + 0.5) * sy - 0.5], -1)
    expected[..., 0] = W - 1 - expected[..., 0]
    np.testing.assert_allclose(s["entity_tracks"][:n_ent].numpy(), expected[ids - 1], atol=1e-4)
    np.testing.assert_allclose(s["entity_radii"][:n_ent].numpy(),
                               np.stack([stored["entity_radii"] * sx, stored["entity_radii"] * sy], -1)[ids - 1], rtol=1e-6)
    # the frame-0 id map is cropped, resized and flipped with the frames: the centers are inside
    for k in range(n_ent):
        cx, cy = (int(round(float(u))) for u in s["entity_tracks"][k, 0])
        if 0 <= cx < W and 0 <= cy < H:
            assert int(s["entity_mask"][cy, cx]) == ids[k]
            assert float(s["loss_mask"][0, 0, cy, cx]) == 1.0

    # 3. anchor tracks (the drawn ones) follow the returned flow, and start visible in frame 0
    n = int(s["num_trajectories"])
    assert 1 <= n <= 8
    tr, vis = s["trajectory_tracks"][:n], s["trajectory_visible"][:n]
    assert bool(vis[:, 0].all()) and not bool(s["trajectory_visible"][n:].any())
    for t in range(L - 1):
        ok = vis[:, t] & vis[:, t + 1]
        if ok.any():
            step = tr[ok, t + 1] - tr[ok, t]
            uni = uniform_flow(flow[t + 1])
            at = sample_at(flow[t + 1], tr[ok, t])
            near = uni[tr[ok, t, 1].round().long().clamp(0, H - 1), tr[ok, t, 0].round().long().clamp(0, W - 1)]
            if near.any():
                torch.testing.assert_close(step[near], at[near], atol=0.05, rtol=0)


def test_colour_jitter_touches_frames_only(motion_shard):
    url, _ = motion_shard
    kw = dict(conditions=("dragnuwa", "dragentity"), seed=3, shuffle=0)
    (a,) = list(make_dataset(url, augment=AugmentConfig(hflip=1.0), **kw))
    (b,) = list(make_dataset(url, augment=AugmentConfig(hflip=1.0, **NO_JITTER), **kw))
    assert not torch.equal(a["video"], b["video"])
    for key in ("crop", "flow", "trajectory_map", "trajectory_tracks", "entity_gaussian", "entity_index",
                "loss_mask", "entity_mask", "entity_tracks"):
        assert torch.equal(a[key], b[key]), key


# ---- conditions from the loader ------------------------------------------------------------------

def test_trajectory_map_is_built_from_the_drawn_tracks(motion_shard):
    url, scene = motion_shard
    raw_ds = make_dataset(url, augment=False, gaussian=None, shuffle=0)
    for _ in range(5):
        (s,) = list(raw_ds)
        n = int(s["num_trajectories"])
        tr, vis = s["trajectory_tracks"][:n].numpy(), s["trajectory_visible"][:n].numpy()
        m = s["trajectory_map"]
        assert torch.count_nonzero(m[0]) == 0
        for t in range(scene.num_frames - 1):
            assert int(torch.count_nonzero(m[t + 1].abs().sum(0))) <= n
        for k in range(n):
            t = 0
            px, py = (int(np.floor(u + 0.5)) for u in tr[k, t])
            if vis[k, 0] and vis[k, 1]:
                others = [j for j in range(k + 1, n) if (int(np.floor(tr[j, 0, 0] + 0.5)), int(np.floor(tr[j, 0, 1] + 0.5))) == (px, py)]
                if not others:
                    np.testing.assert_allclose(m[1, :, py, px].numpy(), tr[k, 1] - tr[k, 0], atol=1e-5)
    # with the default preset, the map is the paper's Gaussian filter of those tracks
    (s,) = list(make_dataset(url, augment=False, shuffle=0))
    n = int(s["num_trajectories"])
    expect = trajectory_map(s["trajectory_tracks"][:n], s["trajectory_visible"][:n], np.arange(n),
                            scene.height, scene.width, "paper")
    torch.testing.assert_close(s["trajectory_map"], expect)
    # the dense flow is the stored flow with a zero frame first
    stored = next(iter(read_samples(url)))
    torch.testing.assert_close(s["flow"][1:], torch.from_numpy(stored["flow"]))


def test_trajectories_are_drawn_afresh_and_seeds_reproduce(motion_shard):
    url, _ = motion_shard
    fresh = make_dataset(url, augment=True, shuffle=0)
    draws = {tuple(next(iter(fresh))["trajectory_tracks"][:, 0].flatten().tolist()) for _ in range(6)}
    assert len(draws) > 1, "every read must draw new trajectories"
    ds1 = make_dataset(url, augment=True, seed=7, shuffle=0)
    ds2 = make_dataset(url, augment=True, seed=7, shuffle=0)
    a, b = next(iter(ds1)), next(iter(ds2))
    for key in ("video", "trajectory_map", "crop"):
        assert torch.equal(a[key], b[key])
    ds1.set_epoch(1)
    ds2.set_epoch(1)
    c, d = next(iter(ds1)), next(iter(ds2))
    assert torch.equal(c["trajectory_map"], d["trajectory_map"])
    assert not (torch.equal(a["trajectory_map"], c["trajectory_map"]) and torch.equal(a["crop"], c["crop"]))


def test_condition_dropout(motion_shard, small_shards):
    url, _ = motion_shard
    (s,) = list(make_dataset(url, conditions=("dragnuwa", "dragentity"), dropout={"text": 1, "image": 1, "trajectory": 1},
                             shuffle=0))
    assert s["caption"] == "" and bool(s["drop_text"]) and bool(s["drop_image"]) and bool(s["drop_trajectory"])
    for key in ("image", "flow", "trajectory_map", "entity_gaussian", "entity_index"):
        assert torch.count_nonzero(s[key]) == 0, key
    assert torch.count_nonzero(s["video"]) > 0 and torch.count_nonzero(s["loss_mask"]) > 0
    (k,) = list(make_dataset(url, conditions=("dragnuwa", "dragentity"), shuffle=0))
    assert k["caption"] == "scene a" and not bool(k["drop_text"]) and torch.equal(k["image"], k["video"][0])
    seen = collections.Counter()
    ds = make_dataset(small_shards[0], dropout="paper", augment=False, shuffle=0)
    for _ in range(4):
        for s in ds:
            seen["n"] += 1
            seen["text"] += int(s["drop_text"])
            seen["trajectory"] += int(s["drop_trajectory"])
    assert seen["n"] == 60 and seen["text"] < seen["trajectory"] < 60        # 0.1 vs 0.5


def test_missing_entities_policies(tmp_path):
    fx.write_scene_shards(tmp_path, shards=1, per_shard=2, width=48, height=32, frames=3, entities=False)
    with pytest.raises(ValueError, match="entities"):
        list(make_dataset(str(tmp_path), conditions="dragentity"))
    assert list(make_dataset(str(tmp_path), conditions="dragentity", missing_entities="skip")) == []
    out = list(make_dataset(str(tmp_path), conditions=("dragnuwa", "dragentity"), missing_entities="empty"))
    assert len(out) == 2 and all(int(s["num_entities"]) == 0 and torch.count_nonzero(s["entity_index"]) == 0 for s in out)


def test_bad_options_fail_early(small_shards):
    d, _ = small_shards
    for kw in ({"conditions": "nuwa"}, {"gaussian": "huge"}, {"augment": "strong"}, {"loss_mask": "x"},
               {"dropout": "sometimes"}, {"rank": 2, "world_size": 2}, {"rank": 0}):
        with pytest.raises(ValueError):
            make_dataset(d, **kw)
    with pytest.raises(FileNotFoundError):
        make_dataset(os.path.join(d, "nothing-{000..003}.tar"))


def test_size_option_and_collation(small_shards):
    d, _ = small_shards
    ds = make_dataset(d, conditions=("dragnuwa", "dragentity"), size=(24, 40), max_entities=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["video"].shape == (3, 3, 3, 24, 40) and batch["entity_index"].shape == (3, 3, 24, 40)
    assert batch["entity_tracks"].shape == (3, 4, 3, 2) and len(batch["caption"]) == 3


def test_on_error_skip(tmp_path):
    fx.write_scene_shards(tmp_path, shards=1, per_shard=2, width=48, height=32, frames=3)
    w = TarShardWriter(str(tmp_path), fx.PREFIX, 1)
    w.write("broken", {"txt": b"x", "json": b"{\"schema_version\": 1}", "f000.jpg": b"not a jpeg"})
    w.close()
    with pytest.raises(ValueError, match="broken"):
        list(make_dataset(str(tmp_path), shuffle=0, shuffle_shards=False))
    with pytest.warns(UserWarning, match="broken"):
        assert len(list(make_dataset(str(tmp_path), on_error="skip"))) == 2


# ---- workers and nodes (must show) ---------------------------------------------------------------

def test_every_sample_exactly_once_2_workers_x_2_ranks(small_shards):
    d, scenes = small_shards
    seen = collections.Counter()
    per_rank = []
    for rank in (0, 1):
        ds = make_dataset(d, conditions=("dragnuwa", "dragentity"), rank=rank, world_size=2, shuffle=4)
        keys = []
        for batch in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2):
            keys.extend(batch["key"])
        per_rank.append(set(keys))
        seen.update(keys)
    assert set(seen) == set(scenes) and set(seen.values()) == {1}, seen
    assert not per_rank[0] & per_rank[1]


def test_rank_from_environment(small_shards, monkeypatch):
    d, _ = small_shards
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    keys = {s["key"] for s in make_dataset(d, augment=False, shuffle=0, shuffle_shards=False)}
    assert keys == {f"s{sh:03d}_{i:03d}" for sh in (1, 3) for i in range(3)}


def test_fewer_shards_than_readers_is_a_clear_error(small_shards):
    d, _ = small_shards
    urls = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".tar"))[:3]
    ds = make_dataset(urls, rank=1, world_size=2)
    with pytest.raises(ValueError, match="fewer shards than readers: 3 shard"):
        for _ in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=120):
            pass
    with pytest.raises(ValueError, match="fewer shards than readers"):
        list(make_dataset(urls, rank=0, world_size=4))


def test_resampled_mode_is_endless_and_epoch_samples_is_exact(small_shards):
    d, scenes = small_shards
    ds = make_dataset(d, resampled=True, augment=False, shuffle=0)
    keys = [s["key"] for s in itertools.islice(iter(ds), 40)]
    assert len(keys) == 40 and set(keys) <= set(scenes)
    ds = make_dataset(d, resampled=True, epoch_samples=9, rank=0, world_size=3, shuffle=0)
    n = sum(len(b["key"]) for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    assert n == 9


def test_dataset_pickles(small_shards):
    d, scenes = small_shards
    ds = make_dataset(d, conditions=("dragnuwa", "dragentity"), seed=1)
    ds.set_epoch(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.state.epoch == 2
    assert sorted(s["key"] for s in copy) == sorted(scenes)


@pytest.mark.slow
def test_spawned_workers(small_shards):
    d, scenes = small_shards
    ds = make_dataset(d, conditions=("dragnuwa", "dragentity"))
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=300)
    assert sorted(s["key"] for s in dl) == sorted(scenes)


# ---- augmentation pieces -------------------------------------------------------------------------

def test_cropflip_labels_and_points_share_one_mapping():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.integers(0, 7, (50, 80)).astype(np.int64))
    cf = CropFlip(13, 5, 60, 36, 90, 40, flip=True)
    out = cf.labels(src)
    assert out.shape == (40, 90)
    # invert the point mapping for every output pixel center: nearest source pixel
    qy, qx = np.mgrid[0:40, 0:90].astype(np.float64)
    ux = (90 - 1) - qx                                        # undo the flip
    sx = (ux + 0.5) / cf.sx - 0.5 + cf.x0
    sy = (qy + 0.5) / cf.sy - 0.5 + cf.y0
    ref = src.numpy()[np.floor(sy + 0.5).astype(int), np.floor(sx + 0.5).astype(int)]
    assert (out.numpy() == ref).mean() > 0.99                 # ties at exact half pixels may round either way
    # forward mapping of those source points lands back on the output pixel centers
    back = cf.points(np.stack([sx, sy], -1))
    np.testing.assert_allclose(back[..., 0], qx, atol=1e-4)
    np.testing.assert_allclose(back[..., 1], qy, atol=1e-4)
    np.testing.assert_allclose(cf.vectors(np.array([[2.0, 1.0]])), [[-2.0 * 1.5, 1.0 * 40 / 36]])
    torch.testing.assert_close(cf.radii([4.0]), torch.tensor([[6.0, 4.0 * 40 / 36]]))


def test_max_entities_keeps_the_largest(small_shards):
    d, _ = small_shards
    ds = make_dataset(d, conditions="dragentity", max_entities=1, augment=False, shuffle=0)
    for s in itertools.islice(iter(ds), 3):
        assert int(s["num_entities"]) == 1 and int(s["entity_ids"][0]) == 1      # the disc (larger incircle)
        assert set(torch.unique(s["entity_mask"]).tolist()) <= {0, 1}
        assert set(torch.unique(s["entity_index"]).tolist()) <= {0, 1}
        assert "flow" not in s and "trajectory_map" not in s


# ---- reliable spans (issue 14) ------------------------------------------------------------------

from pipeline.train.loader import usable_spans  # noqa: E402
from schemas.sample import load_npz, npz_bytes  # noqa: E402
from stages.trajectories import rasterize_displacements  # noqa: E402


def _write(d, name, samples):
    w = TarShardWriter(str(d), name, 0)
    for key, s in samples:
        w.write(key, encode_sample(s))
    w.close()
    return str(d / f"{name}-000000.tar")


@pytest.fixture(scope="module")
def spans_shard(tmp_path_factory):
    """The motion scene, with reliability ending at known frames: a third of the anchors never
    reliable (and given the largest weights), the others reliable up to a random frame."""
    d = tmp_path_factory.mktemp("spans")
    scene = render_scene(192, 112, 6, [disc((70, 50), 20, velocity=(4.0, 2.0))],
                         background_velocity=(3.0, -1.5), seed=5)
    s = fx.scene_sample(scene, "a")
    vis = s["anchor_visible"]
    a, length = vis.shape
    rng = np.random.default_rng(3)
    end = rng.integers(-1, length, a)            # last reliable frame; -1 = never
    end[::3] = -1
    rel = (np.arange(length)[None, :] <= end[:, None]) & vis
    rel[:, 0] = rel[:, 1]
    s["anchor_reliable"] = rel
    w = s["anchor_weights"].copy()
    w[::3] = 1000.0 * (1.0 + w[::3])            # unreliable anchors would dominate the multinomial
    s["anchor_weights"] = w
    return _write(d, "spans", [("a", s)]), s


def test_the_draw_never_uses_an_unreliable_span(spans_shard):
    url, s = spans_shard
    rel, vis, tracks = s["anchor_reliable"], s["anchor_visible"], s["anchor_tracks"]
    h, w = 112, 192
    usable = usable_spans(rel)
    np.testing.assert_array_equal(usable, rel)   # a stored reliable mask is a prefix already
    by_start = {tuple(np.round(tracks[i, 0], 3)): i for i in range(len(tracks))}
    ds = make_dataset(url, augment=False, gaussian=None, shuffle=0, seed=1)
    drawn = set()
    seen_cut = False
    for epoch in range(40):
        ds.set_epoch(epoch)
        (x,) = list(ds)
        n = int(x["num_trajectories"])
        assert int(x["num_reliable_anchors"]) == int((rel[:, 0] & rel[:, 1]).sum())
        idx = [by_start[tuple(np.round(x["trajectory_tracks"][k, 0].numpy(), 3))] for k in range(n)]
        drawn.update(idx)
        for k, i in enumerate(idx):
            assert rel[i, 0] and rel[i, 1], "only anchors reliable at frame 0 are drawn"
            np.testing.assert_array_equal(x["trajectory_visible"][k].numpy(), rel[i])
        # the map holds the drawn tracks' displacements up to their last reliable frame, and nothing else
        expect = rasterize_displacements(tracks, rel, np.asarray(idx, np.int64), h, w)
        torch.testing.assert_close(x["trajectory_map"], torch.from_numpy(expect))
        past = rasterize_displacements(tracks, vis, np.asarray(idx, np.int64), h, w)
        if not np.array_equal(past, expect):
            seen_cut = True
    assert drawn and not (drawn & set(range(0, len(tracks), 3)))
    # some drawn tracks went on (visible, moving) past their reliable span: the map left that out
    assert seen_cut and any(not rel[i, -1] and vis[i, -1] for i in drawn)


def test_usable_spans_cut_at_the_first_unreliable_or_out_of_crop_frame():
    rel = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0]], bool)
    inside = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(usable_spans(rel, inside), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])


def test_a_clip_without_reliable_anchors_gives_no_trajectory(tmp_path):
    scene = render_scene(96, 64, 4, [disc((40, 30), 10, velocity=(2.0, 1.0))], seed=2)
    s = fx.scene_sample(scene, "z")
    s["anchor_reliable"] = np.zeros_like(s["anchor_visible"])
    url = _write(tmp_path, "none", [("z", s)])
    (x,) = list(make_dataset(url, augment=False, shuffle=0))
    assert int(x["num_trajectories"]) == 0 and int(x["num_reliable_anchors"]) == 0
    assert torch.count_nonzero(x["trajectory_map"]) == 0 and not x["trajectory_visible"].any()
    assert torch.count_nonzero(x["flow"]) > 0            # the dense flow (stage 1) is still there


def test_schema_1_shards_are_not_silently_trusted(tmp_path):
    scene = render_scene(96, 64, 4, [disc((40, 30), 10, velocity=(2.0, 1.0))], seed=2)
    members = encode_sample(fx.scene_sample(scene, "old"))
    a = load_npz(members["anchors.npz"])
    members["anchors.npz"] = npz_bytes(tracks=a["tracks"], weights=a["weights"], visible=a["visible"])
    members["json"] = members["json"].replace(b'"schema_version": 2', b'"schema_version": 1')
    w = TarShardWriter(str(tmp_path), "old", 0)
    w.write("old", members)
    w.close()
    url = str(tmp_path / "old-000000.tar")
    with pytest.raises(ValueError, match="unverified_anchors"):
        list(make_dataset(url, augment=False, shuffle=0))
    assert list(make_dataset(url, augment=False, shuffle=0, unverified_anchors="skip")) == []
    (x,) = list(make_dataset(url, augment=False, shuffle=0, unverified_anchors="visible"))
    assert int(x["num_trajectories"]) >= 1
    with pytest.raises(ValueError):
        make_dataset(url, unverified_anchors="trust")


def test_gaussian_scale_is_an_explicit_choice(motion_shard):
    """``gaussian_scale``: the preset in training pixels ("none", the default) or scaled with the
    training width against the presets' 576 px ("width"); the trajectory map uses that filter."""
    from pipeline.train.conditions import GAUSSIAN_PRESETS, scale_gaussian

    url, scene = motion_shard
    paper = GAUSSIAN_PRESETS["paper"]
    assert scale_gaussian(paper, 832, "none") is paper and scale_gaussian(paper, 576, "width") is paper
    wan = scale_gaussian(paper, 832, "width")
    assert (wan.kernel_size, round(wan.sigma, 3), wan.normalize) == (143, 14.444, "peak")
    assert scale_gaussian(GAUSSIAN_PRESETS["motionctrl"], 720, "width") == type(paper)(123, 12.5, "sum")
    assert scale_gaussian(paper, 100, 0.5) == type(paper)(49, 5.0, "peak")
    for bad in ("area", 0, -1.0):
        with pytest.raises(ValueError, match="gaussian_scale"):
            make_dataset(url, gaussian_scale=bad)
    for scale in ("none", "width"):
        (s,) = list(make_dataset(url, augment=False, shuffle=0, seed=3, gaussian_scale=scale))
        n = int(s["num_trajectories"])
        filt = scale_gaussian(paper, scene.width, scale)
        expect = trajectory_map(s["trajectory_tracks"][:n], s["trajectory_visible"][:n], np.arange(n),
                                scene.height, scene.width, filt)
        torch.testing.assert_close(s["trajectory_map"], expect)
    assert filt.sigma == pytest.approx(10 * 192 / 576)   # this 192 px wide frame: a third of the preset
