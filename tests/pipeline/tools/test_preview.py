"""Previews: colour wheel, panels with and without entities, files from the sample run."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pipeline.tools.colorwheel import color_wheel, flow_to_color, wheel_legend
from pipeline.tools.preview import PANELS, SampleView, animation_frames, contact_sheet, frame_columns, preview_sample
from pipeline.testdata.synthetic import disc, rect, render_scene
from stages.trajectories import compute_anchors

W, H, L = 160, 96, 6


# --------------------------------------------------------------------------- colour wheel
def test_color_wheel_standard_layout():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert tuple(wheel[0]) == (255, 0, 0)                    # ramps start at red,
    assert tuple(wheel[15]) == (255, 255, 0)                 # yellow after 15,
    assert tuple(wheel[21]) == (0, 255, 0)                   # green after 6 more,
    assert tuple(wheel[25]) == (0, 255, 255)                 # cyan after 4,
    assert tuple(wheel[36]) == (0, 0, 255)                   # blue after 11,
    assert tuple(wheel[49]) == (255, 0, 255)                 # magenta after 13, then 6 back to red


def test_flow_to_color_directions_and_saturation():
    f = np.zeros((2, 1, 7), np.float32)
    f[:, 0, 0] = (1, 0)      # right, full length
    f[:, 0, 1] = (0, 1)      # down
    f[:, 0, 2] = (-1, 0)     # left
    f[:, 0, 3] = (0, -1)     # up
    f[:, 0, 4] = (0, 0)      # zero
    f[:, 0, 5] = (2, 0)      # longer than max: darkened
    f[:, 0, 6] = (np.nan, 0)
    img = flow_to_color(f, max_magnitude=1.0)[0]
    assert img.dtype == np.uint8 and img.shape == (7, 3)
    assert tuple(img[0]) == (255, 0, 0)
    assert img[1][0] == 255 and img[1][1] > 200 and img[1][2] == 0        # yellow
    assert img[2][0] < 40 and img[2][1] > 200 and img[2][2] > 200         # cyan
    assert img[3][2] == 255 and img[3][1] == 0                            # blue-violet
    assert tuple(img[4]) == (255, 255, 255)
    assert tuple(img[5]) == (191, 0, 0)
    assert tuple(img[6]) == (0, 0, 0)
    half = flow_to_color(f * 0.5, max_magnitude=1.0)[0]
    assert tuple(half[0]) == (255, 127, 127)                              # half saturation


def test_wheel_legend():
    leg = wheel_legend(33)
    assert leg.shape == (33, 33, 3)
    assert tuple(leg[16, 16]) == (255, 255, 255)       # center: zero flow
    assert tuple(leg[0, 0]) == (255, 255, 255)         # outside the disc
    assert leg[16, 32][0] > 200 and leg[16, 32][2] < 60


# --------------------------------------------------------------------------- panels
def _sample(with_entities: bool):
    scene = render_scene(W, H, L, [disc((50, 40), 14, velocity=(4, 1)), rect((120, 60), (30, 20), velocity=(-3, 0))],
                         background_velocity=(1, 0.5), seed=3)
    a = compute_anchors(scene.flow, interval=16, delta=(0, 0))
    s = {"key": "clip_x", "caption": "a test clip", "frames": scene.frames, "flow": scene.flow,
         "anchor_tracks": a["anchor_tracks"], "anchor_weights": a["anchor_weights"],
         "anchor_visible": a["anchor_visible"],
         "meta": {"clip_id": "clip_x", "profile": {"frames": L, "width": W, "height": H, "fps": 4.0},
                  "anchors": {"max_trajectories": 4}}}
    if with_entities:
        k = scene.num_shapes
        tracks = scene.centers.transpose(1, 0, 2).copy()                  # (K, L, 2)
        vis = np.ones((k + 1, L), bool)
        vis[:k] = scene.visible.T
        # a third entity that is never visible, with NaN coordinates: must not be drawn
        tracks = np.concatenate([tracks, np.full((1, L, 2), np.nan, np.float32)])
        vis[k] = False
        s.update(entity_ids=np.arange(1, k + 2, dtype=np.int32), entity_radii=np.array([14, 10, 8], np.float32),
                 entity_tracks=tracks.astype(np.float32), entity_visibility=vis,
                 entity_mask=scene.ids[0].astype(np.uint16))
    return s


@pytest.mark.parametrize("with_entities", [False, True])
def test_panels_with_and_without_entities(with_entities):
    s = _sample(with_entities)
    view = SampleView(s, scale=1.0, seed=0)
    for name in PANELS:
        for t in range(L):
            img = view.panel(name, t)
            assert img.shape == (H, W, 3) and img.dtype == np.uint8
    ent = view.panel("entities", 2).astype(int)
    frame = s["frames"][2].astype(int)
    if with_entities:
        # the disc's circle is drawn around its tracked center, the picture is not dimmed
        cx, cy = s["entity_tracks"][0, 2]
        ring = ent[int(round(cy)), int(round(cx + 14)) - 2:int(round(cx + 14)) + 3]
        assert np.abs(ring - frame[int(round(cy)), int(round(cx + 14)) - 2:int(round(cx + 14)) + 3]).max() > 60
        assert np.median(np.abs(ent - frame)) == 0
    else:
        assert np.median(frame - ent) > 30                 # dimmed, with a "no entities" note
    # anchors are drawn: the panel differs from the frame along the tracks
    assert np.abs(view.panel("anchors", L - 1).astype(int) - s["frames"][L - 1]).sum() > 0
    # the sampled draw respects N (max_trajectories = 4 in the meta)
    assert 1 <= len(view.drawn) <= 4
    # a draw is reproducible per (seed, key)
    assert list(SampleView(s, seed=0).drawn) == list(view.drawn)


def test_entity_invisible_is_not_drawn():
    s = _sample(True)
    # make entity 0 (the disc) invisible from frame 2 on: its circle must vanish there
    s["entity_visibility"][0, 2:] = False
    view = SampleView(s, scale=1.0)
    full = _sample(True)
    full["entity_ids"] = full["entity_ids"][1:]
    full["entity_radii"] = full["entity_radii"][1:]
    full["entity_tracks"] = full["entity_tracks"][1:]
    full["entity_visibility"] = full["entity_visibility"][1:]
    without = SampleView(full, scale=1.0)
    # around the disc's frame-4 position, the picture equals the one without the disc entity,
    # except for its trail over frames 0..1 (which lies left of x = 50 + 4*1 + 14 + 4)
    cx, cy = s["entity_tracks"][0, 4]
    x0, x1 = int(cx) + 6, min(W, int(cx) + 20)
    y0, y1 = max(20, int(cy) - 12), min(H, int(cy) + 12)
    a = view.panel("entities", 4)[y0:y1, x0:x1]
    b = without.panel("entities", 4)[y0:y1, x0:x1]
    assert np.array_equal(a, b)


def test_contact_sheet_and_animation_layout():
    s = _sample(True)
    view = SampleView(s, scale=0.5)
    assert (view.W, view.H) == (80, 48)
    sheet = contact_sheet(view, columns=3)
    assert frame_columns(L, 3) == [0, 2, 5]
    assert sheet.shape[1] == 3 * 80 + 2 * 2
    assert sheet.shape[0] > 4 * 48
    frames = animation_frames(view)
    assert len(frames) == L and frames[0].shape == (2 * 48 + 2, 2 * 80 + 2, 3)


def test_preview_sample_writes_valid_files(tmp_path):
    paths = preview_sample(_sample(False), str(tmp_path), columns=4)
    with Image.open(paths["png"]) as im:
        im.verify()
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size[0] == 4 * W + 3 * 2
    with Image.open(paths["gif"]) as im:
        assert im.format == "GIF" and im.n_frames == L


# --------------------------------------------------------------------------- the sample run
@pytest.mark.slow
def test_preview_cli_on_sample_run(sample_run, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = str(tmp_path / "prev")
    res = CliRunner().invoke(app, ["preview", sample_run.out, "--n", "3", "--out", out])
    assert res.exit_code == 0, res.output
    assert "3 preview(s)" in res.output
    files = sorted(os.listdir(out))
    assert len([f for f in files if f.endswith(".png")]) == 3
    assert len([f for f in files if f.endswith(".gif")]) == 3
    for f in files:
        with Image.open(os.path.join(out, f)) as im:
            im.verify()
        with Image.open(os.path.join(out, f)) as im:
            if f.endswith(".gif"):
                assert im.n_frames == 8            # dragnuwa-ld: 8 frames
            else:
                assert im.size[0] >= 4 * 320 and im.size[1] > 4 * 192


def test_preview_cli_missing_url(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    res = CliRunner().invoke(app, ["preview", str(tmp_path / "nothing-*.tar"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2


def test_reliable_and_unreliable_segments_are_drawn_differently():
    """One anchor moving right: reliable for frames 0..2, then still visible but unreliable.
    Its reliable segment is drawn in colour, the rest in grey; the draw only picks anchors
    reliable at frames 0 and 1."""
    from pipeline.tools.preview import UNRELIABLE_RGB

    frames = np.zeros((L, H, W, 3), np.uint8)
    tracks = np.stack([np.stack([20.0 + 15 * np.arange(L), np.full(L, 40.0)], 1),
                       np.stack([20.0 + 15 * np.arange(L), np.full(L, 70.0)], 1)]).astype(np.float32)
    vis = np.ones((2, L), bool)
    rel = vis.copy()
    rel[0, 3:] = False
    rel[1] = False                                          # never reliable: never drawn
    s = {"key": "k", "caption": "", "frames": frames, "flow": None, "anchor_tracks": tracks,
         "anchor_weights": np.array([1.0, 100.0], np.float32), "anchor_visible": vis, "anchor_reliable": rel,
         "meta": {"clip_id": "k", "anchors": {"max_trajectories": 4}}}
    view = SampleView(s, scale=1.0)
    img = view.panel("anchors", L - 1).astype(int)
    early = img[40, 27:43]                                  # between frames 0 and 1: reliable
    late = img[40, 20 + 15 * 3 + 3:20 + 15 * 4 - 3]         # between frames 3 and 4: unreliable
    assert np.ptp(early.max(0)) > 60                        # a saturated colour
    grey = late[late.sum(1) > 0]
    assert len(grey) and np.all(np.ptp(grey, axis=1) <= 2) and grey.max() <= max(UNRELIABLE_RGB)
    assert list(view.drawn) == [0]
    old = SampleView({**s, "anchor_reliable": None}, scale=1.0)   # schema 1: unverified, drawn as before
    assert not old.verified and old.anchor_reliable.all()      # every visible part in colour
