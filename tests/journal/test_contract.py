"""The contract of `journal.protocol.Store`: what every journal backend must do, run against each.

Written against the protocol alone (no connection, no SQL, no backend internals), so a second
backend joins by adding a param to `backend` and a branch to `open_store`. Events are built with
`journal.kinds` and written through `RunWriter`, as machine/ writes them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from runjournal.journal import (
    ActionBusy,
    ActionKeyDone,
    AmbiguousRunId,
    ConcurrentAppend,
    Heartbeat,
    Holder,
    Journal,
    LeaseHeld,
    LeaseLost,
    LimitReached,
    Querying,
    QueryRefused,
    ReadOnlyJournal,
    Run,
    RunIsDone,
    RunNotFound,
    RunWriter,
    StateAt,
    Store,
    kinds,
    state_at,
)
from runjournal.journal.events import Clock
from runjournal.journal.spending import Reserve
from runjournal.journal.stores import open_store as open_store_at

NUSD = 1_000_000_000
SECRET = "sk-ant-contract-0123456789abcdef"


def _sqlite_journal_is_a_store(journal: Journal) -> Store:
    """Never run: mypy checks here that the SQLite journal has the protocol's every member."""
    return journal


class ManualClock:
    """A clock moved by hand: a lease expires when a test says so, not when the machine is slow."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Opener(Protocol):
    """Opens another store on the test's one journal (creating it the first time)."""

    def __call__(self, *, readonly: bool = False, clock: Clock | None = None) -> Store: ...


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_store(
    backend: str, tmp_path: Path, clock: ManualClock, request: pytest.FixtureRequest
) -> Iterator[Opener]:
    """Opens stores on one fresh journal: a file, or a database of its own on the test's
    PostgreSQL server."""
    opened: list[Store] = []
    shared = clock
    db: str | Path = tmp_path / "journal.db"
    if backend == "postgres":
        db = request.getfixturevalue("postgres_cluster").create_database()

    def opener(*, readonly: bool = False, clock: Clock | None = None) -> Store:
        store = open_store_at(db, create=not readonly, readonly=readonly, clock=clock or shared)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()


def writer(
    store: Store,
    run_id: str,
    *,
    last_seq: int,
    heartbeat: Heartbeat | None = None,
    owner: str | None = None,
) -> RunWriter:
    return RunWriter(store, run_id, last_seq=last_seq, heartbeat=heartbeat, owner=owner)


def heartbeat(store: Store, run_id: str, holder: Holder, ttl: float) -> Heartbeat:
    return Heartbeat(store, run_id, holder, ttl, poll=0.01)


def fold(store: Store, run_id: str, seq: int | None = None) -> StateAt:
    return state_at(store, run_id, seq)


def start(
    store: Store,
    *,
    machine: str = "m",
    run_key: str | None = None,
    holder: Holder | None = None,
    input: Any = None,
) -> tuple[Run, bool]:
    return store.create_run(
        machine=machine,
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={"n": 0},
        input={"n": 0} if input is None else input,
        run_key=run_key,
        holder=holder or Holder.this_process(),
        lease_ttl=30,
    )


def effect(name: str, result: Any = None) -> kinds.EffectDone:
    return kinds.EffectDone(name=name, call="#0", result=result)


def requested(worst_usd: float) -> kinds.ModelRequested:
    return kinds.ModelRequested(
        call="#0",
        name="Answer",
        round=0,
        attempt=1,
        model="claude-test",
        request_hash="h",
        request="sha256:0",
        worst_case_usd=worst_usd,
        worst_case_tokens=100,
    )


def seqs(store: Store, run_id: str, **kwargs: Any) -> list[int]:
    return [e.seq for e in store.events(run_id, **kwargs)]


# Runs and appending


def test_a_run_key_finds_the_run_it_started(store: Store) -> None:
    """A second start with the same run key returns the first run and creates nothing."""
    run, created = start(store, run_key="nightly-1")
    again, created_again = start(store, run_key="nightly-1")
    assert created and not created_again
    assert again.run_id == run.run_id and again.status == "running"
    assert seqs(store, run.run_id) == [1]
    assert store.find_run(run.run_id[:6]).run_id == run.run_id
    with pytest.raises(RunNotFound):
        store.run("0" * 12)


