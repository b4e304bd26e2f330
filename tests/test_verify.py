"""Tests for `journal.verify` and `journal verify`: derived tables checked against the events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest
from conftest import cli, digest

import machine
from journal import Journal, verify
from machine import Context, Machine, Options, Transition


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
    outcome = machine.start(
        journal, machine.prepare(m, {}), target="t", code_hash="0", options=options
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
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 runs")
    assert digest(db) == before
    tamper(db, "UPDATE runs SET cost_usd = 1.5")
    bad = cli("verify", db=db)
    assert bad.returncode == 1
    assert "cost_usd=1.5 where the events give 0.0" in bad.stdout
    assert "1 problem in" in bad.stderr
