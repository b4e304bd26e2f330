"""Tests for `ctx.ask_batch` (machine/model/batching.py): Message Batches in-process against the
fake API, at batch prices; a running batch makes the run wait; answers that do not fit and items
that errored go in the next batch; limits stop before the create; a lost create is adopted by
listing; bad prompts are refused before anything is sent."""

from __future__ import annotations

import datetime
import json
import re
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anthropic
import attrs
import pytest
from pipelines.batched import Verdict, batched

from runjournal.journal import Event, Journal, verify
from runjournal.journal import events as k
from runjournal.journal.spending import NUSD
from runjournal.machine import Context, Machine, Models, Options, PriceTable, Transition, runner
from runjournal.machine.execution import Outcome
from runjournal.machine.kill_switch import Limits
from runjournal.machine.model.batching import cancelling
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import Usage, cost, worst_case
from runjournal.machine.retry import RetryPolicy
from runjournal.machine.stopping import kill
from runjournal.machine.testing.fake import BatchFaults, FakeModel, Faults, parse_spec
from runjournal.machine.waiting import due

MODEL = "claude-haiku-5-5"
SYSTEM = "Score how urgent each item is."
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def work(count: int, poll: float = 30.0) -> dict[str, Any]:
    """The input of `batched`: `count` items, keyed item-0, item-1, ..."""
    items = {
        f"item-{i}": f"Item {i}: the report for client {i} is {i} days late." for i in range(count)
    }
    return {"items": items, "poll": poll}


def options(fake: FakeModel, **more: Any) -> Options:
    models = Models(fake.client, PriceTable.load(), (), Capabilities.load())
    return Options(models=models, sleep=lambda seconds: None, seed=0, **more)


def start(
    journal: Journal, machine: Machine[Any], given: Any, fake: FakeModel, **more: Any
) -> Outcome[Any]:
    prepared = runner.prepare(machine, given)
    return runner.start(journal, prepared, target="t", code_hash="0", options=options(fake, **more))


def resume(journal: Journal, run_id: str, machine: Machine[Any], fake: FakeModel) -> Outcome[Any]:
    return runner.resume(journal, run_id, machine, target="t", code_hash="0", options=options(fake))


def events(journal: Journal, run_id: str, kind: str) -> list[Event]:
    return list(journal.events(run_id, kinds=(kind,)))


def intents(journal: Journal, run_id: str) -> dict[int, Event]:
    """The run's batch.intended by batch number."""
    found = {e.data["batch"]: e for e in events(journal, run_id, k.BATCH_INTENDED)}
    assert sorted(found) == list(range(len(found)))
    return found


def decided(journal: Journal, run_id: str) -> dict[str, str]:
    """Each decided item's outcome; an item decided twice fails the test."""
    decisions = events(journal, run_id, k.DECISION)
    counts = Counter(e.data["item"] for e in decisions)
    assert all(n == 1 for n in counts.values()), counts
    return {e.data["item"]: e.data["outcome"] for e in decisions}


def item_of(event: Event) -> str:
    """The item key of an item's event: its call is `#0/KEY`."""
    call = str(event.data["call"])
    assert call.startswith("#0/"), call
    return call.removeprefix("#0/")


def money(value: float) -> Decimal:
    return Decimal(str(value))


# 1. One batch, at half price


