"""Tests for `machine.journaled`: every journaled call meets the journal through the port.

The primitive tells its `Journaling` of each call in the same order for every operation (placed,
then what the journal holds, then unrecorded when it will run): these tests record what a live
run tells it, on a first pass and on a resume, so a change to the walk shows here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from test_model import MODEL, Scripted, Urgency
from test_runner import interrupt_at, only_run

from runjournal.journal import Event, Journal
from runjournal.machine import Context, Machine, Options, Transition, runner
from runjournal.machine import execution as execution_module
from runjournal.machine.journaled import Live
from runjournal.machine.ports import Step


@attrs.frozen
class Ticket:
    text: str
    score: int = 0


def triage(fetched: list[str]) -> Machine[Ticket]:
    m = Machine("triage-one", state=Ticket, start="score")

    @m.step
    def score(ctx: Context, s: Ticket) -> Transition:
        def fetch() -> str:
            fetched.append(s.text)
            return s.text.upper()

        text = ctx.effect("fetch", fetch)
        ctx.decide(item=s.text, outcome="ask", reason="not scored yet")
        u = ctx.ask(Urgency, system="Score urgency.", prompt=text, model=MODEL)
        return ctx.finish(attrs.evolve(s, score=u.score))

    return m


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What the live journaling is told, call by call, in order."""
    log: list[tuple[Any, ...]] = []

    class Recording(Live):
        def placed(self, step: Step, call: str) -> None:
            log.append(("placed", call))
            super().placed(step, call)

        def unrecorded(self, step: Step, call: str, what: str, events: list[Event]) -> None:
            log.append(("unrecorded", call, what))
            super().unrecorded(step, call, what, events)

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
            log.append(("decided", call, outcome, len(events)))
            super().decided(step, call, events, item, outcome, reason, inputs)

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
            log.append(("asked", call, round_, sorted(journaled)))
            super().asked(step, call, name, round_, request, request_hash, journaled)

    monkeypatch.setattr(execution_module, "Live", Recording)
    return log


def test_each_call_is_placed_then_run_once_and_answered_from_the_journal_after(
    journal: Journal, told: list[tuple[Any, ...]]
) -> None:
    """First pass: every call is placed, found unrecorded and run. Interrupted once the answer is
    journaled, the resume places the same calls and is told what the journal holds: nothing is
    unrecorded, so the effect is not run again and the model is not asked again."""
    fetched: list[str] = []
    fake = Scripted()
    options = Options(models=fake.models(), checkpoint=interrupt_at("model.answered", 1))
    prepared = runner.prepare(triage(fetched), {"text": "site down"})
    with pytest.raises(KeyboardInterrupt):
        runner.start(journal, prepared, target="test:m", code_hash="h", options=options)

    ask = "ask Urgency"
    assert told == [
        ("placed", "#0"),
        ("unrecorded", "#0", "effect fetch"),
        ("placed", "#1"),
        ("decided", "#1", "ask", 0),
        ("unrecorded", "#1", "decision ask"),
        ("placed", "#2"),
        ("asked", "#2", 0, []),
        ("unrecorded", "#2", ask),
    ]
    assert fetched == ["site down"]
    assert len(fake.bodies) == 1

    told.clear()
    outcome = runner.resume(
        journal,
        only_run(journal),
        triage(fetched),
        target="test:m",
        code_hash="h",
        options=Options(models=fake.models()),
    )
    assert outcome.run.status == "done"
    assert told == [
        ("placed", "#0"),
        ("placed", "#1"),
        ("decided", "#1", "ask", 1),
        ("placed", "#2"),
        ("asked", "#2", 0, ["model.answered", "model.requested"]),
    ]
    assert fetched == ["site down"]
    assert len(fake.bodies) == 1
