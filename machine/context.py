"""The context a step handler gets: journaled effects, decisions, and the transitions to return.

Every call a handler makes through the context has a place: its key, or its index among the
step's calls. When a step is re-entered after a crash, a call whose outcome the journal holds
at that place returns it without running anything again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import cattrs

from journal import Event, RunWriter, kinds
from journal import events as k
from journal.events import dumps
from machine import convert
from machine.definition import Fail, Finish, Goto
from machine.errors import ReplayMismatch

if TYPE_CHECKING:
    from machine.errors import NeedsAttention
    from machine.limits import Guard
    from machine.model import ModelSession
    from machine.rerun import Replay
    from machine.retry import Retrying

T = TypeVar("T")
S = TypeVar("S")

Checkpoint = Callable[[str], None]
"""Called with the name of each point a run passes: `effect.before` (the effect is about to
run), `effect.after` (it ran, its outcome is not journaled yet), `effect.done` (journaled);
`model.before` (a request is about to be sent), `model.answered` (its answer is journaled);
`action.before`, `action.intended` (the intent is on disk), `action.ran` (the action ran, its
outcome is not journaled yet), `action.done`.

Tests pass one that stops or kills the process at a chosen point; by default it does nothing.
"""


_SCALARS = frozenset({str, int, bool, type(None)})


def no_checkpoint(name: str) -> None:
    return None


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
}
"""Which context call each kind of event belongs to; a re-entered step finds these again."""


class Context:
    """What a step handler is given, besides the state."""

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        visit: int,
        writer: RunWriter,
        converter: cattrs.Converter,
        recorded: dict[str, list[Event]],
        checkpoint: Checkpoint = no_checkpoint,
        models: ModelSession | None = None,
        retrying: Retrying | None = None,
        guard: Guard | None = None,
        replaying: Replay | None = None,
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.visit = visit
        """How many transitions the run made before this step began."""
        self.writer = writer
        self.converter = converter
        self.checkpoint = checkpoint
        self.models = models
        self.retrying = retrying
        self.guard = guard
        """The run's kill switch: effects and actions look at it before they start."""
        self.mismatch: ReplayMismatch | None = None
        self.stopped: NeedsAttention | None = None
        self.replaying = replaying
        """Set by a rerun (`machine.rerun`): it is told each call, compares it with the run's,
        and stops the step where a call would run, send or differ; nothing is done for real."""
        self._recorded = recorded
        self._calls = 0

    def place(self, operation: str, name: str | None, key: str | None) -> tuple[str, list[Event]]:
        """The place of the next call, and the events the journal holds there (oldest first)."""
        index = self._calls
        self._calls += 1
        call = key if key is not None else f"#{index}"
        events = self._recorded.get(call, [])
        if self.replaying is not None:
            self.replaying.placed(self, call)
        if events:
            had = (OPERATIONS.get(events[0].kind, events[0].kind), events[0].data.get("name"))
            if had != (operation, name):
                self.fail_mismatch(call, f"{had[0]} {had[1] or ''}", f"{operation} {name or ''}")
        return call, events

    def fail_mismatch(self, call: str, had: str, now: str) -> NoReturn:
        """Stop the step: at `call` the journal holds `had`, but the code now does `now`."""
        if self.replaying is not None:
            self.replaying.mismatch(self, call, had, now)
        msg = (
            f"run {self.run_id}, step {self.step!r} (visit {self.visit}), call {call}: "
            f"the journal has {had.strip()!r} there but the code now makes {now.strip()!r}. "
            "The code changed in a way this run cannot follow: revert it, or start a new run"
        )
        # Kept as well as raised: a handler that catches every exception must not hide it.
        self.mismatch = ReplayMismatch(msg)
        raise self.mismatch

    def effect(self, name: str, fn: Callable[[], Any], *, key: str | None = None) -> Any:
        """Run `fn` once and journal its result; after a crash, return the journaled result.

        The result must be JSON (or attrs values, which are unstructured); what is returned is
        the journaled JSON form, the same on the first run and on a resume.
        """
        call, events = self.place("effect", name, key)
        if events:
            return events[-1].data["result"]
        if self.replaying is not None:
            self.replaying.unrecorded(self, call, f"effect {name}", events)
        if self.guard is not None:
            self.guard.check()
        self.checkpoint("effect.before")
        result = fn()
        if type(result) in _SCALARS:
            value = result  # the same after a trip through JSON: skip the trip
        else:
            value = json.loads(dumps(convert.to_json(self.converter, result)))
        self.checkpoint("effect.after")
        self.writer.commit(self.step, kinds.EffectDone(name=name, call=call, result=value))
        self.checkpoint("effect.done")
        return value

    def decide(self, *, item: Any, outcome: str, reason: str | None = None, **inputs: Any) -> None:
        """Record a decision about `item`: its `outcome`, the `reason`, and the inputs to it."""
        call, events = self.place("decision", None, None)
        if self.replaying is not None:
            self.replaying.decided(self, call, events, item, outcome, reason, inputs)
        if events:
            return
        data = kinds.Decision(
            call=call,
            item=convert.to_json(self.converter, item),
            outcome=outcome,
            reason=reason,
            inputs=convert.to_json(self.converter, inputs),
        )
        self.writer.record(self.step, data)

    def ask(
        self,
        schema: type[T],
        *,
        prompt: str,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int = 1024,
        retries: int = 2,
        cache_system: bool = False,
        temperature: float | None = None,
        key: str | None = None,
    ) -> T:
        """Ask the model; return its answer as a validated `schema` (an attrs class, or str).

        The answer is forced through a tool whose JSON schema is derived from `schema`, then
        structured and validated; an answer that does not fit is recorded and the model is asked
        again with the errors, at most `retries` more times. Transport errors are retried apart,
        per the retry policy. Every attempt is journaled and priced; after a crash, an answer in
        the journal is returned without a request.
        """
        if self.models is None:
            msg = "this run has no model configured (Options.models)"
            raise RuntimeError(msg)
        return self.models.ask(
            self,
            schema,
            prompt=prompt,
            system=system,
            model=model,
            max_tokens=max_tokens,
            retries=retries,
            cache_system=cache_system,
            temperature=temperature,
            key=key,
        )

    def act(
        self,
        name: str,
        key: str,
        fn: Callable[[str], Any],
        *,
        idempotent: bool,
        what: Any = None,
        repeat: bool = False,
    ) -> Any:
        """Do an irreversible action once, gated by journaled intent and outcome.

        `fn(key)` does it, handing `key` to the outside system as the idempotency key, and
        returns a JSON result. `idempotent` says whether that system dedupes by key: it decides
        what happens to an action whose outcome is unknown (retried with the same key, or the
        run stops for a person to `journal resolve`). A key done by any run of the journal is not
        done again (`action.skipped`, naming that run), unless `repeat` is true. `what`
        describes the action for the journal's intent hash.
        """
        from machine.actions import act

        return act(self, name, key, fn, idempotent=idempotent, what=what, repeat=repeat)

    def goto(self, step: str, state: S) -> Goto[S]:
        """Go on with the step named `step` and the new `state`."""
        return Goto(step, state)

    def finish(self, state: S) -> Finish[S]:
        """End the run as done, with `state` as its final state."""
        return Finish(state)

    def fail(self, reason: str) -> Fail:
        """End the run as failed for `reason`; a resume enters this step again."""
        return Fail(reason)
