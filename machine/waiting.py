"""A person in the loop: a step that waits for an answer (`ctx.wait_for`), and the answer
(`answer`, which `journal answer` and the Python API give).

A wait is journaled like any call: `wait.started` holds the question, the JSON Schema an answer
must fit, who is asked and the deadline. With no answer yet, the step stops and the run ends its
process as `waiting` (`run.waiting`): nothing holds it while a person thinks, for minutes or a
day. An answer is checked against the schema the wait recorded (so any process, on any host,
with or without the pipeline's code, can give one; a wrong one is refused with the reason and
nothing is recorded) and appended as `wait.answered`, naming who and why; the run is then
`resolved`, and a resume (or `journal resume --all`, or a worker) re-enters the step, where the
wait returns the answer. A deadline that passes unanswered is taken up by the next resume:
`wait.expired` records the declared default, which the wait returns.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

from runjournal.journal import Event, Holder, RunWriter, Store, kinds
from runjournal.journal import events as k
from runjournal.journal.events import timestamp
from runjournal.machine import convert
from runjournal.machine.errors import AnswerRefused, Interrupted, NothingToAnswer, Waiting
from runjournal.machine.journaled import Calls, Found, once, place, typed
from runjournal.machine.model.jsonschema import input_schema
from runjournal.machine.signals import StopRequest

T = TypeVar("T")

NO_DEFAULT: Any = attrs.NOTHING
"""A wait with a deadline must say what it takes when the deadline passes."""

Deadline = float | datetime.timedelta | datetime.datetime | None
"""Seconds or a timedelta from when the wait starts, or a moment (timezone-aware)."""


def wait_for(
    calls: Calls,
    clock: Callable[[], float],
    name: str,
    type_: type[T],
    *,
    prompt: str,
    of: str | None,
    deadline: Deadline,
    default: Any,
) -> T:
    """The answer to the wait `name` at its place in the step; see `Context.wait_for`."""
    if deadline is not None and default is NO_DEFAULT:
        msg = f"step {calls.step!r}: wait_for({name!r}) has a deadline, so it needs a default="
        raise TypeError(msg)
    placed = place(calls, "wait", name, None)
    held = {e.kind: e for e in placed.events}
    started = held.get(k.WAIT_STARTED)
    what = f"the answer to {name!r}"
    for kind in (k.WAIT_ANSWERED, k.WAIT_EXPIRED):
        if kind in held:
            found: Found[T] = Found(typed(calls, what, held[kind].data["value"], type_))
            return once(calls, placed, f"wait {name}", found, _no)
    if started is not None:
        due = started.data.get("deadline")
        if due is not None and timestamp(clock()) >= due:
            value = started.data["default"]
            expired = kinds.WaitExpired(call=placed.call, name=name, deadline=due, value=value)
            calls.writer.commit(calls.step, expired, sync=True)
            return cast(T, typed(calls, what, value, type_))
        return cast(T, once(calls, placed, f"wait {name}", None, lambda: _stop(calls, started)))

    def start() -> T:
        calls.checkpoint("wait.before")
        schema = input_schema(type_)
        fallback = None if default is NO_DEFAULT else convert.to_json(calls.converter, default)
        data = kinds.WaitStarted(
            call=placed.call,
            name=name,
            prompt=prompt,
            schema=schema,
            of=of,
            deadline=_moment(deadline, clock),
            default=fallback,
        )
        event = calls.writer.commit(calls.step, data, sync=True)
        calls.checkpoint("wait.started")
        return cast(T, _stop(calls, event))

    return once(calls, placed, f"wait {name}", None, start)


def _no() -> Any:
    raise AssertionError("a wait found answered is never run")


def _stop(calls: Calls, started: Event) -> Any:
    d = started.data
    until = f" until {d['deadline']}" if d.get("deadline") else ""
    asked = f" of {d['of']}" if d.get("of") else ""
    message = (
        f"waiting for {d['name']!r}{asked}{until}: journal answer {calls.run_id} {d['name']} "
        "--value JSON"
    )
    stop = Waiting(message, name=d["name"], call=str(d["call"]), of=d.get("of"))
    stop.deadline = d.get("deadline")
    calls.stopped = stop
    raise stop


def _moment(deadline: Deadline, clock: Callable[[], float]) -> str | None:
    if deadline is None:
        return None
    if isinstance(deadline, datetime.datetime):
        if deadline.tzinfo is None:
            raise TypeError("a deadline datetime must be timezone-aware (e.g. datetime.UTC)")
        return timestamp(deadline.timestamp())
    seconds = deadline.total_seconds() if isinstance(deadline, datetime.timedelta) else deadline
    return timestamp(clock() + float(seconds))


# The answer


def waits(journal: Store, run_id: str) -> list[Event]:
    """The run's `wait.started` events that are neither answered nor expired, oldest first."""
    found: dict[tuple[str | None, str], Event] = {}
    for e in journal.events(run_id, kinds=(k.WAIT_STARTED, k.WAIT_ANSWERED, k.WAIT_EXPIRED)):
        place = (e.step, str(e.data["call"]))
        if e.kind == k.WAIT_STARTED:
            found[place] = e
        else:
            found.pop(place, None)
    return sorted(found.values(), key=lambda e: e.seq)