def test_one_batch_answers_every_item_once_at_half_the_standard_price(db: Path) -> None:
    fake = FakeModel(processing_time=0)
    given = work(30)
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, given, fake).run
        assert run.status == "done", run.error
        (batch,) = fake.batches
        assert batch.status == "ended" and batch.answered
        assert len(batch.custom_ids) == 30 and len(set(batch.custom_ids)) == 30
        for custom_id in batch.custom_ids:
            assert custom_id.startswith("rj-") and CUSTOM_ID.fullmatch(custom_id), custom_id

        (intent,) = intents(journal, run.run_id).values()
        assert intent.data["items"] == list(given["items"])
        prefix = intent.data["custom_id_prefix"]
        assert list(batch.custom_ids) == [f"{prefix}{i}" for i in range(30)]
        (created,) = events(journal, run.run_id, k.BATCH_CREATED)
        assert created.data["batch_id"] == batch.id and created.data["adopted"] is False
        (ended,) = events(journal, run.run_id, k.BATCH_ENDED)
        assert ended.data["batch_id"] == batch.id and ended.data["succeeded"] == 30

        answered = events(journal, run.run_id, k.MODEL_ANSWERED)
        assert Counter(item_of(e) for e in answered) == Counter(dict.fromkeys(given["items"], 1))
        assert {e.data["batch_id"] for e in answered} == {batch.id}
        assert sorted(e.data["custom_id"] for e in answered) == sorted(batch.custom_ids)
        assert events(journal, run.run_id, k.MODEL_FAILED) == []

        standard = PriceTable.load().price(MODEL)
        for e in answered:
            # The usage the fake billed, read from the fake, not from the journal.
            usage = Usage.from_api(batch.usage[e.data["custom_id"]])
            assert attrs.asdict(usage) == e.data["usage"]
            assert money(e.data["cost_usd"]) == cost(standard, usage) / 2
            assert money(e.data["cost_usd"]) > 0

        scores = decided(journal, run.run_id)
        assert sorted(scores) == sorted(given["items"])
        assert all(outcome in {"1", "2", "3", "4", "5"} for outcome in scores.values())
        # Everything billed, nothing possibly billed: the reserve was released item by item.
        run = journal.run(run.run_id)
        billed = sum(money(e.data["cost_usd"]) for e in answered)
        assert Decimal(run.cost_nusd) / NUSD == billed
        assert run.total_nusd == run.cost_nusd
        assert verify(journal) == []


# 2. The same answers as asking one at a time, for half


@attrs.frozen
class Items:
    items: dict[str, str]


def _interactive() -> Machine[Items]:
    m = Machine("one_at_a_time", state=Items, start="score")

    @m.step
    def score(ctx: Context, s: Items) -> Transition:
        for key, prompt in s.items.items():
            verdict = ctx.ask(
                Verdict,
                prompt=prompt,
                system=SYSTEM,
                model=MODEL,
                max_tokens=200,
                thinking="disabled",
                key=key,
            )
            ctx.decide(item=key, outcome=str(verdict.score), reason=verdict.reason)
        return ctx.finish(s)

    return m


interactive = _interactive()


def test_a_batch_answers_as_asking_one_at_a_time_does_for_half_the_cost(db: Path) -> None:
    given = work(12)
    with Journal.open(db, create=True) as journal:
        alone = start(journal, interactive, {"items": given["items"]}, FakeModel()).run
        together = start(journal, batched, given, FakeModel()).run
        assert alone.status == "done", alone.error
        assert together.status == "done", together.error
        assert decided(journal, together.run_id) == decided(journal, alone.run_id)
        assert len(decided(journal, alone.run_id)) == 12

        asked = events(journal, alone.run_id, k.MODEL_ANSWERED)
        batched_answers = events(journal, together.run_id, k.MODEL_ANSWERED)
        assert all(e.data["batch_id"] is None for e in asked)
        by_item = {item_of(e): e for e in batched_answers}
        for e in asked:
            twin = by_item[str(e.data["call"]).removeprefix("#")]
            assert twin.data["request_hash"] == e.data["request_hash"]
            assert twin.data["usage"] == e.data["usage"]
            assert money(twin.data["cost_usd"]) * 2 == money(e.data["cost_usd"])

        alone, together = journal.run(alone.run_id), journal.run(together.run_id)
        assert alone.cost_nusd > 0
        assert together.cost_nusd * 2 == alone.cost_nusd
        assert together.model_calls == alone.model_calls == 12


# 3. A batch still running: the run waits


