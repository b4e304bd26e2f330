"""Workers on a PostgreSQL journal, as real processes: `journal submit`, `journal worker`,
SIGTERM handing runs back, SIGKILLed workers' runs taken over, kills carried across processes
within a second of the notification, and a budget shared by processes on many connections."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import FIXTURES, ROOT, journal_command

from runjournal.journal import open_store
from runjournal.journal.postgres.connection import ServerClock
from runjournal.journal.spending import NUSD
from runjournal.machine import api, loader, runner
from runjournal.machine.testing import FakeModel, Faults, serve

LINES = str(FIXTURES / "lines.py")
TRIAGE = str(FIXTURES / "triage.py")


def journal(url: str, *args: str, **how: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*journal_command(), *args, "--db", url], capture_output=True, text=True, timeout=120, **how
    )


def start_worker(
    url: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*journal_command(), "worker", *args, "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def lines_input(path: Path, out: Path, items: int, pause: float) -> str:
    path.write_text(
        json.dumps({"items": [f"w{i}" for i in range(items)], "out": str(out), "pause": pause})
    )
    return str(path)


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def url(postgres_cluster: Any) -> str:
    """A database of the test's own."""
    return str(postgres_cluster.create_database())


def test_submitted_runs_are_executed_by_workers_once_each(url: str, tmp_path: Path) -> None:
    """Six runs submitted, two workers of two each: every run done once, by one process; a
    second submit with a key records nothing; bad input records nothing."""
    ids = []
    for n in range(6):
        submitted = journal(
            url,
            "submit",
            LINES,
            "--input",
            lines_input(tmp_path / f"{n}.json", tmp_path / f"{n}.out", 5, 0),
            "--key",
            f"k{n}",
        )
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.stdout.strip())
    again = journal(url, "submit", LINES, "--input", str(tmp_path / "0.json"), "--key", "k0")
    assert again.stdout.strip() == ids[0] and "belongs to run" in again.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused = journal(url, "submit", LINES, "--input", str(bad))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    with open_store(url, readonly=True) as store:
        assert {r.status for r in store.runs()} == {"submitted"} and len(store.runs()) == 6
    workers = [start_worker(url, "--concurrency", "2", "--exit-when-idle") for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    told = [line for out, _ in outputs for line in out.splitlines()]
    assert sorted(line.split()[1] for line in told) == sorted(ids)
    with open_store(url, readonly=True) as store:
        assert {r.status for r in store.runs()} == {"done"}
        for run_id in ids:
            resumed = list(store.events(run_id, kinds=["run.resumed"]))
            assert len(resumed) == 1 and resumed[0].data["status_before"] == "submitted"
            assert resumed[0].data["host"] and resumed[0].data["pid"]
        assert store.verify() == []
    for n in range(6):
        assert lines_in(tmp_path / f"{n}.out") == 5


def test_sigterm_hands_a_run_back_for_another_worker(url: str, tmp_path: Path) -> None:
    out = tmp_path / "lines.out"
    run_id = journal(
        url, "submit", LINES, "--input", lines_input(tmp_path / "in.json", out, 300, 0.01)
    ).stdout.strip()
    first = start_worker(url)
    wait_for(lambda: lines_in(out) > 5, "the first worker's progress")
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    with open_store(url, readonly=True) as store:
        assert store.lease(run_id) is None  # let go at the safe point
        assert [e.kind for e in store.events(run_id, kinds=["run.interrupted"])]
    second = start_worker(url, "--exit-when-idle")
    told, err = second.communicate(timeout=120)
    assert second.returncode == 0 and f"run {run_id} done" in told, err
    written = [line.split()[0] for line in out.read_text().splitlines()]
    assert written == [f"item-{n}" for n in range(300)]  # each item once, in order


def kill_latency(url: str, tmp_path: Path, *worker_args: str) -> float:
    """Seconds from a kill request's commit to the run's `run.killed`, with a worker executing
    it in another process."""
    out = tmp_path / f"lines{len(worker_args)}.out"
    run_id = journal(
        url,
        "submit",
        LINES,
        "--input",
        lines_input(tmp_path / f"in{len(worker_args)}.json", out, 5000, 0.005),
    ).stdout.strip()
    process = start_worker(url, *worker_args)
    try:
        wait_for(lambda: lines_in(out) > 20, "the worker's progress")
        with open_store(url) as store:
            store.request_kill(run_id, by="test", reason="latency")
            asked = time.monotonic()
            wait_for(lambda: store.run(run_id).status == "killed", "the kill", timeout=30)
            return time.monotonic() - asked
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_a_kill_reaches_another_process_within_a_second_of_its_notification(
    url: str, tmp_path: Path
) -> None:
    """Listening, the worker looks for kills only once a heartbeat (10 s, a lease of 30 s):
    the run is killed within 1 s all the same, by the notification. With LISTEN off and a 3 s
    lease, the kill lands within one heartbeat (1 s), by the heartbeat's own look."""
    notified = kill_latency(url, tmp_path, "--lease", "30")
    polled = kill_latency(url, tmp_path, "--lease", "3", "--no-listen")
    print(f"kill latency: notified {notified * 1000:.0f} ms, polled {polled * 1000:.0f} ms")
    assert notified < 1.0
    assert polled < 1.0 + 0.5  # one heartbeat, and the way to the run's next safe point


def test_the_server_clock_corrects_a_skewed_host(url: str) -> None:
    """A host whose clock is an hour fast stamps events and judges leases by the server's."""
    with psycopg.connect(url) as conn:

        def server() -> float:
            row = conn.execute("select extract(epoch from clock_timestamp())").fetchone()
            assert row is not None
            return float(row[0])

        clock = ServerClock(server, local=lambda: time.time() + 3600)
        assert abs(clock() - server()) < 1.0
        with open_store(url, create=True) as store:
            assert abs(store.clock() - server()) < 1.0


def ticket_inputs(folder: Path, runs: int, tickets: int, first: int = 0) -> list[Path]:
    """`runs` inputs of `tickets` tickets each, numbered from `first`, every ticket's id its
    own (so every page key is one run's)."""
    source = (FIXTURES / "tickets.jsonl").read_text().splitlines()[:tickets]
    made = []
    for n in range(first, first + runs):
        path = folder / f"tickets-{n:02d}.jsonl"
        rows = [json.loads(line) for line in source]
        for row in rows:
            row["id"] = f"R{n:02d}-{row['id']}"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        made.append(path)
    return made


TICKETS = 15
"""Tickets in each of the crash test's runs: work enough for every signal to land in it."""


def finished(url: str) -> bool:
    with open_store(url, readonly=True) as store:
        return all(r.status == "done" for r in store.runs())


def unfinished(url: str) -> int:
    with open_store(url, readonly=True) as store:
        return sum(r.status != "done" for r in store.runs())


def standing(url: str, workers: list[subprocess.Popen[str]]) -> str:
    """The runs not done and the workers that ended, for a message that says why nothing moves."""
    with open_store(url, readonly=True) as store:
        runs = [
            f"{r.run_id} {r.status} {r.error or ''}" for r in store.runs() if r.status != "done"
        ]
    ended = [(w.returncode, w.communicate()[1][-2000:]) for w in workers if w.poll() is not None]
    return f"runs not done: {runs}; workers ended: {ended}"


@pytest.mark.slow
def test_workers_killed_and_stopped_at_random_leave_every_run_done_once(
    url: str, tmp_path: Path
) -> None:
    """3 workers over 30 submitted triage runs (and more whenever fewer than 12 are left, so
    that every signal lands while runs remain) against a fake API with faults; a worker
    SIGKILLed (and started again) 50 times and SIGTERMed 20 times, at random, each once the
    fake has seen a request since the last: every run ends done, every ticket decided once,
    every page key paged by one action, no answered request asked again beyond one per kill,
    and the journal verifies."""
    # Transport faults only: an answer rejected three times in a row (cut off, empty) fails
    # its run, as it should, and over 50 runs of 15 tickets that happened one time in five.
    # Rejections under kills are the SQLite crash tests' (tests/end_to_end/test_crash.py).
    faults = Faults({"429": 0.05, "529": 0.05}, seed=5)
    log = tmp_path / "requests.jsonl"
    work = tmp_path / "work"
    work.mkdir()
    target = loader.load(TRIAGE)
    submitted = 0

    def submit(runs: int) -> None:
        # Submitted in this process (`journal submit` is tested above): 30 starts of the
        # command would cost the suite more than the rest of the test.
        nonlocal submitted
        with open_store(url, create=True) as store:
            for path in ticket_inputs(tmp_path, runs, TICKETS, first=submitted):
                prepared = api.prepare(target.machine, path)
                runner.submit(store, prepared, target=target.location, code_hash=target.code_hash)
        submitted += runs

    submit(30)
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    signals = [signal.SIGKILL] * 50 + [signal.SIGTERM] * 20
    rng.shuffle(signals)
    args = ("--concurrency", "2", "--lease", "2")
    with serve(FakeModel(faults=faults, retry_after=0.01, latency=0.05), log=log) as server:
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "test-key"}

        def requests() -> int:
            return lines_in(log)

        workers = [start_worker(url, *args, env=env, cwd=work) for _ in range(3)]
        try:
            for sent, sig in enumerate(signals):
                left = unfinished(url)
                if left < 12:
                    # Work for every signal to land in, however slowly a loaded machine
                    # restarts workers: never fewer than 12 runs to do before one is sent.
                    submit(12 - left)
                seen = requests()
                try:
                    wait_for(lambda seen=seen: requests() > seen, "a request", 60)
                except AssertionError as e:
                    raise AssertionError(
                        f"seed {seed}, signal {sent}: {standing(url, workers)}"
                    ) from e
                time.sleep(rng.uniform(0, 0.05))
                n = rng.randrange(len(workers))
                workers[n].send_signal(sig)
                _, err = workers[n].communicate(timeout=60)
                # -15: a worker signalled as it started, before it took the signals (or any
                # run); 0: one that found nothing left to do.
                expected = (-9,) if sig == signal.SIGKILL else (143, -15)
                assert workers[n].returncode in (*expected, 0), (seed, sent, err)
                workers[n] = start_worker(url, *args, env=env, cwd=work)
            try:
                wait_for(lambda: finished(url), "every run done", timeout=240)
            except AssertionError as e:
                raise AssertionError(f"seed {seed}: {standing(url, workers)}") from e
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.communicate(timeout=60)
    kills = signals[: sent + 1].count(signal.SIGKILL)
    with psycopg.connect(url) as conn:
        decided = conn.execute(
            "select run_id, item, count(*) from decisions group by 1, 2"
        ).fetchall()
        pages = conn.execute(
            "select data ->> 'key', count(*) from events where kind = 'action.done' group by 1"
        ).fetchall()
        page_decisions = conn.execute(
            "select count(*) from decisions where outcome = 'page'"
        ).fetchone()
        answered = conn.execute("select sum(model_calls) from runs").fetchone()
    assert len(decided) == submitted * TICKETS and {n for _, _, n in decided} == {1}, seed
    assert pages and {n for _, n in pages} == {1}, seed
    assert page_decisions is not None and len(pages) == page_decisions[0], seed
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    ok = Counter(line["body_hash"] for line in lines if line["status"] == 200)
    assert sum(n - 1 for n in ok.values()) <= kills, f"seed {seed}: answers asked again"
    assert answered is not None and answered[0] == len(ok), seed
    outbox = work / "outbox"
    assert {p.stem for p in outbox.glob("R*.json")} == {key for key, _ in pages}, seed
    with open_store(url, readonly=True) as store:
        assert store.verify() == [], seed


