"""Tests for `machine.rerun` and `journal replay --rerun`: a run's code executed again, offline.

The in-process tests use small machines; the command-line tests run the triage example once and
rerun it under changed copies of its code, showing that nothing is sent, run or written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import FIXTURES, digest, journal_command

from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine import (
    ActionError,
    Context,
    Machine,
    Models,
    Options,
    PriceTable,
    Transition,
    runner,
)
from runjournal.machine.errors import WrongMachine
from runjournal.machine.rerun import Divergence, Reproduced, post_mortem, rerun
from runjournal.machine.testing import FakeModel, serve

MODEL = "claude-haiku-4-5"


@pytest.fixture
def reader(journal: Journal, db: Path) -> Iterator[Journal]:
    """The journal as a rerun opens it: read-only."""
    j = Journal.open(db, readonly=True)
    yield j
    j.close()


def start(journal: Journal, m: Machine[Any], input: Any, options: Options | None = None) -> str:
    prepared = runner.prepare(m, input)
    outcome = runner.start(journal, prepared, target="test:m", code_hash="h", options=options)
    return outcome.run.run_id


@attrs.frozen
class Count:
    n: int = 0
    limit: int = 4
    seen: tuple[int, ...] = ()


def counter(
    calls: list[int],
    *,
    bump: int = 0,
    big: int = 20,
    label: str = "big",
    effect: bool = True,
    extra: list[str] | None = None,
    finish_at: int | None = None,
    fail_at: int | None = None,
    result: Callable[[int], int] = lambda n: n * 10,
) -> Machine[Count]:
    """A machine of one step, `tick`, with knobs that make its code differ from the run's."""
    m = Machine("counter", state=Count, start="tick")

    @m.step
    def tick(ctx: Context, s: Count) -> Transition:
        if s.n >= s.limit or s.n == finish_at:
            return ctx.finish(s)
        if s.n == fail_at:
            raise ValueError(f"no {s.n}")

        def work() -> int:
            calls.append(s.n)
            return result(s.n)

        value = ctx.effect("tick", work) if effect else s.n * 10
        outcome = label if value >= big else "small"
        ctx.decide(item=s.n, outcome=outcome, reason="by size", value=value, big=big)
        if extra is not None:
            ctx.effect("new", lambda: extra.append("ran"), key=f"new-{s.n}")
        return ctx.goto("tick", attrs.evolve(s, n=s.n + 1, seen=(*s.seen, value + bump)))

    return m


class TestReproduced:
    def test_a_run_is_reproduced_without_running_anything(
        self, journal: Journal, reader: Journal, db: Path
    ) -> None:
        """Same code: reproduced to done; no effect runs again and the journal is unchanged."""
        calls: list[int] = []
        run_id = start(journal, counter(calls), {})
        before = digest(db)
        result = rerun(reader, run_id, counter(calls))
        assert result == Reproduced(
            run_id, steps=5, decisions=4, model_answers=0, effects=4, actions=0, requests_sent=0
        )
        assert result.describe() == (
            f"run {run_id} reproduced: 5 steps, 4 decisions, 4 effects, 0 model answers, "
            "0 requests sent"
        )
        assert calls == [0, 1, 2, 3]
        assert digest(db) == before

    def test_an_effect_returns_what_the_run_got(self, journal: Journal, reader: Journal) -> None:
        """An effect whose function now computes something else still gives the recorded value."""
        run_id = start(journal, counter([]), {})
        assert isinstance(rerun(reader, run_id, counter([], result=lambda n: -1)), Reproduced)

    def test_a_failed_run_is_reproduced_to_its_failure(
        self, journal: Journal, reader: Journal
    ) -> None:
        """The step fails with the same error: reproduced through the step the run stopped in."""
        run_id = start(journal, counter([], fail_at=2), {})
        assert journal.run(run_id).status == "failed"
        result = rerun(reader, run_id, counter([], fail_at=2))
        assert isinstance(result, Reproduced)
        assert result.steps == 2
        assert result.stopped is not None
        assert "step 'tick' (visit 2)" in result.stopped
        assert "failed: ValueError: no 2" in result.stopped

    def test_an_interrupted_run_is_reproduced_to_where_its_record_ends(
        self, journal: Journal, reader: Journal
    ) -> None:
        """Killed before its third effect: the rerun stops at that effect and never runs it."""
        seen = 0

        def checkpoint(name: str) -> None:
            nonlocal seen
            seen += name == "effect.before"
            if seen == 3:
                raise KeyboardInterrupt

        calls: list[int] = []
        with pytest.raises(KeyboardInterrupt):
            start(journal, counter(calls), {}, Options(checkpoint=checkpoint))
        (run,) = journal.runs()
        result = rerun(reader, run.run_id, counter(calls))
        assert isinstance(result, Reproduced)
        assert result.steps == 2
        assert result.stopped is not None
        assert "visit 2" in result.stopped
        assert calls == [0, 1]


