"""Checking a journal's integrity: the file, the events, and what is derived from them.

Everything but the events is derived, so everything can be checked against them: the runs
table and the seen-store are rebuilt inside a transaction that is rolled back, and compared
with what is stored; each snapshot is compared with the fold of the changes before it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs

from journal import events as k
from journal import fold, projection
from journal.store import Journal


@attrs.frozen
class Problem:
    """Something wrong in the journal, and the run it concerns (None for the whole file)."""

    run_id: str | None
    what: str


def verify(journal: Journal) -> list[Problem]:
    """Every problem found; an empty list means the journal is sound."""
    problems = [Problem(None, f"sqlite: {row[0]}") for row in _integrity(journal.conn)]
    if problems:
        return problems  # a damaged file: the checks below would only repeat it
    problems += _gaps(journal.conn)
    problems += _projections(journal)
    problems += _snapshots(journal)
    return problems


def _integrity(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return [row for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]


def _gaps(conn: sqlite3.Connection) -> list[Problem]:
    rows = conn.execute("SELECT run_id, count(*), min(seq), max(seq) FROM events GROUP BY run_id")
    return [
        Problem(run_id, f"seqs are not 1..{top} without gaps: {n} events from seq {low}")
        for run_id, n, low, top in rows
        if low != 1 or n != top
    ]


_TABLES = {"runs": "run_id", "action_keys": "name, key"}


class _LookOnly(Exception):
    """Raised to roll back the rebuild once it has been read."""


def _projections(journal: Journal) -> list[Problem]:
    conn = journal.conn
    stored = {table: _rows(conn, table, order) for table, order in _TABLES.items()}
    derived: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    try:
        with journal._write() as c:
            projection._rebuild(c, lambda run_id: journal.events(run_id))
            derived.update({table: _rows(c, table, order) for table, order in _TABLES.items()})
            raise _LookOnly
    except _LookOnly:
        pass  # what was rebuilt is rolled back with the transaction
    problems = []
    for table, rows in stored.items():
        for key in sorted(rows.keys() | derived[table].keys()):
            if rows.get(key) != derived[table].get(key):
                run_id = (
                    key[0] if table == "runs" else (rows.get(key) or derived[table][key])["run_id"]
                )
                problems.append(
                    Problem(
                        run_id,
                        f"{table} {key}: stored {_changed(rows.get(key), derived[table].get(key))}",
                    )
                )
    return problems


def _rows(
    conn: sqlite3.Connection, table: str, order: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")  # names from _TABLES
    columns = [d[0] for d in cursor.description]
    width = len(order.split(","))
    return {tuple(row[:width]): dict(zip(columns, row, strict=True)) for row in cursor}


def _changed(stored: dict[str, Any] | None, derived: dict[str, Any] | None) -> str:
    if stored is None or derived is None:
        return (
            "a row the events do not give"
            if derived is None
            else "nothing where the events give a row"
        )
    return ", ".join(
        f"{column}={stored[column]!r} where the events give {derived[column]!r}"
        for column in stored
        if stored[column] != derived[column]
    )


def _snapshots(journal: Journal) -> list[Problem]:
    problems = []
    rows = journal.conn.execute(
        "SELECT run_id, seq, data FROM events WHERE kind = ? ORDER BY run_id, seq", (k.SNAPSHOT,)
    )
    for run_id, seq, data in rows.fetchall():
        folded = fold.state_at(journal, run_id, seq - 1).state
        if json.loads(data)["state"] != folded:
            problems.append(
                Problem(run_id, f"the snapshot at seq {seq} differs from the fold before it")
            )
    return problems
