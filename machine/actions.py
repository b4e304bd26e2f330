"""Irreversible actions: intent on disk before, outcome after, never done twice.

`ctx.act(name, key, fn, idempotent=...)` journals `action.intended` and syncs it to disk before
`fn(key)` runs, then `action.done` (or `action.failed`, per attempt). The `action_keys` table is
the seen-store: the intent is written only if no run has done that key and no other run is
acting on it, in the same transaction, so a key is acted on once across the whole journal.

An intent without an outcome is in doubt: the process died while the action ran. If the
outside system dedupes by key (`idempotent=True`) it is simply done again with the same key.
If not, only a person can say what happened: the run stops as `needs_attention` until
`journal resolve` records the answer. A failure whose outcome is unknown (a timeout, a dropped
connection, a 5xx) is in doubt in the same way, and is not retried blindly.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

import attrs

from runjournal.journal import (
    Action,
    ActionBusy,
    ActionKeyDone,
    Event,
    Holder,
    RunWriter,
    Store,
    kinds,
)
from runjournal.journal import events as k
from runjournal.machine import convert, journaled, retry
from runjournal.machine.errors import (
    ActionError,
    CallFailed,
    Failure,
    NeedsAttention,
    NothingToResolve,
    Retryable,
)
from runjournal.machine.journaled import Calls


@attrs.frozen
class _Skipped:
    run_id: str
    result: Any


def intent_hash(name: str, key: str, what: Any) -> str:
    """A hash of what an action does: its name, its key, and the description it was given."""
    text = json.dumps([name, key, what], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _outcome(events: list[Event]) -> tuple[str | None, Any]:
    """Where the journal leaves an action: None (never tried), or its state and result."""
    state: str | None = None
    result: Any = None
    for e in events:
        if e.kind == k.ACTION_INTENDED:
            state = "in_doubt"
        elif e.kind == k.ACTION_FAILED:
            state = "in_doubt" if e.data.get("in_doubt") else "failed"
        elif e.kind in (k.ACTION_DONE, k.ACTION_SKIPPED):
            state, result = "done", e.data.get("result")
        elif e.kind == k.ACTION_RESOLVED:
            done = e.data["outcome"] == "done"
            state, result = ("done", e.data.get("result")) if done else ("not_done", None)
    return state, result


def act(
    calls: Calls,
    name: str,
    key: str,
    fn: Callable[[str], Any],
    *,
    idempotent: bool,
    what: Any = None,
    repeat: bool = False,
    type: Any = None,
) -> Any:
    """Do the action once; see `Context.act`. Returns the result as JSON: the context
    structures it into the type wanted."""
    placed = journaled.place(calls, "act", name, None, action_key=key)
    events = placed.events
    intent = intent_hash(name, key, convert.to_json(calls.converter, what))
    state, result = _outcome(events)
    found = journaled.Found(result) if state == "done" else None
    base: dict[str, Any] = {
        "call": placed.call,
        "name": name,
        "key": key,
        "idempotent": idempotent,
        "repeat": repeat,
    }
    run = partial(_run, calls, base, fn, intent, state, events, type)
    return journaled.once(calls, placed, f"act {name} {key!r}", found, run)


def _run(
    calls: Calls,
    base: dict[str, Any],
    fn: Callable[[str], Any],
    intent: str,
    state: str | None,
    events: list[Event],
    type: Any,
) -> Any:
    """Do the action the journal has no outcome for: intent, action, outcome, per attempt."""
    name, key, idempotent, repeat = base["name"], base["key"], base["idempotent"], base["repeat"]
    if state == "in_doubt" and not idempotent:
        _stop(calls, base, "its outcome is unknown (the process stopped while it ran)")
    attempts_before = sum(e.kind == k.ACTION_INTENDED for e in events)
    doubt: list[Failure] = []
    busy: list[str] = []
    writer, step = calls.writer, calls.step

    def attempt(n: int) -> Any:
        if calls.guard is not None:
            calls.guard.check()  # a kill stops the run before an intent, never between
        calls.checkpoint("action.before")
        try:
            writer.commit(
                step,
                kinds.ActionIntended(**base, intent=intent, attempt=attempts_before + n),
                sync=True,
                claim=None if repeat else (name, key),
            )
        except ActionKeyDone as e:
            return _Skipped(e.run_id, e.result)
        except ActionBusy as e:
            busy.append(e.run_id)
            raise Retryable(f"in progress in run {e.run_id}") from e
        calls.checkpoint("action.intended")
        value = fn(key)
        calls.checkpoint("action.ran")
        value = journaled.as_journaled(calls, f"action {name!r}", value, type)
        writer.commit(step, kinds.ActionDone(**base, attempt=attempts_before + n, result=value))
        calls.checkpoint("action.done")
        return value

    def classify(exc: BaseException, *, now: float) -> Failure:
        failure = retry.classify(exc, now=now)
        # Not idempotent and maybe done (a timeout, a dropped connection, a 5xx): doing it
        # again could do it twice, so it is not retried; a person decides.
        unknown = (
            failure.retryable
            and not isinstance(exc, Retryable)
            and (failure.status is None or failure.status >= 500)
        )
        if unknown and not idempotent:
            doubt.append(failure)
            return attrs.evolve(failure, retryable=False)
        return failure

    def failed(n: int, failure: Failure, wait: float | None) -> None:
        writer.commit(
            step,
            kinds.ActionFailed(
                **base,
                attempt=attempts_before + n,
                status=failure.status,
                error_type=failure.error_type,
                message=failure.message,
                retryable=failure.retryable,
                in_doubt=bool(doubt),
                delay_s=wait,
            ),
        )

    assert calls.retrying is not None
    try:
        done = calls.retrying.call(attempt, failed, classify)
    except CallFailed as e:
        if doubt:
            _stop(calls, base, f"its outcome is unknown after {e.failure.message}")
        if busy and e.exhausted:
            _stop(calls, base, f"run {busy[-1]} is acting on the same key; resume once it is done")
        msg = f"run {calls.run_id}, step {step!r}: action {name} {key!r} failed: {e}"
        raise ActionError(msg) from e
    if isinstance(done, _Skipped):
        skipped = kinds.ActionSkipped(**base, done_in_run=done.run_id, result=done.result)
        writer.commit(step, skipped)
        return done.result
    return done


def _stop(calls: Calls, base: dict[str, Any], why: str) -> NoReturn:
    name, key, call = base["name"], base["key"], base["call"]
    run, quoted = calls.run_id, shlex.quote(key)
    message = (
        f"action {name} {key!r} needs attention: {why}. Check whether it happened, then say so: "
        f"`journal resolve {run} {quoted} --done --result JSON` (JSON is what the action "
        f"returned; the step gets it from ctx.act) or `journal resolve {run} {quoted} "
        f"--not-done` (the resume does it); then `journal resume {run}`"
    )
    stop = NeedsAttention(message, name=name, key=key, call=call)
    # Kept on the step's calls too: a handler that catches every exception must not hide it.
    calls.stopped = stop
    raise stop


IN_DOUBT = ("intended", "in_doubt")
"""Statuses of an action whose outcome is unknown, once no process is executing its run."""


def resolve(
    journal: Store,
    run_id: str,
    key: str,
    *,
    done: bool,
    result: Any = None,
    name: str | None = None,
    by: str,
    reason: str | None = None,
    lease_ttl: float = 30.0,
) -> Action:
    """Record a person's answer for an action in doubt: it happened (`done`) or it did not.

    Takes the run's lease for the write, so it is refused while a process executes the run.
    A resume then goes on: a done action is skipped with `result`, a not-done one is run. Until
    the step that reads it ends, the answer can be given again: the latest wins, and each is an
    event (a resume that failed on a missing --result is put right this way).
    """
    holder = Holder.this_process()
    journal.acquire_lease(run_id, holder, lease_ttl)
    try:
        # An answer is used once the step that read it has ended: then the run has gone on
        # from it, and it is too late to change it. Until then (a resume that failed in that
        # step included), the latest answer is the one read.
        moved_on = journal.run(run_id).transition_seq
        candidates = [
            a
            for a in journal.actions(run_id, key=key)
            if name in (None, a.name)
            and (a.status in IN_DOUBT or (a.resolved_by is not None and a.seq > moved_on))
        ]
        if not candidates:
            msg = (
                f"run {run_id} has no action in doubt with key {key!r}, nor an answer its run "
                "has not gone on from (see `journal actions --in-doubt`)"
            )
            raise NothingToResolve(msg)
        if len(candidates) > 1:
            names = ", ".join(a.name for a in candidates)
            msg = (
                f"run {run_id} has several actions in doubt with key {key!r} ({names}): "
                "add --action NAME"
            )
            raise NothingToResolve(msg)
        (action,) = candidates
        run = journal.run(run_id)
        writer = RunWriter(journal, run_id, last_seq=run.last_seq, owner=holder.owner)
        data = kinds.ActionResolved(
            call=action.call,
            name=action.name,
            key=key,
            outcome="done" if done else "not_done",
            result=result if done else None,
            by=by,
            reason=reason,
        )
        writer.commit(action.step, data, sync=True)
        return action
    finally:
        journal.release_lease(run_id, holder.owner)
