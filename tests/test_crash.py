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
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import FIXTURES, cli, spawn

from journal import Journal, state_at

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
            process = spawn("resume", ids[0], db=db)
        else:
            process = spawn("run", LINES, "--input", str(input_path), db=db)
        try:
            process.wait(timeout=rng.uniform(0.1, 0.5) if kills < 30 else 120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
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
