"""Tests for `machine.runner` and the step context, in one process.

Crash safety itself is shown by killing real processes (test_crash.py); these tests pin down
what a resume must do, using an interruption (KeyboardInterrupt) raised at a named point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import machine
from journal import Journal, replay, state_at
from journal import events as k
from machine import (
    Context,
    InputMismatch,
    Machine,
    Options,
    Outcome,
    StateNotJSON,
    Transition,
)


@attrs.frozen
class Count:
    n: int = 0
    limit: int = 10
    seen: tuple[int, ...] = ()


def counter(calls: list[int], *, effect: str = "tick", snapshot_every: int = 100) -> Machine[Count]:
    m = Machine("counter", state=Count, start="tick", snapshot_every=snapshot_every)

    @m.step
    def tick(ctx: Context, s: Count) -> Transition:
        if s.n >= s.limit:
            return ctx.finish(s)

        def work() -> int:
            calls.append(s.n)
            return s.n * 10

        value = ctx.effect(effect, work)
        if s.n % 3 == 0:
            ctx.decide(item=s.n, outcome="three", reason="a multiple of 3", n=s.n)
        return ctx.goto("tick", attrs.evolve(s, n=s.n + 1, seen=(*s.seen, value)))

    return m


def interrupt_at(point: str, nth: int) -> Callable[[str], None]:
    seen = 0

    def checkpoint(name: str) -> None:
        nonlocal seen
        if name == point:
            seen += 1
            if seen == nth:
                raise KeyboardInterrupt

    return checkpoint


def start(
    journal: Journal,
    m: Machine[Any],
    input: Any,
    *,
    code_hash: str = "h1",
    run_key: str | None = None,
    options: Options | None = None,
) -> Outcome:
    prepared = machine.prepare(m, input)
    return machine.start(
        journal, prepared, target="test:m", code_hash=code_hash, run_key=run_key, options=options
    )


def resume(journal: Journal, run_id: str, m: Machine[Any], code_hash: str = "h1") -> Outcome:
    return machine.resume(journal, run_id, m, target="test:m", code_hash=code_hash)


def only_run(journal: Journal) -> str:
    (run,) = journal.runs()
    return run.run_id


def test_a_run_goes_to_its_end(journal: Journal) -> None:
    calls: list[int] = []
    outcome = start(journal, counter(calls), {"limit": 5})
    assert outcome.run.status == "done"
    assert outcome.run.steps == 6
    assert calls == [0, 1, 2, 3, 4]
    final = state_at(journal, outcome.run.run_id)
    assert final.state == {"n": 5, "limit": 5, "seen": [0, 10, 20, 30, 40]}
    assert final.step is None


def test_resume_does_not_run_journaled_effects_again(journal: Journal) -> None:
    """Interrupted before its 4th effect, the run resumes there: effects 0-2 never run twice."""
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 6},
            options=Options(checkpoint=interrupt_at("effect.before", 4)),
        )
    assert calls == [0, 1, 2]
    run_id = only_run(journal)
    outcome = resume(journal, run_id, counter(calls))
    assert outcome.run.status == "done"
    assert calls == [0, 1, 2, 3, 4, 5]
    assert state_at(journal, run_id).state["seen"] == [0, 10, 20, 30, 40, 50]


def test_an_effect_that_ran_but_was_not_journaled_runs_again(journal: Journal) -> None:
    """Stopped between an effect and its event, the effect is in flight: it runs once more."""
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 4},
            options=Options(checkpoint=interrupt_at("effect.after", 2)),
        )
    assert calls == [0, 1]
    resume(journal, only_run(journal), counter(calls))
    assert calls == [0, 1, 1, 2, 3]


def test_a_re_entered_step_records_its_decision_once(journal: Journal) -> None:
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 7},
            options=Options(checkpoint=interrupt_at("effect.before", 5)),
        )
    run_id = only_run(journal)
    resume(journal, run_id, counter(calls))
    items = [e.data["item"] for e in journal.events(run_id, kinds=(k.DECISION,))]
    assert items == [0, 3, 6]


def test_the_same_run_key_never_starts_a_second_run(journal: Journal) -> None:
    calls: list[int] = []
    first = start(journal, counter(calls), {"limit": 2}, run_key="2026-11-26")
    second = start(journal, counter(calls), {"limit": 2}, run_key="2026-11-26")
    assert first.created and not second.created
    assert not second.executed
    assert second.run.run_id == first.run.run_id
    assert calls == [0, 1]


def test_the_same_run_key_resumes_an_unfinished_run(journal: Journal) -> None:
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 4},
            run_key="nightly",
            options=Options(checkpoint=interrupt_at("effect.before", 3)),
        )
    again = start(journal, counter(calls), {"limit": 4}, run_key="nightly")
    assert again.run.status == "done"
    assert not again.created
    assert len(journal.runs()) == 1
    assert calls == [0, 1, 2, 3]


def test_resume_under_changed_code_is_recorded_and_reported(journal: Journal) -> None:
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 3},
            options=Options(checkpoint=interrupt_at("effect.before", 2)),
        )
    run_id = only_run(journal)
    outcome = resume(journal, run_id, counter(calls), code_hash="h2")
    assert outcome.code_changed == ("h1", "h2")
    (resumed,) = journal.events(run_id, kinds=(k.RUN_RESUMED,))
    assert resumed.data["code_hash_before"] == "h1"
    assert resumed.data["code_hash"] == "h2"
    assert journal.run(run_id).code_hash == "h2"


def test_code_that_no_longer_fits_the_journal_fails_naming_step_and_call(journal: Journal) -> None:
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        start(
            journal,
            counter(calls),
            {"limit": 3},
            options=Options(checkpoint=interrupt_at("effect.done", 2)),
        )
    run_id = only_run(journal)
    # The interrupted step's effect is journaled under "tick"; the code now calls "tock".
    outcome = resume(journal, run_id, counter(calls, effect="tock"))
    assert outcome.run.status == "failed"
    error = outcome.run.error or ""
    assert "step 'tick'" in error and "call #0" in error
    assert "'effect tick'" in error and "'effect tock'" in error


def test_an_exception_fails_the_run_and_a_resume_after_the_fix_finishes_it(
    journal: Journal,
) -> None:
    calls: list[int] = []

    def flaky(fixed: bool) -> Machine[Count]:
        m = Machine("flaky", state=Count, start="go")

        @m.step
        def go(ctx: Context, s: Count) -> Transition:
            ctx.effect("paid", lambda: calls.append(s.n) or s.n)
            if not fixed:
                raise RuntimeError("the parser choked on line 3")
            return ctx.finish(s)

        return m

    broken, fixed = flaky(fixed=False), flaky(fixed=True)

    outcome = start(journal, broken, {})
    assert outcome.run.status == "failed"
    assert outcome.run.error == "RuntimeError: the parser choked on line 3"
    (failed,) = journal.events(outcome.run.run_id, kinds=(k.RUN_FAILED,))
    assert "the parser choked" in failed.data["traceback"]
    after = resume(journal, outcome.run.run_id, fixed)
    assert after.run.status == "done"
    assert calls == [0]  # the effect ran once; the resume used its journaled result


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda ctx, s: ctx.fail("no tickets today"), "no tickets today"),
        (lambda ctx, s: s, "returned Count, not a transition"),
        (lambda ctx, s: ctx.goto("nowhere", s), "goes to 'nowhere', which is not a step"),
        (lambda ctx, s: ctx.goto("go", {"n": 1}), "returned a state of type dict, not Count"),
    ],
)
def test_a_bad_transition_fails_the_run_saying_why(
    journal: Journal, body: Callable[[Context, Count], Any], message: str
) -> None:
    m = Machine("bad", state=Count, start="go")
    m.steps["go"] = body
    outcome = start(journal, m, {})
    assert outcome.run.status == "failed"
    assert message in (outcome.run.error or "")


def test_snapshots_bound_what_a_resume_reads(journal: Journal) -> None:
    calls: list[int] = []
    outcome = start(journal, counter(calls, snapshot_every=10), {"limit": 95})
    run_id = outcome.run.run_id
    snapshots = list(journal.events(run_id, kinds=(k.SNAPSHOT,)))
    assert len(snapshots) >= 2
    folded = [c.state for c in replay(journal, run_id)][-1]
    assert state_at(journal, run_id).state == folded
    assert journal.run(run_id).snapshot_seq == snapshots[-1].seq


def test_input_that_does_not_fit_the_state_is_refused_before_anything_is_written(
    journal: Journal,
) -> None:
    with pytest.raises(InputMismatch, match=r"expected an integer, got a string @ \$.limit"):
        start(journal, counter([]), {"limit": "ten"})
    assert journal.runs() == []


def test_an_input_function_builds_the_first_state(journal: Journal) -> None:
    m = counter([])

    @m.input
    def numbers(values: list[int]) -> Count:
        return Count(limit=len(values))

    outcome = start(journal, m, [5, 6, 7])
    assert outcome.run.status == "done"
    assert state_at(journal, outcome.run.run_id).state["n"] == 3
    with pytest.raises(InputMismatch, match=r"expected an integer, got a string @ \$\[1\]"):
        machine.prepare(m, [1, "two"])


def test_a_state_that_json_cannot_keep_is_refused(journal: Journal) -> None:
    @attrs.frozen
    class Loose:
        tags: Any = attrs.Factory(lambda: {"a", "b"})

    m = Machine("loose", state=Loose, start="go")
    m.steps["go"] = lambda ctx, s: ctx.finish(s)
    with pytest.raises(StateNotJSON):
        start(journal, m, {})


def test_a_journal_the_runner_wrote_is_readable_by_path(tmp_path: Path) -> None:
    """Nothing in the journal needs the process that wrote it: a second connection sees all."""
    path = tmp_path / "j.db"
    with Journal.open(path, create=True) as journal:
        run_id = start(journal, counter([]), {"limit": 3}).run.run_id
    with Journal.open(path) as again:
        assert again.run(run_id).status == "done"
        assert state_at(again, run_id).state["seen"] == [0, 10, 20]
