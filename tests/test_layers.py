"""The core's import layers (issue 24 item 5): the spec is the ground and imports nothing of a
fleet; serving and the planner never reach into fleet/ (what they need of a group is a plain value
handed to them); command-line entry points sit on top. No import circle across the core's domain
folders, nor across roles/* packages. Every import counts, function-level ones included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("planner", "serving", "fleet", "drift", "gpu", "observe", "weights", "mirror")
FORBIDDEN = [  # (importer prefix, imported prefix, why)
    ("r1deploy.spec", "r1deploy.fleet", "the spec is the ground"),
    ("r1deploy.serving", "r1deploy.fleet", "rendering a node needs no fleet: a group is a value handed to it"),
    ("r1deploy.planner", "r1deploy.fleet", "the planner sizes replicas and never loads inventories"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "roles":  # the wheel's (and the editable install's) r1deploy.roles
        parts.insert(0, "r1deploy")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*ROOT.glob("r1deploy/**/*.py"), *ROOT.glob("roles/**/*.py")]
    return {_module(p): p for p in files}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            out.append((base, node.lineno))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names if f"{base}.{a.name}" in known]
    return out


def _edges() -> list[tuple[str, str, int]]:
    mods = _modules()
    return [(name, target, line) for name, path in sorted(mods.items())
            for target, line in _imports(name, path, set(mods))
            if target.startswith(("r1deploy", "roles"))]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _unit(name: str) -> str | None:
    """The folder a module belongs to for the circle check: a core domain, or one roles/* package."""
    parts = name.split(".")
    if parts[:2] == ["r1deploy", "roles"] and len(parts) > 2:
        return ".".join(parts[:3])
    if parts[0] == "r1deploy" and len(parts) > 1 and parts[1] in DOMAINS:
        return ".".join(parts[:2])
    return None


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one folder (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_function_level_imports():
    """issue 24 item 5: the walk is not fooled by an import inside a function."""
    assert ("r1deploy.cli", "r1deploy.fleet.inventory") in {(a, b) for a, b, _ in _edges()}


def test_spec_serving_and_planner_import_nothing_of_a_fleet():
    """issue 24 item 5: spec → fleet, serving → fleet and planner → fleet are refused."""
    bad = [f"{a}:{line} imports {b} ({why})" for a, b, line in _edges()
           for src, dst, why in FORBIDDEN if _within(a, src) and _within(b, dst)]
    assert not bad, "\n".join(bad)


def test_no_import_circle_across_folders():
    """issue 24 item 5: no circle across r1deploy/{planner,serving,fleet,...} nor across roles/*."""
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, b, line in _edges():
        ua, ub = _unit(a), _unit(b)
        if ua and ub and ua != ub:
            graph[ua].add(ub)
            where[(ua, ub)].append(f"{a}:{line} -> {b}")
    report = []
    for comp in _circles(graph):
        report.append("circle: " + ", ".join(comp))
        report += [f"  {e}" for x in comp for y in comp for e in where.get((x, y), [])]
    assert not report, "\n".join(report)


def test_one_namespace_no_top_level_roles_or_deploy():
    """issue 24 item 1: the core, roles, deploys and the tools import roles as r1deploy.roles and the
    deploys as r1deploy.deploys (the wheel's names); a bare `roles`/`deploy` import would load a second
    copy in a checkout and fail once installed."""
    files = [p for d in ("r1deploy", "roles", "deploy", "tests", "lab", "bench") for p in ROOT.glob(f"{d}/**/*.py")]
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in ("roles", "deploy")]
    assert not bad, "\n".join(bad)
