"""stages.registry.Registry, and the registries built on it (flow backends, mask sources,
trackers, captioner, dataset adapters)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stages.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def test_register_get_create_and_choices():
    reg = Registry("widget", {"a": dict})
    assert reg.choices() == ("a",) and "A" in reg and len(reg) == 1
    reg.register("B", lambda **kw: ("b", kw))
    assert reg.choices() == ("a", "b")                       # registration order, lower-case
    assert reg.create("b", x=1) == ("b", {"x": 1})
    assert reg.create("A", y=2) == {"y": 2}

    @reg.register("c")
    class C:
        pass

    assert reg.get("c") is C and list(reg) == ["a", "b", "c"]
    reg["d"] = C                                             # mapping style = register
    assert reg.pop("d") is C and "d" not in reg


def test_unknown_name_names_the_choices():
    reg = Registry("widget", {"a": dict, "b": dict})
    with pytest.raises(ValueError, match=r"unknown widget 'z'; known: a, b"):
        reg.get("z")
    with pytest.raises(ValueError, match="known: a, b"):
        reg.create("z")
    with pytest.raises(KeyError):
        reg["z"]
    with pytest.raises(TypeError, match="callable"):
        reg.register("x", 3)
    with pytest.raises(ValueError, match="module:attr"):
        reg.register("x", "no_colon")


def test_lazy_entry_is_imported_on_first_use():
    code = ("import sys; from stages.registry import Registry; "
            "r = Registry('thing', {'j': 'json:dumps'}); "
            "assert 'j' in r and r.choices() == ('j',); "
            "assert r.create('j', obj=[1]) == '[1]'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_project_registries():
    from pipeline.inputs.adapters import ADAPTERS
    from stages.captions import CAPTIONERS, Blip2Captioner
    from stages.entities.masks import MASK_SOURCES
    from stages.entities.tracking import TRACKERS
    from stages.flow.base import FLOW_BACKENDS

    # the built-ins come first, in this order (other tests register plugin names after them)
    assert FLOW_BACKENDS.choices()[:4] == ("dis", "farneback", "raft", "unimatch")
    assert MASK_SOURCES.choices()[:3] == ("gt", "sam", "motion")
    assert TRACKERS.choices()[:2] == ("flow", "cotracker")
    assert CAPTIONERS.get("blip2") is Blip2Captioner
    assert {"webvid", "sample", "videohd", "vipseg"} <= set(ADAPTERS)
    for reg in (FLOW_BACKENDS, MASK_SOURCES, TRACKERS, CAPTIONERS, ADAPTERS):
        assert isinstance(reg, Registry)


def test_order_and_declared_device_kinds():
    from stages.registry import Registry

    class Model:
        device_kind = "torch"

    reg = Registry("thing", {"a": dict, "b": dict})
    reg.register("c", Model, after="a")
    reg.register("d", lambda: 1, device_kind="torch")
    assert reg.choices() == ("a", "c", "b", "d")
    assert [reg.device_kind(n) for n in reg] == ["cpu", "torch", "cpu", "torch"]
    reg.register("d", lambda: 2)                     # re-registered without it: cpu again
    assert reg.device_kind("d") == "cpu"
    with pytest.raises(ValueError, match="cannot place thing 'e' after 'x'"):
        reg.register("e", dict, after="x")
