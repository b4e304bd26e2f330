"""`ctx.ask_batch` on a PostgreSQL journal: the batch's intent and its worst case reserved in
one transaction (refused whole past a cap), the run waiting while the batch runs, and its
results read on resume, as on SQLite."""

from __future__ import annotations

from conftest import ROOT

from runjournal import Options
from runjournal.journal import events as k
from runjournal.journal.stores import open_store
from runjournal.machine import api, loader
from runjournal.machine.model import Models
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.testing import FakeModel
from runjournal.machine.waiting import due
from runjournal.machine.worker import Worker

BATCHED = str(ROOT / "tests" / "pipelines" / "batched.py")


def test_a_batch_waits_and_ends_on_postgresql(pg_url: str) -> None:
    now = [0.0]
    fake = FakeModel(processing_time=60.0, clock=lambda: now[0])
    options = Options(
        models=Models(fake.client, PriceTable.load(), (), Capabilities.load()),
        sleep=lambda s: None,
    )
    machine = loader.load(BATCHED).machine
    items = {f"i{n}": f"Item {n}: the export is late." for n in range(12)}
    started = api.run(machine, {"items": items, "poll": 0.05}, db=pg_url, options=options)
    assert started.run.status == "waiting"
    run_id = started.run.run_id
    assert api.resume(machine, run_id, db=pg_url, options=options).run.status == "waiting"
    now[0] = 61.0
    done = api.resume(machine, run_id, db=pg_url, options=options)
    assert done.run.status == "done" and len(fake.batches) == 1
    with open_store(pg_url, readonly=True) as journal:
        run = journal.run(run_id)
        assert run.model_requests == run.model_calls == 12
        assert run.total_nusd == run.cost_nusd > 0
        kinds = [e.kind for e in journal.events(run_id)]
    assert kinds.count(k.BATCH_INTENDED) == kinds.count(k.BATCH_CREATED) == 1
    assert kinds.count(k.RUN_WAITING) == 2 and kinds.count(k.DECISION) == 12


def test_a_batch_past_the_cap_is_refused_whole_on_postgresql(pg_url: str) -> None:
    fake = FakeModel()
    options = Options(
        models=Models(fake.client, PriceTable.load(), (), Capabilities.load()),
        sleep=lambda s: None,
        limits={"max_model_calls": 5},
    )
    machine = loader.load(BATCHED).machine
    items = {f"i{n}": "an item" for n in range(6)}
    outcome = api.run(machine, {"items": items}, db=pg_url, options=options)
    assert outcome.run.status == "killed" and "max_model_calls" in str(outcome.run.error)
    assert fake.batches == []
    with open_store(pg_url, readonly=True) as journal:
        run = journal.run(outcome.run.run_id)
        assert run.model_requests == 0 and run.total_nusd == 0
        assert not list(journal.events(run.run_id, kinds=(k.MODEL_REQUESTED,)))


def test_a_worker_takes_up_a_waiting_run_once_it_is_due(pg_url: str) -> None:
    """A run waiting on a batch is claimed by no worker before its `wake_at`, and by one
    after: it looks at the batch, waits again while it runs, and finishes once it has ended."""
    now = [0.0]
    fake = FakeModel(processing_time=60.0, clock=lambda: now[0])
    options = Options(
        models=Models(fake.client, PriceTable.load(), (), Capabilities.load()),
        sleep=lambda s: None,
    )
    machine = loader.load(BATCHED).machine
    started = api.run(
        machine, {"items": {"a": "x", "b": "y"}, "poll": 30}, db=pg_url, options=options
    )
    run_id = started.run.run_id
    with open_store(pg_url) as journal:
        waiting = journal.run(run_id)
        assert waiting.status == "waiting" and waiting.wake_at is not None
        worker = Worker(journal, options, exit_when_idle=True, listen=False)
        assert worker.work() == []  # not due: nobody takes it
        store_clock = journal.clock
        journal.clock = lambda: store_clock() + 31  # half a minute on: due
        assert due(journal, run_id)
        (first,) = worker.work()
        assert first.outcome is not None and first.outcome.run.status == "waiting"
        journal.clock = lambda: store_clock() + 200
        now[0] = 61.0
        (second,) = worker.work()
        assert second.outcome is not None and second.outcome.run.status == "done"
    assert len(fake.batches) == 1
