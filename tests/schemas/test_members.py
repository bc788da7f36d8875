"""The MEMBERS table drives encoding, decoding and validation: a round trip per member, and a
wrong dtype or shape in any array of any member is named by the validator."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.tools.validate import check_sample
from schemas.sample import (ANCHORS, DEFAULT_FLOW_STEP, ENTITIES, FLOW, FRAMES, JSON, KNOWN_MEMBERS, MEMBERS,
                            REQUIRED_MEMBERS, TXT, Sample, decode_jpeg, decode_sample, encode_flow, encode_jpeg,
                            encode_sample, frame_member, load_npz, member_of, npz_bytes)

L, H, W, A, K = 4, 32, 48, 6, 2


def _sample() -> dict:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (L, H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint16)
    mask[2:10, 3:12], mask[20:30, 30:40] = 1, 2
    return {
        "caption": "two discs",
        "meta": {"clip_id": "c1", "profile": {"name": "t", "frames": L, "width": W, "height": H, "fps": 4.0},
                 "flow": {"step": DEFAULT_FLOW_STEP}, "anchors": {"count": A}, "entities": {"count": K}},
        "frames_jpeg": [encode_jpeg(f, 90) for f in frames],
        "flow": rng.normal(0, 2, (L - 1, 2, H, W)).astype(np.float32),
        "anchor_tracks": rng.uniform(1, 30, (A, L, 2)).astype(np.float32),
        "anchor_weights": rng.uniform(0, 1, A).astype(np.float32),
        "anchor_visible": np.ones((A, L), bool),
        "anchor_reliable": np.tile(np.arange(L) < 3, (A, 1)),
        "entity_ids": np.array([1, 2], np.int32), "entity_mask": mask,
        "entity_radii": np.array([4.0, 5.0], np.float32),
        "entity_tracks": rng.uniform(5, 25, (K, L, 2)).astype(np.float32),
        "entity_visibility": np.ones((K, L), bool),
    }


SIZES = {"L": L, "H": H, "W": W, "A": A, "K": K}


def test_the_table_names_every_member_once():
    names = [m.name for m in MEMBERS]
    assert len(set(names)) == len(names)
    assert set(REQUIRED_MEMBERS) == {"txt", "json", "flow.pfz", "anchors.npz"}   # the on-disk contract
    assert set(KNOWN_MEMBERS) == {"txt", "json", "flow.pfz", "anchors.npz", "entities.npz"}
    assert frame_member(7) == "f007.jpg" and member_of("f007.jpg") is FRAMES and member_of("x.bin") is None
    fields_ = [a.field for m in MEMBERS for a in m.arrays]
    assert len(set(fields_)) == len(fields_)
    assert {f for f in fields_} <= set(Sample.__dataclass_fields__)


def test_encode_writes_the_members_of_the_table():
    members = encode_sample(_sample())
    assert set(members) == set(KNOWN_MEMBERS) | {frame_member(i) for i in range(L)}
    for m in (ANCHORS, ENTITIES):                       # npz keys in table order (the bytes depend on it)
        assert list(load_npz(members[m.name])) == [a.key for a in m.arrays]


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_round_trip_of_each_member(member):
    s = _sample()
    members = encode_sample(s)
    out = decode_sample(members, key="c1")
    if member is TXT:
        assert out["caption"] == s["caption"]
    elif member is JSON:
        assert {k: v for k, v in out["meta"].items() if k != "schema_version"} == s["meta"]
    for a in member.arrays:
        v = out[a.field]
        assert v.dtype == np.dtype(a.dtype), a.field
        assert v.shape == a.expected(SIZES), a.field
        if member is FRAMES:
            np.testing.assert_array_equal(v, np.stack([decode_jpeg(j) for j in s["frames_jpeg"]]))
        elif member is FLOW:
            assert np.abs(v - s["flow"]).max() <= DEFAULT_FLOW_STEP / 2 + 1e-6
        else:
            np.testing.assert_array_equal(v, np.asarray(s[a.field], a.dtype))
    typed = Sample.from_members(members, key="c1")   # the typed sample encodes to the same bytes
    assert typed.to_members() == members
    assert typed.as_dict().keys() == out.keys()


def test_sample_has_no_item_access():
    """Stages read and write a Sample by attribute; the dict-style layer is gone."""
    s = Sample(key="c1", flow=np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(TypeError):
        s["flow"]
    with pytest.raises(TypeError):
        s["flow"] = None
    with pytest.raises(TypeError):
        "flow" in s
    for name in ("get", "pop", "update", "keys"):
        assert not hasattr(s, name), name
    assert s.as_dict()["flow"] is s.flow and s.entity_masks is None


def _wrong_dtype(a):
    return {"float32": np.float64, "int32": np.int64, "uint16": np.int32, "bool": np.uint8}[a.dtype]


CASES = [(m, a, how) for m in (ANCHORS, ENTITIES) for a in m.arrays for how in ("dtype", "shape")]


@pytest.mark.parametrize("member,array,how", CASES, ids=[f"{m.name}:{a.key}:{h}" for m, a, h in CASES])
def test_validation_names_a_wrong_dtype_or_shape(member, array, how):
    members = encode_sample(_sample())
    assert check_sample("c1", members) == ([], [])
    arrays = load_npz(members[member.name])
    v = arrays[array.key]
    arrays[array.key] = v.astype(_wrong_dtype(array)) if how == "dtype" else v[..., None]
    members[member.name] = npz_bytes(**arrays)
    bad, _ = check_sample("c1", members)
    hits = [p for m, p in bad if m == member.name and p.startswith(f"{array.key}: {how}")]
    assert hits, bad


def test_validation_names_wrong_flow_and_frame_shapes():
    members = encode_sample(_sample())
    members[FLOW.name] = encode_flow(np.zeros((L, 2, H, W), np.float32))
    members[frame_member(2)] = encode_jpeg(np.zeros((H, W + 2, 3), np.uint8), 90)
    bad, _ = check_sample("c1", members)
    assert (FLOW.name, f"shape {(L, 2, H, W)}, expected {(L - 1, 2, H, W)}") in bad
    assert (frame_member(2), f"decoded shape {(H, W + 2, 3)}, expected {(H, W, 3)}") in bad


def test_validation_checks_within():
    members = encode_sample(_sample())
    a = load_npz(members[ANCHORS.name])
    a["visible"][:, 0] = False                        # reliable stays true at frame 0
    members[ANCHORS.name] = npz_bytes(**a)
    bad, _ = check_sample("c1", members)
    assert any(m == ANCHORS.name and p.startswith("reliable:") and "visible" in p for m, p in bad), bad


def test_required_members_missing_are_named():
    members = encode_sample(_sample())
    for name in REQUIRED_MEMBERS:
        broken = {k: v for k, v in members.items() if k != name}
        bad, _ = check_sample("c1", broken)
        assert (name, "member missing") in bad
    meta = json.loads(members["json"])
    assert meta["schema_version"] == 2


def test_member_names_are_spelled_in_schemas_sample_only():
    """Code (not docstrings or comments) names the members through schemas.sample's constants."""
    import ast
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = [m.name for m in MEMBERS if "." in m.name]           # flow.pfz, anchors.npz, entities.npz
    hits = []
    for top in ("pipeline", "stages", "schemas", "bench"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                path = os.path.join(d, f)
                if not f.endswith(".py") or path.endswith(os.path.join("schemas", "sample.py")):
                    continue
                tree = ast.parse(open(path).read())
                docs = {id(n.body[0].value) for n in ast.walk(tree)
                        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
                for n in ast.walk(tree):
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                        hits += [f"{os.path.relpath(path, root)}:{n.lineno}: {name}" for name in names if name in n.value]
    assert not hits, "member names spelled outside schemas/sample.py:\n" + "\n".join(hits)
