"""The README's triage over 1,000 tickets, asked one by one and as one Message Batch: the same
requests, so the same answers and decisions, and the batch's bill exactly half, to the
nano-dollar, from the journal."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from runjournal import Options
from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine import loader, runner
from runjournal.machine.offline import offline


def thousand_tickets() -> list[dict[str, Any]]:
    given = [json.loads(line) for line in (FIXTURES / "tickets.jsonl").read_text().splitlines()]
    tickets = []
    for n in range(1000):
        ticket = dict(given[n % len(given)])
        ticket["id"] = f"T-{5000 + n}"  # a new ticket: a new prompt, a new answer
        tickets.append(ticket)
    return tickets


def execute(db: Path, target: str, tickets: list[dict[str, Any]]) -> str:
    """Run `target` over `tickets` offline, its pages in ./outbox; the run's id."""
    loaded = loader.load(str(FIXTURES / target))
    prepared = runner.prepare(loaded.machine, tickets)
    options = Options(
        models=offline("none"),
        sleep=lambda s: None,
        limits={"max_model_calls": 5000, "max_cost_usd": "10"},
    )
    with Journal.open(db, create=True) as journal:
        outcome = runner.start(
            journal, prepared, target=loaded.location, code_hash=loaded.code_hash, options=options
        )
        assert outcome.run.status == "done", outcome.run.error
        return outcome.run.run_id


@pytest.mark.slow
def test_a_thousand_tickets_as_a_batch_cost_half_for_the_same_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tickets = thousand_tickets()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    one_by_one = execute(tmp_path / "a.db", "triage.py", tickets)
    monkeypatch.chdir(tmp_path / "b")
    batched = execute(tmp_path / "b.db", "triage_batch.py", tickets)
    bills, decided = [], []
    for db, run_id in ((tmp_path / "a.db", one_by_one), (tmp_path / "b.db", batched)):
        with Journal.open(db, readonly=True) as journal:
            run = journal.run(run_id)
            assert run.model_calls == 1000 and run.total_nusd == run.cost_nusd  # nothing in doubt
            bills.append(Decimal(run.cost_nusd) / 10**9)
            decided.append(
                sorted(
                    (e.data["item"], e.data["outcome"], e.data["inputs"]["score"])
                    for e in journal.events(run_id, kinds=(k.DECISION,))
                )
            )
    assert len(decided[0]) == 1000 and decided[0] == decided[1]
    assert bills[1] * 2 == bills[0] and bills[1] > 0, bills
    pages = [sorted(p.name for p in (tmp_path / n / "outbox").iterdir()) for n in ("a", "b")]
    assert pages[0] == pages[1] and pages[0]