def test_an_ambiguous_prefix_is_refused(store: Store) -> None:
    """A prefix that several runs share names none of them."""
    ids = [start(store)[0].run_id for _ in range(17)]  # 16 hex digits: two share the first
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(AmbiguousRunId):
        store.find_run(shared)


def test_a_batch_reads_back_in_seq_order_with_its_data_exact(store: Store) -> None:
    """Events come back in seq order with their JSON exactly as written: 1, true and 1.0 apart."""
    run, _ = start(store)
    results: list[Any] = [1, True, 1.0, {"a": [1, True, 1.0, None, "é"], "z": 0, "b": -0.5}]
    w = writer(store, run.run_id, last_seq=1)
    for i, result in enumerate(results[:-1]):
        w.record("a", effect(f"e{i}", result))
    w.commit("a", effect("last", results[-1]))
    read = list(store.events(run.run_id, after=1))
    assert [e.seq for e in read] == [2, 3, 4, 5]
    assert [json.dumps(e.data["result"]) for e in read] == [json.dumps(r) for r in results]
    assert [type(e.data["result"]) for e in read] == [int, bool, float, dict]
    assert store.run(run.run_id).last_seq == 5


def test_a_seq_already_taken_fails_the_whole_batch(store: Store) -> None:
    """A batch whose first seq another writer took is refused whole: none of it is visible."""
    run, _ = start(store)
    late = writer(store, run.run_id, last_seq=1)
    late.record("a", effect("held"))
    writer(store, run.run_id, last_seq=1).commit("a", effect("first"))
    with pytest.raises(ConcurrentAppend):
        late.commit("a", effect("second"))
    assert [e.data["name"] for e in store.events(run.run_id, after=1)] == ["first"]
    assert store.run(run.run_id).last_seq == 2


def test_done_is_final(store: Store) -> None:
    """After run.done no append lands, whoever writes it, and the run's lease cannot be taken."""
    run, _ = start(store)
    w = writer(store, run.run_id, last_seq=1)
    w.commit(None, kinds.RunDone(steps=0))
    with pytest.raises(RunIsDone):
        w.commit("a", effect("after"))
    with pytest.raises(RunIsDone):
        writer(store, run.run_id, last_seq=2).commit("a", effect("after"))
    with pytest.raises(RunIsDone):
        store.acquire_lease(run.run_id, Holder.this_process(), 30)
    assert seqs(store, run.run_id) == [1, 2]
    assert store.run(run.run_id).status == "done"


# Leases


def test_a_live_lease_is_refused_to_another_holder(store: Store) -> None:
    """While its holder lives, a run's lease is refused to another and its holder may retake it."""
    me = Holder.this_process()
    run, _ = start(store, holder=me)
    with pytest.raises(LeaseHeld):
        store.acquire_lease(run.run_id, Holder.this_process(), 30)
    assert store.acquire_lease(run.run_id, me, 30) is None
    lease = store.lease(run.run_id)
    assert lease is not None and lease.owner == me.owner


def test_an_expired_lease_is_taken_over(store: Store, clock: ManualClock) -> None:
    """An expired lease goes to the next holder, who is told whose it was; the old holder cannot
    renew or release it, and its new holder can."""
    old, new = Holder.this_process(), Holder.this_process()
    run, _ = start(store, holder=old)
    clock.now += 31
    taken = store.acquire_lease(run.run_id, new, 30)
    assert taken is not None and taken.owner == old.owner
    assert store.renew_lease(run.run_id, old.owner, 30) is False
    store.release_lease(run.run_id, old.owner)
    lease = store.lease(run.run_id)
    assert lease is not None and lease.owner == new.owner
    assert store.renew_lease(run.run_id, new.owner, 30) is True
    store.release_lease(run.run_id, new.owner)
    assert store.lease(run.run_id) is None


