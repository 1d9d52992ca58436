"""The code's layout rules, read from the source (no imports run): layers import one way, no module imports a
command line, every command line is a parser and a ``main``, imports sit at the top of each module (only the
heavy optional stacks of ``LATE_IMPORTS`` import inside functions), nothing edits ``sys.path``."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"eapnet": 0, "eapnet.calib": 0, "eapnet.compress": 1, "eapnet.export": 2, "eapnet.bench": 3,
          "eapnet.jobs": 4}
"""Package -> layer (a module belongs to the longest package prefix of its name): a library module imports only
from its own layer or below (``eapnet.calib`` is data beside the core). Command lines sit above every layer."""
ENTRY_POINTS = ("compress/qat.py", "compress/sweep.py")
"""Scripts outside the package, the commands as the user types them: each only calls a command line's main."""


def layer(module: str) -> int:
    parts = module.split(".")
    return next(LAYERS[p] for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in LAYERS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for f in sorted((ROOT / "eapnet").rglob("*.py"))}
COMMANDS = {target.split(":")[0] for target in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values()}


def _from_module(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <module> import ...`` in module ``name`` (file ``path``)."""
    if not node.level:
        return node.module
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _import_targets(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Absolute names an import statement of module ``name`` (file ``path``) names: ``import a.b`` -> ``a.b``;
    ``from a import b`` -> ``a`` and ``a.b`` (``b`` may be a module); relative imports resolved."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    mod = _from_module(name, path, node)
    return {mod} | {f"{mod}.{a.name}" for a in node.names}   # `from pkg import module`


def _imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _import_targets(name, path, node)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: _imports(m, f) for m, f in MODULES.items()}


def test_the_graph_sees_imports():
    # the checks below pass trivially if the parser finds nothing: pin a few known edges
    assert "eapnet.model" in GRAPH["eapnet.checkpoint"]
    assert "eapnet.compress.pipeline" in GRAPH["eapnet.jobs.qat"]
    assert "eapnet.data.synthetic" in GRAPH["eapnet.evalsets"]          # `from eapnet.data.synthetic import ...`
    assert COMMANDS >= {"eapnet.train", "eapnet.jobs.qat", "eapnet.export.export_pte", "eapnet.bench.bench_mobile"}


def test_every_command_module_exists():
    assert COMMANDS <= set(MODULES), sorted(COMMANDS - set(MODULES))


def test_no_module_imports_a_command_line():
    bad = sorted(f"{m} imports {sorted(deps & COMMANDS)}" for m, deps in GRAPH.items() if deps & COMMANDS)
    assert not bad, bad


def test_library_layers_import_one_way():
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if m not in COMMANDS for d in deps
           if layer(d) > layer(m)]
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


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_entry_point_scripts_only_call_a_command_line(script):
    tree = ast.parse((ROOT / script).read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    targets = {n.module for n in imports if isinstance(n, ast.ImportFrom)}
    assert len(targets) == 1 and targets <= COMMANDS, f"{script}: imports {targets}, not one command line"
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], f"{script}: holds code"


def test_nothing_edits_sys_path():
    files = [*MODULES.values(), *(ROOT / s for s in ENTRY_POINTS), *sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "tests").glob("*.py"))]
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


# ------------------------------------------------------------------------------------------ imports at the top

LATE_IMPORTS = {
    "executorch": "ExecuTorch's export and runtime stack takes seconds to import; only exporting, running or "
                  "profiling a .pte needs it",
    "coremltools": "the Core ML converter takes seconds to import and its native parts (libcoremlpython, "
                   "libmodelpackage) exist on some platforms only; only a Core ML export or run needs it",
    "torchao.quantization.pt2e": "importing torchao takes ~1.5 s on 2 cores (it doubles `import "
                                 "eapnet.compress.quantize`, measured with -X importtime); only quantizing or "
                                 "loading an int8 program needs it",
}
"""The only imports allowed inside a function (a name and its submodules), each with the reason it is late."""

def _covered(module: str, names) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _function_imports(name: str, path: Path, source: str | None = None) -> list[tuple[int, set[str]]]:
    """``(line, modules)`` of every import statement inside a function (at any depth) of module ``name``:
    ``import a.b`` -> ``{"a.b"}``, ``from a import b`` -> ``{"a"}`` (relative imports resolved)."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child.lineno, {a.name for a in child.names} if isinstance(child, ast.Import)
                              else {_from_module(name, path, child)}))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _is_project(module: str) -> bool:
    return module == "eapnet" or module.startswith("eapnet.")


LATE = {m: _function_imports(m, f) for m, f in MODULES.items()}


def test_the_late_import_check_sees_imports():
    # the checks below pass trivially if the walk finds nothing: a known source
    src = ("import os\nfrom eapnet.model import EAPNet\n\nclass C:\n    import json\n\n    def f(self):\n"
           "        from . import metrics\n\n        def g():\n            import executorch.runtime\n"
           "        return g\n\n\nif True:\n    import re\n")
    found = _function_imports("eapnet.macs", MODULES["eapnet.macs"], src)
    assert found == [(8, {"eapnet"}), (11, {"executorch.runtime"})], found
    assert _covered("eapnet.data.synth.sources", {"eapnet.data"}) and not _covered("eapnet.datax", {"eapnet.data"})
    assert len(LATE) > 50


def test_no_function_imports_a_project_module():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {sorted(t for t in names if _is_project(t))}"
           for m, found in LATE.items() for line, names in found if any(_is_project(t) for t in names)]
    assert not bad, "project modules are imported at the top of a module, never inside a function: " + str(bad)


def test_only_heavy_optional_stacks_import_inside_functions():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {sorted(names)}" for m, found in LATE.items()
           for line, names in found if not all(_covered(t, LATE_IMPORTS) for t in names)]
    assert not bad, f"imports belong at the top of the module (late only: {sorted(LATE_IMPORTS)}): {bad}"


# ------------------------------------------------------------------------------ the README's map of the tree

_TOP = ("eapnet/", "compress/", "scripts/", "tests/", "reports/", "docs/")


def _readme_map() -> set[Path]:
    """Paths the README's "Where things are" table names: a cell's full paths (``eapnet/x.py``, ``eapnet/calib/``),
    and file names after one (``prune.py``), read beside the full path before them (inside it if a folder)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Where things are")
    end = text.find("\n## ", start + 1)
    named = set()
    for line in text[start:end if end > 0 else None].splitlines():
        if not line.startswith("|"):
            continue
        for cell in line.split("|"):
            base = None
            for token in (t.split()[0].rstrip(",") for t in re.findall(r"`([^`]+)`", cell)):
                if token.startswith(_TOP):
                    path = ROOT / token
                    named.add(path)
                    base = path if token.endswith("/") else path.parent
                elif base is not None and re.fullmatch(r"[\w-]+(/|\.(py|yaml|json|sh|cmake|md))", token):
                    named.add(base / token)
    return named


def test_the_readme_map_names_only_what_exists_and_every_module():
    named = _readme_map()
    assert len(named) > 40
    missing = sorted(str(p.relative_to(ROOT)) for p in named if not p.exists())
    assert not missing, f"the README's layout table names paths that do not exist: {missing}"
    folders = [p for p in named if p.is_dir()]
    unmapped = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "eapnet").rglob("*.py")
                      if p.name != "__init__.py" and p not in named and not any(p.is_relative_to(d) for d in folders))
    assert not unmapped, f"modules the README's layout table does not name: {unmapped}"
