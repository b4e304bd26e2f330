"""Tests for a user's file named as one of runjournal's packages (`journal`, `machine`, `cli`).

The pipeline's folder comes first on sys.path, so such a file hides runjournal's package. Both
ways of running a pipeline, `python pipeline.py` (checked by `machine/__init__`) and `journal
run pipeline.py` (checked by `machine.loader`), say in one line which file hides which package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

PIPELINE = """
import attrs

import machine
from machine import Context, Machine, Transition


@attrs.frozen
class State:
    n: int = 0


counter = Machine("counter", state=State, start="go")


@counter.step
def go(ctx: Context, s: State) -> Transition:
    return ctx.finish(s)


if __name__ == "__main__":
    print(machine.run(counter, {}, db="own.db").run.status)
"""

OWN_MODULE = "def note(text):\n    return text\n"


def folder(tmp_path: Path, *shadows: str, imports: str = "") -> Path:
    """A pipeline `pipeline.py` in `tmp_path`, beside a module or package of each name in
    `shadows` (`journal.py`, `journal/__init__.py`), importing `imports` first."""
    (tmp_path / "pipeline.py").write_text(imports + PIPELINE)
    for name in shadows:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OWN_MODULE)
    return tmp_path / "pipeline.py"


def clash(folder: Path, shown: str, package: str) -> str:
    """The line a user sees: `shown` is the file, or a package's folder, under `folder`."""
    return (
        f"runjournal cannot load: {folder}/{shown} shadows runjournal's package {package!r}; "
        "rename your file"
    )


def python(pipeline: Path) -> subprocess.CompletedProcess[str]:
    """`python pipeline.py` in the pipeline's folder, as a user runs it."""
    return subprocess.run(
        [sys.executable, pipeline.name],
        cwd=pipeline.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_pipeline_beside_no_such_file_runs(tmp_path: Path) -> None:
    """The check costs a run nothing: `python pipeline.py` ends done."""
    result = python(folder(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


@pytest.mark.parametrize(
    ("shadow", "shown"),
    [("journal.py", "journal.py"), ("journal/__init__.py", "journal/")],
)
def test_python_says_which_file_shadows_journal(tmp_path: Path, shadow: str, shown: str) -> None:
    """`import machine` under a journal.py (or journal/ package) of the user's: the error is
    the one line naming the file, not "cannot import name 'Action' from 'journal'"."""
    result = python(folder(tmp_path, shadow))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"machine.errors.NameClash: {clash(tmp_path, shown, 'journal')}"
    assert "cannot import name" not in result.stderr
    assert not (tmp_path / "own.db").exists()


@pytest.mark.parametrize(
    ("shadow", "shown", "package"),
    [
        ("journal.py", "journal.py", "journal"),
        ("machine.py", "machine.py", "machine"),
        ("journal/__init__.py", "journal/", "journal"),
    ],
)
def test_journal_run_says_which_file_shadows_a_package(
    tmp_path: Path, db: Path, shadow: str, shown: str, package: str
) -> None:
    """`journal run pipeline.py`: one line, no traceback, exit 2, no journal."""
    result = cli("run", str(folder(tmp_path, shadow)), db=db)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"Error: {clash(tmp_path, shown, package)}"]
    assert not db.exists()


def test_journal_run_of_a_module_checks_the_current_folder(tmp_path: Path, db: Path) -> None:
    """`journal run pipeline` imports from the current folder, which holds a journal.py."""
    folder(tmp_path, "journal.py")
    result = cli("run", "pipeline", db=db, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"Error: {clash(tmp_path, 'journal.py', 'journal')}"]


def test_a_cli_py_the_pipeline_does_not_import_is_harmless(tmp_path: Path, db: Path) -> None:
    """Nothing a pipeline imports imports `cli`: a cli.py beside it breaks neither way."""
    pipeline = folder(tmp_path, "cli.py")
    assert python(pipeline).returncode == 0
    result = cli("run", str(pipeline), db=db)
    assert result.returncode == 0, result.stderr


def test_a_cli_py_the_pipeline_imports_is_refused_by_journal_run(tmp_path: Path, db: Path) -> None:
    """Under `journal run`, the pipeline's `import cli` would get runjournal's command line;
    `python pipeline.py` gets the user's own, and runs."""
    pipeline = folder(tmp_path, "cli.py", imports="import cli\n\nassert cli.note('x') == 'x'\n")
    assert python(pipeline).returncode == 0
    result = cli("run", str(pipeline), db=db)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"Error: {clash(tmp_path, 'cli.py', 'cli')}"]
    assert not db.exists()
