"""The fingerprint of the settings that determine sample content, and the resume check."""
from __future__ import annotations

import json
import re

import pytest

from pipeline.config import RECORD_KEY, Config, config_from_dict, load_config
from pipeline.run.fingerprint import check_resume, config_record, content_settings, diff_settings, fingerprint
from pipeline.run.preflight import SetupError

BASE = Config()


def test_fingerprint_is_16_hex_and_stable():
    fp = fingerprint(BASE)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert fingerprint(config_from_dict(json.loads(json.dumps(BASE.to_dict())))) == fp
    assert fingerprint(content_settings(BASE)) == fp


@pytest.mark.parametrize("over", [
    {"ray.num_workers": 7}, {"ray.address": "ray://head:10001"}, {"ray.num_cpus_per_worker": 2.0},
    {"ray.retries": 5}, {"isolation.enabled": False}, {"isolation.stage_timeout_s": 5.0},
    {"isolation.start_method": "forkserver"}, {"flow.device": "cuda"}, {"flow.batch_size": 2},
    {"entities.device": "cpu"}, {"decode.timeout_s": 9.0}, {"decode.device": "auto"}, {"shards.max_shard_bytes": 10_000},
    {"entities.sam": {"points_per_batch": 256}},
    {"frames": 16},                                    # the profile's own frame count
    {"flow.checkpoint": None},
])
def test_runtime_settings_do_not_change_it(over):
    assert fingerprint(BASE.replace(**over)) == fingerprint(BASE), over


@pytest.mark.parametrize("over", [
    {"profile": "dragnuwa-ld"}, {"frames": 12}, {"seed": 1}, {"flow.preset": "fast"}, {"flow.step": 0.125},
    {"flow.backend": "farneback"}, {"trajectories.interval": 32}, {"trajectories.max_trajectories": 4},
    {"entities.masks": "motion"}, {"entities.min_radius": 4.0}, {"entities.sam": {"points_per_side": 16}},
    {"filters.min_motion": 0.5}, {"filters.drop_cuts": True}, {"shards.samples_per_shard": 10},
    {"decode.jpeg_quality": 90}, {"plugins": ["json"]},
])
def test_content_settings_change_it(over):
    assert fingerprint(BASE.replace(**over)) != fingerprint(BASE), over


def test_normalisations():
    s = content_settings(BASE)
    from schemas.sample import SCHEMA_VERSION

    assert s["schema_version"] == SCHEMA_VERSION
    assert s["profile"] == {"name": "dragnuwa-hd", "frames": 16, "width": 576, "height": 320, "fps": 4.0}
    assert "ray" not in s and "isolation" not in s and "device" not in s["flow"] and "batch_size" not in s["flow"]
    assert "timeout_s" not in s["decode"] and s["shards"] == {"samples_per_shard": 100}
    # weights count by their name, not their folder
    a = BASE.replace(**{"entities.sam_checkpoint": "/models/sam_vit_b_01ec64.pth"})
    b = BASE.replace(**{"entities.sam_checkpoint": "/mnt/other/sam_vit_b_01ec64.pth"})
    assert fingerprint(a) == fingerprint(b) != fingerprint(BASE)
    # a stage that is off: its other settings do not matter
    off = BASE.replace(**{"entities.enabled": False})
    assert content_settings(off)["entities"] == {"enabled": False}
    assert fingerprint(off) == fingerprint(off.replace(**{"entities.min_radius": 9.0})) == \
        fingerprint(BASE.replace(**{"entities.masks": "none"}))


def test_the_decoder_counts_as_resolved(monkeypatch):
    """auto is fingerprinted as the decoder it resolves to, so a resume on a machine where
    auto means another decoder is refused, naming it."""
    import sys

    from stages.decoders import resolve_decoder

    here = resolve_decoder("auto")
    assert content_settings(BASE)["decode"]["backend"] == here
    assert fingerprint(BASE) == fingerprint(BASE.replace(**{"decode.backend": here}))
    assert fingerprint(BASE.replace(**{"decode.backend": "pyav"})) != fingerprint(
        BASE.replace(**{"decode.backend": "decord"}))
    assert content_settings(BASE.replace(**{"decode.backend": "torchcodec", "decode.device": "cuda:1"}))[
        "decode"]["backend"] == "torchcodec/cuda"
    done = config_record(BASE.replace(**{"decode.backend": "decord"}))
    monkeypatch.setitem(sys.modules, "decord", None)  # another machine: decord does not import
    assert content_settings(BASE)["decode"]["backend"] == "pyav"
    with pytest.raises(SetupError) as e:
        check_resume(done, [done[RECORD_KEY]["value"]], BASE)
    assert "decode.backend: 'decord' -> 'pyav'" in str(e.value)
    # the way out the message offers: --config OUT/config.json (it names the decoder used)
    assert done["decode"]["backend"] == "decord"
    check_resume(done, [done[RECORD_KEY]["value"]], config_from_dict(done))


