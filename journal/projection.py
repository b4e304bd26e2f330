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
from journal.errors import RunDone
from journal.events import Event, dumps


class Changes(NamedTuple):
    """Column values to set and counters to add to, for one run's row; and action keys."""

    sets: dict[str, Any]
    adds: dict[str, int | float]
    keys: dict[tuple[str, str], dict[str, Any]]
    """The new state of each action key the events touch, for the `action_keys` table."""


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
    if "ordinal" in d:  # runs started before there was one are numbered by _rebuild
        c.sets["ordinal"] = d["ordinal"]


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


def _answered(e: Event, c: Changes) -> None:
    usage = e.data["usage"]
    _add(c, "model_calls", 1)
    _add(c, "input_tokens", usage["input_tokens"])
    _add(c, "output_tokens", usage["output_tokens"])
    _add(c, "cache_write_tokens", usage["cache_write_5m_tokens"] + usage["cache_write_1h_tokens"])
    _add(c, "cache_read_tokens", usage["cache_read_tokens"])
    _add(c, "cost_usd", e.data["cost_usd"])


def _key(e: Event, c: Changes, status: str, **fields: Any) -> None:
    d = e.data
    if d.get("repeat"):
        return  # an action meant to repeat is never in the seen-store
    entry = c.keys.setdefault((d["name"], d["key"]), {"attempts": 0, "result": None})
    attempts = fields.pop("attempts", 0)
    entry["attempts"] += attempts
    entry.update(
        run_id=e.run_id,
        step=e.step,
        call=d.get("call"),
        status=status,
        seq=e.seq,
        updated_at=e.at,
        **fields,
    )


def _intended(e: Event, c: Changes) -> None:
    _key(e, c, "intended", attempts=1)


def _action_done(e: Event, c: Changes) -> None:
    _key(e, c, "done", result=dumps(e.data["result"]))
    _add(c, "actions", 1)


def _action_failed(e: Event, c: Changes) -> None:
    _key(e, c, "in_doubt" if e.data.get("in_doubt") else "failed")


def _resolved(e: Event, c: Changes) -> None:
    if e.data["outcome"] == "done":
        _key(e, c, "done", result=dumps(e.data.get("result")))
    else:
        _key(e, c, "not_done")
    # A person answered: the run waits for nobody now, only for a resume to read the answer.
    c.sets.update(status="resolved", error=None)


def _needs_attention(e: Event, c: Changes) -> None:
    c.sets.update(status="needs_attention", error=e.data["message"])


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
    k.MODEL_ANSWERED: _answered,
    k.MODEL_FAILED: _count("model_failures"),
    k.OUTPUT_REJECTED: _count("rejections"),
    k.ACTION_INTENDED: _intended,
    k.ACTION_DONE: _action_done,
    k.ACTION_FAILED: _action_failed,
    k.ACTION_RESOLVED: _resolved,
    k.RUN_NEEDS_ATTENTION: _needs_attention,
}


def project(events: Iterable[Event]) -> Changes:
    """What appending `events`, in order, changes in their run's row."""
    changes = Changes({}, {}, {})
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
    # `done` is final: a row that says so is never changed again (and the caller is told).
    return f"UPDATE runs SET {', '.join(assignments)} WHERE run_id = ? AND status != 'done'"


_UPSERT_KEY = """
INSERT INTO action_keys (name, key, run_id, step, call, status, attempts, result, seq, updated_at)
VALUES (:name, :key, :run_id, :step, :call, :status, :attempts, :result, :seq, :updated_at)
ON CONFLICT (name, key) DO UPDATE SET
    run_id = excluded.run_id, step = excluded.step, call = excluded.call,
    status = excluded.status, attempts = action_keys.attempts + excluded.attempts,
    result = coalesce(excluded.result, action_keys.result),
    seq = excluded.seq, updated_at = excluded.updated_at
-- A key done by one run stays that run's, and a key another run is acting on (intended, or
-- in doubt) stays that run's until it lets go (failed, not done): what a run records about a
-- key it does not hold (a refused claim's failed attempt) never takes it over.
WHERE action_keys.run_id = excluded.run_id
   OR action_keys.status NOT IN ('done', 'intended', 'in_doubt')
"""


def _apply(conn: sqlite3.Connection, run_id: str, changes: Changes) -> None:
    """Write `changes` to the run's row and the action keys, inside the caller's transaction."""
    sets, adds, keys = changes
    sql = _update_sql(tuple(sets), tuple(adds))
    if conn.execute(sql, (*sets.values(), *adds.values(), run_id)).rowcount != 1:
        msg = f"run {run_id} is done (or missing from the runs table): nothing more can be added"
        raise RunDone(msg)
    for (name, key), entry in keys.items():
        conn.execute(_UPSERT_KEY, {"name": name, "key": key, **entry})


def _rebuild(conn: sqlite3.Connection, read: Callable[[str], Iterable[Event]]) -> None:
    """Derive the whole runs table again from the events, inside the caller's transaction."""
    # Runs in the order they were created: where two runs touched one action key, the later
    # wins. Runs from before the ordinal was recorded come first, by the time they started.
    started = conn.execute(
        "SELECT run_id, json_extract(data, '$.ordinal') FROM events WHERE seq = 1 "
        "ORDER BY coalesce(json_extract(data, '$.ordinal'), 0), at, run_id"
    ).fetchall()
    conn.execute("DELETE FROM runs")
    conn.execute("DELETE FROM action_keys")
    for position, (run_id, ordinal) in enumerate(started, 1):
        conn.execute(
            "INSERT INTO runs (run_id, ordinal) VALUES (?, ?)", (run_id, ordinal or position)
        )
        _apply(conn, run_id, project(read(run_id)))
