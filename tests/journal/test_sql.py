"""Tests for stopping `journal sql` (`cli.sql`, `journal.query`): a time limit, and Ctrl-C.

A runaway statement, or one whose rows never end, stops with one line on stderr and exit 1.
The time limits asserted are generous: these check behaviour on a loaded machine, not speed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli, spawn

from runjournal.cli.sql import default_timeout
from runjournal.journal import Journal, QueryStopped, query
from runjournal.journal.leases import Holder

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"


@pytest.fixture
def empty(db: Path) -> Path:
    """An empty journal: the statements here need none of its tables."""
    Journal.open(db, create=True).close()
    return db


def one_line_error(result: subprocess.CompletedProcess[str] | tuple[int, str]) -> str:
    code, err = (result.returncode, result.stderr) if not isinstance(result, tuple) else result
    assert code == 1, (code, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_a_runaway_statement_stops_at_its_timeout(empty: Path) -> None:
    """--timeout 1 stops a statement that would never end, in about a second."""
    started = time.monotonic()
    result = cli("sql", RUNAWAY, "--timeout", "1", db=empty)
    assert time.monotonic() - started < 15
    assert one_line_error(result) == "Error: query stopped after 1 s (--timeout)"
    assert result.stdout == ""


def test_endless_rows_stop_at_the_timeout(empty: Path) -> None:
    """The limit holds while rows are read and printed, not only while SQLite computes."""
    started = time.monotonic()
    result = cli("sql", ENDLESS, "--json", "--timeout", "1", db=empty)
    assert time.monotonic() - started < 15
    assert one_line_error(result) == "Error: query stopped after 1 s (--timeout)"
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[:3] == [{"x": 1}, {"x": 2}, {"x": 3}]


def test_a_timeout_of_0_is_no_limit(empty: Path) -> None:
    result = cli("sql", "select 1 as one", "--timeout", "0", "--json", db=empty)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"one": 1}\n'


def test_the_default_timeout_is_60_s_when_no_one_watches() -> None:
    """No limit on a terminal, where Ctrl-C works; 60 s for cron, CI and pipes."""
    assert default_timeout(True) is None
    assert default_timeout(False) == 60
    shown = cli("sql", "--help")
    assert "Default: no limit when standard output is a terminal" in " ".join(shown.stdout.split())
    assert "60 when it is not" in " ".join(shown.stdout.split())


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has the file at `path` open (Linux)."""
    target = str(path.resolve())
    try:
        return any(os.path.realpath(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process ended, or a file descriptor closed while we looked
        return False


def ended_within(process: subprocess.Popen[str], seconds: float) -> bool:
    """Wait for the process to end, `seconds` at most: returns as soon as it does."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
def test_ctrl_c_stops_a_runaway_statement(empty: Path) -> None:
    """SIGINT stops the statement: `query interrupted`, exit 1, no traceback.

    `journal sql` takes Ctrl-C before it opens the journal, so the journal open in the process
    says SIGINT is safe to send; it is sent again every 0.2 s until the process ends.
    """
    process = spawn("sql", RUNAWAY, db=empty)
    deadline = time.monotonic() + 60
    try:
        while not holds_open(process.pid, empty):
            assert not ended_within(process, 0.05), process.communicate()
            assert time.monotonic() < deadline, "journal sql never opened the journal"
        process.send_signal(signal.SIGINT)
        while not ended_within(process, 0.2):
            assert time.monotonic() < deadline, "journal sql did not stop on SIGINT"
            process.send_signal(signal.SIGINT)
        out, err = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert one_line_error((process.returncode, err)) == "Error: query interrupted"
    assert out == ""


def test_query_stops_when_its_caller_says(empty: Path) -> None:
    """The library: `interrupted` and `timeout` stop a statement with QueryStopped."""
    with pytest.raises(QueryStopped, match="query interrupted") as stopped:
        query(empty, RUNAWAY, interrupted=lambda: True)
    assert stopped.value.timeout is None
    with pytest.raises(QueryStopped, match=r"query stopped after 0\.2 s") as stopped:
        list(query(empty, ENDLESS, timeout=0.2).rows)
    assert stopped.value.timeout == 0.2


def test_ctrl_c_under_pythons_own_handler_is_a_keyboard_interrupt(empty: Path) -> None:
    """SQLite swallows an exception raised in its progress handler; the query raises it again
    as KeyboardInterrupt, which is what Ctrl-C raises there when no one took SIGINT."""

    def ctrl_c() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        query(empty, RUNAWAY, interrupted=ctrl_c)


# Numbers are printed exactly, in every format (issue 17: `1.7964e+09` for a lease's expiry).
NUMBERS = (
    "select 1234567.891 as a, 1796400000.123 as c, 0.1 + 0.2 as d, 9007199254740993 as e, "
    "2.0 as f, 1e-7 as g, 123456789012.5 as h"
)
EXACT = {
    "a": "1234567.891",
    "c": "1796400000.123",
    "d": "0.30000000000000004",
    "e": "9007199254740993",
    "f": "2.0",
    "g": "1e-07",
    "h": "123456789012.5",
}


def test_numbers_print_exactly_in_every_format(empty: Path) -> None:
    """Text, JSON and CSV: an integer as an integer, a float as its shortest exact repr."""
    header, row = cli("sql", NUMBERS, db=empty).stdout.splitlines()
    assert dict(zip(header.split(), row.split(), strict=True)) == EXACT
    as_json = json.loads(cli("sql", NUMBERS, "--json", db=empty).stdout)
    assert {k: repr(v) for k, v in as_json.items()} == EXACT
    names, values = csv.reader(io.StringIO(cli("sql", NUMBERS, "--csv", db=empty).stdout))
    assert dict(zip(names, values, strict=True)) == EXACT


def test_a_lease_expiry_prints_to_the_millisecond(db: Path) -> None:
    """`leases.expires_at`, a Unix time, reads back as the very float stored."""
    expires = 1796400000.123
    with Journal.open(db, create=True, clock=lambda: expires - 60) as journal:
        run, _ = journal.create_run(
            machine="m",
            target="t.py:m",
            code_hash="0",
            step="s",
            state={},
            input={},
            run_key=None,
            holder=Holder.this_process(),
            lease_ttl=60,
        )
    conn = sqlite3.connect(db)
    (stored,) = conn.execute("select expires_at from leases").fetchone()
    conn.close()
    assert abs(stored - expires) < 1e-6
    statement = f"select run_id, expires_at from leases where run_id = '{run.run_id}'"
    _, row = cli("sql", statement, db=db).stdout.splitlines()
    assert row.split() == [run.run_id, repr(stored)]
    assert float(row.split()[1]) == stored