def test_a_writer_whose_lease_was_taken_over_stops_without_writing(
    open_store: Opener, clock: ManualClock
) -> None:
    """Once its heartbeat finds the lease taken over, the old writer raises LeaseLost, writes
    nothing."""
    first = open_store()
    old = Holder.this_process()
    run, _ = start(first, holder=old)
    beat = heartbeat(first, run.run_id, old, ttl=0.3).start()
    try:
        # The taker's clock is past any expiry the old holder's heartbeat can renew to.
        taker = open_store(clock=lambda: clock.now + 1000)
        assert taker.acquire_lease(run.run_id, Holder.this_process(), 30) is not None
        deadline = time.monotonic() + 5
        while not beat.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(LeaseLost):
            writer(first, run.run_id, last_seq=1, heartbeat=beat).commit("a", effect("stale"))
    finally:
        beat.stop()
    assert seqs(first, run.run_id) == [1]


def test_a_stale_writer_loses_to_the_takers_first_append(
    open_store: Opener, clock: ManualClock
) -> None:
    """The taker appends first (as a resume does); the old writer's next append is refused."""
    first, second = open_store(), open_store()
    run, _ = start(first)
    clock.now += 31
    second.acquire_lease(run.run_id, Holder.this_process(), 30)
    writer(second, run.run_id, last_seq=1).commit("a", effect("taker"))
    with pytest.raises(ConcurrentAppend):
        writer(first, run.run_id, last_seq=1).commit("a", effect("stale"))
    assert [e.data["name"] for e in second.events(run.run_id, after=1)] == ["taker"]


def test_an_append_checks_the_lease_in_its_transaction(
    open_store: Opener, clock: ManualClock
) -> None:
    """A store whose lease was taken over cannot append even before the taker has written;
    while it holds the lease, it can."""
    first, second = open_store(), open_store()
    holder = Holder.this_process()
    run, _ = start(first, holder=holder)
    writer(first, run.run_id, last_seq=1, owner=holder.owner).commit("a", effect("mine"))
    clock.now += 31
    second.acquire_lease(run.run_id, Holder.this_process(), 30)
    with pytest.raises(LeaseLost):
        writer(first, run.run_id, last_seq=2, owner=holder.owner).commit("a", effect("stale"))
    assert seqs(second, run.run_id) == [1, 2]


def test_an_append_after_a_released_lease_is_refused(store: Store) -> None:
    """Once the lease is let go, its old owner writes nothing more."""
    holder = Holder.this_process()
    run, _ = start(store, holder=holder)
    store.release_lease(run.run_id, holder.owner)
    with pytest.raises(LeaseLost):
        writer(store, run.run_id, last_seq=1, owner=holder.owner).commit("a", effect("late"))
    assert seqs(store, run.run_id) == [1]


def test_a_gap_in_seqs_is_refused(store: Store) -> None:
    """A batch must follow the run's last event: seq 3 after seq 1 would break the chain."""
    run, _ = start(store)
    with pytest.raises(ConcurrentAppend, match="no event 2"):
        writer(store, run.run_id, last_seq=2).commit("a", effect("skipped ahead"))
    assert seqs(store, run.run_id) == [1]


# Reading events and folds


def test_events_are_filtered_by_after_upto_and_kinds(store: Store) -> None:
    """`after` is exclusive, `upto` inclusive, `kinds` keeps only those kinds, in seq order."""
    run, _ = start(store)
    w = writer(store, run.run_id, last_seq=1)
    for i in range(4):
        w.record("a", effect(f"e{i}"))
        w.record("a", kinds.Decision(call=f"#{i}", item=i, outcome="skip"))
    w.flush()
    assert seqs(store, run.run_id, after=2, upto=5) == [3, 4, 5]
    assert seqs(store, run.run_id, kinds=["decision"]) == [3, 5, 7, 9]
    assert seqs(store, run.run_id, after=3, upto=8, kinds=["decision", "run.started"]) == [5, 7]
    assert seqs(store, "f" * 12) == []