class TestDivergence:
    def test_a_different_state_names_the_field(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], bump=1))
        assert isinstance(result, Divergence)
        assert (result.kind, result.step, result.visit) == ("state", "tick", 0)
        assert "/seen/0 0 then, 1 now" in result.what
        assert result.message.startswith(f"run {run_id} diverges at step 'tick' (visit 0): ")

    def test_a_different_transition_says_where_it_went_then_and_now(
        self, journal: Journal, reader: Journal
    ) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], finish_at=2))
        assert isinstance(result, Divergence)
        assert (result.kind, result.visit) == ("transition", 2)
        assert result.what == (
            "the run went to 'tick' here, the code now finishes, without effect tick, which the "
            "run made"
        )

    def test_a_different_decision_names_item_and_outcomes(
        self, journal: Journal, reader: Journal
    ) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], label="large"))
        assert isinstance(result, Divergence)
        assert (result.kind, result.visit, result.call) == ("decision", 2, "#1")
        assert result.what == (
            "the decision about 2 differs: the run decided 'big' (by size), the code now "
            "decides 'large' (by size)"
        )

    def test_a_decision_on_other_inputs(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], big=10))
        assert isinstance(result, Divergence)
        assert (result.kind, result.visit) == ("decision", 0)
        assert result.what == (
            "the decision about 0 ('small') differs in its inputs: big 20 then, 10 now"
        )

    def test_a_call_the_run_never_made_is_not_run(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        extra: list[str] = []
        result = rerun(reader, run_id, counter([], extra=extra))
        assert isinstance(result, Divergence)
        assert (result.kind, result.call) == ("new call", "new-0")
        assert "effect new, a call the run never made" in result.what
        assert extra == []

    def test_a_call_the_code_no_longer_makes(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], effect=False))
        assert isinstance(result, Divergence)
        assert result.kind == "call"  # the decision is now made where the effect was
        assert "the run made 'effect tick' here, the code now makes 'decision'" in result.what

    def test_a_step_that_now_fails(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        result = rerun(reader, run_id, counter([], fail_at=1))
        assert isinstance(result, Divergence)
        assert (result.kind, result.visit) == ("ending", 1)
        assert result.what == "the run went to 'tick' here, the code now fails: ValueError: no 1"

    def test_a_failed_run_the_code_now_gets_past(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([], fail_at=2), {})
        result = rerun(reader, run_id, counter([]))
        assert isinstance(result, Divergence)
        assert (result.kind, result.call) == ("ending", "#0")
        assert result.what == (
            "the run failed here (ValueError: no 2) before effect tick; the code now gets that "
            "far (it was not run)"
        )

    def test_a_run_whose_effect_failed_is_reproduced_to_it(
        self, journal: Journal, reader: Journal
    ) -> None:
        """An effect that raised leaves no event: the run's traceback shows it failed there."""

        def fail(n: int) -> int:
            if n == 1:
                raise OSError("the disk is gone")
            return n

        run_id = start(journal, counter([], result=fail), {})
        result = rerun(reader, run_id, counter([]))
        assert isinstance(result, Reproduced)
        assert result.stopped is not None
        assert "failed: OSError: the disk is gone" in result.stopped

    def test_another_machine_is_refused(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, counter([]), {})
        other = Machine("other", state=Count, start="tick")
        other.step(counter([]).steps["tick"])
        with pytest.raises(WrongMachine):
            rerun(reader, run_id, other)


@attrs.frozen
class Sends:
    n: int = 0
    sent: tuple[str, ...] = ()


def sender(sent: list[str], *, prefix: str = "k") -> Machine[Sends]:
    """Sends three messages; the second fails for sure, and the step goes on without it."""
    m = Machine("sender", state=Sends, start="send")

    def deliver(key: str) -> str:
        if key.endswith("1"):
            raise ValueError("refused")
        sent.append(key)
        return f"sent {key}"

    @m.step
    def send(ctx: Context, s: Sends) -> Transition:
        if s.n == 3:
            return ctx.finish(s)
        try:
            said = ctx.act("send", key=f"{prefix}{s.n}", fn=deliver, idempotent=True)
        except ActionError:
            said = "failed"
        return ctx.goto("send", attrs.evolve(s, n=s.n + 1, sent=(*s.sent, said)))

    return m


class TestAct:
    def test_actions_give_their_recorded_results(self, journal: Journal, reader: Journal) -> None:
        """Done actions return what they returned; the one that failed for sure fails again,
        as the run's step saw it; nothing is sent."""
        sent: list[str] = []
        run_id = start(journal, sender(sent), {})
        assert sent == ["k0", "k2"]
        result = rerun(reader, run_id, sender(sent))
        assert isinstance(result, Reproduced)
        assert (result.steps, result.actions) == (4, 2)
        assert sent == ["k0", "k2"]

    def test_another_key_is_named(self, journal: Journal, reader: Journal) -> None:
        run_id = start(journal, sender([]), {})
        result = rerun(reader, run_id, sender([], prefix="x"))
        assert isinstance(result, Divergence)
        assert (result.kind, result.call) == ("call", "#0")
        assert result.what == "the run made 'act send k0' here, the code now makes 'act send x0'"


@attrs.frozen
class Texts:
    texts: tuple[str, ...]
    next: int = 0
    scores: tuple[int, ...] = ()


def _odd(instance: Any, attribute: Any, value: int) -> None:
    if value % 2 == 0:
        raise ValueError("score must be odd")


def scorer(
    system: str = "Score urgency.", *, odd: bool = False, model: str | None = MODEL
) -> Machine[Texts]:
    """Asks a model to score each text; with `odd`, an even score is rejected (a check the
    tool's schema does not show, so the request stays the same)."""

    @attrs.frozen
    class Urgency:
        score: int = attrs.field(validator=_odd if odd else attrs.validators.instance_of(int))
        reason: str

    m = Machine("scorer", state=Texts, start="score", model=model)

    @m.step
    def score(ctx: Context, s: Texts) -> Transition:
        if s.next == len(s.texts):
            return ctx.finish(s)
        u = ctx.ask(Urgency, system=system, prompt=s.texts[s.next])
        ctx.decide(item=s.next, outcome=str(u.score))
        return ctx.goto("score", attrs.evolve(s, next=s.next + 1, scores=(*s.scores, u.score)))

    return m


def scored(journal: Journal, m: Machine[Texts], responder: Any = None) -> str:
    fake = FakeModel(responder=responder)
    options = Options(models=Models(fake.client, PriceTable.load()), seed=1)
    return start(journal, m, {"texts": ["The site is down", "How do I export?"]}, options)


class TestAsk:
    def test_answers_come_from_the_journal(self, journal: Journal, reader: Journal) -> None:
        run_id = scored(journal, scorer())
        result = rerun(reader, run_id, scorer())
        assert isinstance(result, Reproduced)
        assert (result.model_answers, result.requests_sent, result.decisions) == (2, 0, 2)

    def test_the_machines_model_and_a_dated_id_are_rerun(
        self, journal: Journal, reader: Journal
    ) -> None:
        """The machine's default model reaches the rerun's asks, and a dated model id finds
        its model's capabilities there as in the run."""
        run_id = scored(journal, scorer(model="claude-haiku-4-5-20251001"))
        result = rerun(reader, run_id, scorer(model="claude-haiku-4-5-20251001"))
        assert isinstance(result, Reproduced), result
        assert (result.model_answers, result.requests_sent) == (2, 0)

    def test_another_prompt_shows_a_diff(self, journal: Journal, reader: Journal) -> None:
        run_id = scored(journal, scorer())
        result = rerun(reader, run_id, scorer("Score urgency, gently."))
        assert isinstance(result, Divergence)
        assert (result.kind, result.call, result.visit) == ("request", "#0", 0)
        lines = result.diff.splitlines()
        assert lines[0].startswith("--- recorded request (seq ")
        assert lines[1] == "+++ request now"
        assert "-Score urgency." in lines
        assert "+Score urgency, gently." in lines
        assert " [system]" in lines

    def test_the_code_rejects_an_answer_the_run_accepted(
        self, journal: Journal, reader: Journal
    ) -> None:
        run_id = scored(journal, scorer(), lambda body: {"score": 4, "reason": "r"})
        result = rerun(reader, run_id, scorer(odd=True))
        assert isinstance(result, Divergence)
        assert result.kind == "answer"
        assert "rejects the model's answer to Urgency (round 0), which the run accepted" in (
            result.what
        )
        assert "score must be odd" in result.what

    def test_the_code_accepts_an_answer_the_run_rejected(
        self, journal: Journal, reader: Journal
    ) -> None:
        def responder(body: dict[str, Any]) -> dict[str, Any]:
            return {"score": 4 if len(body["messages"]) == 1 else 3, "reason": "r"}

        run_id = scored(journal, scorer(odd=True), responder)
        assert [e.data["round"] for e in journal.events(run_id, kinds=(k.OUTPUT_REJECTED,))]
        result = rerun(reader, run_id, scorer())
        assert isinstance(result, Divergence)
        assert result.kind == "answer"
        assert "accepts the model's answer of round 0, which the run rejected" in result.what


def test_pdb_stops_in_the_step_at_the_call_that_diverged(journal: Journal, reader: Journal) -> None:
    """`post_mortem` lands in the handler's frame, where the step's locals are."""
    run_id = start(journal, counter([]), {})
    out = io.StringIO()

    def debug(error: BaseException) -> None:
        post_mortem(error, stdin=io.StringIO("p s.n, value\nq\n"), stdout=out)

    result = rerun(reader, run_id, counter([], label="large"), debug=debug)
    assert isinstance(result, Divergence)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"stopped where the code diverges: {result.message}"
    assert lines[3].endswith("tick()")  # after the rerun's check, moved up to the step
    assert "(Pdb) (2, 20)" in lines


# The command line, on the triage example.


def journal_cli(
    *args: str, folder: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*journal_command(), *args, "--db", str(folder / "journal.db")],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A done triage run of 8 tickets against the chaotic fake: its folder and run id."""
    folder = tmp_path_factory.mktemp("triage")
    for name in ("triage.py", "pager.py"):
        shutil.copy(FIXTURES / name, folder / name)
    tickets = (FIXTURES / "tickets.jsonl").read_text().splitlines(keepends=True)[:8]
    (folder / "tickets.jsonl").write_text("".join(tickets))
    done = journal_cli(
        "run", "triage.py", "--input", "tickets.jsonl", "--fake-model", "chaos", folder=folder
    )
    assert done.returncode == 0, done.stderr
    runs = journal_cli("runs", "--json", folder=folder)
    return folder, json.loads(runs.stdout.splitlines()[0])["run_id"]


def changed(folder: Path, name: str, old: str, new: str) -> str:
    """A copy of the triage pipeline with `old` replaced by `new`; its file name."""
    text = (folder / "triage.py").read_text()
    assert old in text
    (folder / name).write_text(text.replace(old, new))
    return name


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_cli_reproduces_a_done_run_offline(triage: tuple[Path, str]) -> None:
    """No request reaches a model (a fake at ANTHROPIC_BASE_URL sees none), no page is sent
    again, and the journal is unchanged."""
    folder, run_id = triage
    outbox, db = files(folder / "outbox"), digest(folder / "journal.db")
    fake = FakeModel()
    with serve(fake) as server:
        env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "x"}
        result = journal_cli("replay", run_id, "--rerun", folder=folder, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"run {run_id} reproduced: 9 steps, 8 decisions, ")
    assert result.stdout.rstrip().endswith("0 requests sent")
    assert fake.requests == []
    assert files(folder / "outbox") == outbox
    assert digest(folder / "journal.db") == db


def test_the_cli_shows_a_changed_prompt_as_a_diff(triage: tuple[Path, str]) -> None:
    folder, run_id = triage
    target = changed(folder, "prompt.py", "You triage support", "You carefully triage support")
    result = journal_cli("replay", run_id, "--rerun", "--target", target, folder=folder)
    assert result.returncode == 1
    first, *diff = result.stdout.splitlines()
    assert first.startswith(f"run {run_id} diverges at step 'score' (visit 0), call T-1001: ")
    assert "-You triage support tickets for Lumen, a hosted analytics product used by" in (
        "\n".join(diff)
    )
    assert any(line.startswith("+You carefully triage support tickets") for line in diff)


def test_the_cli_names_the_first_decision_that_differs(triage: tuple[Path, str]) -> None:
    folder, run_id = triage
    with Journal.open(folder / "journal.db", readonly=True) as j:
        skipped = [
            e.data["item"]
            for e in j.events(run_id, kinds=(k.DECISION,))
            if e.data["outcome"] == "skip"
        ]
    target = changed(
        folder, "threshold.py", "urgency.score >= s.threshold:", "urgency.score >= s.threshold - 3:"
    )
    result = journal_cli("replay", run_id, "--rerun", "--target", target, "--json", folder=folder)
    assert result.returncode == 1
    found = json.loads(result.stdout)
    assert (found["reproduced"], found["kind"], found["step"]) == (False, "decision", "score")
    assert found["what"].startswith(
        f"the decision about {skipped[0]!r} differs: the run decided 'skip' (below threshold), "
        "the code now decides 'page' ("
    )


def test_the_cli_never_runs_a_call_the_run_never_made(triage: tuple[Path, str]) -> None:
    folder, run_id = triage
    effect = '    ctx.effect("new", lambda: open("RAN", "w").write("x"), key="new-" + ticket.id)\n'
    target = changed(
        folder, "effect.py", '    return ctx.goto("score"', effect + '    return ctx.goto("score"'
    )
    result = journal_cli("replay", run_id, "--rerun", "--target", target, folder=folder)
    assert result.returncode == 1
    assert "call new-T-1001: the code now makes effect new, a call the run never made" in (
        result.stdout
    )
    assert not (folder / "RAN").exists()


def test_the_cli_pdb_needs_a_terminal(triage: tuple[Path, str]) -> None:
    folder, run_id = triage
    result = journal_cli("replay", run_id, "--rerun", "--pdb", folder=folder)
    assert result.returncode == 0
    assert "--pdb stops only when standard input is a terminal" in result.stderr
    assert journal_cli("replay", run_id, "--pdb", folder=folder).returncode == 2
