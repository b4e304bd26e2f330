"""`journal verify` on PostgreSQL: the same checks as journal/verify.py, in PostgreSQL's SQL.

Each run's seqs and hash chain, what follows `run.done`, every blob against its hash, each
snapshot against the fold before it, and the derived tables against a rebuild from the events.
The rebuild runs the store's own statements (`store._apply`) on temporary tables of the same
names, which hide the journal's in that session, inside a transaction that is rolled back: the
journal's tables are read, never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg

from runjournal.journal import blobs, delta, fold, parts, projection
from runjournal.journal import events as k
from runjournal.journal.errors import BlobMissing
from runjournal.journal.postgres.connection import Pool, _configure, translate
from runjournal.journal.postgres.projection import apply as _apply
from runjournal.journal.protocol import Store
from runjournal.journal.rows import Problem
from runjournal.journal.verify import compared


class Checked(Store, Protocol):
    """A PostgreSQL journal as its checks read it: a store, its connection and pool, and the
    check of a part of a run (`Checked`; a protocol, since the store imports this)."""

    conn: psycopg.Connection[Any]
    pool: Pool

    def _translating(self) -> AbstractContextManager[None]: ...

    def _part_problem(self, run_id: str, first: int, upto: int | None) -> str | None: ...


def verify(store: Checked, run_id: str | None = None) -> list[Problem]:
    """Every problem found, in the whole journal or in one run; empty means it is sound."""
    try:
        with store._translating():
            problems = _gaps(store, run_id) + _chains(store, run_id) + _after_done(store, run_id)
            problems += _blobs(store, run_id)
        problems += _snapshots(store, run_id)
        return problems + _projections(store, run_id)
    except psycopg.Error as e:
        raise translate(e, store.location) from e


def heads(store: Checked, run_id: str | None = None) -> dict[str, tuple[int, str]]:
    """The last seq and hash of each run (or of one)."""
    where, params = _runs(run_id)
    with store._translating():
        rows = store.conn.execute(
            f"SELECT DISTINCT ON (run_id) run_id, seq, hash FROM events WHERE {where} "
            "ORDER BY run_id, seq DESC",
            params,
        ).fetchall()
    return {run: (seq, hash_) for run, seq, hash_ in rows}


def _runs(run_id: str | None) -> tuple[str, list[Any]]:
    return ("run_id = %s", [run_id]) if run_id is not None else ("true", [])


def _gaps(store: Checked, run_id: str | None) -> list[Problem]:
    where, params = _runs(run_id)
    rows = store.conn.execute(
        f"SELECT run_id, count(*), min(seq), max(seq) FROM events WHERE {where} GROUP BY run_id",
        params,
    )
    return [
        Problem(run, f"seqs are not 1..{top} without gaps: {n} events from seq {low}")
        for run, n, low, top in rows
        if low != 1 or n != top
    ]


def _chains(store: Checked, run_id: str | None) -> list[Problem]:
    where, params = _runs(run_id)
    runs = [
        r[0] for r in store.conn.execute(f"SELECT DISTINCT run_id FROM runs WHERE {where}", params)
    ]
    problems = []
    for run in runs:
        found = store._part_problem(run, 1, None)
        if found is not None and "hash chain" in found:
            seq = int(found.split("at seq ")[1].split()[0])
            problems.append(Problem(run, found, seq))
    return problems


def _after_done(store: Checked, run_id: str | None) -> list[Problem]:
    where, params = _runs(run_id)
    rows = store.conn.execute(
        "SELECT e.run_id, min(e.seq), count(*) FROM events e JOIN ("
        f"  SELECT run_id, min(seq) AS done FROM events WHERE kind = %s AND {where} "
        "GROUP BY run_id) d ON d.run_id = e.run_id AND e.seq > d.done GROUP BY e.run_id",
        [k.RUN_DONE, *params],
    )
    return [
        Problem(run, f"{n} events follow run.done, from seq {seq}: done must be final", seq)
        for run, seq, n in rows
    ]


def _blob_refs(store: Checked, run_id: str | None) -> Iterator[tuple[str, int, str | None]]:
    where, params = _runs(run_id)
    for field, kind in (("input", k.RUN_STARTED), ("request", k.MODEL_REQUESTED)):
        yield from store.conn.execute(
            f"SELECT run_id, seq, data ->> '{field}' FROM events WHERE kind = %s AND {where}",
            [kind, *params],
        ).fetchall()
    for field in ("input_parts", "state_parts"):
        yield from store.conn.execute(
            f"SELECT run_id, seq, p.value FROM events, json_each_text(data -> '{field}') p "
            f"WHERE kind IN (%s, %s) AND json_typeof(data -> '{field}') = 'object' AND {where}",
            [k.RUN_STARTED, k.SNAPSHOT, *params],
        ).fetchall()


def _blobs(store: Checked, run_id: str | None) -> list[Problem]:
    problems = []
    sound: dict[str, bool | None] = {}
    for run, seq, ref in _blob_refs(store, run_id):
        if ref is None:
            continue
        if ref not in sound:
            row = store.conn.execute(
                "SELECT size, data FROM blobs WHERE hash = %s", (ref,)
            ).fetchone()
            sound[ref] = None if row is None else blobs.holds(ref, *row)
        if sound[ref] is None:
            problems.append(Problem(run, f"the blob {ref} that seq {seq} refers to is gone", seq))
        elif not sound[ref]:
            what = f"the blob {ref} that seq {seq} refers to was changed: it fails its hash"
            problems.append(Problem(run, what, seq))
    if run_id is None:
        for ref, size, data in store.conn.execute("SELECT hash, size, data FROM blobs"):
            if ref not in sound and not blobs.holds(ref, size, data):
                problems.append(Problem(None, f"the blob {ref} was changed: it fails its hash"))
    return problems


def _snapshots(store: Checked, run_id: str | None) -> list[Problem]:
    problems = []
    runs = [run_id] if run_id is not None else [r.run_id for r in store.runs()]
    for run in runs:
        for event in store.events(run, kinds=[k.SNAPSHOT]):
            try:
                folded = fold.state_at(store, run, event.seq - 1).state
                state = parts.join(event.data["state"], event.data.get("state_parts"), store.blob)
            except BlobMissing:
                continue  # named by the check of blobs
            if not delta.same(state, folded):
                what = f"the snapshot at seq {event.seq} differs from the fold before it"
                problems.append(Problem(run, what, event.seq))
    return problems


def _projections(store: Checked, run_id: str | None) -> list[Problem]:
    conn = psycopg.connect(store.pool.url, autocommit=True)
    try:
        _configure(conn)
        stored = {t: _rows(conn, f"public.{t}", order) for t, order in projection.TABLES.items()}
        with conn.transaction(force_rollback=True):
            for table in projection.TABLES:
                conn.execute(f"CREATE TEMP TABLE {table} (LIKE public.{table} INCLUDING ALL)")
            started = conn.execute(
                "SELECT run_id, (data ->> 'ordinal')::bigint FROM public.events WHERE seq = 1 "
                "ORDER BY coalesce((data ->> 'ordinal')::bigint, 0), at, run_id"
            ).fetchall()
            for position, (run, ordinal) in enumerate(started, 1):
                conn.execute(
                    "INSERT INTO pg_temp.runs (run_id, ordinal) VALUES (%s, %s)",
                    (run, ordinal or position),
                )
                _apply(conn, run, projection.project(store.events(run)))
            derived = {
                t: _rows(conn, f"pg_temp.{t}", order) for t, order in projection.TABLES.items()
            }
    finally:
        conn.close()
    return compared(stored, derived, run_id)


def _rows(
    conn: psycopg.Connection[Any], table: str, order: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
    columns = [d.name for d in cursor.description or ()]
    width = len(order.split(","))
    return {tuple(row[:width]): dict(zip(columns, row, strict=True)) for row in cursor}