def test_a_run_is_folded_from_its_latest_snapshot(store: Store) -> None:
    """The latest whole state at or before a seq, plus the changes after it, is the state there."""
    run, _ = start(store)
    w = writer(store, run.run_id, last_seq=1)
    w.record(
        "a", kinds.TransitionEvent(to_step="b", delta=[{"op": "replace", "path": "/n", "value": 1}])
    )
    w.record("b", kinds.Snapshot(state={"n": 1}, to_step="b", transitions=1))
    w.record(
        "b", kinds.TransitionEvent(to_step="c", delta=[{"op": "add", "path": "/m", "value": 2.0}])
    )
    w.commit("c", effect("e"))
    assert store.latest_snapshot(run.run_id).seq == 3
    assert store.latest_snapshot(run.run_id, upto=2).kind == "run.started"
    assert [t[0] for t in store.transitions(run.run_id)] == [2, 4]
    assert fold(store, run.run_id) == StateAt(4, "c", {"n": 1, "m": 2.0}, 2)
    assert fold(store, run.run_id, 2) == StateAt(2, "b", {"n": 1}, 1)
    assert fold(store, run.run_id, 1) == StateAt(1, "a", {"n": 0}, 0)
    assert type(fold(store, run.run_id).state["m"]) is float
    with pytest.raises(RunNotFound):
        store.latest_snapshot("f" * 12)


def test_runs_are_listed_in_creation_order_whatever_the_clock(open_store: Opener) -> None:
    """Runs are listed last created first even when each was created at an earlier time."""
    times = iter(range(2_000_000_000, 0, -60))
    store = open_store(clock=lambda: float(next(times)))
    made = [start(store, machine=m)[0] for m in ("x", "y", "x")]
    assert made[2].started_at < made[0].started_at  # the clock did step back
    ids = [r.run_id for r in made]
    assert [r.run_id for r in store.runs()] == ids[::-1]
    assert [r.run_id for r in store.runs(limit=2)] == [ids[2], ids[1]]
    assert [r.run_id for r in store.runs(before=made[2].ordinal)] == [ids[1], ids[0]]
    assert [r.run_id for r in store.runs(machine="x")] == [ids[2], ids[0]]
    assert store.runs(statuses=["done"]) == []


# Actions


def _intent(key: str, attempt: int = 1) -> kinds.ActionIntended:
    return kinds.ActionIntended(
        call="#0", name="send", key=key, idempotent=False, intent="x", attempt=attempt
    )


def test_an_action_key_done_by_one_run_is_refused_to_another(store: Store) -> None:
    """A claim on a key another run did raises ActionKeyDone naming that run and its result."""
    a, b = start(store)[0], start(store)[0]
    wa = writer(store, a.run_id, last_seq=1)
    wa.commit("s", _intent("K-1"), sync=True, claim=("send", "K-1"))
    done = kinds.ActionDone(
        call="#0", name="send", key="K-1", idempotent=False, attempt=1, result={"receipt": 7}
    )
    wa.commit("s", done)
    with pytest.raises(ActionKeyDone) as refused:
        writer(store, b.run_id, last_seq=1).commit("s", _intent("K-1"), claim=("send", "K-1"))
    assert (refused.value.run_id, refused.value.result) == (a.run_id, {"receipt": 7})
    assert seqs(store, b.run_id) == [1]
    assert [(x.run_id, x.status) for x in store.actions(key="K-1")] == [(a.run_id, "done")]


def test_a_key_in_progress_is_refused_and_a_refused_failure_keeps_it(store: Store) -> None:
    """A key another run is acting on is refused (ActionBusy), and the refused run's recorded
    failure does not take the key over from it."""
    a, b, c = (start(store)[0] for _ in range(3))
    writer(store, a.run_id, last_seq=1).commit("s", _intent("K-1"), claim=("send", "K-1"))
    wb = writer(store, b.run_id, last_seq=1)
    with pytest.raises(ActionBusy) as busy:
        wb.commit("s", _intent("K-1"), claim=("send", "K-1"))
    assert busy.value.run_id == a.run_id
    failed = kinds.ActionFailed(
        call="#0",
        name="send",
        key="K-1",
        idempotent=False,
        attempt=1,
        status=None,
        error_type="Retryable",
        message="busy",
        retryable=True,
        in_doubt=False,
    )
    wb.commit("s", failed)
    for run in (b, c):
        with pytest.raises(ActionBusy) as again:
            writer(store, run.run_id, last_seq=store.run(run.run_id).last_seq).commit(
                "s", _intent("K-1"), claim=("send", "K-1")
            )
        assert again.value.run_id == a.run_id
    statuses = {x.run_id: x.status for x in store.actions(key="K-1")}
    assert statuses == {a.run_id: "intended", b.run_id: "failed"}


