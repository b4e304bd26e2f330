"""Type-checks the public API as a pipeline author sees it: run by mypy, never executed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from runjournal import (
    Context,
    Machine,
    Options,
    Outcome,
    RetryPolicy,
    Transition,
    journal,
    machine,
)
from runjournal.machine import runner, testing


@attrs.frozen
class State:
    n: int = 0
    seen: tuple[int, ...] = ()


typed: Machine[State] = Machine("typed", state=State, start="go")


@typed.input
def numbers(values: list[int]) -> State:
    return State(seen=tuple(values))


@attrs.frozen
class Verdict:
    """Whether a number is interesting."""

    interesting: bool
    why: str


@typed.step
def go(ctx: Context, s: State) -> Transition:
    if s.n == len(s.seen):
        return ctx.finish(s)
    doubled = ctx.effect("double", lambda: s.seen[s.n] * 2, key=f"n{s.n}")
    verdict: Verdict = ctx.ask(
        Verdict, prompt=f"Is {doubled} interesting?", model="claude-haiku-4-5"
    )
    note: str = ctx.ask(str, prompt="Say hello.", model="claude-haiku-4-5", max_tokens=50)
    if verdict.interesting:
        ctx.act("notify", f"n{s.n}", lambda key: {"sent": key, "note": note}, idempotent=True)
    ctx.decide(item=s.n, outcome="doubled", reason=verdict.why, value=doubled)
    return ctx.goto("go", attrs.evolve(s, n=s.n + 1))


def run(path: Path) -> tuple[str, int]:
    options = Options(
        models=machine.offline("429=0.1,garbage=0.1,seed=3"),
        retry=RetryPolicy(max_attempts=3),
        sleep=lambda seconds: None,
    )
    with journal.Journal.open(path, create=True, durability="full") as j:
        prepared: runner.Prepared = runner.prepare(typed, [1, 2, 3])
        outcome: Outcome[Any] = runner.start(
            j, prepared, target="api:typed", code_hash="0", options=options
        )
        actions: list[journal.Action] = j.actions(outcome.run.run_id)
        at: journal.StateAt = journal.state_at(j, outcome.run.run_id)
        changes: list[journal.Change] = list(journal.replay(j, outcome.run.run_id))
        rows: journal.Rows = journal.query(path, "select count(*) from events")
        return outcome.run.status, at.transitions + len(changes) + len(rows.columns) + len(actions)


def serve_offline() -> str:
    fake = testing.FakeModel(faults=testing.parse_spec("chaos"))
    with testing.serve(fake, port=0) as server:
        return server.url
