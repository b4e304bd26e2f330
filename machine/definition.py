"""Machines: a name, a state type, named steps and a start step; and the transitions steps return.

A step is a handler function `(ctx, state) -> Transition`. It does its work through the
context (effects, decisions) and returns `ctx.goto(step, state)`, `ctx.finish(state)` or
`ctx.fail(reason)`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, get_type_hints, overload

import attrs
import cattrs

from runjournal.machine import convert
from runjournal.machine.errors import (
    ConversionError,
    DefinitionError,
    Ignored,
    InputMismatch,
    UnknownInputField,
)
from runjournal.machine.kill_switch import Limits
from runjournal.machine.transitions import Transition

if TYPE_CHECKING:
    from runjournal.machine.context import Context
    from runjournal.machine.model.capabilities import Effort
    from runjournal.machine.model.request import ThinkingOption

S = TypeVar("S")


Handler = Callable[["Context", Any], Transition]
H = TypeVar("H", bound=Handler)


class Machine(Generic[S]):
    """A pipeline definition.

    >>> triage = Machine("triage", state=Triage, start="score")
    >>> @triage.step
    ... def score(ctx, s): ...
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        start: str,
        input: str | None = None,
        strict_input: bool = False,
        model: str | None = None,
        max_tokens: int = 1024,
        thinking: ThinkingOption = None,
        effort: Effort | None = None,
        limits: Limits | None = None,
        anomaly_threshold: float | None = 2.0,
        snapshot_every: int = 100,
        progress: Callable[[S], tuple[int, int]] | None = None,
    ):
        if not attrs.has(cast(type, state)):
            msg = f"machine {name!r}: the state type must be an attrs class, not {state!r}"
            raise DefinitionError(msg)
        if input is not None and input not in attrs.fields_dict(cast(type, state)):
            msg = f"machine {name!r}: input={input!r} names no field of {state.__name__}"
            raise DefinitionError(msg)
        self.name = name
        self.state = state
        self.start = start
        self.input_field = input
        """The state field a run's input fills (the rest take their defaults): a JSON Lines
        file, read as a list, into `tickets: tuple[Ticket, ...]`, say. None: the input is the
        first state itself, or what `@machine.input` makes it into."""
        self.strict_input = strict_input
        """Refuse input with a field its class does not have (`subjet` for `subject`), at any
        depth; by default such a field is left out, with a warning that names it."""
        self.model = model
        """The model `ctx.ask` uses when it names none."""
        self.max_tokens = max_tokens
        """The `max_tokens` of `ctx.ask` when it gives none."""
        self.thinking: ThinkingOption = thinking
        """The `thinking` of `ctx.ask` when it gives none; None: the model's own default."""
        self.effort: Effort | None = effort
        """The `effort` of `ctx.ask` when it gives none; None: the model's own default."""
        caller = sys._getframe(1).f_globals
        self.module: str | None = caller.get("__name__")
        """The module that made the machine: where `machine.run` finds its code."""
        self.snapshot_every = snapshot_every
        self.limits = limits or Limits()
        """What a run may spend or do before it is stopped (the kill switch)."""
        self.anomaly_threshold = anomaly_threshold
        """A run whose tokens per step pass this many times its machine's usual (the median of
        its last finished runs) records a `cost.anomaly`; None checks nothing."""
        self.progress = progress
        """How far a run has come, from its state: (items done, items in all), e.g.
        `lambda s: (s.next, len(s.tickets))`; the progress line a terminal shows uses it."""
        self.steps: dict[str, Handler] = {}
        self.goes_to: dict[str, tuple[str, ...] | None] = {}
        """The steps each step declared it may go to (None: it did not say)."""
        self.converter: cattrs.Converter = convert.make()
        self._input: Callable[[Any], S] | None = None
        self._input_type: Any = None

    def __repr__(self) -> str:
        return f"<Machine {self.name!r}: {', '.join(self.steps)}>"

    @overload
    def step(self, handler: H, /) -> H: ...

    @overload
    def step(self, handler: None = None, /, *, to: Sequence[str]) -> Callable[[H], H]: ...

    def step(self, handler: Handler | None = None, /, *, to: Sequence[str] | None = None) -> Any:
        """Register `handler` as the step named after the function.

        `@machine.step(to=("record", "score"))` also declares where the step may go: `check`
        verifies each of those is a step and every step can be reached, before any run starts,
        and a `ctx.goto` anywhere else fails the run naming both. Finishing and failing are
        always allowed.
        """

        def register(fn: H) -> H:
            name = fn.__name__
            if name in self.steps:
                msg = f"machine {self.name!r} already has a step {name!r}"
                raise DefinitionError(msg)
            self.steps[name] = fn
            self.goes_to[name] = None if to is None else tuple(to)
            return fn

        if handler is not None:
            return register(handler)
        if isinstance(to, str):
            msg = f"machine {self.name!r}: to= takes the names of steps, e.g. to=({to!r},)"
            raise DefinitionError(msg)
        return register

    def _takes(self, raw: Any) -> str:
        what = convert.json_name(raw)
        lines = " (a JSON Lines file reads as one)" if isinstance(raw, list) else ""
        return (
            f"machine {self.name!r} takes as input an object of {self.state.__name__}, and the "
            f'input is {what}{lines}: say which field it fills, Machine(..., input="field"), '
            f"or how it becomes the first state, with @{self.name}.input"
        )

    def input(self, fn: Callable[[Any], S]) -> Callable[[Any], S]:
        """Register how a run's input becomes the first state.

        The input is first structured into the type annotated on `fn`'s one parameter, so a
        bad input is reported field by field. Without this, the input is structured into the
        state type directly.
        """
        params = list(inspect.signature(fn).parameters)
        if len(params) != 1:
            msg = f"machine {self.name!r}: the input function takes one parameter, the input"
            raise DefinitionError(msg)
        self._input = fn
        self._input_type = get_type_hints(fn).get(params[0], Any)
        return fn

    def check(self) -> None:
        """Refuse a machine that cannot run, before any run starts: an unknown start step, a
        declared transition to a step that does not exist, a step no run can reach."""
        known = ", ".join(self.steps) or "none"
        if self.start not in self.steps:
            msg = f"machine {self.name!r} starts at {self.start!r}, not a step (steps: {known})"
            raise DefinitionError(msg)
        for step, targets in self.goes_to.items():
            for target in targets or ():
                if target not in self.steps:
                    msg = (
                        f"machine {self.name!r}: step {step!r} declares it goes to {target!r}, "
                        f"which is not a step (steps: {known})"
                    )
                    raise DefinitionError(msg)
        reached, todo = {self.start}, [self.start]
        while todo:
            targets = self.goes_to.get(todo.pop())
            for target in self.steps if targets is None else targets:
                if target not in reached:
                    reached.add(target)
                    todo.append(target)
        unreached = [step for step in self.steps if step not in reached]
        if unreached:
            msg = (
                f"machine {self.name!r}: no run can reach step {unreached[0]!r} from "
                f"{self.start!r} by the declared transitions"
            )
            raise DefinitionError(msg)

    def may_go(self, step: str, to: str) -> bool:
        """Whether step `step` declared (or left open) that it may go to `to`."""
        targets = self.goes_to.get(step)
        return targets is None or to in targets

    def mermaid(self) -> str:
        """The machine as a Mermaid flowchart: declared transitions as arrows, and a dotted
        arrow to "any step" from a step that did not say where it goes."""
        # Node ids of their own, so that a step may be called start, done or end.
        lines = ["flowchart TD", "    _start((start))", "    _done((done))"]
        lines += [f'    s_{step}["{step}"]' for step in self.steps]
        if None in self.goes_to.values():
            lines.append("    _any{{any step}}")
        lines.append(f"    _start --> s_{self.start}")
        for step, targets in self.goes_to.items():
            if targets is None:
                lines.append(f"    s_{step} -.-> _any")
            lines += [f"    s_{step} --> s_{target}" for target in targets or ()]
            lines.append(f"    s_{step} -.-> _done")
        return "\n".join(lines)

    def initial_state(self, raw: Any) -> S:
        """The first state of a run whose input is `raw` (JSON values)."""
        return self.structure_input(raw)[0]

    def structure_input(self, raw: Any) -> tuple[S, tuple[Ignored, ...]]:
        """The first state of a run whose input is `raw` (JSON values), and the fields of the
        input no class has, which were left out; with `strict_input`, refused."""
        try:
            if self.input_field is not None:
                wrapped = {self.input_field: raw}
                state = convert.structure(self.converter, wrapped, self.state, "input")
                return state, self._check_ignored(wrapped, state)
            if self._input is None:
                if not isinstance(raw, dict):
                    raise InputMismatch(self._takes(raw))
                state = convert.structure(self.converter, raw, self.state, "input")
                return state, self._check_ignored(raw, state)
            value = convert.structure(self.converter, raw, self._input_type, "input")
        except ConversionError as e:
            raise InputMismatch(str(e)) from e
        # What the input function itself leaves out of the state is its own choice.
        ignored = self._check_ignored(raw, value)
        try:
            state = self._input(value)
        except (TypeError, ValueError) as e:
            msg = f"input does not fit {self.state.__name__}: {e}"
            raise InputMismatch(msg) from e
        if not isinstance(state, self.state):
            msg = (
                f"machine {self.name!r}: the input function returned {type(state).__name__}, "
                f"not {self.state.__name__}"
            )
            raise DefinitionError(msg)
        return state, ignored

    def _check_ignored(self, raw: Any, value: Any) -> tuple[Ignored, ...]:
        ignored = convert.ignored(raw, value)
        if ignored and self.strict_input:
            raise UnknownInputField(self.name, ignored)
        return ignored
