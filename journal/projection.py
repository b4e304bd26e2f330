"""The runs table as a projection of events: what each kind of event changes in a run's row.

`project` is pure and is the only definition of the projection. The store applies it to each
batch it appends, in the same transaction, and `_rebuild` applies it to every event of the
journal, so the table can always be thrown away and derived again.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from journal import events as k
from journal.events import Event


class Changes(NamedTuple):
    """Column values to set and counters to add to, for one run's row."""

    sets: dict[str, Any]
    adds: dict[str, int | float]


Projector = Callable[[Event, Changes], None]


def _started(e: Event, c: Changes) -> None:
    d = e.data
    c.sets.update(
        machine=d["machine"],
        target=d["target"],
        code_hash=d["code_hash"],
        run_key=d.get("run_key"),
        status="running",
        step=d["step"],
        started_at=e.at,
        snapshot_seq=e.seq,
        transition_seq=e.seq,
    )


def _resumed(e: Event, c: Changes) -> None:
    c.sets.update(status="running", error=None, ended_at=None)
    if "code_hash" in e.data:
        c.sets["code_hash"] = e.data["code_hash"]
    _add(c, "resumes", 1)


def _transition(e: Event, c: Changes) -> None:
    c.sets["step"] = e.data["to"]
    c.sets["transition_seq"] = e.seq
    _add(c, "steps", 1)


def _snapshot(e: Event, c: Changes) -> None:
    c.sets["snapshot_seq"] = e.seq


def _done(e: Event, c: Changes) -> None:
    c.sets.update(status="done", step=None, ended_at=e.at, error=None)


def _failed(e: Event, c: Changes) -> None:
    c.sets.update(status="failed", ended_at=e.at, error=e.data["error"])


def _add(c: Changes, column: str, amount: int | float) -> None:
    c.adds[column] = c.adds.get(column, 0) + amount


def _count(column: str) -> Projector:
    def count(e: Event, c: Changes) -> None:
        _add(c, column, 1)

    return count


PROJECTORS: dict[str, Projector] = {
    k.RUN_STARTED: _started,
    k.RUN_RESUMED: _resumed,
    k.TRANSITION: _transition,
    k.SNAPSHOT: _snapshot,
    k.RUN_DONE: _done,
    k.RUN_FAILED: _failed,
    k.EFFECT_DONE: _count("effects"),
    k.DECISION: _count("decisions"),
}


def project(events: Iterable[Event]) -> Changes:
    """What appending `events`, in order, changes in their run's row."""
    changes = Changes({}, {})
    last: Event | None = None
    for e in events:
        projector = PROJECTORS.get(e.kind)
        if projector is not None:
            projector(e, changes)
        last = e
    if last is not None:
        changes.sets["last_seq"] = last.seq
        changes.sets["updated_at"] = last.at
    return changes


@functools.cache
def _update_sql(sets: tuple[str, ...], adds: tuple[str, ...]) -> str:
    assignments = [f"{col} = ?" for col in sets] + [f"{col} = {col} + ?" for col in adds]
    return f"UPDATE runs SET {', '.join(assignments)} WHERE run_id = ?"


def _apply(conn: sqlite3.Connection, run_id: str, changes: Changes) -> None:
    """Write `changes` to the run's row inside the caller's transaction."""
    sets, adds = changes
    sql = _update_sql(tuple(sets), tuple(adds))
    conn.execute(sql, (*sets.values(), *adds.values(), run_id))


def _rebuild(conn: sqlite3.Connection, read: Callable[[str], Iterable[Event]]) -> None:
    """Derive the whole runs table again from the events, inside the caller's transaction."""
    run_ids = [row[0] for row in conn.execute("SELECT DISTINCT run_id FROM events ORDER BY run_id")]
    conn.execute("DELETE FROM runs")
    for run_id in run_ids:
        conn.execute("INSERT INTO runs (run_id) VALUES (?)", (run_id,))
        _apply(conn, run_id, project(read(run_id)))