def pending(journal: Store, run_id: str, name: str) -> Event:
    """The run's latest `wait.started` of this name that is neither answered nor expired;
    NothingToAnswer."""
    found = [e for e in waits(journal, run_id) if e.data.get("name") == name]
    if not found:
        msg = f"run {run_id} waits for no {name!r} (see `journal runs --status waiting`)"
        raise NothingToAnswer(msg)
    return found[-1]


def refusals(schema: dict[str, Any], value: Any) -> list[str]:
    """What is wrong with `value` as an answer of this JSON Schema, one line each."""
    import jsonschema  # type: ignore[import-untyped]  # here: only an answer needs it

    checker = jsonschema.Draft202012Validator(schema)
    said = []
    for error in sorted(checker.iter_errors(value), key=lambda e: list(e.absolute_path)):
        at = "/".join(str(p) for p in error.absolute_path)
        said.append(f"{at or '(the answer)'}: {error.message}")
    return said


def answer(
    journal: Store,
    run_id: str,
    name: str,
    value: Any,
    *,
    by: str,
    reason: str | None = None,
    lease_ttl: float = 30.0,
) -> Event:
    """Answer the run's wait `name` with `value` (JSON), as `by`, for `reason`.

    Refused, with nothing recorded, if the run waits for no such thing (NothingToAnswer) or the
    value does not fit the schema the wait recorded (AnswerRefused, every problem named). Takes
    the run's lease for the write, so it is refused while a process executes the run.
    """
    holder = Holder.this_process()
    journal.acquire_lease(run_id, holder, lease_ttl)
    try:
        started = pending(journal, run_id, name)
        wrong = refusals(started.data["schema"], value)
        if wrong:
            msg = f"the answer does not fit {name!r}: {'; '.join(wrong)}; nothing was recorded"
            raise AnswerRefused(msg)
        run = journal.run(run_id)
        writer = RunWriter(journal, run_id, last_seq=run.last_seq, owner=holder.owner)
        data = kinds.WaitAnswered(
            call=started.data["call"], name=name, value=value, by=by, reason=reason
        )
        return writer.commit(started.step, data, sync=True)
    finally:
        journal.release_lease(run_id, holder.owner)


def hold(journal: Store, run_id: str, *, stop: StopRequest, poll: float = 1.0) -> str:
    """Keep this process while the run waits (`--wait`): look every `poll` seconds, and return
    why it need wait no longer: "resolved" (answered), "due" (its deadline passed) or the run's
    status (killed, say). Interrupted if a signal asks this process to stop: the run stays
    waiting, as it would have without `--wait`."""
    while True:
        status = journal.run(run_id).status
        if status != "waiting":
            return status
        if due(journal, run_id):
            return "due"
        if stop.asked.wait(poll):
            raise Interrupted(str(stop.signal), at_once=stop.at_once)


def due(journal: Store, run_id: str) -> bool:
    """Whether a waiting run's deadline has passed: a resume takes its default."""
    last = None
    for e in journal.events(run_id, kinds=(k.RUN_WAITING,)):
        last = e
    if last is None or last.data.get("deadline") is None:
        return False
    return bool(timestamp(journal.clock()) >= last.data["deadline"])
