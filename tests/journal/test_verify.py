"""Tests for `journal.verify` and `journal verify`: derived tables checked against the events."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import attrs
import pytest
from conftest import FIXTURES, cli, damage_pages, digest

from runjournal.journal import Holder, Journal, RunIsDone, RunWriter, kinds, verify
from runjournal.machine import Context, Machine, Options, Transition, runner


@attrs.frozen
class Count:
    n: int = 0


def busy_run(journal: Journal) -> str:
    """A run with effects, decisions, actions and snapshots."""
    m = Machine("busy", state=Count, start="go", snapshot_every=5)

    @m.step
    def go(ctx: Context, s: Count) -> Transition:
        if s.n == 30:
            return ctx.finish(s)
        ctx.effect("tick", lambda: s.n)
        ctx.decide(item=s.n, outcome="even" if s.n % 2 == 0 else "odd")
        if s.n % 10 == 0:
            ctx.act("ping", f"P-{s.n}", lambda key: key, idempotent=True)
        return ctx.goto("go", Count(s.n + 1))

    options = Options(sleep=lambda seconds: None)
    outcome = runner.start(
        journal, runner.prepare(m, {}), target="t", code_hash="0", options=options
    )
    return outcome.run.run_id


def tamper(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_a_sound_journal_has_no_problems(journal: Journal) -> None:
    run_id = busy_run(journal)
    assert (
        journal.conn.execute("SELECT count(*) FROM events WHERE kind = 'snapshot'").fetchone()[0]
        > 0
    )
    assert verify(journal) == []
    assert journal.run(run_id).status == "done"


@pytest.mark.parametrize(
    ("statements", "says"),
    [
        (("UPDATE runs SET steps = 99",), "steps=99 where the events give 31"),
        (("DELETE FROM action_keys WHERE key = 'P-10'",), "nothing where the events give a row"),
        (("DELETE FROM events WHERE seq = 7",), "seqs are not 1.."),
        (
            (
                "UPDATE events SET data = json_set(data, '$.state.n', 1000) "
                "WHERE kind = 'snapshot' "
                "AND seq = (SELECT max(seq) FROM events WHERE kind = 'snapshot')",
            ),
            "differs from the fold before it",
        ),
    ],
)
def test_damage_is_found_and_named(db: Path, statements: tuple[str, ...], says: str) -> None:
    with Journal.open(db, create=True) as journal:
        run_id = busy_run(journal)
    tamper(db, *statements)
    with Journal.open(db) as journal:
        problems = verify(journal)
    assert problems, "the damage went unseen"
    assert any(says in p.what for p in problems), problems
    assert all(p.run_id in (run_id, None) for p in problems)


def test_verify_changes_nothing_and_the_command_exits_by_result(db: Path) -> None:
    with Journal.open(db, create=True) as journal:
        busy_run(journal)
    before = digest(db)
    ok = cli("verify", db=db)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 run, ")
    assert digest(db) == before
    tamper(db, "UPDATE runs SET cost_nusd = 1500000000")
    bad = cli("verify", db=db)
    assert bad.returncode == 1
    assert "cost_nusd=1500000000 where the events give 0" in bad.stdout
    assert "1 problem in" in bad.stderr


def first_seq(db: Path, kind: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(
            conn.execute("SELECT min(seq) FROM events WHERE kind = ?", (kind,)).fetchone()[0]
        )
    finally:
        conn.close()


# Each tampering, as someone with sqlite3 and the triggers dropped would do it, and the seq at
# which the chain must be found broken (None: found by the blob check, at the run.started seq).
TAMPERING = {
    "an edited decision": (
        "UPDATE events SET data = json_set(data, '$.outcome', 'odd') WHERE seq = {decision}",
        "decision",
    ),
    "an edited transition delta": (
        "UPDATE events SET data = json_set(data, '$.delta[0].value', 999) WHERE seq = {transition}",
        "transition",
    ),
    "an edited run.started state": (
        "UPDATE events SET data = json_set(data, '$.state.n', 5) WHERE seq = 1",
        "run.started",
    ),
    "two events' seqs swapped": (
        "UPDATE events SET seq = -1 WHERE seq = {decision};"
        "UPDATE events SET seq = {decision} WHERE seq = {decision} + 1;"
        "UPDATE events SET seq = {decision} + 1 WHERE seq = -1",
        "decision",
    ),
    "an edited time": (
        "UPDATE events SET at = '2020-01-01T00:00:00.000Z' WHERE seq = {transition}",
        "transition",
    ),
    "an edited step": ("UPDATE events SET step = 'other' WHERE seq = {decision}", "decision"),
    "an edited blob": ("UPDATE blobs SET data = '{{\"n\": 1}}'", "run.started"),
    "a deleted blob": ("DELETE FROM blobs", "run.started"),
}


@pytest.mark.parametrize("rebuilt", [False, True], ids=["as_edited", "projections_rebuilt"])
@pytest.mark.parametrize("case", list(TAMPERING))
def test_every_tampering_is_found_and_named_by_run_and_seq(
    db: Path, case: str, rebuilt: bool
) -> None:
    """An edit, a swap or a deletion is named by run and seq, even after the projections are
    rebuilt from the edited events (which makes the derived tables agree with them again)."""
    with Journal.open(db, create=True) as journal:
        run_id = busy_run(journal)
    statements, kind = TAMPERING[case]
    seqs = {"decision": first_seq(db, "decision"), "transition": first_seq(db, "transition")}
    expected_seq = 1 if kind == "run.started" else seqs[kind]
    tamper(db, *statements.format(**seqs).split(";"))
    if rebuilt:
        with Journal.open(db) as journal:
            journal.rebuild_runs()
    with Journal.open(db) as journal:
        problems = verify(journal)
        assert problems, f"{case} went unseen"
        assert problems[0].run_id == run_id
        assert problems[0].seq == expected_seq, problems
        assert verify(journal, run_id)[0] == problems[0]
    shown = cli("verify", db=db)
    assert shown.returncode == 1
    assert shown.stdout.split()[:2] == [run_id, str(expected_seq)], shown.stdout


def test_the_chain_of_a_sound_run_verifies_and_its_head_is_printed(db: Path) -> None:
    with Journal.open(db, create=True) as journal:
        run_id = busy_run(journal)
        last = journal.run(run_id).last_seq
    report = json.loads(cli("verify", "--json", db=db).stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["runs"][run_id]["last_seq"] == last
    assert len(report["runs"][run_id]["hash"]) == 64


def test_one_run_is_verified_alone(db: Path) -> None:
    """`verify RUN` reports that run's damage only."""
    with Journal.open(db, create=True) as journal:
        first, second = busy_run(journal), busy_run(journal)
    tamper(db, f"UPDATE events SET step = 'x' WHERE run_id = '{first}' AND seq = 3")
    assert cli("verify", second, db=db).returncode == 0
    bad = cli("verify", first[:6], db=db)
    assert bad.returncode == 1 and first in bad.stdout


