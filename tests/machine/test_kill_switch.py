"""Tests for the kill switch: limits checked before money is spent, the error-rate breaker,
`journal kill`, budgets across runs, and cost reports that catch a prompt change."""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import FIXTURES, ROOT, cli, journal_command, total_from_events

from runjournal.journal import Heartbeat, Holder, Journal, verify
from runjournal.journal.leases import KillRequest
from runjournal.journal.spending import NUSD
from runjournal.machine import (
    Context,
    Killed,
    Machine,
    Models,
    Options,
    PriceTable,
    Transition,
    runner,
)
from runjournal.machine.kill_switch import Breaker, Guard, Limits
from runjournal.machine.model.pricing import worst_case
from runjournal.machine.testing import FakeModel, Faults
from runjournal.machine.testing.fake import serve

MODEL = "claude-haiku-4-5"
TRIAGE = str(FIXTURES / "triage.py")
TICKETS = FIXTURES / "tickets.jsonl"


@attrs.frozen
class Answer:
    score: int
    reason: str


@attrs.frozen
class Asks:
    total: int = 10
    n: int = 0


def asking(
    limits: Limits | None = None,
    *,
    model: str = MODEL,
    thinking: Any = None,
    max_tokens: int = 400,
) -> Machine[Asks]:
    """Asks a model `total` times, one ask per step."""
    m = Machine(
        "asking",
        state=Asks,
        start="ask",
        limits=limits,
        anomaly_threshold=None,
        model=model,
        max_tokens=max_tokens,
        thinking=thinking,
    )

    @m.step
    def ask(ctx: Context, s: Asks) -> Transition:
        if s.n == s.total:
            return ctx.finish(s)
        ctx.ask(Answer, prompt=f"Score item {s.n}.", key=str(s.n))
        return ctx.goto("ask", attrs.evolve(s, n=s.n + 1))

    return m