def test_a_running_batch_makes_the_run_wait_and_a_resume_makes_no_second_batch(
    db: Path,
) -> None:
    clock = Clock()
    fake = FakeModel(processing_time=100, clock=clock)
    with Journal.open(db, create=True) as journal:
        before = datetime.datetime.now(datetime.UTC)
        run = start(journal, batched, work(5, poll=60), fake).run
        assert run.status == "waiting", run.error
        (batch,) = fake.batches
        assert batch.status == "in_progress"
        (waiting,) = events(journal, run.run_id, k.RUN_WAITING)
        assert waiting.data["of"] == batch.id
        assert batch.id in waiting.data["message"]
        deadline = datetime.datetime.fromisoformat(waiting.data["deadline"].replace("Z", "+00:00"))
        assert deadline > before + datetime.timedelta(seconds=59)
        assert events(journal, run.run_id, k.MODEL_ANSWERED) == []
        assert events(journal, run.run_id, k.DECISION) == []
        assert not due(journal, run.run_id)
        # The worst case stays reserved while the batch runs; nothing is billed yet.
        assert run.total_nusd > 0
        assert run.cost_nusd == 0

        clock.now = 99.0
        again = resume(journal, run.run_id, batched, fake).run
        assert again.status == "waiting", again.error
        assert [b.id for b in fake.batches] == [batch.id]
        assert len(events(journal, run.run_id, k.RUN_WAITING)) == 2
        assert len(events(journal, run.run_id, k.BATCH_INTENDED)) == 1
        assert len(events(journal, run.run_id, k.MODEL_REQUESTED)) == 5

        clock.now = 100.0
        done = resume(journal, run.run_id, batched, fake).run
        assert done.status == "done", done.error
        assert [b.id for b in fake.batches] == [batch.id]
        assert fake.batches[0].status == "ended"
        assert len(events(journal, run.run_id, k.BATCH_CREATED)) == 1
        assert len(events(journal, run.run_id, k.MODEL_REQUESTED)) == 5
        assert len(decided(journal, run.run_id)) == 5
        assert done.total_nusd == done.cost_nusd > 0


def test_a_kill_while_the_batch_runs_cancels_it(db: Path) -> None:
    """`journal kill` of a run waiting on a batch cancels the batch: the items done by then are
    billed, the others not; the run's worst case stays counted, as nothing was read. A resume
    reads the answers the batch had and sends the other items in a new one."""
    clock = Clock()
    fake = FakeModel(processing_time=100, clock=clock)
    told: list[str] = []
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, work(4), fake).run
        assert run.status == "waiting", run.error
        (batch,) = fake.batches
        clock.now = 50.0
        cancel = cancelling(fake.client, told.append)
        assert kill(journal, run.run_id, by="ops", reason="wrong prompt", cancel=cancel) == "killed"
        assert told == []
        assert [b.status for b in fake.batches] == ["canceling"]
        clock.now = 51.0
        assert [b.status for b in fake.batches] == ["ended"]
        assert 0 < len(fake.batches[0].usage) < 4  # half the time gone: some items were done
        run = journal.run(run.run_id)
        assert run.status == "killed"
        (canceled,) = events(journal, run.run_id, k.BATCH_CANCELED)
        assert canceled.data["batch_id"] == batch.id and canceled.data["by"] == "ops"
        assert events(journal, run.run_id, k.MODEL_ANSWERED) == []
        assert run.cost_nusd == 0
        assert run.total_nusd == sum(
            Decimal(str(e.data["worst_case_usd"])) * NUSD
            for e in events(journal, run.run_id, k.MODEL_REQUESTED)
        )
        # Once ended, a batch cannot be canceled: the kill says so instead of recording it.
        assert cancel(batch.id) is False
        assert told and batch.id in told[-1]

        # A resume keeps the answers the batch had and sends the canceled items again.
        again = resume(journal, run.run_id, batched, fake).run
        assert again.status == "waiting", again.error
        done_ids = set(fake.batches[0].usage)
        answered = events(journal, run.run_id, k.MODEL_ANSWERED)
        assert {e.data["custom_id"] for e in answered} == done_ids
        canceled_items = events(journal, run.run_id, k.MODEL_FAILED)
        assert {e.data["error_type"] for e in canceled_items} == {"canceled"}
        assert len(canceled_items) == 4 - len(done_ids)
        second = intents(journal, run.run_id)[1]
        assert sorted(second.data["items"]) == sorted(item_of(e) for e in canceled_items)
        clock.now = 200.0
        done = resume(journal, run.run_id, batched, fake).run
        assert done.status == "done", done.error
        assert len(fake.batches) == 2
        assert len(decided(journal, run.run_id)) == 4
        assert done.total_nusd == done.cost_nusd > 0


