"""The context a step handler gets: journaled effects, decisions, and the transitions to return.

Every call a handler makes through the context has a place: its key, or its index among the
step's calls. When a step is re-entered after a crash, a call whose outcome the journal holds
at that place returns it without running anything again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import cattrs

from journal import Event, RunWriter
from journal import events as k
from journal.events import dumps
from machine import convert
from machine.definition import Fail, Finish, Goto
from machine.errors import ReplayMismatch

T = TypeVar("T")
S = TypeVar("S")

Checkpoint = Callable[[str], None]
"""Called with the name of each point a run passes: `effect.before` (the effect is about to
run), `effect.after` (it ran, its outcome is not journaled yet), `effect.done` (journaled).

Tests pass one that stops or kills the process at a chosen point; by default it does nothing.
"""


_SCALARS = frozenset({str, int, bool, type(None)})


def no_checkpoint(name: str) -> None:
    return None


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
        recorded: dict[str, Event],
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.visit = visit
        """How many transitions the run made before this step began."""
        self.writer = writer
        self.converter = converter
        self.checkpoint = checkpoint
        self.mismatch: ReplayMismatch | None = None
        self._recorded = recorded
        self._calls = 0

    def place(self, kind: str, name: str | None, key: str | None) -> tuple[str, Event | None]:
        """The place of the next call, and the event the journal holds there, if any."""
        index = self._calls
        self._calls += 1
        call = key if key is not None else f"#{index}"
        event = self._recorded.get(call)
        if event is not None and (event.kind != kind or event.data.get("name") != name):
            had = f"{event.kind} {event.data.get('name') or ''}".strip()
            now = f"{kind} {name or ''}".strip()
            msg = (
                f"run {self.run_id}, step {self.step!r} (visit {self.visit}), call {call}: "
                f"the journal has {had!r} there but the code now makes {now!r}. The code "
                "changed in a way this run cannot follow: revert it, or start a new run"
            )
            # Kept as well as raised: a handler that catches every exception must not hide it.
            self.mismatch = ReplayMismatch(msg)
            raise self.mismatch
        return call, event

    def effect(self, name: str, fn: Callable[[], Any], *, key: str | None = None) -> Any:
        """Run `fn` once and journal its result; after a crash, return the journaled result.

        The result must be JSON (or attrs values, which are unstructured); what is returned is
        the journaled JSON form, the same on the first run and on a resume.
        """
        call, event = self.place(k.EFFECT_DONE, name, key)
        if event is not None:
            return event.data["result"]
        self.checkpoint("effect.before")
        result = fn()
        if type(result) in _SCALARS:
            value = result  # the same after a trip through JSON: skip the trip
        else:
            value = json.loads(dumps(convert.to_json(self.converter, result)))
        self.checkpoint("effect.after")
        self.writer.commit(k.EFFECT_DONE, self.step, {"name": name, "call": call, "result": value})
        self.checkpoint("effect.done")
        return value

    def decide(self, *, item: Any, outcome: str, reason: str | None = None, **inputs: Any) -> None:
        """Record a decision about `item`: its `outcome`, the `reason`, and the inputs to it."""
        call, event = self.place(k.DECISION, None, None)
        if event is not None:
            return
        data = {
            "call": call,
            "item": convert.to_json(self.converter, item),
            "outcome": outcome,
            "reason": reason,
            "inputs": convert.to_json(self.converter, inputs),
        }
        self.writer.record(k.DECISION, self.step, data)

    def goto(self, step: str, state: S) -> Goto[S]:
        """Go on with the step named `step` and the new `state`."""
        return Goto(step, state)

    def finish(self, state: S) -> Finish[S]:
        """End the run as done, with `state` as its final state."""
        return Finish(state)

    def fail(self, reason: str) -> Fail:
        """End the run as failed for `reason`; a resume enters this step again."""
        return Fail(reason)
