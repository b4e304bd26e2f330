"""Everything installs under the one name `runjournal`: a user's `journal.py`, `machine.py` or
`cli.py` beside a pipeline is the user's own, and the wheel puts nothing else at the top of
site-packages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, cli

PIPELINE = """
import attrs

import journal, machine, cli  # the user's own modules, beside this file
import runjournal
from runjournal import Context, Machine, Transition

assert journal.note("j") == machine.note("m") == cli.note("c") == "mine"


@attrs.frozen
class State:
    n: int = 0


counter = Machine("counter", state=State, start="go")


@counter.step
def go(ctx: Context, s: State) -> Transition:
    return ctx.finish(s)


if __name__ == "__main__":
    print(runjournal.run(counter, {}, db="own.db").run.status)
"""


def users_folder(where: Path) -> Path:
    """A pipeline beside a `journal.py`, a `machine/` package and a `cli.py` of the user's."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("journal.py", "machine/__init__.py", "cli.py"):
        (where / name).parent.mkdir(exist_ok=True)
        (where / name).write_text("def note(text):\n    return 'mine'\n")
    (where / "pipeline.py").write_text(PIPELINE)
    return where / "pipeline.py"


def test_a_users_journal_machine_and_cli_beside_a_pipeline_are_the_users(
    tmp_path: Path, db: Path
) -> None:
    pipeline = users_folder(tmp_path / "p")
    result = subprocess.run(
        [sys.executable, pipeline.name],
        cwd=pipeline.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    ran = cli("run", str(pipeline), db=db)
    assert ran.returncode == 0, ran.stderr
    assert " done" in ran.stdout + ran.stderr


def _pip_install(source: Path | str, target: Path) -> list[str]:
    """`pip install SOURCE` into the folder `target`, offline and without dependencies (they
    are the venv's); what it put at the top of `target`."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"),
            *("--no-build-isolation", "--target", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return sorted(p.name for p in target.iterdir())


def _files(target: Path) -> set[str]:
    return {
        str(p.relative_to(target))
        for p in (target / "runjournal").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.slow
def test_pip_install_puts_only_runjournal_at_the_top_and_the_readme_example_runs(
    tmp_path: Path,
) -> None:
    """`pip install .` and `pip install` of the sdist: one package, `runjournal`, holding the
    three layers and their data files; the README's first pipeline, saved beside a user's
    journal.py and machine.py, runs from the installed package."""
    installed = tmp_path / "site"
    top = _pip_install(ROOT, installed)
    assert [name for name in top if not name.endswith(".dist-info")] == ["bin", "runjournal"]
    files = _files(installed)
    for layer in ("journal", "machine", "cli"):
        assert f"runjournal/{layer}/__init__.py" in files
    assert "runjournal/machine/model/capabilities.json" in files

    from hatchling.build import build_sdist  # the project's build backend

    here = Path.cwd()
    try:
        os.chdir(ROOT)
        sdist = tmp_path / build_sdist(str(tmp_path))
    finally:
        os.chdir(here)
    with tarfile.open(sdist) as tar:
        assert not [m.name for m in tar.getmembers() if m.issym()]
    from_sdist = tmp_path / "site-sdist"
    _pip_install(sdist, from_sdist)
    assert _files(from_sdist) == files

    readme = (ROOT / "README.md").read_text()
    first = re.search(r"## Your first pipeline.*?```python\n(.*?)```", readme, re.S)
    assert first is not None
    folder = tmp_path / "user"
    users_folder(folder)
    (folder / "tickets.py").write_text(first.group(1))
    env = {**os.environ, "PYTHONPATH": str(installed)}
    probe = "import runjournal, journal; print(runjournal.__file__); print(journal.note(''))"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True
    )
    assert where.stdout.splitlines() == [str(installed / "runjournal" / "__init__.py"), "mine"]
    result = subprocess.run(
        [sys.executable, "tickets.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "done"
