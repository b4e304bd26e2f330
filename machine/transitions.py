"""What a step returns: where the run goes next (`Goto`), that it is done (`Finish`), or that it
failed (`Fail`); `Context.goto`, `finish` and `fail` make them."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs

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