# Blobs


def test_blobs_are_stored_once_by_content_hash(open_store: Opener) -> None:
    """A payload is stored under its SHA-256, so writing it again names the same blob, and it
    reads back exact."""
    store = open_store()
    run, _ = start(store)
    text = "a long prompt, é and all\n" * 100
    w = writer(store, run.run_id, last_seq=1)
    refs = {w.blob(text), w.blob(text)}
    w.commit("a", effect("asked", sorted(refs)))
    other = writer(store, run.run_id, last_seq=2)
    refs.add(other.blob(text))
    other.commit("a", effect("again"))
    assert refs == {"sha256:" + hashlib.sha256(text.encode()).hexdigest()}
    assert open_store().blob(refs.pop()) == text
    with pytest.raises(LookupError):
        store.blob("sha256:" + "0" * 64)


# Limits and kills


def test_a_request_past_its_run_cap_is_refused_unwritten(store: Store) -> None:
    """A request whose worst case would take its run past its cost cap raises LimitReached and
    leaves nothing behind."""
    run, _ = start(store)
    w = writer(store, run.run_id, last_seq=1)
    cap = Reserve(nusd=600_000_000, tokens=100, max_cost_nusd=NUSD)
    w.commit("a", requested(0.6), reserve=cap)
    with pytest.raises(LimitReached) as reached:
        w.commit("a", requested(0.6), reserve=cap)
    assert reached.value.limit == "max_cost_usd"
    assert seqs(store, run.run_id) == [1, 2]
    assert store.run(run.run_id).total_nusd == 600_000_000
    w.commit("a", requested(0.4), reserve=Reserve(nusd=400_000_000, tokens=100, max_cost_nusd=NUSD))


def test_a_daily_budget_is_shared_by_the_runs_of_a_machine(open_store: Opener) -> None:
    """Runs of one machine, through different stores, spend one budget for the day together."""
    first, second = open_store(), open_store()
    first.set_budget("m", per_day_nusd=NUSD, per_run_nusd=None, by="ops")
    one, two, elsewhere = start(first)[0], start(second)[0], start(second, machine="n")[0]
    worst = Reserve(nusd=600_000_000, tokens=100)
    writer(first, one.run_id, last_seq=1).commit("a", requested(0.6), reserve=worst)
    with pytest.raises(LimitReached) as reached:
        writer(second, two.run_id, last_seq=1).commit("a", requested(0.6), reserve=worst)
    assert reached.value.limit == "budget_per_day"
    writer(second, elsewhere.run_id, last_seq=1).commit("a", requested(0.6), reserve=worst)
    [budget] = second.budgets("m")
    assert (budget.per_day_nusd, budget.spent_today_nusd) == (NUSD, 600_000_000)


def test_a_kill_request_is_read_by_another_store_and_cleared_by_run_killed(
    open_store: Opener,
) -> None:
    """A kill request is durable, seen by any store on the journal, and gone once run.killed is
    appended."""
    asker, executor = open_store(), open_store()
    run, _ = start(executor)
    assert executor.kill_request(run.run_id) is None
    asker.request_kill(run.run_id, by="alice", reason="too slow")
    found = executor.kill_request(run.run_id)
    assert found is not None and (found.requested_by, found.reason) == ("alice", "too slow")
    killed = kinds.RunKilled(killed_by="person", who="alice", message="killed by alice")
    writer(executor, run.run_id, last_seq=1).commit("a", killed)
    assert asker.kill_request(run.run_id) is None
    assert asker.run(run.run_id).status == "killed"


# Redaction


