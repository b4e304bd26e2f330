"""Shared test helpers: a fresh journal file, the `journal` command as a real subprocess."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal import Journal

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    j = Journal.open(db, create=True)
    yield j
    j.close()


def journal_command() -> list[str]:
    script = Path(sys.executable).parent / "journal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def cli(
    *args: str, db: Path | None = None, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `journal ARGS` in a subprocess and wait for it."""
    command = [*journal_command(), *args]
    if db is not None:
        command += ["--db", str(db)]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, input=input, timeout=120
    )


def spawn(*args: str, db: Path, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start `journal ARGS --db DB` without waiting for it."""
    return subprocess.Popen(
        [*journal_command(), *args, "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def digest(path: Path) -> str:
    """A hash of everything a journal holds, to show that a command changed nothing."""
    if not path.exists():
        return "absent"
    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()
