"""The package's layers only look down, and no modules import each other in a circle.

Layers, bottom to top: `config`, `palette` (and the package's `__init__`) <- `data/` <- `models/` <- `training/`, `serving/` <-
`commands`. `training/` and `serving/` stand side by side and do not import each other. Every import statement counts,
also those inside functions (a function-level import hides a dependency; it does not remove it).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = "music_genre_classification"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
LAYERS = {"": 0, "config": 0, "palette": 0, "data": 1, "models": 2, "training": 3, "serving": 3, "commands": 4}
SIDE_BY_SIDE = {"training", "serving"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that the file imports anywhere in it (a `from m import x` of a submodule x counts as x),
    and "studies" if it imports any of those."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "studies":
                found.add("studies")
            while target and target not in known:  # `import a.b.c` of a name inside a module: the module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def layer(name: str) -> str:
    return name.removeprefix(PACKAGE).lstrip(".").split(".")[0]


def test_every_module_sits_in_a_known_layer():
    assert {layer(name) for name in graph()} <= set(LAYERS)


def test_the_package_never_imports_the_studies():
    """studies/ use the package as a user does; the package must work without them (they are not installed)."""
    wrong = [
        f"{name} imports {target}" for name, targets in graph().items() for target in targets if target == "studies"
    ]
    assert not wrong, "\n".join(wrong)


def test_layers_only_look_down():
    wrong = []
    for name, targets in graph().items():
        for target in targets - {"studies"}:
            here, there = layer(name), layer(target)
            if LAYERS[there] > LAYERS[here] or (here != there and {here, there} == SIDE_BY_SIDE):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports that look up or sideways:\n" + "\n".join(sorted(wrong))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    found = cycles({name: targets - {"studies"} for name, targets in graph().items()})
    assert not found, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [({"a": {"b"}, "b": {"a"}}, [["a", "b"]]), ({"a": {"b"}, "b": {"c"}, "c": set()}, [])],
)
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected
