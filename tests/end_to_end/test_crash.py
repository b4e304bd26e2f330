"""Crash safety with real processes: `journal run` and `journal resume` killed with SIGKILL.

The fixture machine `fixtures/lines.py` appends a line per item to a file outside the journal,
so the file shows how often each effect really ran.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, cli, journal_command, spawn

from runjournal.journal import Journal, state_at
from runjournal.machine.testing import FakeModel, Faults, serve

LINES = str(FIXTURES / "lines.py")


def write_input(path: Path, out: Path, items: int, pause: float) -> Path:
    words = [f"w{i:03d}" + "x" * (i % 9) for i in range(items)]
    path.write_text(json.dumps({"items": words, "out": str(out), "pause": pause}))
    return path


def final_state(db: Path) -> tuple[str, dict[str, Any]]:
    with Journal.open(db) as journal:
        (run,) = journal.runs()
        assert run.status == "done", run
        state = state_at(journal, run.run_id).state
    del state["out"], state["pause"]  # where the lines go, and how slowly: not the outcome
    return run.run_id, state


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs")]
    except sqlite3.OperationalError:
        return []  # killed while creating the journal's tables
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    """30+ SIGKILLs during a 220-item (440-step) run: the resumed run ends as if never killed."""
    items, pause = 220, 0.02
    reference_db = tmp_path / "reference.db"
    reference_out = tmp_path / "reference.out"
    done = cli(
        "run",
        LINES,
        "--input",
        str(write_input(tmp_path / "ref.json", reference_out, items, 0)),
        db=reference_db,
    )
    assert done.returncode == 0, done.stderr
    _, expected = final_state(reference_db)

    db, out = tmp_path / "journal.db", tmp_path / "lines.out"
    input_path = write_input(tmp_path / "in.json", out, items, pause)
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kills = 0
    while True:
        ids = run_ids(db)
        if ids:
            # --quiet: nobody reads the live log of a process about to be killed, and a full
            # pipe would stall it.
            process = spawn("resume", ids[0], "--quiet", db=db)
        else:
            process = spawn("run", LINES, "--input", str(input_path), "--quiet", db=db)
        if kills < 30:
            # Killed once this process has done something (a line more in the file), at a
            # random moment within the next few effects; never by a clock that a loaded
            # machine can outrun before the process has even started.
            seen = line_count(out)
            deadline = time.monotonic() + 60
            while process.poll() is None and line_count(out) == seen:
                assert time.monotonic() < deadline, f"seed {seed}: no progress in 60 s"
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.1))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                continue
        else:
            process.communicate(timeout=120)  # read as it goes: the live log fills a pipe
        assert process.returncode == 0, (seed, process.stderr.read() if process.stderr else "")
        break
    assert kills >= 30, f"seed {seed}: the run finished after {kills} kills"

    run_id, state = final_state(db)
    assert state == expected, f"seed {seed}"
    conn = sqlite3.connect(db)
    seqs = [
        r[0]
        for r in conn.execute("SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
    ]
    assert seqs == list(range(1, len(seqs) + 1)), f"seed {seed}: seqs have gaps"
    resumes = conn.execute("SELECT resumes FROM runs").fetchone()[0]
    assert resumes >= 10, f"seed {seed}: only {resumes} kills landed inside the run"

    lines = Counter(line.split()[0] for line in out.read_text().splitlines())
    assert set(lines) == {f"item-{i}" for i in range(items)}, f"seed {seed}: a key has no line"
    extra = sum(lines.values()) - items
    # Only an effect in flight when its process died may run again: at most one per kill.
    assert extra <= kills, f"seed {seed}: {extra} extra lines for {kills} kills"


def test_two_resumes_at_once_one_proceeds_the_other_names_the_holder(tmp_path: Path) -> None:
    db, out = tmp_path / "journal.db", tmp_path / "lines.out"
    input_path = write_input(tmp_path / "in.json", out, 60, 0.01)
    first = spawn("run", LINES, "--input", str(input_path), db=db)
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (run_id,) = run_ids(db)

    a = spawn("resume", run_id[:6], db=db)
    b = spawn("resume", run_id[:6], db=db)
    results = {}
    for process in (a, b):
        _, err = process.communicate(timeout=120)
        results[process.pid] = (process.returncode, err)
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 1], results
    winner = next(pid for pid, (code, _) in results.items() if code == 0)
    loser_err = next(err for code, err in results.values() if code == 1)
    assert f"is being executed by pid {winner}" in loser_err
    assert "Traceback" not in loser_err
    assert len([line for line in loser_err.splitlines() if line.strip()]) == 1
    with Journal.open(db) as journal:
        assert journal.run(run_id).status == "done"
        assert journal.run(run_id).resumes == 1


def triage_env(url: str) -> dict[str, str]:
    return {**os.environ, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "test-key"}


def decisions(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT item, outcome FROM decisions ORDER BY seq")]
    finally:
        conn.close()


def scored(db: Path) -> list[tuple[str, int, int, str]]:
    """Each decision's item, the score and threshold it recorded, and its outcome."""
    conn = sqlite3.connect(db)
    try:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT item, json_extract(inputs, '$.score'), json_extract(inputs, '$.threshold'),"
                " outcome FROM decisions ORDER BY seq"
            )
        ]
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_during_triage_neither_pays_twice_nor_pages_twice(tmp_path: Path) -> None:
    """30+ SIGKILLs of the triage pipeline against the fake API on loopback and the pager.

    The fake's request log shows no answered request asked again beyond one per kill (the one
    in flight); every ticket is decided once, in the uninterrupted run's order, each outcome
    following from its own recorded score; exactly one page per ticket decided "page", none
    for the others.

    The outcomes themselves may differ from the uninterrupted run's: the fake draws a fault
    for each time it sees a request, so the request in flight at a kill, asked again, can draw
    a different bad answer and so a different round of asking.
    """
    tickets = str(FIXTURES / "tickets.jsonl")
    triage = str(FIXTURES / "triage.py")
    # Bad answers that JSON outputs still allow: cut at max_tokens (asked again with twice the
    # room) and empty (asked again with the errors), so that kills land between those rounds.
    faults = Faults({"429": 0.05, "529": 0.05, "truncated": 0.04, "empty": 0.04}, seed=11)

    reference = tmp_path / "reference"
    reference.mkdir()
    with serve(FakeModel(faults=faults, retry_after=0.01)) as server:
        done = subprocess.run(
            [*journal_command(), "run", triage, "--input", tickets, "--db", "journal.db"],
            cwd=reference,
            env=triage_env(server.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    expected = decisions(reference / "journal.db")
    assert {"cut off", "empty"} <= rejected(reference / "journal.db")
    expected_pages = {item for item, outcome in expected if outcome == "page"}
    assert 0 < len(expected_pages) < len(expected)

    work, log = tmp_path / "work", tmp_path / "requests.jsonl"
    work.mkdir()
    db = work / "journal.db"
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kills = 0
    # Answers take 150 ms, so that a run lasts long enough to be killed in.
    with serve(FakeModel(faults=faults, retry_after=0.01, latency=0.15), log=log) as server:
        env = triage_env(server.url)
        while True:
            ids = run_ids(db)
            args = ["resume", ids[0]] if ids else ["run", triage, "--input", tickets]
            args.append("--quiet")  # a killed process's live log is read by nobody
            process = subprocess.Popen(
                [*journal_command(), *args, "--db", str(db)],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            if kills >= 30:
                _, err = process.communicate(timeout=180)
                assert process.returncode == 0, (seed, err)
                break
            seen = len(log.read_text().splitlines()) if log.exists() else 0
            if kills % 6 == 0:
                time.sleep(rng.uniform(0, 1.0))  # during start-up or the lease, rebuild, fold
            else:
                # Once this process is asking, at a random moment within the next few calls.
                deadline = time.monotonic() + 30
                while process.poll() is None and time.monotonic() < deadline:
                    if log.exists() and len(log.read_text().splitlines()) > seen:
                        break
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.1))
            if process.poll() is not None:
                assert process.returncode == 0, (
                    seed,
                    process.stderr.read() if process.stderr else "",
                )
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    assert kills >= 30, f"seed {seed}: the run ended after {kills} kills"

    decided = decisions(db)
    assert [item for item, _ in decided] == [item for item, _ in expected], f"seed {seed}"
    for item, score, threshold, outcome in scored(db):
        assert outcome == ("page" if score >= threshold else "skip"), (seed, item)
    pages = {item for item, outcome in decided if outcome == "page"}
    with Journal.open(db) as journal:
        (run,) = journal.runs()
        assert run.status == "done"
        assert run.resumes >= 10, f"seed {seed}: only {run.resumes} kills landed in the run"
        answered = run.model_calls
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    ok = Counter(line["body_hash"] for line in lines if line["status"] == 200)
    repeated = sum(n - 1 for n in ok.values())
    assert repeated <= kills, f"seed {seed}: {repeated} answered requests asked again"
    assert answered == len(ok), f"seed {seed}: the journal holds an answer twice, or lost one"

    outbox = work / "outbox"
    assert {p.stem for p in outbox.glob("T-*.json")} == pages, f"seed {seed}"
    calls = Counter((outbox / "requests.log").read_text().split())
    assert set(calls) == pages, f"seed {seed}"
    assert sum(calls.values()) - len(calls) <= kills, f"seed {seed}: pager called too often"


def rejected(db: Path) -> set[str]:
    """Which kinds of rejection the run journaled: "cut off", "empty", or another error."""
    with Journal.open(db, readonly=True) as journal:
        (run,) = journal.runs()
        errors = [
            e.data["errors"][0] for e in journal.events(run.run_id, kinds=("output.rejected",))
        ]
    return {"cut off" if "cut off" in e else "empty" if "empty" in e else e for e in errors}


RESUME_AT = str(ROOT / "tests" / "pipelines" / "resume_at.py")


def test_a_resume_held_before_the_lease_while_another_finishes_the_run_adds_nothing(
    tmp_path: Path,
) -> None:
    """The race of two resumes, made to happen: one looks at the run (running), is held before
    it takes the lease, and another resume finishes the run meanwhile. The first then finds the
    run done under the lease and writes nothing: no event follows run.done, the run stays done."""
    db, out = tmp_path / "journal.db", tmp_path / "lines.out"
    input_path = write_input(tmp_path / "in.json", out, 20, 0.01)
    first = spawn("run", LINES, "--input", str(input_path), db=db)
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (run_id,) = run_ids(db)

    marker, go = tmp_path / "held", tmp_path / "go"
    held = subprocess.Popen(
        [sys.executable, RESUME_AT, LINES, str(db), run_id, "resume.lease", str(marker), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert held.poll() is None, held.communicate()
        assert time.monotonic() < deadline, "the held resume never reached the lease"
        time.sleep(0.01)
    finished = cli("resume", run_id, db=db)
    assert finished.returncode == 0, finished.stderr
    go.touch()
    said, err = held.communicate(timeout=60)
    assert held.returncode == 0, err
    assert said.strip() == "already done"

    with Journal.open(db) as journal:
        run = journal.run(run_id)
        assert run.status == "done"
        assert run.resumes == 1
        kinds = [e.kind for e in journal.events(run_id)]
        assert kinds[-1] == "run.done" and kinds.count("run.done") == 1
    assert cli("verify", db=db).returncode == 0
    assert cli("resume", run_id, db=db).returncode == 0  # and it stays resumable: done


def test_resume_all_finishes_every_run_a_crash_left_behind(tmp_path: Path) -> None:
    """Five runs SIGKILLed mid-way: `journal runs` flags them, `journal resume --all` (two at
    once) finishes all five, each line of each file written once but at most one per kill."""
    db = tmp_path / "journal.db"
    outs = []
    for n in range(5):
        out = tmp_path / f"lines-{n}.out"
        input_path = write_input(tmp_path / f"in-{n}.json", out, 12, 0.02)
        process = spawn("run", LINES, "--input", str(input_path), "--quiet", db=db)
        deadline = time.monotonic() + 60
        while line_count(out) < 2:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        outs.append(out)
    listed = cli("runs", "--status", "interrupted", "--json", db=db).stdout.splitlines()
    assert len(listed) == 5
    assert all("ready to resume" in json.loads(line)["flags"] for line in listed)
    resumed = cli("resume", "--all", "--workers", "2", db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count(" done: ") == 5
    with Journal.open(db, readonly=True) as journal:
        assert {r.status for r in journal.runs()} == {"done"}
    for out in outs:
        keys = Counter(line.split()[0] for line in out.read_text().splitlines())
        assert set(keys) == {f"item-{i}" for i in range(12)}
        assert sum(keys.values()) - 12 <= 1
    assert cli("resume", "--all", db=db).stdout.strip() == "no run to resume"
