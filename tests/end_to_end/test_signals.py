"""SIGTERM and Ctrl-C: a run stops at its next safe point, records `run.interrupted`, lets its
lease go, and a resume goes on; a second signal stops it at once.

The signal is raised by the process itself at each checkpoint of the runner, so that where it
lands is known, not left to timing; the command line is then tested with real processes and
signals sent from outside, each sent once the process is seen to be where the test wants it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs
import pytest
from conftest import FIXTURES, ROOT, cli, journal_command

from runjournal.journal import Journal, JournalError
from runjournal.machine import (
    Context,
    Interrupted,
    Machine,
    Models,
    Options,
    PriceTable,
    StopRequest,
    Transition,
    offline,
    runner,
    stop_on_signals,
)
from runjournal.machine.testing import FakeModel, Faults

MODEL = "claude-haiku-4-5"
PIPELINES = ROOT / "tests" / "pipelines"


@attrs.frozen
class Urgency:
    """How urgent a ticket is."""

    score: int
    reason: str


@attrs.frozen
class Work:
    items: tuple[str, ...]
    next: int = 0
    scores: tuple[int, ...] = ()


@attrs.define
class World:
    """What the machine did outside the journal: notes (an effect) and pages (an action)."""

    notes: list[str] = attrs.Factory(list)
    pages: list[str] = attrs.Factory(list)


def scorer(world: World) -> Machine[Work]:
    m = Machine("signalled", state=Work, start="score")

    @m.step
    def score(ctx: Context, s: Work) -> Transition:
        if s.next == len(s.items):
            return ctx.finish(s)
        item = s.items[s.next]
        u = ctx.ask(Urgency, system="Score urgency.", prompt=item, model=MODEL)
        ctx.effect("note", lambda: world.notes.append(item))
        ctx.act("page", item, lambda key: world.pages.append(key), idempotent=False)
        scores = (*s.scores, u.score)
        return ctx.goto("score", attrs.evolve(s, next=s.next + 1, scores=scores))

    return m


POINTS = (
    "run.lease",
    "model.before",
    "model.answered",
    "effect.before",
    "effect.after",
    "effect.done",
    "action.before",
    "action.intended",
    "action.ran",
    "action.done",
)
"""Every checkpoint a step of `scorer` passes, and the one just after the lease is taken."""


def signal_at(point: str, signum: int, times: int, visit: int = 1) -> Callable[[str], None]:
    """A checkpoint that raises `signum` `times` times in a row when it reaches `point` for
    the `visit`th time."""
    seen = Counter[str]()

    def checkpoint(name: str) -> None:
        seen[name] += 1
        if name == point and seen[name] == visit:
            for _ in range(times):
                signal.raise_signal(signum)

    return checkpoint


def start(db: Path, world: World, options: Options) -> runner.Outcome[Any]:
    machine = scorer(world)
    prepared = runner.prepare(machine, {"items": ["printer down", "login slow", "typo"]})
    with Journal.open(db, create=True) as journal:
        return runner.start(journal, prepared, target="here", code_hash="h", options=options)


def resume(db: Path, world: World, run_id: str) -> runner.Outcome[Any]:
    with Journal.open(db) as journal:
        return runner.resume(
            journal,
            run_id,
            scorer(world),
            target="here",
            code_hash="h",
            options=Options(models=offline("none")),
        )


def kinds_of(db: Path, run_id: str) -> list[str]:
    with Journal.open(db, readonly=True) as journal:
        return [e.kind for e in journal.events(run_id)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("point", POINTS)
def test_one_signal_stops_at_the_next_safe_point(tmp_path: Path, point: str, signum: int) -> None:
    """Whatever the checkpoint, the run stops at the next safe point: nothing is cut half way
    (no action in doubt, no effect done twice), the lease is let go, `run.interrupted` is the
    last event, and a resume ends the run done with each note and page made once."""
    db, world, stop = tmp_path / "journal.db", World(), StopRequest()
    options = Options(models=offline("none"), stop=stop, checkpoint=signal_at(point, signum, 1))
    with stop_on_signals(stop):
        outcome = start(db, world, options)
    run_id = outcome.run.run_id
    assert outcome.interrupted is not None
    assert outcome.interrupted.signal == signal.Signals(signum).name
    assert not outcome.interrupted.at_once
    assert outcome.run.status == "running"
    with Journal.open(db, readonly=True) as journal:
        assert journal.lease(run_id) is None
    kinds = kinds_of(db, run_id)
    assert kinds[-1] == "run.interrupted"
    assert "action.intended" not in kinds or kinds.count("action.intended") == kinds.count(
        "action.done"
    ), "a first signal never leaves an action between its intent and its outcome"
    done = resume(db, world, run_id)
    assert done.run.status == "done"
    assert done.state.scores and len(done.state.scores) == 3
    assert Counter(world.notes) == Counter(["printer down", "login slow", "typo"])
    assert Counter(world.pages) == Counter(["printer down", "login slow", "typo"])
    kinds = kinds_of(db, run_id)
    assert kinds.count("model.answered") == 3, "an answer journaled is never asked for again"


@pytest.mark.parametrize("point", POINTS)
def test_a_second_signal_stops_at_once_and_a_resume_reconciles(tmp_path: Path, point: str) -> None:
    """Two signals: the run stops where the step is (inside the journal's own writes and the
    runner's work around a step, at the end of it), still records `run.interrupted` and lets
    its lease go. A resume goes on: an action cut between intent and outcome is in doubt and
    waits for a person, never done twice."""
    db, world, stop = tmp_path / "journal.db", World(), StopRequest()
    checkpoint = signal_at(point, signal.SIGTERM, 2)
    options = Options(models=offline("none"), stop=stop, checkpoint=checkpoint)
    with stop_on_signals(stop):
        outcome = start(db, world, options)
    run_id = outcome.run.run_id
    assert outcome.interrupted is not None and outcome.interrupted.at_once
    with Journal.open(db, readonly=True) as journal:
        assert journal.lease(run_id) is None
    kinds = kinds_of(db, run_id)
    assert kinds[-1] == "run.interrupted"
    done = resume(db, world, run_id)
    assert max(Counter(world.pages).values(), default=0) <= 1, world.pages
    if point in ("action.intended", "action.ran"):
        assert done.run.status == "needs_attention"  # the page's outcome is unknown
    else:
        assert done.run.status == "done"
        assert len(world.pages) == 3
    # An effect cut after it ran and before it was journaled is run again: at most once more.
    assert max(Counter(world.notes).values()) <= (2 if point == "effect.after" else 1)


def test_ctrl_c_without_a_stop_request_still_lets_the_lease_go(tmp_path: Path) -> None:
    """Python's own Ctrl-C (KeyboardInterrupt, where it lands) right after the lease is taken:
    the lease is in the same try/finally as the run, and is released."""
    db, world = tmp_path / "journal.db", World()
    checkpoint = signal_at("run.lease", signal.SIGINT, 1)
    # Python's own handler, whatever this process inherited: a shell starting it in the
    # background without job control has it ignore SIGINT.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            start(db, world, Options(models=offline("none"), checkpoint=checkpoint))
    finally:
        signal.signal(signal.SIGINT, inherited)
    with Journal.open(db, readonly=True) as journal:
        (run,) = journal.runs()
        assert journal.lease(run.run_id) is None


def test_a_signal_before_the_run_starts_writes_nothing(tmp_path: Path) -> None:
    db, stop = tmp_path / "journal.db", StopRequest()
    stop.ask("SIGTERM")
    with pytest.raises(Interrupted, match="SIGTERM"):
        start(db, World(), Options(models=offline("none"), stop=stop))
    with Journal.open(db, readonly=True) as journal:
        assert journal.runs() == []


def test_a_signal_in_a_backoff_wait_ends_the_wait(tmp_path: Path) -> None:
    """Every answer is overloaded with a retry-after of a minute: the run waits. A stop asked
    for meanwhile (as the signal handler asks, from the main thread or any) ends the wait, and
    the run stops there, a wait being a safe point, without a second attempt."""
    db, world, stop = tmp_path / "journal.db", World(), StopRequest()
    fake = FakeModel(faults=Faults({"529": 1.0}), retry_after=60)
    asked = threading.Event()

    def ask_once_waiting() -> None:
        # Observed progress: the first attempt's failure is journaled, so the run waits.
        while not asked.wait(0.01):
            if _failures(db):
                stop.ask("SIGTERM")
                asked.set()

    watcher = threading.Thread(target=ask_once_waiting)
    watcher.start()
    try:
        outcome = start(
            db, world, Options(models=Models(fake.client, PriceTable.load()), stop=stop)
        )
    finally:
        asked.set()
        watcher.join()
    assert outcome.interrupted is not None and outcome.interrupted.signal == "SIGTERM"
    kinds = kinds_of(db, outcome.run.run_id)
    assert kinds.count("model.requested") == 1 and kinds[-1] == "run.interrupted"


def _failures(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with Journal.open(db, readonly=True) as journal:
            return sum(
                len(list(journal.events(r.run_id, kinds=("model.failed",)))) for r in journal.runs()
            )
    except JournalError:
        return 0  # still being made


# The command line, with real processes and signals sent from outside.


class Stderr:
    """A process's stderr, read line by line in a thread, to wait for a line to appear."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in line for line in self.lines), timeout=timeout
            )
        assert found, f"never said {text!r}: {self.lines}"
        return next(line for line in self.lines if text in line)

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "\n".join(self.lines)


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*journal_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_journal_run_stops_on_a_signal_and_says_how_to_go_on(
    tmp_path: Path, signum: int, code: int
) -> None:
    """`journal run` sent SIGTERM (or Ctrl-C) mid-run: it says it will stop, stops at the next
    safe point, names the run in `journal resume <id>`, exits 128 + the signal's number, and
    lets the lease go; the resume writes every line exactly once (no effect cut half way)."""
    db, out = tmp_path / "journal.db", tmp_path / "lines.out"
    words = [f"w{i:02d}" for i in range(30)]
    (tmp_path / "in.json").write_text(json.dumps({"items": words, "out": str(out), "pause": 0.02}))
    process = spawn(
        "run", str(FIXTURES / "lines.py"), "--input", str(tmp_path / "in.json"), "--db", str(db)
    )
    assert process.stderr is not None
    stderr = Stderr(process.stderr)
    started = stderr.wait_for(" started: lines")
    run_id = started.split()[1]
    _wait_for_lines(out, 3, process)
    process.send_signal(signum)
    process.wait(timeout=60)
    said = stderr.text()
    name = signal.Signals(signum).name
    assert process.returncode == code, said
    assert f"{name}: stopping at the next safe point" in said
    assert f"run {run_id} interrupted by {name}" in said
    assert f"journal resume {run_id} goes on" in said
    assert "RUN" not in said and "Traceback" not in said
    with Journal.open(db, readonly=True) as journal:
        assert journal.lease(run_id) is None
        (last,) = list(journal.events(run_id, kinds=("run.interrupted",)))
        assert last.data["signal"] == name and not last.data["at_once"]
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    lines = [line.split()[0] for line in out.read_text().splitlines()]
    assert Counter(lines) == Counter(f"item-{i}" for i in range(30))


