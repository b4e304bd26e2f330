"""The tables derived from events: what each kind of event changes in them.

`runs` (a row per run), `action_keys` (the seen-store: the latest state of each action key
across runs), `actions` (each action of each run) and `spend` (what each machine spent each
day on each model). `project` is pure and is the only definition of them. The store applies it
to each batch it appends, in the same transaction, and `_rebuild` applies it to every event of
the journal, so the tables can always be thrown away and derived again.

Costs are integers of nano-dollars (`nusd`), so that sums are exact. A model request reserves
its worst case (added to the run's `total_*`, billed and possibly billed together); its answer
replaces that with what it cost; a failure with an HTTP
status gives it back (the API bills no errors); a failure without one (a timeout, a dropped
connection, an abandoned request) and a request that never got an outcome keep it: they may
have been billed.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from runjournal.journal import events as k
from runjournal.journal.errors import RunIsDone
from runjournal.journal.events import Event, dumps
from runjournal.journal.kinds import to_step


class Changes(NamedTuple):
    """What a batch of one run's events changes in the derived tables."""

    sets: dict[str, Any]
    """Columns of the run's row to set."""
    adds: dict[str, int]
    """Counters of the run's row to add to."""
    keys: dict[tuple[str, str], dict[str, Any]]
    """The new state of each action key the events touch, for `action_keys` and `actions`."""
    spend: dict[tuple[str, str], dict[str, int]]
    """Counters to add to, by (day, model), for the run's machine in `spend`."""


Projector = Callable[[Event, Changes], None]


def nusd(usd: float | int | None) -> int:
    """Dollars as an integer of nano-dollars (prices have few decimals: this is exact)."""
    return round((usd or 0) * 1_000_000_000)


def _started(e: Event, c: Changes) -> None:
    d = e.data
    c.sets.update(
        machine=d["machine"],
        target=d["target"],
        code_hash=d["code_hash"],
        run_key=d.get("run_key"),
        status="submitted" if d.get("submitted") else "running",
        step=to_step(d),
        started_at=e.at,
        snapshot_seq=e.seq,
        transition_seq=e.seq,
    )
    if "ordinal" in d:  # runs started before there was one are numbered by _rebuild
        c.sets["ordinal"] = d["ordinal"]
    if d.get("forked_from"):
        c.sets.update(forked_from=d["forked_from"]["run_id"], forked_at=d["forked_from"]["seq"])
    _limits(e, c)


def _limits(e: Event, c: Changes) -> None:
    if e.data.get("limits") is not None:
        c.sets["limits"] = dumps(e.data["limits"])
        c.sets["limit_overrides"] = dumps(e.data.get("limit_overrides") or {})


def _resumed(e: Event, c: Changes) -> None:
    c.sets.update(status="running", error=None, ended_at=None)
    if "code_hash" in e.data:
        c.sets["code_hash"] = e.data["code_hash"]
    _limits(e, c)
    _add(c, "resumes", 1)


def _transition(e: Event, c: Changes) -> None:
    c.sets["step"] = to_step(e.data)
    c.sets["transition_seq"] = e.seq
    _add(c, "steps", 1)


def _snapshot(e: Event, c: Changes) -> None:
    c.sets["snapshot_seq"] = e.seq


def _done(e: Event, c: Changes) -> None:
    c.sets.update(status="done", step=None, ended_at=e.at, error=None)


def _failed(e: Event, c: Changes) -> None:
    c.sets.update(status="failed", ended_at=e.at, error=e.data["error"])


def _killed(e: Event, c: Changes) -> None:
    c.sets.update(status="killed", ended_at=e.at, error=e.data["message"])


def _anomaly(e: Event, c: Changes) -> None:
    c.sets["anomaly"] = 1


def _spend(c: Changes, e: Event, **amounts: int) -> None:
    d = e.data
    day = str(d.get("requested_at") or e.at)[:10]
    entry = c.spend.setdefault((day, str(d.get("model") or "")), {})
    for column, amount in amounts.items():
        entry[column] = entry.get(column, 0) + amount


def _requested(e: Event, c: Changes) -> None:
    worst, tokens = nusd(e.data.get("worst_case_usd")), int(e.data.get("worst_case_tokens", 0))
    _add(c, "model_requests", 1)
    _add(c, "total_nusd", worst)
    _add(c, "total_tokens", tokens)
    _spend(c, e, model_requests=1, total_nusd=worst)


