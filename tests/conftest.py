"""Shared test helpers: a fresh journal file, the `journal` command as a real subprocess, a
PostgreSQL server of the suite's own (tests/postgres.py)."""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import postgres
import pytest

from runjournal.journal import Journal

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the package's bytecode once, before the workers start: the suite starts the
    `journal` command hundreds of times, and where PYTHONDONTWRITEBYTECODE is set (as in
    many containers) each start would otherwise compile every module again (0.5 s, not 0.4)."""
    if not hasattr(session.config, "workerinput"):
        for layer in ("journal", "machine", "cli"):
            compileall.compile_dir(ROOT / layer, quiet=1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than the cores, four at most: most of a test's time is spent waiting on
    the processes it started, so a core would otherwise sit idle while its worker waits."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first: handed out first, they run beside the short ones instead of
    leaving one worker busy with a kill loop after the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    j = Journal.open(db, create=True)
    yield j
    j.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """A PostgreSQL server of the session's own, on a Unix socket in a temporary folder (each
    xdist worker starts its own, the first time one of its tests asks); where PostgreSQL is
    missing or does not start, the tests that need it are skipped, saying why."""
    bindir = postgres.find_bindir()
    if isinstance(bindir, str):
        pytest.skip(bindir)
    cluster = postgres.Cluster(bindir)
    try:
        cluster.start()
    except postgres.ClusterError as e:
        pytest.skip(f"PostgreSQL did not start: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pg_url(postgres_cluster: postgres.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a new, empty database for the test module, dropped after its last test."""
    module = re.sub(r"\W", "_", request.module.__name__.rpartition(".")[2])[:40]
    name = f"{module}_{uuid.uuid4().hex[:8]}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)


def journal_command() -> list[str]:
    script = Path(sys.executable).parent / "journal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runjournal.cli"]


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


def kill_at(target: str, input_path: Path, db: Path, point: str, marker: Path) -> None:
    """Start a run of `target` in another process (tests/pipelines/stop_at.py) and SIGKILL it
    once it reaches `point` (a `machine.Checkpoint` name)."""
    stop_at = str(ROOT / "tests" / "pipelines" / "stop_at.py")
    process = subprocess.Popen(
        [sys.executable, stop_at, target, str(input_path), str(db), point, str(marker)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def digest(path: Path) -> str:
    """A hash of everything a journal holds, to show that a command changed nothing."""
    if not path.exists():
        return "absent"
    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def damage_pages(db: Path) -> None:
    """Overwrite a page in the middle of the file, where the events are."""
    data = bytearray(db.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = b"\xa5" * page
    db.write_bytes(bytes(data))


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A file system of `size` mounted at `folder`: a disk that fills up."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small disk here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """The command failed with `code` and one line saying `says`, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def reading_commands(run_id: str) -> list[tuple[str, ...]]:
    """Every reading command, as arguments of `journal`, on the run `run_id`."""
    return [
        ("runs",),
        ("runs", "--json"),
        ("show", run_id),
        ("show", run_id, "--json"),
        ("logs", run_id),
        ("replay", run_id),
        ("replay", run_id, "--at", "3"),
        ("sql", "select kind, count(*) from events group by kind"),
        ("cost", "--by", "run"),
        ("actions",),
        ("verify",),
        ("verify", run_id, "--json"),
    ]


def total_from_events(journal: Journal, run_id: str) -> Decimal:
    """Billed plus possibly billed, summed from the events themselves (not the projection):
    each answer's cost, and the worst case of each request with no answer and no HTTP error."""
    total = Decimal(0)
    requested: dict[tuple[str, int, int], Decimal] = {}
    for e in journal.events(run_id, kinds=("model.requested", "model.answered", "model.failed")):
        place = (e.data["call"], e.data["round"], e.data["attempt"])
        if e.kind == "model.requested":
            requested[place] = Decimal(str(e.data["worst_case_usd"]))
            continue
        worst = requested.pop(place)
        if e.kind == "model.answered":
            total += Decimal(str(e.data["cost_usd"]))
        elif e.data["status"] is None:
            total += worst  # a timeout or a dropped connection: it may have been billed
    return total + sum(requested.values(), Decimal(0))
