"""The import graph of ``umadrive`` (docs/ARCHITECTURE.md): read with ``ast``
from every module's source (imports inside functions and under TYPE_CHECKING
count too), it has no cycle between modules or between rooms, and none of the
arrows that must never exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "umadrive"

# (from room, to room): arrows that must never exist
FORBIDDEN = [
    ("protocol", "driver"), ("protocol", "model"), ("protocol", "lammps"),
    ("model", "driver"), ("model", "protocol"), ("model", "lammps"),
    ("driver", "lammps"), ("lammps", "driver"), ("lammps", "model"),
    ("structure", "protocol"), ("structure", "model"), ("structure", "driver"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The umadrive modules ``path`` imports (``from X import Y`` counts as X.Y
    when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def graph(sources: dict[str, Path]) -> dict[str, set[str]]:
    known = set(sources)
    return {name: imports(path, known) - {name} for name, path in sources.items()}


def room(module: str) -> str:
    """``umadrive.driver.backends.uma`` -> ``driver``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "umadrive"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def room_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for source, targets in edges.items():
        rooms.setdefault(room(source), set()).update(
            room(t) for t in targets if room(t) != room(source))
    return rooms


def arrows(edges: dict[str, set[str]], source_room: str, target_room: str) -> list[str]:
    return sorted(f"{s} -> {t}" for s, targets in edges.items() for t in targets
                  if room(s) == source_room and room(t) == target_room)


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(modules())


def test_the_reader_sees_the_known_arrows(edges):
    assert "umadrive.protocol.units" in edges["umadrive.protocol.client"] | {
        t for m in edges for t in edges[m] if m.startswith("umadrive.protocol")}
    assert "umadrive.driver.serving" in edges["umadrive.driver"]
    assert "umadrive.driver.backends.uma" in edges["umadrive.driver.backends.factory"]  # lazy
    assert "umadrive.driver.serving" in edges["umadrive.commands.serve"]  # inside run()


def test_no_import_cycle_between_modules(edges):
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_no_import_cycle_between_rooms(edges):
    rooms = room_graph(edges)
    cycle = find_cycle(rooms)
    assert cycle is None, " -> ".join(cycle) + "\n" + "\n".join(
        arrow for a, b in zip(cycle, cycle[1:]) for arrow in arrows(edges, a, b))


@pytest.mark.parametrize("source, target", FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_forbidden_arrow_is_absent(edges, source, target):
    assert arrows(edges, source, target) == []


def test_only_the_model_backends_import_the_model_into_the_driver(edges):
    assert {arrow.split(" -> ")[0] for arrow in arrows(edges, "driver", "model")} == {
        "umadrive.driver.backends.uma", "umadrive.driver.backends.fairchem"}


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_folder_of_modules_is_a_regular_package():
    """setuptools' ``packages.find`` installs only folders with an ``__init__.py``."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").exists()) == []
