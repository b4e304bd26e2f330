"""Tests for running a machine from Python: `machine.run`, `machine.resume`, typed results of
effects and actions, machine defaults, and transitions checked before a run starts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import ROOT, cli, digest

from runjournal import machine
from runjournal.journal import Journal, query
from runjournal.machine import (
    Context,
    DefinitionError,
    InputMismatch,
    Machine,
    ModelUnavailable,
    Options,
    Transition,
    runner,
)
from runjournal.machine.loader import load, locate

TYPED = ROOT / "tests" / "pipelines" / "typed.py"
sys.path.insert(0, str(TYPED.parent))
import typed  # noqa: E402


def test_run_in_one_call(db: Path, tmp_path: Path) -> None:
    """`machine.run` creates the journal, records the code's place and hash, and gives back
    the final state as the machine's own attrs type."""
    out = tmp_path / "out"
    outcome = machine.run(typed.library, {"books": typed.BOOKS, "out": str(out)}, db=db)
    assert outcome.created and outcome.run.status == "done"
    state = outcome.state
    assert isinstance(state, typed.Library)
    assert state.receipt == typed.Receipt(7, ("Emma", "Dune", "Ulysses"))
    assert state.shelved[2] == typed.Shelved("Ulysses", (2, 730 % 7), ("new", "paper"))
    assert outcome.run.target == f"{TYPED}:library"
    assert outcome.run.code_hash == load(str(TYPED)).code_hash
    assert out.read_text().splitlines() == [
        "shelve Emma",
        "shelve Dune",
        "shelve Ulysses",
        "order order-1",
    ]
    # The journal it wrote is one `journal` reads, and the action's result is decoded JSON.
    with Journal.open(db, readonly=True) as j:
        (action,) = j.actions(outcome.run.run_id)
    assert action.result == {"number": 7, "lines": ["Emma", "Dune", "Ulysses"]}
    shown = cli("actions", "--json", db=db)
    assert json.loads(shown.stdout)["result"] == action.result


def test_run_key_runs_once(db: Path, tmp_path: Path) -> None:
    """A second `machine.run` with the same run key starts nothing and does nothing again."""
    out = tmp_path / "out"
    books = {"books": typed.BOOKS[:1], "out": str(out)}
    first = machine.run(typed.library, books, db=db, key="nightly-1")
    again = machine.run(typed.library, books, db=db, key="nightly-1")
    assert (again.created, again.executed) == (False, False)
    assert again.run.run_id == first.run.run_id
    assert len(out.read_text().splitlines()) == 2


def test_bad_input_touches_nothing(tmp_path: Path) -> None:
    """Input that does not fit is refused before the journal is created."""
    db = tmp_path / "journal.db"
    with pytest.raises(InputMismatch, match="books"):
        machine.run(typed.library, {"books": [{"title": "Emma"}]}, db=db)
    assert not db.exists()


def test_a_machine_that_asks_without_a_key_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No API key and no fake: a machine that asks a model is refused before the journal is
    created, as `journal run` refuses it."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    m = Machine("asker", state=Asked, start="ask")

    @m.step
    def ask(ctx: Context, s: Asked) -> Transition:
        return ctx.finish(attrs.evolve(s, said=ctx.ask(str, prompt=s.prompt)))

    db = tmp_path / "journal.db"
    with pytest.raises(ModelUnavailable, match="ANTHROPIC_API_KEY"):
        machine.run(m, {"prompt": "hi"}, db=db)
    assert not db.exists()


@attrs.frozen
class Asked:
    prompt: str
    said: str = ""


def test_resume_needs_a_journal(tmp_path: Path) -> None:
    """`machine.resume` never creates a journal: a missing one is a clear error."""
    db = tmp_path / "missing.db"
    with pytest.raises(Exception, match=r"missing\.db"):
        machine.resume(typed.library, "abc", db=db)
    assert not db.exists()


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    """Wait until the process has written `path` (its progress marker), or fail if it ended."""
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the pipeline ended before its marker: {process.stderr}")
        assert time.monotonic() < deadline, "no progress in 60 s"
        time.sleep(0.01)


