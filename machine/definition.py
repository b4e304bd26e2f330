"""Machines: a name, a state type, named steps and a start step; and the transitions steps return.

A step is a handler function `(ctx, state) -> Transition`. It does its work through the
context (effects, decisions) and returns `ctx.goto(step, state)`, `ctx.finish(state)` or
`ctx.fail(reason)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, get_type_hints

import attrs
import cattrs

from machine import convert
from machine.errors import ConversionError, DefinitionError, InputMismatch
from machine.limits import Limits

if TYPE_CHECKING:
    from machine.context import Context

S = TypeVar("S")


@attrs.frozen
class Goto(Generic[S]):
    """Go on with `step` and `state`."""

    step: str
    state: S


@attrs.frozen
class Finish(Generic[S]):
    """The run is done; `state` is its final state."""

    state: S


@attrs.frozen
class Fail:
    """The run fails for `reason`; the state stays as it was before the step."""

    reason: str


Transition = Goto[Any] | Finish[Any] | Fail
Handler = Callable[["Context", Any], Transition]


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
        limits: Limits | None = None,
        anomaly_threshold: float | None = 2.0,
        snapshot_every: int = 100,
        progress: Callable[[S], tuple[int, int]] | None = None,
    ):
        if not attrs.has(cast(type, state)):
            msg = f"machine {name!r}: the state type must be an attrs class, not {state!r}"
            raise DefinitionError(msg)
        self.name = name
        self.state = state
        self.start = start
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
        self.converter: cattrs.Converter = convert.make()
        self._input: Callable[[Any], S] | None = None
        self._input_type: Any = None

    def __repr__(self) -> str:
        return f"<Machine {self.name!r}: {', '.join(self.steps)}>"

    def step(self, handler: Handler) -> Handler:
        """Register `handler` as the step named after the function."""
        name = handler.__name__
        if name in self.steps:
            msg = f"machine {self.name!r} already has a step {name!r}"
            raise DefinitionError(msg)
        self.steps[name] = handler
        return handler

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
        """Refuse a machine that cannot run: no steps, or an unknown start step."""
        if self.start not in self.steps:
            known = ", ".join(self.steps) or "none"
            msg = f"machine {self.name!r} starts at {self.start!r}, not a step (steps: {known})"
            raise DefinitionError(msg)

    def initial_state(self, raw: Any) -> S:
        """The first state of a run whose input is `raw` (JSON values)."""
        try:
            if self._input is None:
                return convert.structure(self.converter, raw, self.state, "input")
            value = convert.structure(self.converter, raw, self._input_type, "input")
        except ConversionError as e:
            raise InputMismatch(str(e)) from e
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
        return state