def test_a_secret_kept_out_is_never_read_back(open_store: Opener) -> None:
    """A secret given to keep_out is replaced in events, blobs and the run's input."""
    store = open_store()
    store.keep_out(SECRET)
    run, _ = start(store, input={"key": SECRET})
    w = writer(store, run.run_id, last_seq=1)
    ref = w.blob(f"prompt with {SECRET} inside")
    w.commit("a", effect("call", {"auth": f"Bearer {SECRET}", "prompt": ref}))
    reader = open_store(readonly=True)  # knows no secret: it reads what was stored
    events = list(reader.events(run.run_id))
    stored = [json.dumps(e.data) for e in events]
    stored += [reader.blob(events[0].data["input"]), reader.blob(ref)]
    assert all(SECRET not in text for text in stored)
    assert all("[redacted]" in text for text in stored[1:])
    assert store.redact(f"x{SECRET}x") == "x[redacted]x"


# Read-only


def test_a_read_only_store_refuses_every_write_and_sees_commits(open_store: Opener) -> None:
    """Opened read-only, a store refuses each write with ReadOnlyJournal and reads what a
    writer commits afterwards."""
    store = open_store()
    run, _ = start(store)
    reader = open_store(readonly=True)
    me = Holder.this_process()
    writes: list[Callable[[], object]] = [
        lambda: start(reader),
        lambda: writer(reader, run.run_id, last_seq=1).commit("a", effect("no")),
        lambda: reader.acquire_lease(run.run_id, me, 30),
        lambda: reader.renew_lease(run.run_id, me.owner, 30),
        lambda: reader.release_lease(run.run_id, me.owner),
        lambda: reader.set_budget("m", per_day_nusd=1, per_run_nusd=None, by="x"),
        lambda: reader.request_kill(run.run_id, by="x", reason=None),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyJournal):
            write()
    assert seqs(reader, run.run_id) == [1] and reader.kill_request(run.run_id) is None
    writer(store, run.run_id, last_seq=1).commit("a", effect("yes"))
    assert seqs(reader, run.run_id) == [1, 2]
    assert reader.run(run.run_id).last_seq == 2


def test_read_only_sql_reads_and_refuses_writes(store: Store) -> None:
    """The query method reads the journal and refuses a statement that would change it."""
    if not isinstance(store, Querying):
        pytest.xfail("this backend has no query() method yet (see journal.protocol.Querying)")
    run, _ = start(store)
    rows = store.query("SELECT count(*) FROM events")
    assert list(rows.rows) == [(1,)]
    with pytest.raises(QueryRefused):
        list(store.query("DELETE FROM events").rows)
    assert seqs(store, run.run_id) == [1]


# Concurrency


def _together(*jobs: Callable[[], object]) -> list[BaseException | None]:
    """Run each job in its own thread, released at once; what each raised (None: nothing)."""
    gate = threading.Barrier(len(jobs))
    outcomes: list[BaseException | None] = [None] * len(jobs)

    def run(i: int) -> None:
        gate.wait()
        try:
            jobs[i]()
        except BaseException as e:  # reported to the test, which asserts on it
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a job is stuck"
    return outcomes


def test_two_stores_append_to_different_runs_at_once(open_store: Opener) -> None:
    """Two stores (two connections, as two processes have) appending to two runs both land whole."""
    stores = [open_store(), open_store()]
    runs = [start(s)[0].run_id for s in stores]

    def append(i: int) -> Callable[[], None]:
        def go() -> None:
            w = writer(stores[i], runs[i], last_seq=1)
            for n in range(40):
                w.commit("a", effect(f"r{i}", n))

        return go

    assert _together(append(0), append(1)) == [None, None]
    for run_id in runs:
        events = list(stores[0].events(run_id, after=1))
        assert [e.seq for e in events] == list(range(2, 42))
        assert [e.data["result"] for e in events] == list(range(40))


def test_two_stores_racing_for_one_seq_leave_one_winner(open_store: Opener) -> None:
    """Two stores appending at the same seq of one run: one lands, the other gets
    ConcurrentAppend, every time."""
    stores = [open_store(), open_store()]
    run, _ = start(stores[0])
    for last in range(1, 11):
        writers = [writer(s, run.run_id, last_seq=last) for s in stores]
        jobs = [(lambda w=w, i=i: w.commit("a", effect(f"w{i}"))) for i, w in enumerate(writers)]
        outcomes = _together(*jobs)
        assert sorted(type(o).__name__ for o in outcomes) == ["ConcurrentAppend", "NoneType"]
    assert seqs(stores[1], run.run_id) == list(range(1, 12))