def prompted(system: str) -> Machine[Items]:
    """Asks the batch of its items with `system`: two of these, alike but for it, are the same
    machine before and after a change to its code."""
    m = Machine("prompted", state=Items, start="score")

    @m.step
    def score(ctx: Context, s: Items) -> Transition:
        verdicts = ctx.ask_batch(
            Verdict, s.items, system=system, model=MODEL, max_tokens=200, thinking="disabled"
        )
        for key, verdict in verdicts.items():
            ctx.decide(item=key, outcome=str(verdict.score))
        return ctx.finish(s)

    return m


def test_a_resume_whose_prompts_changed_fails_and_sends_nothing(db: Path) -> None:
    """The batch in flight was made of other requests than the code now makes: the resume
    fails the run saying so, and neither looks at that batch's answers nor makes another."""
    clock = Clock()
    fake = FakeModel(processing_time=100, clock=clock)
    with Journal.open(db, create=True) as journal:
        run = start(journal, prompted(SYSTEM), {"items": work(3)["items"]}, fake).run
        assert run.status == "waiting", run.error
        clock.now = 100.0
        changed = prompted("Score how urgent each item is, from 1 to 5.")
        run = resume(journal, run.run_id, changed, fake).run
        assert run.status == "failed"
        assert run.error is not None and run.error.startswith("ReplayMismatch"), run.error
        assert len(fake.batches) == 1
        assert events(journal, run.run_id, k.MODEL_ANSWERED) == []
        assert events(journal, run.run_id, k.BATCH_ENDED) == []


# 4. Answers that do not fit go in the next batch


def request_of(journal: Journal, requested: Event) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(journal.blob(requested.data["request"]))
    return body


def check_rounds(journal: Journal, run_id: str, fake: FakeModel) -> tuple[str, int]:
    """Check that each answer rejected went in the next batch, one round on, with the errors
    (or twice the room), and no answer accepted went again; the run's status and batches."""
    run = journal.run(run_id)
    assert run.status in ("done", "failed"), run.error
    if run.status == "failed":
        assert run.error is not None and run.error.startswith("NoValidAnswer"), run.error
        assert "answers in a row did not fit Verdict" in run.error
    batches = intents(journal, run_id)
    # The fake made exactly the batches intended, with their custom_ids.
    assert [b.custom_ids for b in fake.batches] == [
        tuple(f"{b.data['custom_id_prefix']}{i}" for i in range(len(b.data["items"])))
        for b in batches.values()
    ]
    where: dict[str, tuple[int, str]] = {}  # custom_id -> (batch, item)
    for number, intent in batches.items():
        keys = intent.data["items"]
        assert len(set(keys)) == len(keys)
        where |= {
            f"{intent.data['custom_id_prefix']}{i}": (number, key) for i, key in enumerate(keys)
        }
    requested = {e.data["custom_id"]: e for e in events(journal, run_id, k.MODEL_REQUESTED)}
    assert set(requested) == set(where)
    rejected = {
        (item_of(e), e.data["round"]): e for e in events(journal, run_id, k.OUTPUT_REJECTED)
    }
    last = max(batches)
    for answer in events(journal, run_id, k.MODEL_ANSWERED):
        number, key = where[answer.data["custom_id"]]
        assert item_of(answer) == key
        round_ = answer.data["round"]
        later = [n for n, b in batches.items() if n > number and key in b.data["items"]]
        if (key, round_) not in rejected:
            assert later == [], f"{key} was accepted in batch {number}, yet sent again"
            continue
        if run.status == "failed" and number == last:
            continue  # the run failed on this batch: nothing is sent again
        assert later[:1] == [number + 1], (key, number, later)
        nxt = batches[number + 1]
        again = requested[f"{nxt.data['custom_id_prefix']}{nxt.data['items'].index(key)}"]
        assert again.data["round"] == round_ + 1
        before = request_of(journal, requested[answer.data["custom_id"]])
        after = request_of(journal, again)
        if answer.data["stop_reason"] == "max_tokens":
            assert after["max_tokens"] == 2 * before["max_tokens"]
            assert after["messages"] == before["messages"]
        else:  # the answer (if anything is left of it), then what was wrong with it
            assert after["max_tokens"] == before["max_tokens"]
            assert after["messages"][: len(before["messages"])] == before["messages"]
            added = after["messages"][len(before["messages"]) :]
            assert [m["role"] for m in added] in (["assistant", "user"], ["user"])
            errors = rejected[(key, round_)].data["errors"]
            said = json.dumps(added[-1]["content"])
            assert errors and json.dumps(errors[0])[1:-1] in said, (errors, added)
    # Every rejection is of an answer journaled at its place and round.
    answered_at = {(item_of(e), e.data["round"]) for e in events(journal, run_id, k.MODEL_ANSWERED)}
    assert set(rejected) <= answered_at
    if run.status == "done":
        keys = batches[0].data["items"]
        assert sorted(decided(journal, run_id)) == sorted(keys)
        accepted = [
            e
            for e in events(journal, run_id, k.MODEL_ANSWERED)
            if (item_of(e), e.data["round"]) not in rejected
        ]
        assert sorted(item_of(e) for e in accepted) == sorted(keys)
    else:
        assert events(journal, run_id, k.DECISION) == []
    return run.status, len(batches)


