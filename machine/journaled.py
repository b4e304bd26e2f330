"""One journaled operation: placed in its step, answered from the journal, or run and recorded.

Every call a step handler makes through its context goes the same way: `ctx.effect`,
`ctx.decide`, `ctx.act`, each round of `ctx.ask`, and each of these made by an item of
`ctx.map`.

1. `place`: the call gets its place in the step (its key, or `#index` among the step's calls;
   under the item's key in a map) and the events the journal holds there. A call of another
   kind or name there stops the step: the code changed in a way the run cannot follow.
2. `once`: if the journal holds the call's outcome, that is the answer and nothing runs again
   (a resume after a crash); else the call runs, and records its outcome, with its own
   checkpoints between (a decision is only recorded).

How the calls of a step meet the journal is a port, `ports.Journaling`: `Live` as a run
executes, or the rerun's (`machine.rerun`), which answers every call from the journal, compares
what the code does now with what the run did, and stops where a call would run, send or differ.
The operations never ask which one they are given.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import attrs
import cattrs

from runjournal.journal import Event, RunWriter, kinds
from runjournal.journal import events as k
from runjournal.journal.events import dumps
from runjournal.machine import convert
from runjournal.machine.errors import DefinitionError, ReplayMismatch
from runjournal.machine.ports import Checkpoint, Journaling, Step

if TYPE_CHECKING:
    from runjournal.machine.errors import NeedsAttention
    from runjournal.machine.kill_switch import Guard
    from runjournal.machine.retry import Retrying

T = TypeVar("T")

OPERATIONS: dict[str, str] = {
    k.EFFECT_DONE: "effect",
    k.DECISION: "decision",
    k.MODEL_REQUESTED: "ask",
    k.MODEL_FAILED: "ask",
    k.MODEL_ANSWERED: "ask",
    k.OUTPUT_REJECTED: "ask",
    k.ACTION_INTENDED: "act",
    k.ACTION_DONE: "act",
    k.ACTION_FAILED: "act",
    k.ACTION_SKIPPED: "act",
    k.ACTION_RESOLVED: "act",
    k.WAIT_STARTED: "wait",
    k.WAIT_ANSWERED: "wait",
    k.WAIT_EXPIRED: "wait",
    k.BATCH_INTENDED: "batch",
    k.BATCH_CREATED: "batch",
    k.BATCH_ENDED: "batch",
    k.BATCH_CANCELED: "batch",
}
"""Which operation each kind of event belongs to; a re-entered step finds these again."""

_SCALARS = frozenset({str, int, bool, type(None)})


def no_checkpoint(name: str) -> None:
    return None


@attrs.define(eq=False)
class Calls:
    """The calls of one step (or of one item of its `map`): where each is placed, what the
    journal holds there, and what they are made with. What every operation is given."""

    run_id: str
    step: str
    visit: int
    """How many transitions the run made before this step began."""
    writer: RunWriter
    converter: cattrs.Converter
    recorded: dict[str, list[Event]]
    """The events the journal holds for the step, by place: what a re-entered step finds."""
    journaling: Journaling
    """How the calls meet the journal: `Live`, or a rerun's."""
    checkpoint: Checkpoint = no_checkpoint
    retrying: Retrying | None = None
    guard: Guard | None = None
    """The run's kill switch: effects and actions look at it before they start."""
    prefix: str = ""
    """Put before each call's place: an item's key and a slash, in a parallel step."""
    mismatch: ReplayMismatch | None = None
    """Why the step stopped on a code change; kept as well as raised, so that a handler which
    catches every exception cannot hide it."""
    stopped: NeedsAttention | None = None
    """An action that needs a person; kept as well as raised, for the same reason."""
    placed: int = attrs.field(default=0, init=False)
    """How many calls were placed so far: the next one without a key is `#placed`."""

    def item(self, key: str) -> Calls:
        """The calls of one item of a parallel step: the same run, step and journal, placed
        under `key` and counted apart."""
        return attrs.evolve(self, prefix=f"{self.prefix}{key}/", mismatch=None, stopped=None)


@attrs.frozen
class Placed:
    """A call's place in its step, and the events the journal holds there (oldest first)."""

    call: str
    events: list[Event]


@attrs.frozen
class Found(Generic[T]):
    """A call's outcome, as the journal holds it."""

    value: T


def place(
    calls: Calls,
    operation: str,
    name: str | None,
    key: str | None,
    *,
    action_key: str | None = None,
) -> Placed:
    """The place of the next call, and the events the journal holds there. `key` is the call
    key; `action_key` names an action in the outside world, and is the journal's too."""
    index = calls.placed
    calls.placed += 1
    call = calls.prefix + (key if key is not None else f"#{index}")
    events = calls.recorded.get(call, [])
    calls.journaling.placed(calls, call)
    if events:
        had = (OPERATIONS.get(events[0].kind, events[0].kind), events[0].data.get("name"))
        if had != (operation, name):
            now = f"{operation} {name or ''}"
            calls.journaling.mismatch(calls, call, f"{had[0]} {had[1] or ''}", now)
        if action_key is not None and events[0].data.get("key") != action_key:
            had_key = f"{operation} {name} {events[0].data.get('key')}"
            calls.journaling.mismatch(calls, call, had_key, f"{operation} {name} {action_key}")
    return Placed(call, events)


def once(
    calls: Calls, placed: Placed, what: str, found: Found[T] | None, run: Callable[[], T]
) -> T:
    """The outcome of the call at `placed`: the one `found` in the journal, or else what `run`
    returns (it runs the call and records its outcome), unless the journaling stops it first."""
    if found is not None:
        return found.value
    calls.journaling.unrecorded(calls, placed.call, what, placed.events)
    return run()


