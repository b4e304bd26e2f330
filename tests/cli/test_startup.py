"""Tests for how `journal` starts: what each command imports, and the version it reports.

Importing the anthropic SDK takes about a second; a command that asks no model must not pay
for it. How long commands take is bench/startup_bench.py's to measure, not these tests'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from conftest import FIXTURES, ROOT, cli

from runjournal import journal, machine
from runjournal.cli.fake import fake_model
from runjournal.machine.testing.fake import PROMPT_CACHES

SDK = ("anthropic", "pydantic")
"""Only a command that asks a model may import these."""
FAKE = ("runjournal.machine.testing.fake", "httpx2")
"""Only a command that uses the fake model may import these."""

# `journal ARGS` as the console script runs it, writing the names of the modules it imported
# to the file named by $LOADED as it exits (whatever its exit code).
PROBE = """
import atexit, json, os, sys

def write_loaded():
    with open(os.environ["LOADED"], "w") as f:
        json.dump(sorted(sys.modules), f)

atexit.register(write_loaded)
from runjournal import cli
cli.main()
"""


def loaded_by(*args: str, tmp_path: Path) -> set[str]:
    """The modules `journal ARGS` imported; it must succeed."""
    record = tmp_path / "loaded.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LOADED": str(record)},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(record.read_text()))


@pytest.fixture
def done_run(tmp_path: Path, db: Path) -> str:
    """A journal holding one finished run of the lines fixture; returns its run id."""
    batch = tmp_path / "in.json"
    batch.write_text(json.dumps({"items": ["apple"], "out": str(tmp_path / "lines.out")}))
    result = cli("run", str(FIXTURES / "lines.py"), "--input", str(batch), db=db)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1]


READS = [
    ("runs",),
    ("sql", "select 1"),
    ("show", "RUN"),
    ("logs", "RUN"),
    ("verify",),
    ("cost",),
    ("replay", "RUN"),
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a) for a in READS])
def test_reading_imports_no_model(
    args: tuple[str, ...],
    done_run: str,
    db: Path,
    tmp_path: Path,
) -> None:
    """A command that reads the journal imports neither the SDK nor the fake."""
    words = [done_run if word == "RUN" else word for word in args]
    loaded = loaded_by(*words, "--db", str(db), tmp_path=tmp_path)
    assert not loaded & set(SDK)
    assert not loaded & set(FAKE)


HELP = [("--help",), ("--version",), ("fake-model", "--help")]


@pytest.mark.parametrize("args", HELP, ids=[" ".join(a) for a in HELP])
def test_help_imports_no_model(args: tuple[str, ...], tmp_path: Path) -> None:
    """Help and the version import neither the SDK nor the fake, not even `fake-model --help`."""
    loaded = loaded_by(*args, tmp_path=tmp_path)
    assert not loaded & set(SDK)
    assert not loaded & set(FAKE)


def test_a_broken_sdk_does_not_disturb_a_run_that_asks_nothing(tmp_path: Path, db: Path) -> None:
    """A run that asks no model never imports the SDK: a broken one does not disturb it."""
    broken = tmp_path / "broken" / "anthropic"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no SDK here')\n")
    batch = tmp_path / "in.json"
    batch.write_text(json.dumps({"items": ["apple"], "out": str(tmp_path / "lines.out")}))
    run = ["run", str(FIXTURES / "lines.py"), "--input", str(batch), "--db", str(db)]
    result = subprocess.run(
        [sys.executable, "-c", "from runjournal import cli; cli.main()", *run],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(broken.parent), str(ROOT)])},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert "no SDK here" not in result.stderr and "Traceback" not in result.stderr


def test_version_is_the_package_version() -> None:
    """`journal --version` prints the version of the installed runjournal."""
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"journal, version {version('runjournal')}\n"


def test_packages_know_their_version() -> None:
    """`journal.__version__` and `machine.__version__` are the package metadata's."""
    assert journal.__version__ == version("runjournal")
    assert machine.__version__ == version("runjournal")


def test_other_missing_names_still_raise() -> None:
    """The lazy `__version__` does not make up other attributes."""
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        journal.Nothing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        machine.Nothing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_runjournal_reads_no_metadata() -> None:
    """`import runjournal` does not import importlib.metadata: only `__version__` needs it."""
    code = "import sys, runjournal; print('importlib.metadata' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_fake_model_offers_the_fakes_prompt_caches() -> None:
    """`journal fake-model --prompt-cache` spells the fake's choices, which it cannot import."""
    (option,) = (p for p in fake_model.params if p.name == "prompt_cache")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == PROMPT_CACHES


def test_importing_runjournal_loads_neither_the_sdk_nor_the_fake() -> None:
    """A pipeline's `import runjournal` costs neither: the fake is `machine.testing`'s."""
    code = "import json, sys, runjournal; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = set(json.loads(result.stdout))
    assert "runjournal.machine.runner" in loaded  # the probe sees what it should
    assert not loaded & {*SDK, *FAKE, "runjournal.machine.testing"}
