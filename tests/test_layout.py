"""The package layout's rules, checked on the source (docs/architecture.md):

- the trainers' library (pipeline/train) and the inspection tools (pipeline/tools) read what a run
  wrote through schemas/ and the tar format (pipeline/shards.py) only: never the run, the clip
  steps or the inputs;
- the evaluation (pipeline/evaluate) reads shards the same way and may use stages/ (decoder, flow
  backends, trackers), the trainers' draw rules and the preview's image writers, never the run;
- torch is imported at module level only by the modules that need it (the trainers' conditions and
  augmentation); everything else imports it where it is used;
- no module is over 500 lines unless its docstring says why;
- member names of a sample are spelled in schemas/sample.py only.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "stages", "schemas")
MAX_LINES = 500
LONG_REASON = "Longer than 500 lines because"
TORCH_AT_TOP = {"pipeline/train/conditions.py", "pipeline/train/augment.py"}
# What a tool or the trainers' library may import of ours: the written contract (schemas/), the tar
# format, storage URIs and the object-store client, its own package, and the pure rules of
# stages.trajectories (the anchor draw and trackability the run also uses) and
# stages.decode.clip_rng (per-clip randomness).
ALLOWED = ("schemas", "pipeline.shards", "pipeline.storage", "stages.trajectories", "stages.decode")


def _modules(*tops: str) -> list[str]:
    out = []
    for top in tops:
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            out += [os.path.relpath(os.path.join(d, f), ROOT) for f in files if f.endswith(".py")]
    return sorted(out)


def _imports(path: str, top_level_only: bool = False) -> list[str]:
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = []
    for n in nodes:
        if isinstance(n, ast.Import):
            names += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            if n.module in PACKAGES:  # ``from pipeline import storage`` imports pipeline.storage
                names += [f"{n.module}.{a.name}" for a in n.names]
            else:
                names.append(n.module)
    return names


@pytest.mark.parametrize("path", _modules("pipeline/train", "pipeline/tools"))
def test_tools_and_trainers_read_only_the_written_contract(path):
    own = "pipeline." + path.split("/")[1]
    ours = [m for m in _imports(path) if m.split(".")[0] in ("pipeline", "stages", "schemas")]
    bad = [m for m in ours if not (m.startswith(own) or m.startswith(ALLOWED))]
    assert not bad, f"{path} imports {bad}: read OUT through schemas/ and pipeline.shards only"


# The evaluation computes (decodes generated videos, tracks points), so it may use stages/ too.
EVALUATE_ALLOWED = ALLOWED + ("stages", "pipeline.evaluate", "pipeline.train", "pipeline.tools")


@pytest.mark.parametrize("path", _modules("pipeline/evaluate"))
def test_the_evaluation_reads_shards_and_uses_stages_only(path):
    ours = [m for m in _imports(path) if m.split(".")[0] in ("pipeline", "stages", "schemas")]
    bad = [m for m in ours if not m.startswith(EVALUATE_ALLOWED)]
    assert not bad, f"{path} imports {bad}: the evaluation reads shards, never the run's internals"


@pytest.mark.parametrize("path", _modules(*PACKAGES))
def test_torch_is_imported_where_it_is_used(path):
    if path in TORCH_AT_TOP:
        return
    top = [m for m in _imports(path, top_level_only=True) if m == "torch" or m.startswith("torch.")]
    assert not top, f"{path} imports torch at module level (torch is an optional extra)"


@pytest.mark.parametrize("path", _modules(*PACKAGES))
def test_modules_stay_small_or_say_why(path):
    src = open(os.path.join(ROOT, path)).read()
    n = src.count("\n")
    doc = ast.get_docstring(ast.parse(src)) or ""
    assert n <= MAX_LINES or LONG_REASON in doc, f"{path}: {n} lines and no '{LONG_REASON} ...' in its docstring"


def test_pipeline_has_few_loose_modules():
    loose = sorted(f for f in os.listdir(os.path.join(ROOT, "pipeline")) if f.endswith(".py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py", "config.py", "shards.py"], loose


def test_architecture_names_every_module():
    """docs/architecture.md's tree names every module of pipeline/, stages/ and schemas/."""
    doc = open(os.path.join(ROOT, "docs", "architecture.md")).read()
    tree = doc.split("## Every module and its role", 1)[1].split("## ", 1)[0]
    missing = [p for p in _modules(*PACKAGES)
               if not p.endswith("__init__.py") and not p.endswith("__main__.py")
               and os.path.basename(p) not in tree]
    assert not missing, f"docs/architecture.md does not name {missing}"


def _module_name(path: str) -> str:
    name = path[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, at any depth of its code (function-level
    imports count: a cycle through them is still a cycle of the design)."""
    paths = _modules(*PACKAGES)
    names = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        me = _module_name(path)
        package = me if path.endswith("__init__.py") else me.rpartition(".")[0]
        deps: set[str] = set()
        for n in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    up = package.split(".")
                    up = up[: len(up) - (n.level - 1)]
                    base = ".".join(up + ([n.module] if n.module else []))
                targets = [f"{base}.{a.name}" for a in n.names]
            else:
                continue
            for t in targets:
                while t and t not in names:  # ``from pkg.mod import func`` imports pkg.mod
                    t = t.rpartition(".")[0]
                if t and t != me:
                    deps.add(t)
        graph[me] = deps
    return graph


def test_no_import_cycles():
    """No cycle among the modules of pipeline/, stages/ and schemas/ (Tarjan's SCCs)."""
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
