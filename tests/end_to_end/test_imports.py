"""The layers' rules, read from the code's imports: every import counts, those inside functions
and under `TYPE_CHECKING` too, since each is a dependency a reader must follow."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

LAYERS = ("journal", "machine", "cli")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Each module of the layers by the name it is imported as (`runjournal.journal.store`)."""
    found = {}
    for layer in LAYERS:
        for path in (root / layer).rglob("*.py"):
            name = ".".join(["runjournal", *path.relative_to(root).with_suffix("").parts])
            found[name.removesuffix(".__init__")] = path
    return found


def layer(name: str) -> str:
    return name.split(".")[1]


def imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the layers, and the modules of the layers it imports."""
    known = modules(root)

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(owner(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                found.update(owner(f"{base}.{alias.name}") or owner(base) for alias in node.names)
        deps = {dep for dep in found if dep is not None and dep != name}
        # Importing `machine.model.pricing` runs `machine/model/__init__` first: a dependency
        # too, unless the importer is inside that package (whose `__init__` runs before it).
        deps |= {
            parent
            for dep in deps
            for parent in _parents(dep)
            if parent in known and not name.startswith(parent + ".")
        }
        graph[name] = deps - {name}
    return graph


def _parents(name: str) -> list[str]:
    """The packages `name` is in, but `runjournal` and the layer itself (whose `__init__` files
    are faces, already being imported by whoever imports any part of them)."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(3, len(parts))]


def external(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    below = {"journal": set(), "machine": {"journal"}, "cli": {"journal", "machine"}}
    wrong = [
        f"{name} imports {dep}"
        for name, deps in imports().items()
        for dep in deps
        if layer(name) != layer(dep) and layer(dep) not in below[layer(name)]
    ]
    assert wrong == []


def test_nothing_imports_the_layers_by_their_bare_names() -> None:
    """`import journal` works while developing (the repository's root is on sys.path) but not
    once installed, where the layers exist only as `runjournal.journal`, ...: nothing of the
    project's may use the bare names, pipelines and tests included."""
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in (*LAYERS, "tests", "fixtures", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for name in external(path) & set(LAYERS)
    ]
    assert wrong == []


def test_no_module_imports_the_sqlite_store_or_sqlite3_outside_the_journal() -> None:
    wrong = [
        f"{name} imports {dep}"
        for name, deps in imports().items()
        for dep in deps
        if layer(name) != "journal" and dep == "runjournal.journal.store"
    ]
    wrong += [
        f"{name} imports sqlite3"
        for name, path in modules().items()
        if layer(name) != "journal" and "sqlite3" in external(path)
    ]
    assert wrong == []


def test_no_import_circle() -> None:
    assert circles(imports()) == []


def test_the_graph_sees_imports_inside_functions_and_under_type_checking(tmp_path: Path) -> None:
    """The check itself: circles closed only by a TYPE_CHECKING import, a function-level
    import or a relative one are found; a tree without them has none."""
    files = {
        "machine/__init__.py": "",
        "machine/context.py": "from runjournal.machine import actions\n",
        "machine/actions.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from runjournal.machine.context import Context\n"
        ),
        "machine/model/__init__.py": "from .ask import ask\n",
        "machine/model/ask.py": "def ask():\n    from runjournal.machine.model import retry\n",
        "machine/model/retry.py": "import runjournal.journal.store\nimport sqlite3\n",
        "journal/__init__.py": "",
        "journal/store.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = imports(tmp_path)
    assert graph["runjournal.machine.model"] == {"runjournal.machine.model.ask"}
    assert graph["runjournal.machine.model.ask"] == {"runjournal.machine.model.retry"}
    assert graph["runjournal.machine.model.retry"] == {"runjournal.journal.store"}
    assert circles(graph) == [{"runjournal.machine.context", "runjournal.machine.actions"}]
    assert "sqlite3" in external(tmp_path / "machine/model/retry.py")
    (tmp_path / "machine/actions.py").write_text("")
    assert circles(imports(tmp_path)) == []


def test_importing_a_module_of_a_package_runs_the_package_first(tmp_path: Path) -> None:
    """`kill_switch` importing `model.pricing` runs `model/__init__`, which imports `ask`, which
    imports `kill_switch`: a circle, though no file names it whole."""
    files = {
        "machine/__init__.py": "",
        "machine/kill_switch.py": "from runjournal.machine.model.pricing import Price\n",
        "machine/model/__init__.py": "from runjournal.machine.model.ask import ask\n",
        "machine/model/ask.py": "from runjournal.machine.kill_switch import Guard\n",
        "machine/model/pricing.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    expected = {"kill_switch", "model", "model.ask"}
    assert circles(imports(tmp_path)) == [{f"runjournal.machine.{name}" for name in expected}]