@pytest.mark.parametrize("point", ["effect.done", "effect.after", "action.intended"])
def test_sigkill_then_resume_gives_the_same_types(tmp_path: Path, point: str) -> None:
    """A run killed with SIGKILL and resumed with `machine.resume` gets back, from the journal,
    the attrs values (with their tuples) its effects and action returned: the pipeline asserts
    their types. What ran before the kill does not run again."""
    db, out, marker = tmp_path / "journal.db", tmp_path / "out", tmp_path / "marker"
    process = subprocess.Popen(
        [sys.executable, str(TYPED), str(db), str(out), point, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    before = out.read_text().splitlines()
    with Journal.open(db, readonly=True) as j:
        (run,) = j.runs()
    outcome = machine.resume(typed.library, run.run_id[:6], db=db)
    assert outcome.run.status == "done"
    assert isinstance(outcome.state, typed.Library)
    assert outcome.state.receipt == typed.Receipt(7, ("Emma", "Dune", "Ulysses"))
    lines = out.read_text().splitlines()
    # The effect that had run before the kill, journaled or not: journaled, it is not run again.
    journaled = point == "effect.done" or point == "action.intended"
    expected = ["shelve Emma", "shelve Dune", "shelve Ulysses", "order order-1"]
    if journaled:
        assert lines == expected
    else:
        assert lines == before + expected[len(before) - 1 :]
    assert len(lines) - len(expected) <= 1


@attrs.frozen
class Ticket:
    id: str
    words: int


@attrs.frozen
class Batch:
    tickets: tuple[Ticket, ...]
    total: int = 0


def counting(**kwargs: Any) -> Machine[Batch]:
    m = Machine("count", state=Batch, start="add", **kwargs)

    @m.step(to=("add",))
    def add(ctx: Context, s: Batch) -> Transition:
        return ctx.finish(attrs.evolve(s, total=sum(t.words for t in s.tickets)))

    return m


def test_input_field_takes_a_list() -> None:
    """`input="tickets"`: a JSON Lines file (a list) fills that field of the first state."""
    m = counting(input="tickets")
    state = m.initial_state([{"id": "T-1", "words": 3}, {"id": "T-2", "words": 4}])
    assert state == Batch((Ticket("T-1", 3), Ticket("T-2", 4)))


def test_a_list_without_a_declared_input_says_how() -> None:
    """A list given to a machine that takes an object: the error says how to declare it."""
    with pytest.raises(InputMismatch, match=r'input="field"') as e:
        counting().initial_state([{"id": "T-1", "words": 3}])
    assert "JSON Lines" in str(e.value) and "@count.input" in str(e.value)


def test_check_refuses_an_unknown_target() -> None:
    m = Machine("typo", state=Batch, start="score")

    @m.step(to=("scroe",))
    def score(ctx: Context, s: Batch) -> Transition:
        return ctx.goto("scroe", s)

    with pytest.raises(DefinitionError, match="'score' declares it goes to 'scroe'"):
        m.check()


def test_check_refuses_an_unreachable_step() -> None:
    m = Machine("island", state=Batch, start="a")

    @m.step(to=())
    def a(ctx: Context, s: Batch) -> Transition:
        return ctx.finish(s)

    @m.step
    def b(ctx: Context, s: Batch) -> Transition:
        return ctx.finish(s)

    with pytest.raises(DefinitionError, match="no run can reach step 'b'"):
        m.check()


def test_step_to_takes_names_not_a_string() -> None:
    m = Machine("str", state=Batch, start="a")
    with pytest.raises(DefinitionError, match=r"to=\('a',\)"):
        m.step(to="a")


TYPO = textwrap.dedent(
    """
    import attrs
    from runjournal.machine import Context, Machine, Transition

    @attrs.frozen
    class S:
        n: int = 0

    m = Machine("typo", state=S, start="score")

    @m.step(to=("scroe", "done"))
    def score(ctx: Context, s: S) -> Transition:
        return ctx.goto("scroe", s)

    @m.step(to=())
    def done(ctx: Context, s: S) -> Transition:
        return ctx.finish(s)
    """
)

UNDECLARED = TYPO.replace('to=("scroe", "done")', 'to=("done",)')


def test_journal_run_refuses_a_typo_before_any_event(tmp_path: Path) -> None:
    """A declared transition to no step: `journal run` exits 2 naming it; no journal is made,
    and `journal graph` says the same."""
    pipeline = tmp_path / "typo.py"
    pipeline.write_text(TYPO)
    (tmp_path / "in.json").write_text("{}")
    db = tmp_path / "journal.db"
    result = cli("run", str(pipeline), "--input", str(tmp_path / "in.json"), db=db)
    assert result.returncode == 2
    assert "step 'score' declares it goes to 'scroe', which is not a step" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()
    graph = cli("graph", str(pipeline))
    assert graph.returncode == 2 and "'scroe'" in graph.stderr


def test_goto_outside_declared_targets_fails_naming_both(tmp_path: Path) -> None:
    """A `goto` to a real step the step did not declare fails the run before it is journaled."""
    pipeline = tmp_path / "undeclared.py"
    pipeline.write_text(UNDECLARED.replace('ctx.goto("scroe", s)', 'ctx.goto("score", s)'))
    (tmp_path / "in.json").write_text("{}")
    db = tmp_path / "journal.db"
    result = cli("run", str(pipeline), "--input", str(tmp_path / "in.json"), db=db)
    assert result.returncode == 1, result.stderr
    assert "step 'score' goes to 'score', but it declared it goes only to (done)" in result.stderr
    rows = cli("sql", "select count(*) from transitions", db=db)
    assert rows.stdout.split()[-1] == "0"


def test_graph_prints_declared_transitions(tmp_path: Path) -> None:
    pipeline = tmp_path / "ok.py"
    pipeline.write_text(UNDECLARED)
    before = digest(tmp_path / "journal.db")
    result = cli("graph", str(pipeline))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert "    _start --> s_score" in lines
    assert "    s_score --> s_done" in lines
    assert "    s_done -.-> _done" in lines
    assert not any("_any" in line for line in lines)  # every step declared its targets
    assert digest(tmp_path / "journal.db") == before == "absent"


def test_machine_defaults_reach_ask() -> None:
    """`Machine(model=..., max_tokens=...)` are what `ctx.ask` uses when it names none."""
    m = counting(model="claude-haiku-4-5", max_tokens=300)
    assert (m.model, m.max_tokens) == ("claude-haiku-4-5", 300)


def test_locate_a_script_machine() -> None:
    """A machine of a module on sys.path is recorded by its file's absolute path."""
    found = locate(typed.library)
    assert found.location == f"{TYPED}:library"
    assert found.machine is typed.library


def test_effect_without_a_type_refuses_what_would_change(db: Path) -> None:
    """An effect returning an attrs value with no annotation or type= is refused before it
    is journaled: a resume could not give back the same type."""
    m = Machine("untyped", state=Batch, start="a")

    @m.step
    def a(ctx: Context, s: Batch) -> Transition:
        ctx.effect("t", lambda: Ticket("T-1", 2))
        return ctx.finish(s)

    with Journal.open(db, create=True) as j:
        outcome = runner.start(j, runner.prepare(m, {"tickets": []}), target="t:m", code_hash="0")
    assert outcome.run.status == "failed"
    assert "type=Ticket" in (outcome.run.error or "")
    assert list(query(db, "select count(*) from effects").rows) == [(0,)]


def test_effect_type_argument(db: Path) -> None:
    """`type=` structures the result when the function has no annotation (a lambda)."""
    m = Machine("typed", state=Batch, start="a")
    seen: list[Any] = []

    @m.step
    def a(ctx: Context, s: Batch) -> Transition:
        got = ctx.effect("t", lambda: Ticket("T-1", 2), type=Ticket)
        seen.append(got)
        return ctx.finish(attrs.evolve(s, tickets=(got,)))

    with Journal.open(db, create=True) as j:
        outcome = runner.start(
            j, runner.prepare(m, {"tickets": []}), target="t:m", code_hash="0", options=Options()
        )
    assert outcome.run.status == "done"
    assert seen == [Ticket("T-1", 2)]