def _answered(e: Event, c: Changes) -> None:
    d = e.data
    usage = d["usage"]
    tokens = {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_write_tokens": usage["cache_write_5m_tokens"] + usage["cache_write_1h_tokens"],
        "cache_read_tokens": usage["cache_read_tokens"],
    }
    cost = nusd(d["cost_usd"])
    worst = nusd(d.get("worst_case_usd"))
    used = sum(tokens.values()) - int(d.get("worst_case_tokens", 0))
    _add(c, "model_calls", 1)
    for column, amount in tokens.items():
        _add(c, column, amount)
    _add(c, "cost_nusd", cost)
    _add(c, "total_nusd", cost - worst)
    _add(c, "total_tokens", used)
    _spend(c, e, model_calls=1, cost_nusd=cost, total_nusd=cost - worst, **tokens)


def _model_failed(e: Event, c: Changes) -> None:
    _add(c, "model_failures", 1)
    # The API answered with an error, or a batch's item was not done: nothing billed.
    if e.data.get("status") is not None or e.data.get("batch_id") is not None:
        worst = nusd(e.data.get("worst_case_usd"))
        _add(c, "total_nusd", -worst)
        _add(c, "total_tokens", -int(e.data.get("worst_case_tokens", 0)))
        _spend(c, e, total_nusd=-worst)


def _key(e: Event, c: Changes, status: str, **fields: Any) -> None:
    """The action's new status (see kinds.ACTION_STATUSES), for both action tables."""
    d = e.data
    entry = c.keys.setdefault((d["name"], d["key"]), {"attempts": 0, "result": None})
    entry["attempts"] += fields.pop("attempts", 0)
    if "intended_at" in fields:
        entry.setdefault("intended_at", fields.pop("intended_at"))
    entry.update(
        {
            "run_id": e.run_id,
            "step": e.step,
            "call": d.get("call"),
            "status": status,
            "resolved_by": None,
            # An action meant to repeat is never in the seen-store, nor is one another run did.
            "seen": not d.get("repeat") and status != "skipped",
            "seq": e.seq,
            "updated_at": e.at,
            **fields,
        }
    )


def _intended(e: Event, c: Changes) -> None:
    _key(e, c, "intended", attempts=1, intended_at=e.at, result=None)


def _action_done(e: Event, c: Changes) -> None:
    _key(e, c, "done", result=dumps(e.data["result"]))
    _add(c, "actions", 1)


def _action_failed(e: Event, c: Changes) -> None:
    _key(e, c, "in_doubt" if e.data.get("in_doubt") else "failed", result=None)


def _skipped(e: Event, c: Changes) -> None:
    _key(e, c, "skipped", result=dumps(e.data.get("result")))


def _resolved(e: Event, c: Changes) -> None:
    d = e.data
    if d["outcome"] == "done":
        _key(e, c, "done", result=dumps(d.get("result")), resolved_by=d["by"])
    else:
        _key(e, c, "not_done", result=None, resolved_by=d["by"])
    # A person answered: the run waits for nobody now, only for a resume to read the answer.
    c.sets.update(status="resolved", error=None)


def _needs_attention(e: Event, c: Changes) -> None:
    c.sets.update(status="needs_attention", error=e.data["message"])


def _waiting(e: Event, c: Changes) -> None:
    c.sets.update(status="waiting", error=e.data["message"], wake_at=e.data.get("deadline"))


def _answered_wait(e: Event, c: Changes) -> None:
    # As an action's answer: the run waits for nobody now, only for a resume to read it.
    c.sets.update(status="resolved", error=None)


def _add(c: Changes, column: str, amount: int) -> None:
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
    k.RUN_KILLED: _killed,
    k.COST_ANOMALY: _anomaly,
    k.EFFECT_DONE: _count("effects"),
    k.DECISION: _count("decisions"),
    k.MODEL_REQUESTED: _requested,
    k.MODEL_FAILED: _model_failed,
    k.MODEL_ANSWERED: _answered,
    k.OUTPUT_REJECTED: _count("rejections"),
    k.ACTION_INTENDED: _intended,
    k.ACTION_DONE: _action_done,
    k.ACTION_FAILED: _action_failed,
    k.ACTION_SKIPPED: _skipped,
    k.ACTION_RESOLVED: _resolved,
    k.RUN_NEEDS_ATTENTION: _needs_attention,
    k.RUN_WAITING: _waiting,
    k.WAIT_ANSWERED: _answered_wait,
}


