"""Tests for `journal.schema`: a journal of the schema before the last migration is brought up
to date with its numbers intact, and a runjournal that knows fewer migrations refuses it after."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from conftest import FIXTURES, cli

from runjournal.journal import Journal, JournalTooNew, schema, verify

PREVIOUS = len(schema.MIGRATIONS) - 1
DERIVED = ("runs", "spend", "actions", "action_keys")
COST_VIEWS = ("cost_by_run", "cost_by_machine", "cost_by_model", "cost_by_day")


@pytest.fixture(scope="module")
def spent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal of the current schema with two triage runs, one whose dropped connections
    left requests possibly billed, and a budget."""
    where = tmp_path_factory.mktemp("spent")
    db = where / "journal.db"
    tickets = where / "tickets.jsonl"
    tickets.write_text("".join((FIXTURES / "tickets.jsonl").read_text().splitlines(True)[:6]))
    triage = str(FIXTURES / "triage.py")
    for faults in ("reset=0.3,seed=7", "none"):
        done = cli("run", triage, "--input", str(tickets), "--fake-model", faults, db=db, cwd=where)
        assert done.returncode == 0, done.stderr
    assert cli("budget", "set", "triage", "--per-day", "5", db=db).returncode == 0
    return db


def rows(db: Path, *names: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3").fetchall()
            for name in names
        }
    finally:
        conn.close()


def stored_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The columns of `table` (`schema.table`) that hold values (not generated ones), in order."""
    where, _, name = table.rpartition(".")
    pragma = f"PRAGMA {where}.table_xinfo({name})" if where else f"PRAGMA table_xinfo({name})"
    return [row[1] for row in conn.execute(pragma) if row[6] == 0]


def sql_of(db: Path) -> list[tuple[str, str, str]]:
    """Every table, index, view and trigger of the journal, as its SQL."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def as_previous_schema(current: Path, old: Path, upto: int = PREVIOUS) -> None:
    """Make `old` a journal of the schema of the first `upto` migrations (default: all but the
    last), made by those migrations themselves, holding `current`'s rows: column by column in
    order, as a rename leaves them; the columns a later migration added (at the end) are left
    for the migration to fill."""
    made = sqlite_utils.Database(old)
    migrations = sqlite_utils.Migrations(schema.MIGRATION_SET)
    for name, fn in schema.MIGRATIONS[:upto]:
        migrations(name=name)(fn)
    migrations.apply(made)
    made.execute(f"PRAGMA user_version = {upto}")
    made.conn.commit()
    made.close()
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("ATTACH ? AS current", (str(current),))
    conn.execute("BEGIN")
    for table in ("events", "blobs", "budgets", *DERIVED):
        columns, given = stored_columns(conn, table), stored_columns(conn, f"current.{table}")
        assert len(columns) <= len(given), table
        given = given[: len(columns)]
        conn.execute(
            f"INSERT INTO main.{table} ({', '.join(columns)}) "
            f"SELECT {', '.join(given)} FROM current.{table}"
        )
    conn.execute("COMMIT")
    conn.execute("DETACH current")
    conn.close()


def test_a_journal_of_the_previous_schema_migrates_and_keeps_its_numbers(
    spent: Path, tmp_path: Path
) -> None:
    """0008 names billed and possibly billed together `total` (it was `exposure`): the runs,
    what was spent by day and the cost views read the same after, and the journal verifies;
    0009 adds the shared pace, empty. Made at the schema before 0008, and migrated by both."""
    old = tmp_path / "old.db"
    before_total = [name for name, _ in schema.MIGRATIONS].index("0008_total_not_exposure")
    as_previous_schema(spent, old, upto=before_total)
    conn = sqlite3.connect(old)
    assert "exposure_nusd" in stored_columns(conn, "runs")
    conn.close()
    before = rows(spent, *DERIVED, *COST_VIEWS)
    conn = sqlite3.connect(spent)
    ((runs, possibly),) = conn.execute("SELECT count(*), sum(total_nusd > cost_nusd) FROM runs")
    conn.close()
    assert (runs, possibly) == (2, 1)  # a run possibly billed, and one only billed
    with Journal.open(old) as journal:  # a writer: it migrates
        assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        assert verify(journal) == []
    assert rows(old, *DERIVED, *COST_VIEWS) == before
    assert cli("verify", db=old).returncode == 0
    conn = sqlite3.connect(old)
    runs = stored_columns(conn, "runs")
    assert {"total_nusd", "total_tokens"} <= set(runs) and "exposure_nusd" not in runs
    conn.close()
    assert sql_of(old) == sql_of(spent)  # as a journal made new by this runjournal


def test_an_older_runjournal_refuses_a_journal_of_this_schema(
    spent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runjournal that knows one migration fewer neither reads nor writes the journal."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:PREVIOUS])
    for readonly in (False, True):
        with pytest.raises(JournalTooNew, match="newer runjournal"):
            Journal.open(spent, readonly=readonly)


def test_a_waiting_run_of_the_previous_schema_gets_its_wake_at(tmp_path: Path) -> None:
    """0010 adds `runs.wake_at`, the deadline of a run's latest `run.waiting` (what a worker
    claims a waiting run by), filled in for the runs an older runjournal left waiting."""
    current, old = tmp_path / "current.db", tmp_path / "old.db"
    spec = json.loads((FIXTURES / "refund.json").read_text())
    (tmp_path / "refund.json").write_text(json.dumps({**spec, "outbox": str(tmp_path / "out")}))
    started = cli(
        "run", str(FIXTURES / "approval.py"), "--input", "refund.json", db=current, cwd=tmp_path
    )
    assert started.returncode == 8, started.stderr
    as_previous_schema(current, old, upto=PREVIOUS)
    conn = sqlite3.connect(old)
    assert "wake_at" not in stored_columns(conn, "runs")
    conn.close()
    with Journal.open(old) as journal:  # a writer: it migrates
        (run,) = journal.runs()
        (waiting,) = journal.events(run.run_id, kinds=("run.waiting",))
        assert run.status == "waiting" and run.wake_at == waiting.data["deadline"] is not None
        assert verify(journal) == []
