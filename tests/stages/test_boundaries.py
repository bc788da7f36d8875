"""The boundary of the ``stages/`` package: it imports nothing from ``pipeline/`` nor Ray (plain
functions and classes on arrays, usable and testable alone; the caller passes in what a stage
needs). Module sizes are tests/test_layout.py's."""
from __future__ import annotations

import ast
from pathlib import Path

STAGES = Path(__file__).resolve().parents[2] / "stages"
FORBIDDEN = ("pipeline", "ray")


def _modules():
    files = sorted(STAGES.rglob("*.py"))
    assert len(files) > 10, f"no stages modules found under {STAGES}"
    return files


def _imported(tree: ast.AST):
    """(line, top-level package) of every absolute import, at any depth (lazy imports too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            yield node.lineno, str(node.args[0].value).split(".")[0]


def test_stages_import_neither_pipeline_nor_ray():
    bad = [f"{p.relative_to(STAGES.parent)}:{line} imports {top}"
           for p in _modules() for line, top in _imported(ast.parse(p.read_text(), str(p)))
           if top in FORBIDDEN]
    assert not bad, "stages/ must not import pipeline/ or ray:\n" + "\n".join(bad)


def test_lazy_registry_entries_stay_inside_stages():
    from stages.anchors.base import ANCHOR_TRACKERS
    from stages.entities.masks import MASK_SOURCES
    from stages.entities.tracking import TRACKERS
    from stages.flow.base import FLOW_BACKENDS

    for reg in (FLOW_BACKENDS, MASK_SOURCES, TRACKERS, ANCHOR_TRACKERS):
        for name in reg.choices():
            entry = reg._entries[name]
            if isinstance(entry, str):
                assert entry.split(":")[0].split(".")[0] == "stages", (reg.kind, name, entry)

