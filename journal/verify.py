"""Checking a journal's integrity: the file, the events and their hash chain, and what is derived.

The events are the record: each run's hash chain is computed again and the first event that
does not match it is named, by run and seq, and every blob is checked against its hash. All
else is derived from the events, so it is checked against them: the runs table and the
seen-store are rebuilt inside a transaction that is rolled back and compared with what is
stored, and each snapshot is compared with the fold of the changes before it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from runjournal.journal import blobs, chain, delta, fold, parts, projection
from runjournal.journal import events as k
from runjournal.journal.errors import BlobMissing
from runjournal.journal.protocol import Store
from runjournal.journal.rows import Problem


class SQLStore(Store, Protocol):
    """A journal in SQLite as the checks read it: a store, and its connection for their SQL.

    A protocol, not the store's class: the store checks runs with `verify_part`, so it imports
    this module, and this module does not import it back."""

    @property
    def conn(self) -> sqlite3.Connection: ...

    @property
    def path(self) -> Path: ...

    def translating(self) -> AbstractContextManager[None]:
        """SQLite's errors inside raised as the journal's own."""
        ...


def verify(journal: SQLStore, run_id: str | None = None) -> list[Problem]:
    """Every problem found, in the whole journal or in one run; empty means it is sound. What
    SQLite cannot read is a problem too, reported, not raised."""
    return _checked(journal, run_id, "integrity", everything=True)


def _checked(journal: SQLStore, run_id: str | None, how: str, *, everything: bool) -> list[Problem]:
    try:
        problems = [Problem(None, f"sqlite: {row[0]}") for row in file_problems(journal.conn, how)]
        if problems:
            return problems  # a damaged file: the checks below would only repeat it
        checks = (_gaps, _chains, _after_done, _blobs, _projections, _snapshots)
        for check in checks if everything else (_gaps, _chains, _blobs):
            problems += check(journal, run_id)
        return problems
    except sqlite3.DatabaseError as e:
        return [Problem(None, f"sqlite: {e}")]


def record(journal: SQLStore) -> list[Problem]:
    """The problems of the record alone: the file (SQLite's quick check), each run's seqs and
    hash chain, and the blobs; not the tables derived from the events. What a command that
    rewrites the journal (`journal migrate`) checks before saying it is sound."""
    return _checked(journal, None, "quick", everything=False)


def verify_part(
    conn: sqlite3.Connection, run_id: str, *, first: int, upto: int | None = None
) -> str | None:
    """What is wrong with a run's events from seq `first` to `upto` (default: its last), if
    anything: a missing seq, or an event its stored hash does not chain to from the stored
    hash of the event before `first`. None when that part is sound."""
    if first == 1:
        previous: str = chain.GENESIS
    else:
        row = conn.execute(
            "SELECT hash FROM events WHERE run_id = ? AND seq = ?", (run_id, first - 1)
        ).fetchone()
        if row is None:
            return f"seq {first - 1} is gone"
        previous = row[0]
    sql = (
        "SELECT seq, at, kind, step, data, hash FROM events WHERE run_id = ? AND seq >= ?"
        + (" AND seq <= ?" if upto is not None else "")
        + " ORDER BY seq"
    )
    params: tuple[Any, ...] = (run_id, first) if upto is None else (run_id, first, upto)
    return chain.first_break(run_id, first, previous, conn.execute(sql, params))


def heads(journal: SQLStore, run_id: str | None = None) -> dict[str, tuple[int, str]]:
    """The last seq and hash of each run (or of one): what to keep elsewhere to catch a forger."""
    where, params = _runs(journal, run_id)
    with journal.translating():
        rows = journal.conn.execute(
            f"SELECT run_id, seq, hash FROM events WHERE (run_id, seq) IN "
            f"(SELECT run_id, max(seq) FROM events WHERE {where} GROUP BY run_id) ORDER BY run_id",
            params,
        )
        return {run: (seq, hash_) for run, seq, hash_ in rows}


def file_problems(conn: sqlite3.Connection, how: str = "integrity") -> list[tuple[Any, ...]]:
    """What SQLite's own check (`integrity_check`, or the faster `quick_check`) finds wrong
    with the file (its first lines)."""
    try:
        return [row for row in conn.execute(f"PRAGMA {how}_check(20)") if row[0] != "ok"]
    except sqlite3.DatabaseError as e:  # damage so deep that the check itself cannot run
        return [(str(e),)]


def _runs(journal: SQLStore, run_id: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters that pick the events of one run, or of all."""
    return ("run_id = ?", [run_id]) if run_id is not None else ("1", [])


def _gaps(journal: SQLStore, run_id: str | None) -> list[Problem]:
    where, params = _runs(journal, run_id)
    rows = journal.conn.execute(
        f"SELECT run_id, count(*), min(seq), max(seq) FROM events WHERE {where} GROUP BY run_id",
        params,
    )
    return [
        Problem(run, f"seqs are not 1..{top} without gaps: {n} events from seq {low}")
        for run, n, low, top in rows
        if low != 1 or n != top
    ]


def _chains(journal: SQLStore, run_id: str | None) -> list[Problem]:
    """The first event of each run whose stored hash is not the one its content chains to."""
    where, params = _runs(journal, run_id)
    rows = journal.conn.execute(
        f"SELECT run_id, seq, at, kind, step, data, hash FROM events WHERE {where} "
        "ORDER BY run_id, seq",
        params,
    )
    problems = []
    current, previous, broken = None, chain.GENESIS, False
    for run, seq, at, kind, step, data, stored in rows:
        if run != current:
            current, previous, broken = run, chain.GENESIS, False
        if broken:
            continue
        previous = chain.event_hash(previous, run, seq, at, kind, step, data)
        if previous != stored:
            broken = True
            problems.append(
                Problem(
                    run,
                    f"the hash chain breaks at seq {seq} ({kind}): this event, or one before it, "
                    "was changed, removed or moved",
                    seq,
                )
            )
    return problems


def _after_done(journal: SQLStore, run_id: str | None) -> list[Problem]:
    where, params = _runs(journal, run_id)
    rows = journal.conn.execute(
        f"SELECT e.run_id, min(e.seq), count(*) FROM events e JOIN ("
        f"  SELECT run_id, min(seq) AS done FROM events WHERE kind = ? AND {where} GROUP BY run_id"
        ") d ON d.run_id = e.run_id AND e.seq > d.done GROUP BY e.run_id",
        [k.RUN_DONE, *params],
    )
    return [
        Problem(run, f"{n} events follow run.done, from seq {seq}: done must be final", seq)
        for run, seq, n in rows
    ]


def _blob_refs(journal: SQLStore, run_id: str | None) -> Iterator[tuple[str, int, str]]:
    """(run_id, seq, blob hash) of every reference from an event to a blob."""
    where, params = _runs(journal, run_id)
    for field, kind in (("input", k.RUN_STARTED), ("request", k.MODEL_REQUESTED)):
        yield from journal.conn.execute(
            f"SELECT run_id, seq, json_extract(data, '$.{field}') FROM events "
            f"WHERE kind = ? AND {where}",
            [kind, *params],
        )
    for field in ("input_parts", "state_parts"):  # big members, stored once (journal/parts.py)
        yield from journal.conn.execute(
            f"SELECT run_id, seq, p.value FROM events, json_each(data, '$.{field}') p "
            f"WHERE kind IN (?, ?) AND p.type = 'text' AND {where}",
            [k.RUN_STARTED, k.SNAPSHOT, *params],
        )


def _blobs(journal: SQLStore, run_id: str | None) -> list[Problem]:
    """Every blob an event refers to is there and holds what its hash says; and, for the whole
    journal, every blob no event refers to holds what its hash says too."""
    problems = []
    sound: dict[str, bool | None] = {}  # by ref; None: not there
    for run, seq, ref in _blob_refs(journal, run_id):
        if ref not in sound:
            row = journal.conn.execute(
                "SELECT size, data FROM blobs WHERE hash = ?", (ref,)
            ).fetchone()
            sound[ref] = None if row is None else blobs.holds(ref, *row)
        if sound[ref] is None:
            problems.append(Problem(run, f"the blob {ref} that seq {seq} refers to is gone", seq))
        elif not sound[ref]:
            what = f"the blob {ref} that seq {seq} refers to was changed: it fails its hash"
            problems.append(Problem(run, what, seq))
    if run_id is None:
        for ref, size, data in journal.conn.execute("SELECT hash, size, data FROM blobs"):
            if ref not in sound and not blobs.holds(ref, size, data):
                problems.append(Problem(None, f"the blob {ref} was changed: it fails its hash"))
    return problems


def _projections(journal: SQLStore, run_id: str | None) -> list[Problem]:
    conn = journal.conn
    stored = {
        table: _rows(conn, f"main.{table}", order) for table, order in projection.TABLES.items()
    }
    return compared(stored, _rebuilt(journal), run_id)


Tables = dict[str, dict[tuple[Any, ...], dict[str, Any]]]
"""Each derived table's rows by their key (projection.TABLES), as column -> value."""


def compared(stored: Tables, derived: Tables, run_id: str | None) -> list[Problem]:
    """Each row of the derived tables as stored that differs from its rebuild from the events
    (of one run, or all); every backend's `verify` compares with this."""
    problems = []
    for table, rows in stored.items():
        for key in sorted(rows.keys() | derived[table].keys()):
            row, expected = rows.get(key), derived[table].get(key)
            if row == expected:
                continue
            if table == "runs":
                run = key[0]
            elif table == "spend":
                run = None  # a machine's day, summed over its runs
            else:
                run = (row or expected or {})["run_id"]
            if run_id is None or run == run_id:
                problems.append(Problem(run, f"{table} {key}: stored {_changed(row, expected)}"))
    return problems


def _rebuilt(journal: SQLStore) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """The projections as the events give them, built in memory; the file is not written.

    Temporary tables of the same names hide the stored ones from the projection's own SQL, so
    the very statements that keep the tables are what rebuild them here, on a connection that
    may be read-only.
    """
    conn = journal.conn
    conn.execute("PRAGMA temp_store = MEMORY")
    created = []
    try:
        for table in projection.TABLES:
            (sql,) = conn.execute(
                "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            conn.execute(sql.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
            created.append(table)
        conn.execute("BEGIN")
        projection._rebuild(conn, lambda run: journal.events(run))
        conn.execute("COMMIT")
        return {
            table: _rows(conn, f"temp.{table}", order) for table, order in projection.TABLES.items()
        }
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for table in created:
            conn.execute(f"DROP TABLE temp.{table}")


def _rows(
    conn: sqlite3.Connection, table: str, order: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")  # names from projection.TABLES
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


def _snapshots(journal: SQLStore, run_id: str | None) -> list[Problem]:
    problems = []
    where, params = _runs(journal, run_id)
    rows = journal.conn.execute(
        f"SELECT run_id, seq, data FROM events WHERE kind = ? AND {where} ORDER BY run_id, seq",
        [k.SNAPSHOT, *params],
    )
    for run, seq, data in rows.fetchall():
        held = json.loads(data)
        try:
            folded = fold.state_at(journal, run, seq - 1).state
            state = parts.join(held["state"], held.get("state_parts"), journal.blob)
        except BlobMissing:
            continue  # named by the check of blobs
        if not delta.same(state, folded):
            problems.append(
                Problem(run, f"the snapshot at seq {seq} differs from the fold before it", seq)
            )
    return problems
