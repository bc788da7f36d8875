"""Decoder backends (stages/decoders): every installed one picks the same source frames of a
clip, frame-accurately (the frames show their own index), in mp4, mkv and webm, at constant
and variable frame rates and when the container declares a wrong rate or duration; pixels
agree across backends; bad input keeps its reason class with each; a missing package says
how to install it. Real files written by PyAV and OpenCV, decoded by the real libraries."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pipeline.testdata import videos as V
from pipeline.testdata.synthetic import write_mp4
from stages.decode import clip_rng, constant_rate, decode_video, select_source_frames
from stages.decoders import (DECODERS, check_decoder, decoder_choices, decoder_identity, installed_decoders,
                             make_decoder, read_frame_table, resolve_decoder)
from stages.errors import ClipError

BACKENDS = installed_decoders()
N = V.INDEX_CLIP_FRAMES
VFR_TIMES = V.VFR_TIMES
CLIP_NAMES = list(V.DECODER_TEST_CLIPS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return V.decoder_test_clips(tmp_path_factory.mktemp("decoder_clips"))


def _times(path):
    return read_frame_table(path).times


@pytest.mark.parametrize("size", [(320, 192), (576, 320)], ids=["ld-same-size", "hd-scaled"])
@pytest.mark.parametrize("name", CLIP_NAMES)
def test_every_backend_picks_the_same_frames_at_the_right_times(clips, name, size):
    path = str(clips[name])
    frames = 8
    got = {b: decode_video(path, frames, 4.0, *size, clip_rng(3, name, "start"), decoder=make_decoder(b))
           for b in BACKENDS}
    ref = next(iter(got.values()))
    times = _times(path)
    want_t = ref.start_seconds + np.arange(frames) / 4.0
    for b, c in got.items():
        np.testing.assert_array_equal(c.indices, ref.indices, err_msg=b)
        assert c.meta()["decoder"] == {"backend": b, "device": "cpu"}
        # the nearest source frame to each profile time (ties aside)
        assert np.abs(times[c.indices] - want_t).max() <= 0.5 * np.diff(times).max() + 1e-6, b
        # and the decoded pixels are that frame: its bar, read back in source pixels
        xs = np.array([[V.bar_x(f), 0.0] for f in c.frames])
        shown = V.bar_index(c.geometry.to_source(xs)[:, 0])
        np.testing.assert_allclose(shown, c.indices, atol=0.3, err_msg=f"{b}: frames shown vs indices")
    if name.startswith("vfr"):
        assert ref.extra["variable_frame_rate"] is True
    if name == "wrong_rate.mkv":
        assert ref.source_fps == pytest.approx(25.0) and ref.extra["declared_fps"] == pytest.approx(30.0)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="one decoder installed")
@pytest.mark.parametrize("name", ["mp4v_25.mp4", "h264_2997.mkv", "vp9_30.webm", "vfr.mp4"])
def test_pixels_agree_across_backends(clips, name):
    """decord and pyav scale the YUV planes with the same swscale call: measured identical;
    torchcodec scales RGB after conversion: 41-45 dB on real clips (docs/performance.md)."""
    path = str(clips[name])
    got = {b: decode_video(path, 8, 4.0, 576, 320, clip_rng(5, name, "start"), decoder=make_decoder(b)).frames
           for b in BACKENDS}
    names = list(got)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            mse = np.mean((got[a].astype(np.float64) - got[b]) ** 2)
            psnr = 10 * np.log10(255 ** 2 / mse) if mse else np.inf
            floor = 50.0 if {a, b} == {"decord", "pyav"} else 35.0
            assert psnr >= floor, (a, b, psnr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_keeps_its_reason_class(tmp_path, backend):
    dec = make_decoder(backend)
    good = tmp_path / "good.mp4"
    write_mp4(good, V.index_frames(36), 12)

    def reason(path, **caps):
        with pytest.raises(ClipError) as e:
            decode_video(str(path), 8, 4.0, 320, 192, clip_rng(0, "x", "start"), decoder=dec, **caps)
        return e.value.reason, e.value.message

    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 40)
    import shutil

    for name, make in [("truncated.mp4", V.truncate), ("corrupt_header.mp4", V.corrupt_header)]:
        shutil.copyfile(good, tmp_path / name)
        make(tmp_path / name)
    mid = bytearray(good.read_bytes())
    a, b = int(len(mid) * 0.35), int(len(mid) * 0.65)
    mid[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt_mid.mp4").write_bytes(bytes(mid))
    V.write_audio_only(tmp_path / "audio.mp4")
    V.write_audio_only(tmp_path / "audio.mkv")
    V.write_no_frames(tmp_path / "no_frames.mp4")
    V.write_no_frames(tmp_path / "no_frames.mkv")
    V.write_no_frames(tmp_path / "no_frames.avi")
    write_mp4(tmp_path / "short.mp4", V.index_frames(13), 12)
    write_mp4(tmp_path / "tiny.mp4", np.zeros((30, 16, 16, 3), np.uint8), 12)
    expected = {
        "missing.mp4": "missing_file", "empty.mp4": "unreadable", "text.mp4": "unreadable",
        "truncated.mp4": "unreadable", "corrupt_header.mp4": "unreadable", "corrupt_mid.mp4": "decode_error",
        "audio.mp4": "unreadable", "audio.mkv": "unreadable", "no_frames.mp4": "unreadable",
        "no_frames.mkv": "unreadable", "no_frames.avi": "unreadable", "short.mp4": "too_short", "tiny.mp4": "too_small",
    }
    got = {name: reason(tmp_path / name) for name in expected}
    assert {k: v[0] for k, v in got.items()} == expected
    assert "no video stream" in got["audio.mp4"][1] and "without frames" in got["no_frames.avi"][1]
    assert reason(good, max_pixels=320 * 192 - 1)[0] == "too_large"
    assert reason(good, max_frames=35)[0] == "too_large"
    assert decode_video(str(good), 8, 4.0, 320, 192, clip_rng(0, "x", "start"), decoder=dec).frames.shape == \
        (8, 192, 320, 3)


def test_frame_table_of_a_variable_rate_clip(clips):
    t = read_frame_table(str(clips["vfr.mkv"]))
    assert t.num_frames == N and t.width == 320 and t.height == 192 and t.keyframe[0]
    np.testing.assert_allclose(t.times, VFR_TIMES, atol=1e-3)
    assert constant_rate(t.times, t.header_fps) is None
    with pytest.raises(ClipError) as e:
        read_frame_table(str(clips["h264_24.mp4"]), max_frames=N - 1)
    assert e.value.reason == "too_large"


def test_selection_rule():
    rng = lambda: clip_rng(0, "c", "start")  # noqa: E731
    t25 = np.arange(100) / 25
    assert constant_rate(t25, 25.0) == 25.0
    assert constant_rate(t25, 30.0) == pytest.approx(25.0)          # declared rate overruled
    assert constant_rate(t25, 25.1) == 25.1                         # within half a frame: the declared one
    idx, start, fps, extra = select_source_frames(100, 30.0, t25, 8, 4.0, rng())
    assert fps == pytest.approx(25.0) and extra == {"declared_fps": 30.0}
    same = select_source_frames(100, 25.0, t25, 8, 4.0, rng())
    np.testing.assert_array_equal(idx, same[0])
    no_times = select_source_frames(100, 25.0, None, 8, 4.0, rng())
    np.testing.assert_array_equal(no_times[0], same[0])


def test_registry_auto_and_identity(monkeypatch):
    assert decoder_choices() == ("auto", "decord", "pyav", "torchcodec") and list(DECODERS) == list(decoder_choices()[1:])
    assert resolve_decoder("PyAV") == "pyav"
    with pytest.raises(ValueError, match="unknown decoder 'nope'; known: auto, decord"):
        resolve_decoder("nope")
    assert decoder_identity("torchcodec", "cuda:1") == "torchcodec/cuda" and decoder_identity("pyav") == "pyav"
    if "decord" in BACKENDS:
        assert resolve_decoder("auto") == "decord"
    monkeypatch.setitem(sys.modules, "decord", None)  # decord hidden: import fails
    assert resolve_decoder("auto") == "pyav" and make_decoder().name == "pyav"
    with pytest.raises(ImportError) as e:
        make_decoder("decord")
    assert "pip install -e '.[decord]'" in str(e.value) and "decode.backend to pyav" in str(e.value)
    with pytest.raises(ValueError, match="CPU only"):
        make_decoder("pyav", device="cuda")


def test_torchcodec_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    with pytest.raises(ImportError) as e:
        make_decoder("torchcodec")
    msg = str(e.value)
    assert msg.startswith("decoder 'torchcodec' needs the 'torchcodec' package") and "'.[torchcodec]'" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_decoder_decodes_its_own_clip(backend):
    check_decoder(make_decoder(backend))


@pytest.mark.skipif("torchcodec" not in BACKENDS, reason="torchcodec (and the system's FFmpeg) not installed")
def test_torchcodec_is_driven_by_the_table(clips):
    from stages.decoders.torchcodec_backend import TorchCodecDecoder

    t = read_frame_table(str(clips["vfr.mp4"]))
    import json

    m = json.loads(TorchCodecDecoder.frame_mappings(t))["frames"]
    assert [f["pts"] for f in m] == t.pts.tolist() and m[0]["key_frame"] == 1 and all(f["duration"] > 0 for f in m)


def test_png_still_works_after_the_decoders_load_first():
    """decord and PyAV loaded before OpenCV would break its PNG codec (their zlib): the
    package imports OpenCV first. In a fresh process, as a tool that decodes then writes PNGs."""
    import subprocess

    code = ("import stages.decoders as d\n"
            "for name in d.installed_decoders(): d.make_decoder(name)\n"
            "import cv2, numpy as np, tempfile, os\n"
            "p = os.path.join(tempfile.mkdtemp(), 'x.png')\n"
            "assert cv2.imwrite(p, np.full((8, 8, 3), 7, np.uint8)) and cv2.imread(p) is not None\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "libpng error" not in proc.stderr, proc.stderr