def test_diff_settings():
    old = content_settings(BASE)
    new = content_settings(BASE.replace(**{"flow.preset": "fast", "seed": 3, "entities.sam": {"points_per_side": 8}}))
    assert diff_settings(old, new) == ["seed: 0 -> 3", "flow.preset: 'medium' -> 'fast'",
                                       "entities.sam.points_per_side: (not set) -> 8"]
    assert diff_settings(old, old) == []
    assert diff_settings({"a": {"b": 1}, "gone": True}, {"a": {"b": 1}}) == ["gone: True -> (not set)"]


def test_config_record_reloads_as_the_same_config(tmp_path):
    cfg = BASE.replace(**{"flow.preset": "fast"})
    rec = config_record(cfg)
    assert rec[RECORD_KEY] == {"value": fingerprint(cfg), "settings": content_settings(cfg)}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(rec, indent=1, sort_keys=True))
    from stages.decoders import resolve_decoder

    assert load_config(str(path)) == cfg.replace(**{"decode.backend": resolve_decoder("auto")})  # auto pinned
    assert fingerprint(load_config(str(path))) == fingerprint(cfg)


def test_check_resume_accepts_the_same_settings_and_a_fresh_folder():
    rec = config_record(BASE)
    check_resume(rec, {fingerprint(BASE)}, BASE)
    check_resume(rec, set(), BASE.replace(**{"flow.preset": "fast"}))          # nothing done yet
    check_resume(None, {None}, BASE.replace(**{"flow.preset": "fast"}))        # nothing known: accepted
    check_resume(rec, {fingerprint(BASE)}, BASE.replace(**{"ray.num_workers": 3, "flow.device": "cpu"}))


def test_check_resume_refuses_other_settings_and_names_them():
    rec = config_record(BASE)
    new = BASE.replace(**{"flow.preset": "fast"})
    with pytest.raises(SetupError) as e:
        check_resume(rec, [fingerprint(BASE)] * 3, new, out_dir="out/sample")
    msg = str(e.value)
    assert msg.startswith(f"out/sample has 3 done shard(s) made with other settings than this run's "
                          f"(fingerprint {fingerprint(BASE)}; this run: {fingerprint(new)}):\n"
                          f"  flow.preset: 'medium' -> 'fast'\n")
    assert "--config out/sample/config.json" in msg and "--out NEW_FOLDER" in msg and "--force" in msg


def test_check_resume_on_a_folder_written_before_fingerprints():
    new = BASE.replace(**{"trajectories.interval": 8})
    with pytest.raises(SetupError, match=r"trajectories\.interval: 16 -> 8"):
        check_resume(BASE.to_dict(), [None, None], new)        # old config.json, stats without fingerprint
    check_resume(new.to_dict(), [None], new)


def test_check_resume_when_config_json_does_not_record_the_done_settings():
    with pytest.raises(SetupError, match=r"has 1 done shard\(s\).*\(fingerprint 0123456789abcdef; .*OUT/config.json "
                                         r"does not record those settings"):
        check_resume(config_record(BASE), ["0123456789abcdef"], BASE)


def test_a_user_profile_counts_by_its_definition_and_unused_ones_do_not():
    tiny = {"frames": 9, "width": 160, "height": 96, "fps": 8.0}
    cfg = config_from_dict({"profiles": {"tiny": tiny}, "profile": "tiny"})
    assert content_settings(cfg)["profile"] == {"name": "tiny", **tiny}
    assert "profiles" not in content_settings(cfg)
    other = config_from_dict({"profiles": {"tiny": {**tiny, "fps": 4.0}}, "profile": "tiny"})
    assert fingerprint(other) != fingerprint(cfg)
    assert diff_settings(content_settings(cfg), content_settings(other)) == ["profile.fps: 8.0 -> 4.0"]
    # a profile the run does not use changes nothing, whoever defines it
    assert fingerprint(BASE.replace(**{"profiles": {"tiny": tiny}})) == fingerprint(BASE)
    assert fingerprint(config_from_dict({"profiles": {"tiny": tiny}, "profile": "wan"})) == \
        fingerprint(Config(profile="wan"))