def project(events: Iterable[Event]) -> Changes:
    """What appending `events`, in order, changes in their run's row and the other tables."""
    changes = Changes({}, {}, {}, {})
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

_UPSERT_ACTION = """
INSERT INTO actions (run_id, name, key, step, call, status, attempts, result, resolved_by,
                     intended_at, updated_at, seq)
VALUES (:run_id, :name, :key, :step, :call, :status, :attempts, :result, :resolved_by,
        :intended_at, :updated_at, :seq)
ON CONFLICT (run_id, name, key) DO UPDATE SET
    step = excluded.step, call = excluded.call, status = excluded.status,
    attempts = actions.attempts + excluded.attempts, result = excluded.result,
    resolved_by = excluded.resolved_by,
    intended_at = coalesce(actions.intended_at, excluded.intended_at),
    updated_at = excluded.updated_at, seq = excluded.seq
"""

_SPEND_COLUMNS = (
    "model_requests",
    "model_calls",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "cost_nusd",
    "total_nusd",
)
_UPSERT_SPEND = f"""
INSERT INTO spend (machine, day, model, {", ".join(_SPEND_COLUMNS)})
SELECT machine, :day, :model, {", ".join(f":{c}" for c in _SPEND_COLUMNS)}
FROM runs WHERE run_id = :run_id
ON CONFLICT (machine, day, model) DO UPDATE SET
    {", ".join(f"{c} = spend.{c} + excluded.{c}" for c in _SPEND_COLUMNS)}
"""


def _apply(conn: sqlite3.Connection, run_id: str, changes: Changes) -> None:
    """Write `changes` to the derived tables, inside the caller's transaction."""
    sets, adds = changes.sets, changes.adds
    sql = _update_sql(tuple(sets), tuple(adds))
    if conn.execute(sql, (*sets.values(), *adds.values(), run_id)).rowcount != 1:
        msg = f"run {run_id} is done (or missing from the runs table): nothing more can be added"
        raise RunIsDone(msg)
    for table, row in upserts(run_id, changes):
        conn.execute(UPSERTS[table], row)


UPSERTS = {"action_keys": _UPSERT_KEY, "actions": _UPSERT_ACTION, "spend": _UPSERT_SPEND}
"""Each table `upserts` writes to, and the statement that writes a row of it."""


def upserts(run_id: str, changes: Changes) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows `changes` writes beside the run's own, as (table, row): each backend writes them
    with its own spelling of `UPSERTS`."""
    for (name, key), entry in changes.keys.items():
        row = {"name": name, "key": key, "intended_at": None, **entry}
        if row["seen"]:
            yield "action_keys", row
        yield "actions", row
    for (day, model), amounts in changes.spend.items():
        values = {c: amounts.get(c, 0) for c in _SPEND_COLUMNS}
        yield "spend", {"run_id": run_id, "day": day, "model": model, **values}


def read_events(conn: sqlite3.Connection, run_id: str) -> Iterator[Event]:
    """The run's events, in order, read straight from a connection (for rebuilds)."""
    rows = conn.execute(
        "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = ? ORDER BY seq",
        (run_id,),
    )
    for run, seq, at, kind, step, data in rows:
        yield Event(run, seq, at, kind, step, json.loads(data))


def _rebuild(conn: sqlite3.Connection, read: Callable[[str], Iterable[Event]]) -> None:
    """Derive every derived table again from the events, inside the caller's transaction."""
    # Runs in the order they were created: where two runs touched one action key, the later
    # wins. Runs from before the ordinal was recorded come first, by the time they started.
    started = conn.execute(
        "SELECT run_id, json_extract(data, '$.ordinal') FROM events WHERE seq = 1 "
        "ORDER BY coalesce(json_extract(data, '$.ordinal'), 0), at, run_id"
    ).fetchall()
    for table in ("runs", "action_keys", "actions", "spend"):
        conn.execute(f"DELETE FROM {table}")
    for position, (run_id, ordinal) in enumerate(started, 1):
        conn.execute(
            "INSERT INTO runs (run_id, ordinal) VALUES (?, ?)", (run_id, ordinal or position)
        )
        _apply(conn, run_id, project(read(run_id)))


TABLES = {
    "runs": "run_id",
    "action_keys": "name, key",
    "actions": "run_id, name, key",
    "spend": "machine, day, model",
}
"""The derived tables `journal verify` compares with a rebuild, and the key of each."""