def test_rejected_answers_go_in_the_next_batch_and_accepted_ones_never_again(db: Path) -> None:
    """Empty and cut-off answers, 40% of them: each run ends done (some after three batches or
    more) or fails with NoValidAnswer (an item rejected three times); runs are started, each with
    its own run id and so its own draws, until both have been seen."""
    seen: Counter[tuple[str, bool]] = Counter()
    with Journal.open(db, create=True) as journal:
        for seed in range(30):
            fake = FakeModel(faults=parse_spec(f"empty=0.3,truncated=0.1,seed={seed}"))
            run = start(journal, batched, work(10), fake).run
            status, count = check_rounds(journal, run.run_id, fake)
            seen[(status, count >= 3)] += 1
            if seen[("done", True)] and sum(n for (s, _), n in seen.items() if s == "failed"):
                break
    assert seen[("done", True)] >= 1, seen
    assert sum(n for (status, _), n in seen.items() if status == "failed") >= 1, seen


# 5. Items that errored are sent again


def test_errored_items_are_sent_again_and_nothing_stays_possibly_billed(db: Path) -> None:
    fake = FakeModel(batch_faults=BatchFaults(errored=0.3), faults=Faults({}, seed=5))
    given = work(40)
    retry = RetryPolicy(max_attempts=12, base=0)
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, given, fake, retry=retry).run
        assert run.status == "done", run.error
        batches = intents(journal, run.run_id)
        failed = events(journal, run.run_id, k.MODEL_FAILED)
        assert failed, "errored=0.3 over 40 items: some must error"
        assert len(batches) >= 2 and len(fake.batches) == len(batches)
        created = {
            e.data["batch"]: e.data["batch_id"]
            for e in events(journal, run.run_id, k.BATCH_CREATED)
        }
        requested = {e.data["custom_id"]: e for e in events(journal, run.run_id, k.MODEL_REQUESTED)}
        for e in failed:
            assert e.data["batch_id"] in created.values()
            assert e.data["error_type"] == "errored: api_error" and e.data["retryable"] is True
            number = next(n for n, batch_id in created.items() if batch_id == e.data["batch_id"])
            # Sent again in the next batch, the same round, one attempt more.
            nxt = batches[number + 1]
            index = nxt.data["items"].index(item_of(e))
            again = requested[f"{nxt.data['custom_id_prefix']}{index}"]
            assert again.data["call"] == e.data["call"]
            assert again.data["round"] == e.data["round"] == 0
            assert again.data["attempt"] == e.data["attempt"] + 1
        ended = events(journal, run.run_id, k.BATCH_ENDED)
        assert sum(e.data["errored"] for e in ended) == len(failed)
        assert sum(e.data["succeeded"] for e in ended) == 40
        assert events(journal, run.run_id, k.OUTPUT_REJECTED) == []
        for n in range(1, len(batches)):
            errored_before = {item_of(e) for e in failed if e.data["batch_id"] == created[n - 1]}
            assert set(batches[n].data["items"]) == errored_before
        assert sorted(decided(journal, run.run_id)) == sorted(given["items"])

        run = journal.run(run.run_id)
        assert run.model_failures == len(failed)
        assert run.model_requests == 40 + len(failed)
        assert run.total_nusd - run.cost_nusd == 0
        assert run.possibly_billed_usd == 0


