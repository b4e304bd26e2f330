"""Tests for `machine.runner` and the step context, in one process.

Crash safety itself is shown by killing real processes (test_crash.py); these tests pin down
what a resume must do, using an interruption (KeyboardInterrupt) raised at a named point.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import cli

from runjournal.journal import Journal, LeaseHeld, Run, replay, state_at
from runjournal.journal import events as k
from runjournal.journal import verify as machine_verify
from runjournal.machine import (
    Context,
    InputMismatch,
    Machine,
    Options,
    Outcome,
    StateNotJSON,
    Transition,
    runner,
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
    prepared = runner.prepare(m, input)
    return runner.start(
        journal, prepared, target="test:m", code_hash=code_hash, run_key=run_key, options=options
    )


def resume(journal: Journal, run_id: str, m: Machine[Any], code_hash: str = "h1") -> Outcome:
    return runner.resume(journal, run_id, m, target="test:m", code_hash=code_hash)


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
        runner.prepare(m, [1, "two"])


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


def test_a_state_that_does_not_fit_its_type_never_reaches_the_journal(journal: Journal) -> None:
    """attrs checks no types: a step returning `n="x"` for `n: int` fails, naming the step and
    the field, and the state before it stays the run's, so a resume with fixed code goes on."""
    broken = Machine("counter", state=Count, start="tick")

    @broken.step
    def tick(ctx: Context, s: Count) -> Transition:
        if s.n == 3:
            return ctx.goto("tick", attrs.evolve(s, n="not an int"))
        return ctx.goto("tick", attrs.evolve(s, n=s.n + 1))

    outcome = start(journal, broken, {"limit": 5})
    run = outcome.run
    assert run.status == "failed"
    assert run.error is not None
    assert "step 'tick'" in run.error and "does not fit Count" in run.error
    assert "expected an integer, got a string @ $.n" in run.error
    assert state_at(journal, run.run_id).state["n"] == 3
    fixed = resume(journal, run.run_id, counter([]))
    assert fixed.run.status == "done"
    assert state_at(journal, run.run_id).state["n"] == 5


def test_a_nested_misfit_names_its_path(journal: Journal) -> None:
    @attrs.frozen
    class Box:
        items: tuple[Count, ...] = ()

    m = Machine("box", state=Box, start="go")

    @m.step
    def go(ctx: Context, s: Box) -> Transition:
        return ctx.finish(Box(items=(Count(), Count(n=True))))  # type: ignore[arg-type]

    run = start(journal, m, {}).run
    assert run.status == "failed"
    assert run.error is not None and "$.items[1].n" in run.error


def test_runs_are_listed_in_the_order_they_were_created_whatever_the_clock(db: Path) -> None:
    """A wall clock that steps back between two runs changes neither the order nor verify."""
    now = [1000.0]
    with Journal.open(db, create=True, clock=lambda: now[0]) as journal:
        first = start(journal, counter([]), {"limit": 2}).run.run_id
        now[0] = 500.0  # the clock is set back by a quarter of an hour
        second = start(journal, counter([]), {"limit": 2}).run.run_id
        assert journal.run(second).started_at < journal.run(first).started_at
        assert [r.run_id for r in journal.runs()] == [second, first]
        assert journal.find_run(first).ordinal == 1
        assert machine_verify(journal) == []
    listed = cli("runs", "--json", db=db).stdout.splitlines()
    assert [json.loads(line)["run_id"] for line in listed] == [second, first]


def test_a_failing_on_start_lets_go_of_the_lease_and_stops_the_heartbeat(journal: Journal) -> None:
    """Everything from taking the lease to letting it go is under one try/finally."""

    def on_start(run: Run) -> None:
        raise RuntimeError("on_start broke")

    options = Options(on_start=on_start)
    with pytest.raises(RuntimeError, match="on_start broke"):
        start(journal, counter([]), {"limit": 2}, options=options)
    run_id = only_run(journal)
    assert journal.lease(run_id) is None
    assert not [t for t in threading.enumerate() if t.name == f"lease-{run_id}"]
    with pytest.raises(RuntimeError, match="on_start broke"):
        runner.resume(journal, run_id, counter([]), target="t", code_hash="h1", options=options)
    assert journal.lease(run_id) is None
    assert not [t for t in threading.enumerate() if t.name == f"lease-{run_id}"]
    assert resume(journal, run_id, counter([])).run.status == "done"


def test_two_resumes_racing_never_write_after_done(db: Path) -> None:
    """100 runs, each resumed by two threads at once (two holders): every run ends done, with
    nothing after its run.done and its state whole."""
    rng = random.Random(5)
    with Journal.open(db, create=True) as journal:
        run_ids = []
        for _ in range(100):
            options = Options(checkpoint=interrupt_at("effect.done", rng.randint(1, 4)))
            with pytest.raises(KeyboardInterrupt):
                start(journal, counter([]), {"limit": 5}, options=options)
            run_ids.append(journal.runs(limit=1)[0].run_id)

    def resume_in_thread(run_id: str, delay: float, outcomes: list[str]) -> None:
        time.sleep(delay)
        with Journal.open(db, timeout=60) as own:
            try:
                done = runner.resume(own, run_id, counter([]), target="t", code_hash="h1")
                outcomes.append("executed" if done.executed else "already done")
            except LeaseHeld:
                outcomes.append("held")

    for run_id in run_ids:
        outcomes: list[str] = []
        threads = [
            threading.Thread(
                target=resume_in_thread, args=(run_id, rng.uniform(0, 0.003), outcomes)
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("executed") == 1, outcomes
    with Journal.open(db) as journal:
        for run_id in run_ids:
            run = journal.run(run_id)
            assert run.status == "done"
            kinds = [e.kind for e in journal.events(run_id)]
            assert kinds[-1] == k.RUN_DONE, kinds
            assert state_at(journal, run_id).state["n"] == 5
        assert machine_verify(journal) == []
