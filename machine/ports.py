"""What a step's journaled calls need of the journaling they meet, and what it provides.

A call made in a step (an effect, a decision, an ask, an action) is placed, answered from the
journal or run and recorded by one primitive (`machine.journaled`); how it meets the journal is
the port `Journaling`, implemented by `journaled.Live` (a run executing) and by the rerun
(`machine.rerun`, which runs nothing). These protocols say what each side uses of the other, so
that the primitive never names the rerun: it is given one `Journaling` or the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import cattrs

from runjournal.journal import Event, RunWriter

if TYPE_CHECKING:
    from runjournal.machine.errors import ReplayMismatch

Checkpoint = Callable[[str], None]
"""Called with the name of each point a run passes: `effect.before` (the effect is about to
run), `effect.after` (it ran, its outcome is not journaled yet), `effect.done` (journaled);
`model.before` (a request is about to be sent), `model.answered` (its answer is journaled);
`action.before`, `action.intended` (the intent is on disk), `action.ran` (the action ran, its
outcome is not journaled yet), `action.done`; `wait.before` (a wait is about to be recorded),
`wait.started` (it is, and the run is about to stop as waiting).

Tests pass one that stops or kills the process at a chosen point; by default it does nothing.
"""


class Step(Protocol):
    """The step a call is made in, as the journaling sees it."""

    run_id: str
    step: str
    visit: int
    writer: RunWriter
    converter: cattrs.Converter
    mismatch: ReplayMismatch | None


class Journaling(Protocol):
    """How the calls of a step meet the journal. Told of each call as it is placed and of what
    the journal holds for it, it lets it be answered from the journal, lets it run, or stops the
    step (raising) where the code does otherwise than the journal says."""

    parallel: bool
    """Whether the items of a `ctx.map` may run at once (a rerun compares calls one at a time)."""

    def placed(self, step: Step, call: str) -> None:
        """A call is made at `call`."""
        ...

    def mismatch(self, step: Step, call: str, had: str, now: str) -> NoReturn:
        """Stop the step: at `call` the journal holds `had`, the code now makes `now`."""
        ...

    def unrecorded(self, step: Step, call: str, what: str, events: list[Event]) -> None:
        """The journal holds no outcome for `what` at `call`: return to run it, or stop."""
        ...

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
        """The code decides `outcome` about `item` at `call`, where the journal holds `events`."""
        ...

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
        """Round `round_` of the ask at `call` sends `request`, where the journal holds
        `journaled` (its events of that round, by kind): return to go on (with the journaled
        answer if there is one), or stop."""
        ...
