"""The code's layout rules, read from the source (no imports run): layers import one way, no module imports a
command line, every command line is a parser and a ``main``, nothing edits ``sys.path``."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"eapnet": 0, "calib_data": 0, "compress": 1, "mobile_export": 2, "bench": 3}
"""Package -> layer: a library module imports only from its own layer or below (calib_data is data beside
the core). Command lines sit above every layer."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for pkg in LAYERS for f in sorted((ROOT / pkg).rglob("*.py"))}
COMMANDS = {target.split(":")[0] for target in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values()}


def _imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found |= {mod} | {f"{mod}.{a.name}" for a in node.names}   # `from pkg import module`
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: _imports(m, f) for m, f in MODULES.items()}


def test_the_graph_sees_imports():
    # the checks below pass trivially if the parser finds nothing: pin a few known edges
    assert "eapnet.model" in GRAPH["eapnet.checkpoint"]
    assert "compress.pipeline" in GRAPH["compress.qat"]
    assert "eapnet.data.synthetic" in GRAPH["eapnet.evalsets"]          # a lazy import inside a function
    assert COMMANDS >= {"eapnet.train", "compress.qat", "mobile_export.export_pte", "bench.bench_mobile"}


def test_every_command_module_exists():
    assert COMMANDS <= set(MODULES), sorted(COMMANDS - set(MODULES))


def test_no_module_imports_a_command_line():
    bad = sorted(f"{m} imports {sorted(deps & COMMANDS)}" for m, deps in GRAPH.items() if deps & COMMANDS)
    assert not bad, bad


def test_library_layers_import_one_way():
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if m not in COMMANDS for d in deps
           if LAYERS[d.split(".")[0]] > LAYERS[m.split(".")[0]]]
    assert not bad, bad


def test_no_import_cycles():
    # Tarjan's strongly connected components over module imports
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                cycles.append(sorted([v, *comp]))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_command_lines_are_a_parser_and_main(module):
    tree = ast.parse(MODULES[module].read_text())
    defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {"get_args_parser", "main"} <= defs, f"{module}: needs get_args_parser() and main()"
    public = sorted(d for d in defs - {"get_args_parser", "main", "parse_args"} if not d.startswith("_"))
    assert not public, f"{module}: library code in a command line: {public}"


def test_nothing_edits_sys_path():
    files = [*MODULES.values(), *sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "tests").glob("*.py"))]
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