def test_an_event_after_done_is_refused_by_the_append_path_and_the_trigger(db: Path) -> None:
    """`done` is final: neither runjournal's writer nor plain SQL can add to a done run."""
    with Journal.open(db, create=True) as journal:
        run_id = busy_run(journal)
        last = journal.run(run_id).last_seq
        writer = RunWriter(journal, run_id, last_seq=last)
        resumed = kinds.RunResumed(
            status_before="done", code_hash_before="0", code_hash="0", target="t", from_seq=1
        )
        with pytest.raises(RunIsDone, match="is done"):
            writer.commit("go", resumed)
        with pytest.raises(RunIsDone):
            journal.acquire_lease(run_id, Holder.this_process(), 30)
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match=r"no event may follow run\.done"):
        conn.execute(
            "INSERT INTO events (run_id, seq, at, kind, step, data) VALUES (?, ?, '', 'x', NULL, "
            "'{}')",
            (run_id, last + 1),
        )
    conn.close()
    with Journal.open(db) as journal:
        assert verify(journal) == []


def killed_run(folder: Path) -> tuple[Path, str]:
    """A journal holding one run of the lines pipeline stopped by --max-steps (resumable), with
    enough in it that damaged pages can be in the middle of its events; and the run's id."""
    db = folder / "journal.db"
    input_path = folder / "in.json"
    items = [f"item-{i}-" + "x" * 200 for i in range(60)]
    input_path.write_text(json.dumps({"items": items, "out": str(folder / "out.txt")}))
    stopped = cli(
        "run", str(FIXTURES / "lines.py"), "--input", str(input_path), "--max-steps", "90", db=db
    )
    assert stopped.returncode == 3, stopped.stderr
    return db, stopped.stderr.split()[1]


# Damage as verify's tests do it, each as a function of the journal and the damaged run's id.
DAMAGE = {
    "an edited event the resume reads": lambda db, run: tamper(
        db,
        "UPDATE events SET data = json_set(data, '$.result', 'forged') WHERE seq = "
        f"(SELECT max(seq) FROM events WHERE run_id = '{run}' AND kind = 'effect.done')",
    ),
    "an edited event before the fork": lambda db, run: tamper(
        db, f"UPDATE events SET step = 'other' WHERE run_id = '{run}' AND seq = 3"
    ),
    "a deleted event": lambda db, run: tamper(
        db, f"DELETE FROM events WHERE run_id = '{run}' AND seq = 4"
    ),
    "a deleted blob": lambda db, run: tamper(db, "DELETE FROM blobs"),
    "damaged pages": lambda db, run: damage_pages(db),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_writing_commands_refuse_a_damaged_journal(tmp_path: Path, case: str) -> None:
    """fork, migrate and resume each exit 7 naming `journal verify`, and write nothing: no
    run is added, the damaged one is not taken up, and the file's bytes stay as they were."""
    db, run_id = killed_run(tmp_path)
    last = first_seq(db, "run.killed") - 1  # the fork reads every event up to it
    DAMAGE[case](db, run_id)
    before = db.read_bytes()
    for args in (("fork", run_id, "--at", str(last)), ("migrate",), ("resume", run_id)):
        result = cli(*args, db=db)
        assert result.returncode == 7, (args, result.returncode, result.stdout, result.stderr)
        assert "journal verify" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "up to date" not in result.stdout
        assert db.read_bytes() == before, args