def test_an_item_that_errors_every_time_fails_the_run_after_the_retry_policy(db: Path) -> None:
    fake = FakeModel(batch_faults=BatchFaults(errored=1.0))
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, work(1), fake, retry=RetryPolicy(max_attempts=3)).run
        assert run.status == "failed"
        assert run.error is not None and run.error.startswith("ModelCallFailed"), run.error
        assert "3 batch requests failed" in run.error
        assert len(fake.batches) == 3
        assert run.total_nusd == run.cost_nusd == 0


def test_a_batch_whose_items_all_error_opens_the_breaker(db: Path) -> None:
    """Each item's failure counts as a failed model attempt: six in a row open the breaker
    (five), and the run is killed before a third batch, resumable once the API is well."""
    fake = FakeModel(batch_faults=BatchFaults(errored=1.0))
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, work(3), fake, retry=RetryPolicy(max_attempts=6)).run
        assert run.status == "killed" and "the breaker opened" in str(run.error), run.error
        assert len(fake.batches) == 2
        fake.set_batch_faults(BatchFaults())
        run = resume(journal, run.run_id, batched, fake).run
        assert run.status == "done" and len(fake.batches) == 3


def test_batches_after_waits_replay_the_ones_before_on_each_resume(db: Path) -> None:
    """Errored items and rejected answers with batches that take time: each resume replays the
    batches before (their answers and feedback from the journal, no request) and goes on with
    the next; runs are done (or fail NoValidAnswer) with one batch per intent."""
    statuses: Counter[str] = Counter()
    most = 0
    with Journal.open(db, create=True) as journal:
        for seed in range(12):
            clock = Clock()
            fake = FakeModel(
                processing_time=10,
                clock=clock,
                faults=parse_spec(f"empty=0.2,truncated=0.1,seed={seed}"),
                batch_faults=BatchFaults(errored=0.2),
            )
            retry = RetryPolicy(max_attempts=10, base=0)
            run = start(journal, batched, work(8, poll=1), fake, retry=retry).run
            waits = 0
            while run.status == "waiting":
                waits += 1
                assert len(fake.batches) == waits  # one batch per wait, none made twice
                clock.now += 10
                run = resume(journal, run.run_id, batched, fake).run
            status, count = check_rounds(journal, run.run_id, fake)
            assert waits == count
            statuses[status] += 1
            failed = events(journal, run.run_id, k.MODEL_FAILED)
            batch_ids = [e.data["batch_id"] for e in events(journal, run.run_id, k.BATCH_CREATED)]
            for e in failed:  # each errored item is in the next batch
                number = batch_ids.index(e.data["batch_id"])
                if status == "done":
                    assert item_of(e) in intents(journal, run.run_id)[number + 1].data["items"]
            assert len(events(journal, run.run_id, k.RUN_RESUMED)) == waits
            most = max(most, waits)
            if statuses["done"] >= 2 and most >= 3:
                break
    assert statuses["done"] >= 2, statuses
    assert most >= 3, "some run must have replayed two batches or more"


# 6. Limits stop before the create