def effect(calls: Calls, name: str, fn: Callable[[], Any], *, key: str | None, wanted: Any) -> Any:
    """Run `fn` once and journal its result; see `Context.effect`."""
    placed = place(calls, "effect", name, key)
    what = f"effect {name!r}"
    found = None
    if placed.events:
        found = Found(typed(calls, what, placed.events[-1].data["result"], wanted))
    run = partial(_run_effect, calls, placed, name, fn, wanted)
    return once(calls, placed, f"effect {name}", found, run)


def _run_effect(calls: Calls, placed: Placed, name: str, fn: Callable[[], Any], wanted: Any) -> Any:
    """Run the effect the journal has no outcome for, and record its result.

    Its name in a traceback says the run failed inside an effect's function (`rerun.visit`)."""
    if calls.guard is not None:
        calls.guard.check()
    calls.checkpoint("effect.before")
    result = fn()
    value = as_journaled(calls, f"effect {name!r}", result, wanted)
    calls.checkpoint("effect.after")
    calls.writer.commit(calls.step, kinds.EffectDone(name=name, call=placed.call, result=value))
    calls.checkpoint("effect.done")
    return typed(calls, f"effect {name!r}", value, wanted)


def decide(
    calls: Calls, *, item: Any, outcome: str, reason: str | None, inputs: Mapping[str, Any]
) -> None:
    """Record a decision once; see `Context.decide`."""
    placed = place(calls, "decision", None, None)
    calls.journaling.decided(calls, placed.call, placed.events, item, outcome, reason, inputs)

    def record() -> None:
        data = kinds.Decision(
            call=placed.call,
            item=convert.to_json(calls.converter, item),
            outcome=outcome,
            reason=reason,
            inputs=convert.to_json(calls.converter, inputs),
        )
        calls.writer.record(calls.step, data)

    found = Found(None) if placed.events else None
    once(calls, placed, f"decision {outcome}", found, record)


def ask_round(
    calls: Calls,
    placed: Placed,
    name: str,
    round_: int,
    request: dict[str, Any],
    request_hash: str,
    held: Mapping[str, Event],
    send: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """The response to round `round_` of the ask at `placed`: the one the journal holds for this
    very request (`held`: the round's events, by kind), else what `send` gets from the API,
    which journals every attempt."""
    calls.journaling.asked(calls, placed.call, name, round_, request, request_hash, held)
    answered = held.get(k.MODEL_ANSWERED)
    found = None
    if answered is not None:
        response = {
            "content": answered.data["content"],
            "stop_reason": answered.data["stop_reason"],
            "stop_details": answered.data.get("stop_details"),
        }
        found = Found(response)
    return once(calls, placed, f"ask {name}", found, send)


def as_journaled(calls: Calls, what: str, result: Any, wanted: Any) -> Any:
    """`result` as the journal holds it: JSON; refused when a resume could not give back the
    same type (no type known, and not plain JSON)."""
    if builtins.type(result) in _SCALARS:
        return result  # the same after a trip through JSON: skip the trip
    value = json.loads(dumps(convert.to_json(calls.converter, result)))
    if wanted is None and not convert.is_plain(result):
        kind = builtins.type(result).__name__
        msg = (
            f"step {calls.step!r}: {what} returned a {kind}, which the journal keeps as JSON: "
            f"annotate the function's return type, or pass type={kind}, so that a resume "
            f"gives back a {kind} too"
        )
        raise DefinitionError(msg)
    return value


def typed(calls: Calls, what: str, value: Any, wanted: Any) -> Any:
    """The journaled `value` as the type wanted (as JSON when none is known)."""
    if wanted is None or wanted is Any:
        return value
    return convert.structure(calls.converter, value, wanted, f"the result of {what}")


class Live:
    """The journaling of a run being executed: a call the journal holds an outcome for is
    answered from it, any other runs; a call that differs from the journal's stops the step."""

    parallel = True

    def placed(self, step: Step, call: str) -> None:
        return None

    def mismatch(self, step: Step, call: str, had: str, now: str) -> NoReturn:
        msg = (
            f"run {step.run_id}, step {step.step!r} (visit {step.visit}), call {call}: "
            f"the journal has {had.strip()!r} there but the code now makes {now.strip()!r}. "
            "The code changed in a way this run cannot follow: revert it, or start a new run"
        )
        # Kept as well as raised: a handler that catches every exception must not hide it.
        step.mismatch = ReplayMismatch(msg)
        raise step.mismatch

    def unrecorded(self, step: Step, call: str, what: str, events: list[Event]) -> None:
        return None  # it runs

    def decided(
        self,
        step: Step,
        call: str,
        events: list[Event],
        item: Any,
        outcome: str,
        reason: str | None,
        inputs: Mapping[str, Any],
    ) -> None:
        return None  # a decision the journal holds stands, as recorded

    def asked(
        self,
        step: Step,
        call: str,
        name: str,
        round_: int,
        request: dict[str, Any],
        request_hash: str,
        journaled: Mapping[str, Event],
    ) -> None:
        for kind in (k.MODEL_ANSWERED, k.MODEL_REQUESTED):
            event = journaled.get(kind)
            if event is not None and event.data["request_hash"] != request_hash:
                self.mismatch(
                    step,
                    call,
                    f"ask {name} round {round_} (request {event.data['request_hash']})",
                    f"ask {name} round {round_} (request {request_hash})",
                )
