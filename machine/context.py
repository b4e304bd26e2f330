"""The context a step handler gets: journaled effects, decisions, and the transitions to return.

Every call a handler makes through the context has a place: its key, or its index among the
step's calls. When a step is re-entered after a crash, a call whose outcome the journal holds
at that place returns it without running anything again.
"""

from __future__ import annotations

import builtins
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from runjournal.machine import actions, journaled, waiting
from runjournal.machine.journaled import Calls
from runjournal.machine.parallel import map_items
from runjournal.machine.transitions import Fail, Finish, Goto

if TYPE_CHECKING:
    from runjournal.machine.model import ModelSession
    from runjournal.machine.model.capabilities import Effort
    from runjournal.machine.model.request import ThinkingOption

T = TypeVar("T")
S = TypeVar("S")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


def _returns(fn: Callable[..., Any]) -> Any:
    """The return type `fn` is annotated with, or None (a lambda, a partial)."""
    if not getattr(fn, "__annotations__", None):
        return None  # a lambda: no need to ask typing, on the path of every effect
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that does not resolve is no annotation
        return None


class Context:
    """What a step handler is given, besides the state.

    Each of its calls is one journaled operation (`machine.journaled`), made on the step's
    `Calls`; the context only says what the author asked for.
    """

    def __init__(
        self,
        calls: Calls,
        *,
        models: ModelSession | None = None,
        model: str | None = None,
        max_tokens: int = 1024,
        thinking: ThinkingOption = None,
        effort: Effort | None = None,
    ) -> None:
        self.run_id = calls.run_id
        self.step = calls.step
        self.visit = calls.visit
        """How many transitions the run made before this step began."""
        self.models = models
        self.model = model
        """The model `ask` uses when it names none: the machine's."""
        self.max_tokens = max_tokens
        """The `max_tokens` of `ask` when it gives none: the machine's."""
        self.thinking: ThinkingOption = thinking
        """The `thinking` of `ask` when it gives none: the machine's."""
        self.effort: Effort | None = effort
        """The `effort` of `ask` when it gives none: the machine's."""
        self._calls = calls

    def _item(self, calls: Calls) -> Context:
        """The context of one item of a parallel step, its calls placed under its key."""
        return Context(
            calls,
            models=self.models,
            model=self.model,
            max_tokens=self.max_tokens,
            thinking=self.thinking,
            effort=self.effort,
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

        def each(calls: Calls, item: I) -> R:
            return fn(self._item(calls), item)

        return map_items(self._calls, each, items, key=key, concurrency=concurrency)

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
        wanted = type if type is not None else _returns(fn)
        return cast(T, journaled.effect(self._calls, name, fn, key=key, wanted=wanted))

    def decide(self, *, item: Any, outcome: str, reason: str | None = None, **inputs: Any) -> None:
        """Record a decision about `item`: its `outcome`, the `reason`, and the inputs to it."""
        journaled.decide(self._calls, item=item, outcome=outcome, reason=reason, inputs=inputs)

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
            self._calls,
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

    def ask_batch(
        self,
        schema: type[T],
        prompts: Mapping[str, str],
        *,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        retries: int = 2,
        cache_system: bool = False,
        thinking: ThinkingOption = None,
        effort: Effort | None = None,
        temperature: float | None = None,
        key: str | None = None,
        poll: float = 30.0,
    ) -> dict[str, T]:
        """Ask the model about each of `prompts` (item key -> prompt) in one Message Batch, at
        half the price; return the validated answers by key.

        The requests are those `ask` would send, settings alike. The batch's intent and worst
        case (at batch prices, against the caps and budgets) are journaled before it is
        created, its id after, each item's answer as it is read: a crash anywhere neither
        makes a second batch nor pays for an item twice. While the batch runs, the run stops
        as `waiting` (exit 8, or `--wait` to keep the process) and a resume looks again: after
        `poll` seconds at first, then less often, every 5 minutes at most. Answers that do not
        fit, and items that errored or expired, go in a new batch (the first with the errors,
        at most `retries` more times; the others per the retry policy). A kill cancels the
        batch; its answered items keep their answers. Item keys are non-empty, without '/'.
        """
        if self.models is None:
            msg = "this run has no model configured (Options.models)"
            raise RuntimeError(msg)
        from runjournal.machine.model.batching import BatchAsk, ask_batch

        if model is None and self.model is None:
            msg = f"step {self.step!r}: ctx.ask_batch needs model=, e.g. model='claude-haiku-5-5'"
            raise ValueError(msg)
        ask = BatchAsk(
            schema=schema,
            system=system,
            model=model or self.model or "",
            max_tokens=max_tokens or self.max_tokens,
            retries=retries,
            cache_system=cache_system,
            thinking=thinking if thinking is not None else self.thinking,
            effort=effort or self.effort,
            temperature=temperature,
            poll=poll,
        )
        return ask_batch(self.models, self._calls, ask, prompts, key=key)

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
            self._calls, name, key, fn, idempotent=idempotent, what=what, repeat=repeat, type=wanted
        )
        return cast(T, journaled.typed(self._calls, f"action {name!r}", result, wanted))

    def wait_for(
        self,
        name: str,
        type: builtins.type[T],
        *,
        prompt: str,
        of: str | None = None,
        deadline: waiting.Deadline = None,
        default: Any = waiting.NO_DEFAULT,
    ) -> T:
        """Wait for a person's answer to `prompt`, of the attrs class `type`, and return it.

        The first time, the wait is recorded (the question, the answer's JSON Schema, `of`:
        who is asked, the deadline) and the run stops as `waiting`: its process ends (exit 8),
        holding nothing. `journal answer RUN NAME --value JSON` (or `runjournal.answer`) gives
        the answer from any process, checked against that schema; a resume then re-enters the
        step and this returns it. `deadline` (seconds or a timedelta from now, or an aware
        datetime) with `default`: once it passes unanswered, a resume takes `default` instead
        (`wait.expired`). The calls before the wait in the step are answered from the journal
        on re-entry, as after a crash; `name` is also the call's key, so give each wait of a
        step its own.
        """
        return waiting.wait_for(
            self._calls,
            self._calls.writer.journal.clock,
            name,
            type,
            prompt=prompt,
            of=of,
            deadline=deadline,
            default=default,
        )

    def goto(self, step: str, state: S) -> Goto[S]:
        """Go on with the step named `step` and the new `state`."""
        return Goto(step, state)

    def finish(self, state: S) -> Finish[S]:
        """End the run as done, with `state` as its final state."""
        return Finish(state)

    def fail(self, reason: str) -> Fail:
        """End the run as failed for `reason`; a resume enters this step again."""
        return Fail(reason)