WORKER = str(ROOT / "tests" / "pipelines" / "budget_worker.py")


@pytest.mark.slow
def test_eight_processes_on_two_connections_each_never_pass_a_daily_budget(
    postgres_cluster: Any,
) -> None:
    """8 processes, each running the machine on 2 connections at once, against one journal
    with a per-day budget, 20 times over: what they spent and may have spent together never
    passes it, and nearly reaches it."""
    rng = random.Random(7)
    trials = []
    for _ in range(20):
        db = str(postgres_cluster.create_database())
        cents = Decimal(rng.randint(1, 8)) / 10  # a tenth of a cent to 0.8: a few dozen asks
        with open_store(db, create=True) as store:
            store.set_budget(
                "budgeted", per_day_nusd=int(cents * NUSD / 100), per_run_nusd=None, by="t"
            )
        trials.append((db, cents))
    urls = [db for db, _ in trials]
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, "--connections", "2", *urls], stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    for db, cents in trials:
        with open_store(db, readonly=True) as store:
            (budget,) = store.budgets()
            spent = Decimal(budget.spent_today_nusd) / NUSD
            assert spent <= Decimal(cents) / 100, f"{db}: ${spent} of {cents} cents"
            # Refused only when the next ask's worst case would pass it: no further off than that.
            worst = max(
                (
                    Decimal(str(e.data["worst_case_usd"]))
                    for r in store.runs()
                    for e in store.events(r.run_id, kinds=["model.requested"])
                ),
                default=Decimal(cents) / 100,  # not one ask: the first's worst case passed it
            )
            assert spent > Decimal(cents) / 100 - worst or spent == 0, f"{db}: only ${spent}"
            assert len(store.runs()) == 16 and {r.status for r in store.runs()} == {"killed"}
            assert store.verify() == []