@pytest.mark.slow
def test_random_cost_caps_are_never_exceeded(db: Path) -> None:
    """200 runs against a fake that bills the maximum output every time, with timeouts, dropped
    connections, errors and bad answers: none spends, billed and possibly billed, past its cap;
    each stopped run ends `killed` by `max_cost_usd`, before the request that could pass it."""
    seed = int(os.environ.get("LIMITS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # "empty": a bad answer JSON outputs still allow (constrained decoding rules out the rest).
    faults = Faults({"timeout": 0.08, "reset": 0.05, "500": 0.05, "empty": 0.1}, seed=seed)
    fake = FakeModel(max_output=True, faults=faults)
    models = Models(fake.client, PriceTable.load())
    killed = done = 0
    with Journal.open(db, create=True) as journal:
        for _ in range(200):
            # From below one request's worst case (about $0.003) to enough for the whole run.
            cap = Decimal(rng.randint(1, 40_000)) / 1_000_000
            prepared = runner.prepare(asking(Limits(breaker=None)), {"total": rng.randint(1, 12)})
            options = Options(models=models, sleep=lambda s: None, limits={"max_cost_usd": cap})
            run = runner.start(journal, prepared, target="t", code_hash="0", options=options).run
            spent = Decimal(run.total_nusd) / NUSD
            assert spent <= cap, f"seed {seed}: ${spent} spent under a cap of ${cap}"
            assert total_from_events(journal, run.run_id) == spent, f"seed {seed}"
            if run.status == "killed":
                killed += 1
                (event,) = journal.events(run.run_id, kinds=("run.killed",))
                assert event.data["limit_name"] == "max_cost_usd"
                assert Decimal(str(event.data["cap"])) == cap
                assert spent + Decimal(str(event.data["worst_case"])) > cap
            else:
                # Done, or failed for the fake's bad answers and errors: never past the cap.
                done += 1
                assert run.status in ("done", "failed"), (seed, run.status, run.error)
        assert verify(journal) == []
    assert killed >= 50 and done >= 20, f"seed {seed}: {killed} killed, {done} done"


@pytest.mark.parametrize(
    ("model", "thinking", "max_tokens"),
    [("claude-haiku-5-5", "adaptive", 1500), ("claude-haiku-4-5", 1024, 2048)],
)
def test_random_cost_caps_hold_with_thinking_on(
    db: Path, model: str, thinking: Any, max_tokens: int
) -> None:
    """100 runs that think (adaptive, and a manual budget), against a fake that bills all of
    max_tokens as output, thinking included: no run spends past its cap, because the worst case
    of a request counts every token of max_tokens, thinking or not."""
    seed = int(os.environ.get("LIMITS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    fake = FakeModel(max_output=True, faults=Faults({"timeout": 0.05, "500": 0.05}, seed=seed))
    models = Models(fake.client, PriceTable.load())
    # What one request's output can cost: caps from a hundredth of it to ten of them.
    one = PriceTable.load().price(model).output * max_tokens / 1_000_000
    killed = thought = 0
    with Journal.open(db, create=True) as journal:
        for _ in range(100):
            cap = one * rng.randint(1, 1_000) / 100
            m = asking(Limits(breaker=None), model=model, thinking=thinking, max_tokens=max_tokens)
            prepared = runner.prepare(m, {"total": rng.randint(1, 8)})
            options = Options(models=models, sleep=lambda s: None, limits={"max_cost_usd": cap})
            run = runner.start(journal, prepared, target="t", code_hash="0", options=options).run
            spent = Decimal(run.total_nusd) / NUSD
            assert spent <= cap, f"seed {seed}: ${spent} spent under a cap of ${cap}"
            assert total_from_events(journal, run.run_id) == spent, f"seed {seed}"
            killed += run.status == "killed"
            for answer in journal.events(run.run_id, kinds=("model.answered",)):
                assert answer.data["usage"]["output_tokens"] == max_tokens
                thought += answer.data["usage"]["thinking_tokens"] > 0
        assert verify(journal) == []
    assert killed >= 20 and thought >= 20, f"seed {seed}: {killed} killed, {thought} thought"


def test_other_caps_stop_before_what_they_limit(db: Path) -> None:
    """The token, step and call caps are checked before the step or the request."""
    models = Models(FakeModel(max_output=True).client, PriceTable.load())
    cases = {"max_tokens": 5000, "max_steps": 3, "max_model_calls": 4}
    with Journal.open(db, create=True) as journal:
        for limit, cap in cases.items():
            prepared = runner.prepare(asking(), {"total": 20})
            options = Options(models=models, sleep=lambda s: None, limits={limit: cap})
            run = runner.start(journal, prepared, target="t", code_hash="0", options=options).run
            assert run.status == "killed"
            (event,) = journal.events(run.run_id, kinds=("run.killed",))
            assert event.data["limit_name"] == limit and event.data["cap"] == cap
            used = {
                "max_tokens": run.total_tokens,
                "max_steps": run.steps,
                "max_model_calls": run.model_requests,
            }[limit]
            assert used <= cap
            assert json.loads(run.limits or "{}")[limit] == cap


def test_a_limit_raised_on_resume_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    args = ["--input", str(TICKETS), "--fake-model", "none"]
    first = cli("run", TRIAGE, *args, "--max-calls", "5", db=db, cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    assert "killed" in first.stderr and "max_model_calls" in first.stderr
    run_id = first.stderr.split()[1]
    again = cli("resume", run_id, "--fake-model", "none", db=db, cwd=tmp_path)
    assert again.returncode == 3, "the cap given at the start holds for its resumes"
    raised = cli(
        "resume", run_id, "--fake-model", "none", "--max-calls", "500", db=db, cwd=tmp_path
    )
    assert raised.returncode == 0, raised.stderr
    with Journal.open(db, readonly=True) as journal:
        resumes = list(journal.events(run_id, kinds=("run.resumed",)))
        assert resumes[-1].data["limits"]["max_model_calls"] == 500
        assert journal.run(run_id).status == "done"


def test_the_worst_case_bounds_what_a_request_is_billed() -> None:
    """Measured on the fake: billed tokens never pass the worst case, across sizes."""
    table = PriceTable.load()
    price = table.price(MODEL, on=datetime.date.today())
    fake = FakeModel(max_output=True)
    client = fake.client()
    for size in (1, 100, 10_000):
        request = {
            "model": MODEL,
            "max_tokens": 50,
            "system": [
                {"type": "text", "text": "s" * size, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": "é" * size}],
        }
        tokens, usd = worst_case(request, price)
        usage = client.messages.create(**request).usage
        billed = (
            usage.input_tokens
            + usage.output_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        assert billed <= tokens
        assert usd >= (tokens - 50) * price.cache_write_5m / 1_000_000


def triage_env(url: str) -> dict[str, str]:
    return {**os.environ, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "test-key"}


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def answered(fake: FakeModel) -> int:
    return sum(1 for seen in fake.requests if seen.fault is None)


def test_a_storm_trips_the_breaker_and_a_resume_after_it_finishes(tmp_path: Path) -> None:
    """429s from some point on: the run ends killed by the breaker, with its figures; resumed
    once the storm has passed, it finishes, and no answered request is asked again."""
    db = tmp_path / "journal.db"
    fake = FakeModel(retry_after=0.01)
    with serve(fake) as server:
        process = subprocess.Popen(
            [*journal_command(), "run", TRIAGE, "--input", str(TICKETS), "--db", str(db)],
            cwd=tmp_path,
            env=triage_env(server.url),
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: answered(fake) >= 5, "five answers")
        fake.set_faults(Faults({"429": 1.0}))
        _, err = process.communicate(timeout=120)
        assert process.returncode == 3, err
        assert "the breaker opened" in err
        run_id = err.split()[1]
        with Journal.open(db, readonly=True) as journal:
            (event,) = journal.events(run_id, kinds=("run.killed",))
            assert event.data["killed_by"] == "limit" and event.data["limit_name"] == "breaker"
            assert event.data["value"]["in_a_row"] == Breaker().consecutive
            assert journal.run(run_id).model_failures == Breaker().consecutive
        fake.set_faults(Faults({}))
        resumed = subprocess.run(
            [*journal_command(), "resume", run_id, "--db", str(db)],
            cwd=tmp_path,
            env=triage_env(server.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert resumed.returncode == 0, resumed.stderr
    ok = [seen.body_hash for seen in fake.requests if seen.fault is None]
    assert len(ok) == len(set(ok)), "an answered request was asked again"


def kill_and_time(db: Path, run_id: str, process: subprocess.Popen[str]) -> float:
    """`journal kill` from another process; seconds from the kill being recorded (the command
    has returned) until the run's process has exited."""
    killed = cli("kill", run_id, "--reason", "testing the switch", "--by", "tester", db=db)
    assert killed.returncode == 0, killed.stderr
    t0 = time.monotonic()
    process.wait(timeout=30)
    return time.monotonic() - t0


def run_triage(db: Path, tmp_path: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*journal_command(), "run", TRIAGE, "--input", str(TICKETS), "--db", str(db)],
        cwd=tmp_path,
        env=triage_env(url),
        stderr=subprocess.PIPE,
        text=True,
    )


def failed_attempts(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM model_failures").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("where", ["backoff", "request"])
def test_a_kill_stops_a_waiting_run_in_its_wait(tmp_path: Path, where: str) -> None:
    """Killed while it sleeps out a 30 s retry-after, or while a model takes 20 s to answer:
    the run's process stops in the wait, not after it, the run is `killed` by the person who asked,
    with their reason; and `journal resume` goes on."""
    db = tmp_path / "journal.db"
    if where == "backoff":
        fake = FakeModel(faults=Faults({"429": 1.0}), retry_after=30)
    else:
        fake = FakeModel(latency=20)
    with serve(fake) as server:
        process = run_triage(db, tmp_path, server.url)
        if where == "backoff":
            wait_for(lambda: failed_attempts(db) >= 1, "a 429 recorded, and the wait begun")
        else:
            wait_for(lambda: fake.in_flight >= 1, "a request in flight")
        (run_id,) = [
            json.loads(line)["run_id"] for line in cli("runs", "--json", db=db).stdout.splitlines()
        ]
        seconds = kill_and_time(db, run_id, process)
        err = process.stderr.read() if process.stderr else ""
        assert process.returncode == 3, err
        # Stopped in the wait, not after it: a generous fraction of the shortest wait (20 s),
        # so that a loaded machine cannot make the test fail; the kill polls every second.
        assert seconds < 20 / 4, f"the run took {seconds:.2f} s to stop"
        with Journal.open(db, readonly=True) as journal:
            run = journal.run(run_id)
            assert run.status == "killed"
            (event,) = journal.events(run_id, kinds=("run.killed",))
            assert event.data["killed_by"] == "person" and event.data["who"] == "tester"
            assert event.data["reason"] == "testing the switch"
            if where == "request":
                failures = list(journal.events(run_id, kinds=("model.failed",)))
                assert failures[-1].data["error_type"] == "abandoned"
                assert run.possibly_billed_usd > 0
        kills = json.loads(cli("sql", "select killed_by, who from kills", "--json", db=db).stdout)
        assert kills == {"killed_by": "person", "who": "tester"}
        fake.set_faults(Faults({}))
        fake.latency = 0.0
        resumed = subprocess.run(
            [*journal_command(), "resume", run_id, "--db", str(db)],
            cwd=tmp_path,
            env=triage_env(server.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert resumed.returncode == 0, resumed.stderr
    print(f"\n{where}: stopped {seconds:.2f} s after `journal kill` began")


def test_a_kill_of_a_run_no_process_executes_is_at_once(tmp_path: Path) -> None:
    """A run whose process died is killed at once by `journal kill`; killed, it cannot be
    killed again, and `journal resume` still goes on from where it was."""
    db, out = tmp_path / "journal.db", tmp_path / "lines.out"
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["a"] * 30, "out": str(out), "pause": 0.02}))
    process = subprocess.Popen(
        [
            *journal_command(),
            "run",
            str(FIXTURES / "lines.py"),
            "--input",
            str(input_path),
            "--db",
            str(db),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(out.exists, "a line written")
    process.kill()
    process.wait()
    (run_id,) = [
        json.loads(line)["run_id"] for line in cli("runs", "--json", db=db).stdout.splitlines()
    ]
    killed = cli("kill", run_id, "--by", "ops", "--reason", "not today", db=db)
    assert killed.returncode == 0 and "no process was executing it" in killed.stdout
    again = cli("kill", run_id, db=db)
    assert again.returncode == 2 and "killed already" in again.stderr
    shown = json.loads(cli("show", run_id, "--json", db=db).stdout)
    assert shown["status"] == "killed" and "not today" in shown["error"]
    assert cli("resume", run_id, db=db).returncode == 0
    assert len(out.read_text().splitlines()) >= 30


WORKER = str(ROOT / "tests" / "pipelines" / "budget_worker.py")


@pytest.mark.slow
def test_processes_sharing_a_journal_never_pass_its_daily_budget(tmp_path: Path) -> None:
    """8 processes run the same machine against one journal with a per-day budget, 20 times
    over: what they spent and may have spent together never passes it, and nearly reaches it."""
    trials = []
    rng = random.Random(7)
    for n in range(20):
        db = tmp_path / f"trial-{n}.db"
        cents = rng.randint(1, 8)
        with Journal.open(db, create=True) as journal:
            journal.set_budget(
                "budgeted", per_day_nusd=cents * NUSD // 100, per_run_nusd=None, by="t"
            )
        trials.append((db, cents))
    paths = [str(db) for db, _ in trials]
    workers = [
        subprocess.Popen([sys.executable, WORKER, *paths], stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    for db, cents in trials:
        with Journal.open(db, readonly=True) as journal:
            (budget,) = journal.budgets()
            spent = Decimal(budget.spent_today_nusd) / NUSD
            assert spent <= Decimal(cents) / 100, f"{db.name}: ${spent} of {cents} cents"
            assert spent > Decimal(cents) / 100 - Decimal("0.01"), f"{db.name}: only ${spent}"
            runs = journal.runs()
            assert {r.status for r in runs} == {"killed"}
            assert verify(journal) == []


@pytest.mark.slow
def test_a_prompt_three_times_longer_shows_by_version_and_as_an_anomaly(tmp_path: Path) -> None:
    """Three runs of the triage pipeline, then one of a copy whose system prompt is three times
    longer: `journal cost --by version` shows the input tokens per step tripled, and the new
    version's first run records a `cost.anomaly`, says so, and is flagged by `journal runs`."""
    db = tmp_path / "journal.db"
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text("".join(TICKETS.read_text().splitlines(keepends=True)[:8]))
    for _ in range(3):
        done = cli(
            "run", TRIAGE, "--input", str(tickets), "--fake-model", "none", db=db, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
    longer = tmp_path / "triage_v2.py"
    source = (FIXTURES / "triage.py").read_text()
    longer.write_text(source.replace('PROMPT = """\\\n', 'PROMPT = 3 * """\\\n', 1))
    shutil.copy(FIXTURES / "pager.py", tmp_path / "pager.py")
    assert longer.read_text() != source
    new = cli(
        "run", str(longer), "--input", str(tickets), "--fake-model", "none", db=db, cwd=tmp_path
    )
    assert new.returncode == 0, new.stderr
    assert "warning:" in new.stderr and "input tokens per step" in new.stderr
    versions = [
        json.loads(line)
        for line in cli("cost", "--by", "version", "--json", db=db).stdout.splitlines()
    ]
    assert len(versions) == 2
    old, new_version = versions
    # The tickets and the tool are the same, the system prompt thrice as long: all input per
    # step more than doubles (it would triple if the system prompt were all of it).
    ratio = new_version["input_tokens_per_step"] / old["input_tokens_per_step"]
    assert 2 < ratio < 3, versions
    anomalies = json.loads(
        cli("sql", "select metric, ratio from anomalies", "--json", db=db).stdout
    )
    assert anomalies["metric"] == "input_tokens_per_step" and anomalies["ratio"] > 2
    listed = cli("runs", db=db).stdout.splitlines()
    assert "cost.anomaly" in listed[1] and all("cost.anomaly" not in line for line in listed[2:])


def test_costs_sum_exactly() -> None:
    """Nano-dollar integers: the total of many calls is the exact decimal, not a float's."""
    from runjournal.journal.projection import nusd

    costs = [0.00123485, 0.0000011, 0.01235385, 0.3]
    assert sum(nusd(c) for c in costs) == 313589800
    assert Decimal(sum(nusd(c) for c in costs)) / NUSD == Decimal("0.3135898")


def test_an_error_a_kill_caused_is_reported_as_the_kill(journal: Journal) -> None:
    """A kill closes the model client under the requests in flight, which then fail with a
    connection error, maybe before their thread looks at the kill again: that error is the
    kill's (Killed, the request abandoned), not a failure to retry."""
    heartbeat = Heartbeat(journal, "r", Holder.this_process(), 30)
    guard = Guard(Limits(), heartbeat)

    def request_cut_by_the_kill() -> None:
        heartbeat.kill = KillRequest("r", "2026-12-05T00:00:00Z", "ana", "wrong prompt")
        raise ConnectionError("the client was closed")

    with pytest.raises(Killed, match="killed by ana: wrong prompt"):
        guard.call(request_cut_by_the_kill)
    heartbeat.kill = None
    with pytest.raises(ConnectionError):  # with no kill, the error is the request's own
        guard.call(_fails)


def _fails() -> None:
    raise ConnectionError("reset by peer")
