import numpy as np
import pytest

from schemas.sample import (DEFAULT_FLOW_STEP, SCHEMA_VERSION, decode_flow, decode_sample, encode_flow,
                            encode_jpeg, encode_sample, frame_member, load_npz, npz_bytes)


def _sample(L=4, H=32, W=48, entities=False):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (L, H, W, 3), dtype=np.uint8)
    s = {
        "caption": "a caption — ünïcode",
        "meta": {"clip_id": "c1", "flow": {"step": DEFAULT_FLOW_STEP}},
        "frames_jpeg": [encode_jpeg(f, 95) for f in frames],
        "flow": rng.normal(0, 3, (L - 1, 2, H, W)).astype(np.float32),
        "anchor_tracks": rng.uniform(0, 30, (5, L, 2)).astype(np.float32),
        "anchor_weights": rng.uniform(0, 1, 5).astype(np.float32),
        "anchor_visible": np.ones((5, L), bool),
        "anchor_reliable": np.tile(np.arange(L) < 2, (5, 1)),
    }
    if entities:
        s.update(entity_ids=np.array([1, 2]), entity_mask=np.zeros((H, W), np.uint16),
                 entity_radii=np.array([3.0, 4.0]), entity_tracks=np.zeros((2, L, 2)),
                 entity_visibility=np.ones((2, L), bool))
    return s


def test_flow_encoding_error_is_bounded_by_half_step():
    flow = np.random.default_rng(1).normal(0, 20, (3, 2, 40, 50)).astype(np.float32)
    back = decode_flow(encode_flow(flow))
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert np.abs(back - flow).max() <= DEFAULT_FLOW_STEP / 2 + 1e-6


@pytest.mark.parametrize("entities", [False, True])
def test_sample_round_trip(entities):
    s = _sample(entities=entities)
    members = encode_sample(s)
    assert frame_member(0) in members and "json" in members and "txt" in members
    assert all("." not in k.split(".")[0] or True for k in members)
    out = decode_sample(members, key="c1")
    assert out["key"] == "c1" and out["caption"] == s["caption"]
    assert out["frames"].shape == (4, 32, 48, 3) and out["frames"].dtype == np.uint8
    assert np.abs(out["flow"] - s["flow"]).max() <= DEFAULT_FLOW_STEP / 2 + 1e-6
    np.testing.assert_array_equal(out["anchor_tracks"], s["anchor_tracks"])
    np.testing.assert_array_equal(out["anchor_reliable"], s["anchor_reliable"])
    assert out["meta"]["schema_version"] == SCHEMA_VERSION == 2
    assert ("entity_ids" in out) == entities


def test_unknown_schema_version_is_refused():
    members = encode_sample(_sample())
    members["json"] = members["json"].replace(b'"schema_version": 2', b'"schema_version": 99')
    with pytest.raises(ValueError, match="schema version"):
        decode_sample(members)


def test_schema_1_samples_still_decode_and_say_their_anchors_are_unverified():
    """A version-1 sample (no ``reliable`` array) decodes; ``anchor_reliable`` is None (never
    silently the visible mask)."""
    s = _sample()
    members = encode_sample(s)
    a = load_npz(members["anchors.npz"])
    members["anchors.npz"] = npz_bytes(tracks=a["tracks"], weights=a["weights"], visible=a["visible"])
    members["json"] = members["json"].replace(b'"schema_version": 2', b'"schema_version": 1')
    out = decode_sample(members)
    assert out["meta"]["schema_version"] == 1
    assert out["anchor_reliable"] is None
    np.testing.assert_array_equal(out["anchor_visible"], s["anchor_visible"])


def test_reliable_is_stored_within_visible():
    s = _sample()
    s["anchor_visible"] = np.zeros_like(s["anchor_visible"])
    s["anchor_visible"][:, :3] = True
    s["anchor_reliable"] = np.ones_like(s["anchor_visible"])
    out = decode_sample(encode_sample(s))
    np.testing.assert_array_equal(out["anchor_reliable"], s["anchor_visible"])
    s["anchor_reliable"] = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="anchor_reliable"):
        encode_sample(s)


# ---- the flow member built pair by pair (issue 25)

@pytest.mark.parametrize("shape, step", [((5, 2, 17, 23), DEFAULT_FLOW_STEP), ((3, 2, 1, 9), 0.1), ((2, 2, 40, 8), 0.25)])
def test_flow_encoder_pair_by_pair_gives_the_bytes_of_the_whole_flow(shape, step):
    from schemas.codecs import FlowEncoder, flow_header

    flow = np.random.default_rng(3).normal(0, 30, shape).astype(np.float32)
    whole = encode_flow(flow, step)
    enc = FlowEncoder(*shape, step=step)
    for i in np.random.default_rng(4).permutation(shape[0]):      # any order
        enc.add(int(i), flow[i])
    assert enc.finish() == whole
    assert flow_header(whole) == (shape, np.float32(step))
    short = FlowEncoder(*shape, step=step)
    short.add(0, flow[0])
    with pytest.raises(ValueError, match=r"flow pairs \[1\b.* were never added"):
        short.finish()
    with pytest.raises(ValueError, match="flow pair must be"):
        short.add(1, flow[1, :, :-1])


def test_encode_sample_stores_the_flow_steps_own_bytes():
    from schemas.sample import Sample

    s = _sample()
    ref = encode_sample(s)["flow.pfz"]
    pfz = encode_flow(s["flow"], DEFAULT_FLOW_STEP)
    fields = {k: v for k, v in s.items()}
    assert encode_sample(Sample(**fields, flow_pfz=pfz))["flow.pfz"] is pfz          # used as is, not re-encoded
    stale = encode_flow(s["flow"][:2], DEFAULT_FLOW_STEP)                             # of another flow: ignored
    assert encode_sample(Sample(**fields, flow_pfz=stale))["flow.pfz"] == ref


@pytest.mark.parametrize("step", [DEFAULT_FLOW_STEP, 0.1, 0.25, 3.0])
def test_decode_flow_gives_exactly_the_flow_at_the_stored_precision(step):
    from schemas.sample import dequantize_flow

    flow = np.random.default_rng(5).normal(0, 40, (4, 2, 23, 31)).astype(np.float32)
    flow[0, 0, :3] = 0.0
    flow[1, 1, 2, 3:6] = [-1e5, 1e5, -0.01]          # a negative value that rounds to zero
    assert decode_flow(encode_flow(flow, step)).tobytes() == dequantize_flow(flow, step).tobytes()
