"""What an operation made in a step needs of that step, and what a rerun must provide.

An action, a model ask and a parallel map are each made in a step, through the `Context` the
step handler was given; a rerun (`replay --rerun`) is told of each call the step makes. These
protocols say exactly what they use of each other, so that `machine.context` (the author's
face), the operations and `machine.rerun` need not import each other to name it: `Context`
is a `Step`, and `rerun.Replay` a `Rerun`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import cattrs

from runjournal.journal import Event, RunWriter

if TYPE_CHECKING:
    from typing import Self

    from runjournal.machine.errors import NeedsAttention, ReplayMismatch
    from runjournal.machine.limits import Guard
    from runjournal.machine.retry import Retrying

Checkpoint = Callable[[str], None]
"""Called with the name of each point a run passes: `effect.before` (the effect is about to
run), `effect.after` (it ran, its outcome is not journaled yet), `effect.done` (journaled);
`model.before` (a request is about to be sent), `model.answered` (its answer is journaled);
`action.before`, `action.intended` (the intent is on disk), `action.ran` (the action ran, its
outcome is not journaled yet), `action.done`.

Tests pass one that stops or kills the process at a chosen point; by default it does nothing.
"""


class Step(Protocol):
    """The step an operation is made in: its run, its journal, its limits and its places."""

    run_id: str
    step: str
    visit: int
    writer: RunWriter
    converter: cattrs.Converter
    checkpoint: Checkpoint
    retrying: Retrying | None
    guard: Guard | None
    replaying: Rerun | None
    mismatch: ReplayMismatch | None
    stopped: NeedsAttention | None

    def item(self, key: str) -> Self:
        """The step as one item of a parallel map sees it: its calls placed under `key`."""
        ...

    def place(self, operation: str, name: str | None, key: str | None) -> tuple[str, list[Event]]:
        """The place of the next call, and the events the journal holds there."""
        ...

    def fail_mismatch(self, call: str, had: str, now: str) -> NoReturn:
        """Stop the step: at `call` the journal holds `had`, the code now makes `now`."""
        ...

    def journaled(self, what: str, result: Any, wanted: Any) -> Any:
        """`result` as the journal holds it (JSON), checked against the type `wanted`."""
        ...


class Rerun(Protocol):
    """A rerun of a run's steps against its journal: told of each call a step makes, it lets
    through what the run did and stops where the code would run, send or differ."""

    def placed(self, ctx: Step, call: str) -> None: ...

    def mismatch(self, ctx: Step, call: str, had: str, now: str) -> NoReturn: ...

    def unrecorded(self, ctx: Step, call: str, what: str, events: list[Event]) -> NoReturn: ...

    def decided(
        self,
        ctx: Step,
        call: str,
        events: list[Event],
        item: Any,
        outcome: str,
        reason: str | None,
        inputs: Mapping[str, Any],
    ) -> None: ...

    def asked(
        self,
        ctx: Step,
        call: str,
        name: str,
        round_: int,
        request: dict[str, Any],
        request_hash: str,
        journaled: Mapping[str, Event],
    ) -> None: ...