def limited(limits: Limits) -> Machine[Any]:
    m = Machine("limited_batch", state=Items, start="score", limits=limits)

    @m.step
    def score(ctx: Context, s: Items) -> Transition:
        verdicts = ctx.ask_batch(
            Verdict, s.items, system=SYSTEM, model=MODEL, max_tokens=200, thinking="disabled"
        )
        for key, verdict in verdicts.items():
            ctx.decide(item=key, outcome=str(verdict.score))
        return ctx.finish(s)

    return m


@pytest.mark.parametrize(
    ("limit", "limits"),
    [
        # One item's worst case is about $0.0001: ten of them pass $0.0005.
        ("max_cost_usd", Limits(max_cost_usd=Decimal("0.0005"))),
        ("max_model_calls", Limits(max_model_calls=9)),
    ],
)
def test_a_batch_over_a_limit_kills_the_run_before_anything_is_sent(
    db: Path, limit: str, limits: Limits
) -> None:
    fake = FakeModel()
    with Journal.open(db, create=True) as journal:
        run = start(journal, limited(limits), {"items": work(10)["items"]}, fake).run
        assert run.status == "killed", run.error
        (killed,) = events(journal, run.run_id, k.RUN_KILLED)
        assert killed.data["limit_name"] == limit
        assert fake.batches == []
        assert events(journal, run.run_id, k.MODEL_REQUESTED) == []
        assert events(journal, run.run_id, k.BATCH_INTENDED) == []
        assert run.total_nusd == run.model_requests == 0
        if limit == "max_cost_usd":
            assert money(killed.data["worst_case"]) > Decimal("0.0005")


def test_a_batch_within_its_limits_is_sent(db: Path) -> None:
    """The other side of the limits above: ten items within a cap of ten calls, and of a cost
    that their worst case at standard prices passes, but not at batch prices (half)."""
    probe = FakeModel()
    standard = PriceTable.load().price(MODEL)
    with Journal.open(db, create=True) as journal:
        run = start(journal, limited(Limits()), {"items": work(10)["items"]}, probe).run
        requested = events(journal, run.run_id, k.MODEL_REQUESTED)
        worst = sum(worst_case(request_of(journal, e), standard)[1] for e in requested)
        (intent,) = events(journal, run.run_id, k.BATCH_INTENDED)
        assert money(intent.data["worst_case_usd"]) == worst / 2
        fake = FakeModel()
        limits = Limits(max_cost_usd=worst * Decimal("0.75"), max_model_calls=10)
        run = start(journal, limited(limits), {"items": work(10)["items"]}, fake).run
        assert run.status == "done", run.error
        assert len(fake.batches) == 1


def test_no_prompts_send_no_batch(db: Path) -> None:
    fake = FakeModel()
    with Journal.open(db, create=True) as journal:
        run = start(journal, limited(Limits(max_model_calls=1)), {"items": {}}, fake).run
        assert run.status == "done", run.error
        assert fake.batches == []
        assert events(journal, run.run_id, k.BATCH_INTENDED) == []


# 7. A lost create is found by listing


def someone_elses_batch(fake: FakeModel, size: int) -> None:
    """A batch of `size` requests made on the same API by someone else, its create's answer lost
    as the fake's faults say (the batch exists all the same)."""
    params = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    other: Any = [{"custom_id": f"other-{i}", "params": params} for i in range(size)]
    with pytest.raises(anthropic.APIConnectionError):  # a timeout is one too
        fake.client().messages.batches.create(requests=other)


