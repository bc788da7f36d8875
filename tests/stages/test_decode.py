import cv2
import numpy as np
import pytest

from stages.decode import clip_rng, cover_geometry, decode_frame_folder, decode_video, select_frames
from stages.decoders import installed_decoders, make_decoder
from stages.errors import ClipError

BACKENDS = installed_decoders()  # the video tests run with each (tests/stages/test_decoders.py: the rest)


def _write(path, frames, fps):
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(np.ascontiguousarray(f[..., ::-1]))
    vw.release()


def _marker_clip(n, w, h, pos):
    frames = np.full((n, h, w, 3), 40, np.uint8)
    x, y = pos
    frames[:, y - 6:y + 7, x - 6:x + 7] = 255
    return frames


def test_select_frames_is_deterministic_and_in_range():
    a, s1 = select_frames(250, 25.0, 16, 4.0, clip_rng(0, "clip", "start"))
    b, s2 = select_frames(250, 25.0, 16, 4.0, clip_rng(0, "clip", "start"))
    c, _ = select_frames(250, 25.0, 16, 4.0, clip_rng(1, "clip", "start"))
    np.testing.assert_array_equal(a, b)
    assert s1 == s2 and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 249 and len(a) == 16
    np.testing.assert_allclose(np.diff(a), 6.25, atol=1)  # 25 fps source sampled at 4 fps


def test_too_short_is_a_clip_error():
    with pytest.raises(ClipError) as e:
        select_frames(50, 25.0, 16, 4.0, clip_rng(0, "c", "start"))
    assert e.value.reason == "too_short" and "3.75" in e.value.message


@pytest.mark.parametrize("src,out", [((1280, 720), (576, 320)), ((360, 640), (576, 320)), ((640, 272), (576, 320)),
                                     ((176, 144), (320, 192))])
def test_cover_geometry_covers_and_centers(src, out):
    g = cover_geometry(*src, *out)
    assert g.resized_size[0] >= out[0] and g.resized_size[1] >= out[1]
    assert min(g.resized_size[0] - out[0], g.resized_size[1] - out[1]) <= 1  # one side fits exactly
    assert g.crop_offset == ((g.resized_size[0] - out[0]) // 2, (g.resized_size[1] - out[1]) // 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_video_and_map_back_to_source(tmp_path, backend):
    src_pos = (700, 300)
    _write(tmp_path / "v.mp4", _marker_clip(60, 1280, 720, src_pos), 25)
    clip = decode_video(str(tmp_path / "v.mp4"), 8, 4.0, 320, 192, clip_rng(0, "v", "start"),
                        decoder=make_decoder(backend))
    assert clip.frames.shape == (8, 192, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.source_frames == 60 and len(clip.indices) == 8
    ys, xs = np.nonzero(clip.frames[0, :, :, 0] > 150)
    back = clip.geometry.to_source(np.array([xs.mean(), ys.mean()]))
    assert np.abs(back - np.array(src_pos)).max() < 2.0
    meta = clip.meta()
    assert meta["source_size"] == [1280, 720] and len(meta["source_frame_indices"]) == 8
    assert meta["decoder"] == {"backend": backend, "device": "cpu"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_errors(tmp_path, backend):
    rng = clip_rng(0, "x", "start")
    dec = make_decoder(backend)
    with pytest.raises(ClipError) as e:
        decode_video(str(tmp_path / "missing.mp4"), 8, 4.0, 320, 192, rng, decoder=dec)
    assert e.value.reason == "missing_file"
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ClipError) as e:
        decode_video(str(tmp_path / "empty.mp4"), 8, 4.0, 320, 192, rng, decoder=dec)
    assert e.value.reason == "unreadable"
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(ClipError) as e:
        decode_video(str(tmp_path / "text.mp4"), 8, 4.0, 320, 192, rng, decoder=dec)
    assert e.value.reason == "unreadable"
    _write(tmp_path / "short.mp4", _marker_clip(10, 320, 192, (100, 100)), 25)
    with pytest.raises(ClipError) as e:
        decode_video(str(tmp_path / "short.mp4"), 8, 4.0, 320, 192, rng, decoder=dec)
    assert e.value.reason == "too_short"


def test_decode_frame_folder(tmp_path):
    frames = _marker_clip(12, 400, 240, (200, 120))
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i * 5:05d}.jpg"), f[..., ::-1])
    clip = decode_frame_folder(str(tmp_path), 6.0, 8, 4.0, 320, 192, clip_rng(0, "f", "start"))
    assert clip.frames.shape == (8, 192, 320, 3)
    assert clip.extra["source_frame_names"][0].endswith(".jpg")


def test_decode_all_frames_reads_every_frame_as_stored(tmp_path):
    from stages.decode import decode_all_frames

    frames = _marker_clip(7, 96, 64, (30, 20))
    _write(tmp_path / "c.mp4", frames, 5.0)
    out, fps = decode_all_frames(str(tmp_path / "c.mp4"))
    assert out.shape == (7, 64, 96, 3) and out.dtype == np.uint8 and fps == pytest.approx(5.0)
    assert np.abs(out.astype(int) - frames).mean() < 3
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
    with pytest.raises(ClipError) as e:
        decode_all_frames(str(tmp_path / "bad.mp4"))
    assert e.value.reason == "unreadable"
    with pytest.raises(ClipError) as e:
        decode_all_frames(str(tmp_path / "none.mp4"))
    assert e.value.reason == "missing_file"
    with pytest.raises(ClipError) as e:
        decode_all_frames(str(tmp_path / "c.mp4"), max_frames=5)
    assert e.value.reason == "too_large"