def _wait_for_lines(path: Path, n: int, process: subprocess.Popen[str]) -> None:
    # Observed progress, polled: the lines the run's effects wrote.
    done = threading.Event()
    while not done.wait(0.01):
        assert process.poll() is None, "the run ended before the signal"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return


def test_a_second_sigterm_stops_inside_a_step_at_once(tmp_path: Path) -> None:
    """The step blocks inside its effect (no safe point to reach): the first SIGTERM is
    acknowledged, the second stops the run where it is, journaled, the lease let go, exit
    143; a resume runs the effect again (it was never journaled) and ends done."""
    db, marker, out = tmp_path / "journal.db", tmp_path / "in-effect", tmp_path / "out"
    (tmp_path / "in.json").write_text(json.dumps({"marker": str(marker), "out": str(out)}))
    process = spawn(
        "run", str(PIPELINES / "blocking.py"), "--input", str(tmp_path / "in.json"), "--db", str(db)
    )
    assert process.stderr is not None
    stderr = Stderr(process.stderr)
    run_id = stderr.wait_for(" started: blocking").split()[1]
    done = threading.Event()
    while not marker.exists():
        assert process.poll() is None
        done.wait(0.01)
    process.send_signal(signal.SIGTERM)
    stderr.wait_for("SIGTERM: stopping at the next safe point")
    assert process.poll() is None, "a first signal waits for a safe point"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    said = stderr.text()
    assert process.returncode == 143, said
    assert "SIGTERM again: stopping at once" in said
    assert f"run {run_id} interrupted by SIGTERM" in said
    with Journal.open(db, readonly=True) as journal:
        assert journal.lease(run_id) is None
        (event,) = list(journal.events(run_id, kinds=("run.interrupted",)))
        assert event.data["at_once"] is True and event.step == "wait"
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_text() == "written\n"