@pytest.mark.parametrize("lost_as", ["reset", "timeout"])
def test_a_create_whose_answer_is_lost_is_adopted_not_made_again(
    db: Path, lost_as: Literal["reset", "timeout"]
) -> None:
    """Every create's answer is lost: the run lists the batches, passes over one of another
    size, and adopts its own instead of creating a second."""
    fake = FakeModel(batch_faults=BatchFaults(lost=1.0, lost_as=lost_as))
    someone_elses_batch(fake, 5)
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, work(6), fake).run
        assert run.status == "done", run.error
        other, batch = fake.batches
        assert batch.answered is False  # its create was never answered
        (intent,) = events(journal, run.run_id, k.BATCH_INTENDED)
        assert batch.custom_ids == tuple(f"{intent.data['custom_id_prefix']}{i}" for i in range(6))
        (created,) = events(journal, run.run_id, k.BATCH_CREATED)
        assert created.data["adopted"] is True and created.data["batch_id"] == batch.id
        answered = events(journal, run.run_id, k.MODEL_ANSWERED)
        assert {e.data["batch_id"] for e in answered} == {batch.id}
        assert len(decided(journal, run.run_id)) == 6
        assert other.status == "ended" and len(other.custom_ids) == 5


@pytest.mark.parametrize("remedy", ["cancel", "delete"])
def test_several_candidates_for_a_lost_create_stop_the_run_until_one_is_left(
    db: Path, remedy: str
) -> None:
    """Another batch of as many requests, created just before, could be this run's as well:
    the run neither adopts one nor creates a third, and needs attention naming both. Once the
    other is canceled (while it runs) or deleted (once ended), a resume adopts the one left."""
    clock = Clock()
    processing = 100.0 if remedy == "cancel" else 0.0
    lost = BatchFaults(lost=1.0, lost_as="reset")
    fake = FakeModel(batch_faults=lost, processing_time=processing, clock=clock)
    someone_elses_batch(fake, 6)
    (other,) = fake.batches
    with Journal.open(db, create=True) as journal:
        run = start(journal, batched, work(6), fake).run
        assert run.status == "needs_attention", run.error
        assert len(fake.batches) == 2
        assert run.error is not None and "batches of 6 requests" in run.error
        for batch in fake.batches:
            assert batch.id in run.error
        assert events(journal, run.run_id, k.BATCH_CREATED) == []
        assert events(journal, run.run_id, k.MODEL_ANSWERED) == []

        if remedy == "cancel":
            fake.client().messages.batches.cancel(other.id)
        else:
            fake.client().messages.batches.delete(other.id)
        clock.now = 1.0
        again = resume(journal, run.run_id, batched, fake).run
        if remedy == "cancel":
            assert again.status == "waiting", again.error
            clock.now = processing
            again = resume(journal, run.run_id, batched, fake).run
        assert again.status == "done", again.error
        assert len(fake.batches) == 2
        (created,) = events(journal, run.run_id, k.BATCH_CREATED)
        mine = fake.batches[1]
        assert created.data["adopted"] is True and created.data["batch_id"] == mine.id
        assert len(decided(journal, run.run_id)) == 6


# 8. Bad prompts are refused before anything is sent


@attrs.frozen
class Case:
    case: str


BAD: Mapping[str, tuple[dict[Any, Any], str]] = {
    "slash": ({"a/b": "x"}, "prompt key 'a/b'"),
    "empty": ({"": "x"}, "prompt key ''"),
    "not_str_prompt": ({"a": 3}, "the prompt of 'a' is not a string"),
    "not_str_key": ({7: "x"}, "prompt key 7"),
}


def _bad() -> Machine[Case]:
    m = Machine("bad_prompts", state=Case, start="ask")

    @m.step
    def ask(ctx: Context, s: Case) -> Transition:
        prompts = {"fine": "Item 0: late.", **BAD[s.case][0]}
        ctx.ask_batch(Verdict, prompts, model=MODEL, max_tokens=200, thinking="disabled")
        return ctx.finish(s)

    return m


bad = _bad()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_prompts_fail_the_run_naming_ask_batch_and_send_nothing(db: Path, case: str) -> None:
    fake = FakeModel()
    with Journal.open(db, create=True) as journal:
        run = start(journal, bad, {"case": case}, fake).run
        assert run.status == "failed"
        assert run.error is not None
        assert run.error.startswith("DefinitionError: step 'ask': ctx.ask_batch: "), run.error
        assert BAD[case][1] in run.error
        assert fake.batches == []
        assert events(journal, run.run_id, k.MODEL_REQUESTED) == []
        assert events(journal, run.run_id, k.BATCH_INTENDED) == []
