"""`journal fork`: a new run from an old run's state at a seq, the old one untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from conftest import FIXTURES, cli

from runjournal.journal import Journal, state_at

LINES = str(FIXTURES / "lines.py")


def run_rows(db: Path, run_id: str) -> str:
    """A digest of every stored byte of a run's events."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT run_id, seq, at, kind, step, data, hash FROM events WHERE run_id = ? "
            "ORDER BY seq",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def test_a_fork_at_a_mid_run_seq_goes_on_to_done_and_leaves_the_old_run_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "journal.db"
    input_path = tmp_path / "in.json"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    input_path.write_text(json.dumps({"items": words, "out": str(tmp_path / "out")}))
    done = cli("run", LINES, "--input", str(input_path), db=db)
    assert done.returncode == 0, done.stderr
    old = done.stdout.split()[1]
    before = run_rows(db, old)
    with Journal.open(db, readonly=True) as journal:
        mid = state_at(journal, old, 12)
    forked = cli("fork", old, "--at", "12", "--set", "total=1000", db=db)
    assert forked.returncode == 0, forked.stderr
    new = forked.stdout.split()[1]
    assert new != old and f"forked from {old} at seq 12" in forked.stderr
    assert run_rows(db, old) == before
    with Journal.open(db, readonly=True) as journal:
        run = journal.run(new)
        assert (run.status, run.forked_from, run.forked_at) == ("done", old, 12)
        started = next(journal.events(new))
        assert started.data["to_step"] == mid.step
        assert started.data["state"] == {**mid.state, "total": 1000}
        final = state_at(journal, new).state
        assert final["next"] == len(words)
        assert final["total"] == 1000 + sum(len(w) for w in words[mid.state["next"] :])
    assert cli("verify", db=db).returncode == 0


def test_a_fork_that_does_not_fit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    done = cli("run", LINES, "--input", str(FIXTURES / "lines.json"), db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    old = done.stdout.split()[1]
    for args, says in (
        (("--set", "nope=1"), "has no field 'nope'"),
        (("--set", 'total="many"'), "expected an integer"),
        (("--set", "total"), "is not FIELD=JSON"),
        (("--at", "999"), "had ended"),
    ):
        extra = args if "--at" in args else ("--at", "5", *args)
        result = cli("fork", old, *extra, db=db)
        assert result.returncode == 2, (args, result.stderr)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with Journal.open(db, readonly=True) as journal:
        assert len(journal.runs()) == 1


def test_runs_names_a_forks_parent_and_show_its_lineage(tmp_path: Path) -> None:
    """A fork of a fork: `journal runs` names each one's parent and seq; `journal show` gives
    the chain it came from, nearest first, and the runs forked from it."""
    db = tmp_path / "journal.db"
    input_path = tmp_path / "in.json"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    input_path.write_text(json.dumps({"items": words, "out": str(tmp_path / "out")}))
    done = cli("run", LINES, "--input", str(input_path), db=db)
    assert done.returncode == 0, done.stderr
    root = done.stdout.split()[1]
    first = cli("fork", root, "--at", "12", db=db)
    assert first.returncode == 0, first.stderr
    child = first.stdout.split()[1]
    second = cli("fork", child, "--at", "3", db=db)
    assert second.returncode == 0, second.stderr
    grandchild = second.stdout.split()[1]

    header, *lines = cli("runs", db=db).stdout.splitlines()
    at = header.index("forked from")
    parents = {line.split()[0]: line[at:].split("  ")[0] for line in lines}
    assert parents == {
        grandchild: f"{child} at seq 3",
        child: f"{root} at seq 12",
        root: "-",
    }
    shown = cli("show", grandchild, db=db).stdout.splitlines()
    assert f"lineage  forked from {child} at seq 3, which was forked from {root} at seq 12" in shown
    assert not any(line.startswith("forks ") for line in shown)
    assert f"forks    {child} at seq 12" in cli("show", root, db=db).stdout.splitlines()
    middle = json.loads(cli("show", child, "--json", db=db).stdout)
    assert middle["lineage"] == [{"run_id": root, "seq": 12}]
    assert middle["forks"] == [{"run_id": grandchild, "forked_at": 3}]
