"""The floors of docs/architecture.md and the rules that must never break, checked on every import the code
makes (module level or inside a function), as ../shared/tools/import_cycles.py reads them:

- bench.core imports nothing of the project above it;
- methods and metrics build on bench.core only (metrics also on methods); reports on those and bench.compare;
- the engine (bench.runs), sweeps (bench.sweep), tuning (bench.tune) and regression (bench.compare) never import
  the shell;
- nothing imports bench.commands except bench.cli, and no command imports another command;
- no import cycles between files.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "methods", "metrics", "reports")
SHELL = ("bench.cli", "bench.__main__", "bench.commands")

#: floor -> the floors it may import (itself always). A module's floor is the longest prefix listed here.
ALLOWED: dict[str, set[str]] = {
    "bench.core": set(),
    "methods": {"bench.core"},
    "metrics": {"bench.core", "methods"},
    "bench.runs": {"bench.core", "methods", "metrics"},
    "bench.sweep": {"bench.core", "methods", "metrics", "bench.runs"},
    "bench.tune": {"bench.core", "methods", "metrics", "bench.runs"},
    "bench.compare": {"bench.core", "metrics", "bench.runs"},
    "reports": {"bench.core", "methods", "metrics", "bench.compare"},
    "bench.cli": {"bench.core", "methods", "metrics", "bench.commands"},
    "bench.__main__": {"bench.cli"},
    "bench.commands": {"bench.core", "methods", "metrics", "reports", "bench.runs", "bench.sweep", "bench.compare",
                       "bench.tune", "bench.cli"},
    "bench": set(),  # bench/__init__.py
}


def modules() -> dict[str, Path]:
    files = [p for d in PACKAGES for p in (ROOT / d).rglob("*.py")]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that `name` imports anywhere in its file."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def floor(name: str) -> str:
    return max((f for f in ALLOWED if name == f or name.startswith(f + ".")), key=len)


def test_every_import_points_down_the_floors():
    known = modules()
    bad = []
    for name, path in known.items():
        mine = floor(name)
        for target in imports(name, path, known):
            theirs = floor(target)
            if theirs != mine and theirs not in ALLOWED[mine] and not name.startswith(target + "."):
                bad.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not bad, "imports against docs/architecture.md's floors:\n" + "\n".join(sorted(bad))


def test_commands_are_imported_by_the_cli_alone_and_not_by_each_other():
    known = modules()
    bad = []
    for name, path in known.items():
        for target in imports(name, path, known):
            if not target.startswith("bench.commands."):
                continue
            if name != "bench.cli":
                bad.append(f"{name} imports the command {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    known = modules()
    graph = {n: {t for t in imports(n, p, known)
                 if not (p.name == "__init__.py" and t.startswith(n + "."))
                 and not (known[t].name == "__init__.py" and n.startswith(t + "."))} for n, p in known.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_engine_files_stay_small():
    """No file of the engine grows back into a 700-line room: split it by what its importers want."""
    big = {str(p.relative_to(ROOT)): n for d in ("runs", "sweep", "tune") for p in (ROOT / "bench" / d).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 350}
    assert not big, f"engine files over 350 lines: {big}"
