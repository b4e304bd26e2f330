"""The context a step handler gets: journaled effects, decisions, and the transitions to return.

Every call a handler makes through the context has a place: its key, or its index among the
step's calls. When a step is re-entered after a crash, a call whose outcome the journal holds
at that place returns it without running anything again.
"""

from __future__ import annotations

import builtins
import json
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import cattrs

from runjournal.journal import Event, RunWriter, kinds
from runjournal.journal import events as k
from runjournal.journal.events import dumps
from runjournal.machine import actions, convert
from runjournal.machine.errors import DefinitionError, ReplayMismatch
from runjournal.machine.parallel import map_items
from runjournal.machine.ports import Checkpoint, Rerun
from runjournal.machine.transitions import Fail, Finish, Goto

if TYPE_CHECKING:
    from runjournal.machine.errors import NeedsAttention
    from runjournal.machine.limits import Guard
    from runjournal.machine.model import ModelSession
    from runjournal.machine.model.capabilities import Effort
    from runjournal.machine.model.request import ThinkingOption
    from runjournal.machine.retry import Retrying

T = TypeVar("T")
S = TypeVar("S")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

_SCALARS = frozenset({str, int, bool, type(None)})


def _returns(fn: Callable[..., Any]) -> Any:
    """The return type `fn` is annotated with, or None (a lambda, a partial)."""
    if not getattr(fn, "__annotations__", None):
        return None  # a lambda: no need to ask typing, on the path of every effect
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that does not resolve is no annotation
        return None


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
        replaying: Rerun | None = None,
        model: str | None = None,
        max_tokens: int = 1024,
        thinking: ThinkingOption = None,
        effort: Effort | None = None,
        prefix: str = "",
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
        self.model = model
        """The model `ask` uses when it names none: the machine's."""
        self.max_tokens = max_tokens
        """The `max_tokens` of `ask` when it gives none: the machine's."""
        self.thinking: ThinkingOption = thinking
        """The `thinking` of `ask` when it gives none: the machine's."""
        self.effort: Effort | None = effort
        """The `effort` of `ask` when it gives none: the machine's."""
        self.prefix = prefix
        """Put before each call's place: an item's key and a slash, in a parallel step."""
        self._recorded = recorded
        self._calls = 0

    def item(self, key: str) -> Context:
        """A context for one item of a parallel step: the same run, step and journal, its
        calls placed under `key` and counted apart."""
        return Context(
            run_id=self.run_id,
            step=self.step,
            visit=self.visit,
            writer=self.writer,
            converter=self.converter,
            recorded=self._recorded,
            checkpoint=self.checkpoint,
            models=self.models,
            retrying=self.retrying,
            guard=self.guard,
            replaying=self.replaying,
            model=self.model,
            max_tokens=self.max_tokens,
            thinking=self.thinking,
            effort=self.effort,
            prefix=f"{self.prefix}{key}/",
        )

    def map(
        self,
        fn: Callable[[Context, I], R],
        items: Iterable[I],
        *,
        key: Callable[[I], str],
        concurrency: int = 8,
    ) -> list[R]:
        """`fn(item_ctx, item)` for each item, up to `concurrency` at once; the results in the
        items' order.

        `fn` may `ask`, `effect`, `decide` and `act` through its `item_ctx`, whose calls are
        placed under the item's key (`key(item)`: unique, non-empty, no '/'). Each item's
        events are journaled as they complete; after a crash, the items that finished are
        answered from the journal (no request is sent again) and only the others run. Model
        requests are paced: a 429 or 529 halves how many are in flight, and the API's limits
        per minute (`Options(rate_limits=...)`, or its headers) are kept to. A kill stops every
        item within a second. `fn` must be deterministic given what its calls return, as a
        step must.
        """
        return map_items(self, fn, items, key=key, concurrency=concurrency)

    def place(self, operation: str, name: str | None, key: str | None) -> tuple[str, list[Event]]:
        """The place of the next call, and the events the journal holds there (oldest first)."""
        index = self._calls
        self._calls += 1
        call = self.prefix + (key if key is not None else f"#{index}")
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

    def effect(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        key: str | None = None,
        type: type[T] | Any = None,
    ) -> T:
        """Run `fn` once and journal its result; after a crash, return the journaled result.

        What is returned is the journaled result structured into the type `fn` is annotated
        with (or `type=`), the same on the first run and on a resume: an attrs value comes
        back an attrs value, a tuple a tuple. Without either, the result must be plain JSON
        (str, numbers, bools, None, lists and dicts of them). `key` is the call key: the
        call's place in the step, instead of its index among the step's calls.
        """
        call, events = self.place("effect", name, key)
        wanted = type if type is not None else _returns(fn)
        if events:
            return cast(T, self._typed(f"effect {name!r}", events[-1].data["result"], wanted))
        if self.replaying is not None:
            self.replaying.unrecorded(self, call, f"effect {name}", events)
        if self.guard is not None:
            self.guard.check()
        self.checkpoint("effect.before")
        result = fn()
        value = self.journaled(f"effect {name!r}", result, wanted)
        self.checkpoint("effect.after")
        self.writer.commit(self.step, kinds.EffectDone(name=name, call=call, result=value))
        self.checkpoint("effect.done")
        return cast(T, self._typed(f"effect {name!r}", value, wanted))

    def journaled(self, what: str, result: Any, wanted: Any) -> Any:
        """`result` as the journal holds it: JSON; refused when a resume could not give back
        the same type (no type known, and not plain JSON)."""
        if builtins.type(result) in _SCALARS:
            return result  # the same after a trip through JSON: skip the trip
        value = json.loads(dumps(convert.to_json(self.converter, result)))
        if wanted is None and not convert.is_plain(result):
            kind = builtins.type(result).__name__
            msg = (
                f"step {self.step!r}: {what} returned a {kind}, which the journal keeps as JSON: "
                f"annotate the function's return type, or pass type={kind}, so that a resume "
                f"gives back a {kind} too"
            )
            raise DefinitionError(msg)
        return value

    def _typed(self, what: str, value: Any, wanted: Any) -> Any:
        """The journaled `value` as the type wanted (as JSON when none is known)."""
        if wanted is None or wanted is Any:
            return value
        return convert.structure(self.converter, value, wanted, f"the result of {what}")

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
        max_tokens: int | None = None,
        retries: int = 2,
        cache_system: bool = False,
        thinking: ThinkingOption = None,
        effort: Effort | None = None,
        temperature: float | None = None,
        key: str | None = None,
    ) -> T:
        """Ask the model; return its answer as a validated `schema` (an attrs class, or str).

        The answer's shape is asked for the way the model documents best (JSON outputs, a
        strict or forced tool: `machine/model/capabilities.json`), then structured and
        validated; an answer that does not fit is recorded and the model is asked again with
        the errors, at most `retries` more times. An answer cut off at `max_tokens` is asked for
        again with twice the room (up to the model's most); a refusal fails the step. `thinking`
        ("adaptive", "disabled", "between_tools", or a budget of tokens) and `effort` ("low" to
        "max") default to the machine's, else the model's own; a setting the model refuses, like
        `temperature` on any model since API version 2026-10-21, raises RequestRefused before
        anything is sent. Transport errors are retried apart, per the retry policy. Every
        attempt is journaled and priced; after a crash, an answer in the journal is returned
        without a request.
        """
        if self.models is None:
            msg = "this run has no model configured (Options.models)"
            raise RuntimeError(msg)
        return self.models.ask(
            self,
            schema,
            prompt=prompt,
            system=system,
            model=model or self.model,
            max_tokens=max_tokens or self.max_tokens,
            retries=retries,
            cache_system=cache_system,
            thinking=thinking if thinking is not None else self.thinking,
            effort=effort or self.effort,
            temperature=temperature,
            key=key,
        )

    def act(
        self,
        name: str,
        key: str,
        fn: Callable[[str], T],
        *,
        idempotent: bool,
        what: Any = None,
        repeat: bool = False,
        type: type[T] | Any = None,
    ) -> T:
        """Do an irreversible action once, gated by journaled intent and outcome.

        `fn(key)` does it, handing `key` to the outside system as the idempotency key, and
        returns its result: structured, as `effect`'s is, into the type `fn` is annotated with
        (or `type=`), whether it ran now, in an earlier process or in another run.
        `idempotent` says whether that system dedupes by key: it decides what happens to an
        action whose outcome is unknown (retried with the same key, or the run stops for a
        person to `journal resolve`). A key done by any run of the journal is not done again
        (`action.skipped`, naming that run), unless `repeat` is true. `what` describes the
        action for the journal's intent hash. `key` is the action key, not a call key: it names
        the action in the outside world, across runs.
        """
        wanted = type if type is not None else _returns(fn)
        result = actions.act(
            self, name, key, fn, idempotent=idempotent, what=what, repeat=repeat, type=wanted
        )
        return cast(T, self._typed(f"action {name!r}", result, wanted))

    def goto(self, step: str, state: S) -> Goto[S]:
        """Go on with the step named `step` and the new `state`."""
        return Goto(step, state)

    def finish(self, state: S) -> Finish[S]:
        """End the run as done, with `state` as its final state."""
        return Finish(state)

    def fail(self, reason: str) -> Fail:
        """End the run as failed for `reason`; a resume enters this step again."""
        return Fail(reason)
