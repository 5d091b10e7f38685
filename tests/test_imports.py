"""densessl's own imports run one way: no cycles, and no module imports from a layer above it.

The graph is read from the source with ``ast``, not by importing: every ``import`` statement
counts, at module level, inside functions and under ``if TYPE_CHECKING``, because each of them
ties the two modules together for a reader even when Python happens not to trip over it.
``from densessl.pkg import name`` is an edge to ``densessl.pkg.name`` when that is a module,
else to ``densessl.pkg`` (the package's ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import densessl

PACKAGE_DIR = Path(densessl.__file__).parent

# The layers, lowest first (docs/architecture.md). A module may import from its own layer and
# from lower ones only. A name covers the module itself and everything below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # The foundation, below everything: importable from anywhere, importing none of the layers.
    (
        "foundation",
        (
            "densessl.__init__",
            "densessl.errors",
            "densessl.registry",
            "densessl.dist",
            "densessl.device",
            "densessl.progress",
            "densessl.config",
            "densessl.schedules",
            "densessl.recipes",
            "densessl.console",
            # pure collapse measures (RankMe, spread, entropy) that methods and the engine read
            "densessl.health",
        ),
    ),
    ("data", ("densessl.data",)),
    ("models", ("densessl.models",)),
    ("losses", ("densessl.losses",)),
    ("methods", ("densessl.methods",)),
    # runs.py is a run folder's layout and how it is read (config, checkpoint format, metrics):
    # the engine writes and resumes it; export, eval and viz open runs through it.
    ("runs", ("densessl.runs",)),
    ("engine", ("densessl.engine",)),
    ("export", ("densessl.export",)),
    # viz.py draws what eval sees (dense features, correspondences), so it sits with eval.
    ("eval", ("densessl.eval", "densessl.viz")),
    # api.py is the commands as Python functions; the command line is a thin layer over it.
    (
        "cli",
        (
            "densessl.cli",
            "densessl.api",
            "densessl.demo",
            "densessl.demo_report",
            "densessl.__main__",
        ),
    ),
]


def module_name(path: Path) -> str:
    """``src/densessl/data/views.py`` -> ``densessl.data.views``; a package's ``__init__.py``
    keeps its ``__init__`` so the package and its children stay distinct nodes."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The node a dotted name refers to: the module, the package's ``__init__``, or None when it
    is not part of densessl."""
    if name in modules:
        return name
    if f"{name}.__init__" in modules:
        return f"{name}.__init__"
    return None


def imported_names(module: str, tree: ast.AST) -> list[tuple[str, ...]]:
    """For each name ``module`` imports, the dotted names it may refer to, most specific first:
    ``from a import b`` is the submodule ``a.b`` when there is one, else the package ``a``."""
    package = module.rsplit(".", 1)[0]
    candidates: list[tuple[str, ...]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates += [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: anchor at this module's package, minus level - 1 parts
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            candidates += [(f"{base}.{alias.name}", base) for alias in node.names]
    return candidates


def import_graph() -> dict[str, set[str]]:
    """densessl-internal edges, importer -> imported."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for names in imported_names(module, tree):
            resolved = [node for node in (resolve(n, modules) for n in names) if node]
            if resolved:
                targets.add(resolved[0])
        graph[module] = {t for t in targets if t != module}
    return graph


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of two or more modules: each holds a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycle_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected component (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if nxt not in previous:
                previous[nxt] = node
                frontier.append(nxt)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return rank
    return None


def test_there_are_no_import_cycles():
    graph = import_graph()
    found = knots(graph)
    printed = [
        f"  {' -> '.join(cycle_within(graph, knot))}  (all in the knot: {', '.join(sorted(knot))})"
        for knot in found
    ]
    assert not found, "import cycles inside densessl:\n" + "\n".join(printed)


def test_every_module_has_a_layer():
    unplaced = [m for m in all_modules() if layer_of(m) is None]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_imports_only_go_down_the_layers():
    upward = []
    for module, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"  {module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_walk_sees_function_level_and_from_package_imports():
    graph = import_graph()
    assert "densessl.dist" in graph["densessl.models.norm"]  # from densessl import dist
    assert "densessl.models.backbones" in graph["densessl.models.__init__"]
    assert "densessl.viz" in graph["densessl.cli"]  # inside a function
