"""Every command on a PostgreSQL journal, as a real subprocess against the suite's own server:
the example pipeline, the reading commands, `journal sql`'s refusals, bad URLs, and `journal
copy` between SQLite and PostgreSQL with the same hashes at both ends."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, cli, journal_command, one_line_error, reading_commands

from runjournal.journal import open_store

TRIAGE = str(FIXTURES / "triage.py")
TICKETS = str(FIXTURES / "tickets.jsonl")


def journal_at(url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*journal_command(), *args, "--db", url],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def triage_run(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example pipeline run once, offline with faults, on the module's database."""
    work = tmp_path_factory.mktemp("triage")
    done = journal_at(pg_url, "run", TRIAGE, "--input", TICKETS, "--fake-model", "chaos", cwd=work)
    assert done.returncode == 0, done.stderr
    with open_store(pg_url, readonly=True) as journal:
        (run,) = journal.runs()
    assert run.status == "done" and run.steps == 61
    return run.run_id


def test_every_reading_command_reads_a_postgresql_journal(pg_url: str, triage_run: str) -> None:
    """What works on a file works on a database: each reading command exits 0 and says what
    it says on SQLite; verify finds nothing wrong."""
    for args in reading_commands(triage_run):
        done = journal_at(pg_url, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
    verified = json.loads(journal_at(pg_url, "verify", "--json").stdout)
    assert verified["ok"] and verified["runs"][triage_run]["last_seq"] > 60
    counted = journal_at(pg_url, "sql", "select count(*) as n from decisions", "--json")
    assert json.loads(counted.stdout) == {"n": 60}
    costs = journal_at(pg_url, "sql", "select sum(cost_usd) as usd from model_calls", "--json")
    billed = json.loads(journal_at(pg_url, "show", triage_run, "--json").stdout)["cost_usd"]
    assert float(json.loads(costs.stdout)["usd"]) == pytest.approx(billed)


def test_journal_db_names_a_database(pg_url: str, triage_run: str) -> None:
    done = subprocess.run(
        [*journal_command(), "runs", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "JOURNAL_DB": pg_url},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["run_id"] for line in done.stdout.splitlines()] == [triage_run]


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("delete from runs", "DELETE is not allowed"),
        ("update events set kind = 'x'", "UPDATE is not allowed"),
        ("copy runs to program 'true'", "COPY is not allowed"),
        ("select 1; delete from runs", "query failed"),
        ("with x as (delete from runs returning 1) select * from x", "query failed"),
        ("select pg_advisory_lock(1) from runs where false; drop table runs", "query failed"),
        ("select nonsense from nowhere", "query failed"),
    ],
)
def test_journal_sql_on_postgresql_writes_nothing(
    pg_url: str, triage_run: str, statement: str, says: str
) -> None:
    """Writes are refused before they are sent, or by the READ ONLY transaction; bad SQL is one
    line; the journal is as it was."""
    with open_store(pg_url, readonly=True) as journal:
        before = journal.heads(), journal.runs()
    one_line_error(journal_at(pg_url, "sql", statement), 2, says)
    with open_store(pg_url, readonly=True) as journal:
        assert (journal.heads(), journal.runs()) == before


def test_a_statement_past_its_timeout_is_stopped(pg_url: str, triage_run: str) -> None:
    stopped = journal_at(pg_url, "sql", "select pg_sleep(5)", "--timeout", "0.3")
    assert stopped.returncode == 1 and "stopped after 0.3 s" in stopped.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://runjournal:hunter2secret@/nodb?host=/nonexistent", "cannot connect"),
        ("postgresql://u:hunter2secret@/x?host=/tmp&port=1", "cannot connect"),
    ],
)
def test_an_unreachable_database_is_one_line_without_its_password(url: str, says: str) -> None:
    done = subprocess.run(
        [*journal_command(), "runs", "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
    )
    one_line_error(done, 2, says)
    assert "hunter2secret" not in done.stderr


def test_a_read_only_command_on_an_empty_database_writes_nothing(
    postgres_cluster: object,
) -> None:
    """`journal runs` on a database with no journal says so and creates no table."""
    url = postgres_cluster.create_database()  # type: ignore[attr-defined]
    done = journal_at(url, "runs")
    one_line_error(done, 5, "holds no journal yet")
    import psycopg

    with psycopg.connect(url) as conn:
        (tables,) = conn.execute(
            "select count(*) from pg_tables where schemaname = 'public'"
        ).fetchone() or (None,)
    assert tables == 0


def test_copy_moves_runs_both_ways_with_the_same_hashes(
    pg_url: str, triage_run: str, tmp_path: Path, postgres_cluster: object
) -> None:
    """PostgreSQL to SQLite and back to a second database: each end verifies, with the same
    heads, runs, rows and final states."""
    file = tmp_path / "copied.db"
    there = cli("copy", pg_url, str(file))
    assert there.returncode == 0 and "copied 1 run" in there.stdout, there.stderr
    again = postgres_cluster.create_database()  # type: ignore[attr-defined]
    back = cli("copy", str(file), again)
    assert back.returncode == 0 and "copied 1 run" in back.stdout, back.stderr
    heads = [
        json.loads(cli("verify", "--json", "--db", where).stdout)
        for where in (pg_url, str(file), again)
    ]
    assert all(h["ok"] for h in heads)
    assert heads[0]["runs"] == heads[1]["runs"] == heads[2]["runs"]
    shown = [
        json.loads(cli("show", triage_run, "--json", "--db", w).stdout) for w in (pg_url, again)
    ]
    assert shown[0] == shown[1]
    twice = cli("copy", str(file), again)
    assert "copied 0 runs" in twice.stdout and "left as it is" in twice.stderr
    same = cli("copy", str(file), str(file))
    assert same.returncode == 2 and "the same journal" in same.stderr
