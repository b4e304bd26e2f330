"""Tests for `journal.batch` and `journal.chain.Heads`: a batch made ready above the store, the
same for every backend, and the hash a batch chains from."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
import pytest

from runjournal.journal import ConcurrentAppend, Holder, Journal, RunWriter, chain, kinds, verify
from runjournal.journal.base import StoreBase
from runjournal.journal.batch import Batch, prepare, start
from runjournal.journal.blobs import payload
from runjournal.journal.errors import BadEvent, NotJSON
from runjournal.journal.events import Event

SECRET = "sk-ant-batch-0123456789abcdef"
AT = "2026-01-01T00:00:00.000Z"


class Secrets(StoreBase):
    """The secrets of a store, without a store."""

    def close(self) -> None:
        pass


def made(events: list[Event], **kwargs: Any) -> Batch:
    secrets = Secrets(secrets=kwargs.pop("secrets", ()))
    return prepare(events, redact=secrets.redact, secrets=secrets.secrets, **kwargs)


def effect(seq: int, result: Any, run_id: str = "abc123") -> Event:
    return Event(run_id, seq, AT, "effect.done", "a", {"name": "x", "call": "#0", "result": result})


def test_data_not_of_its_kind_is_refused() -> None:
    """An unknown kind, a field missing or a field the kind does not have: BadEvent."""
    for event in (
        Event("abc123", 2, AT, "no.such.kind", "a", {}),
        Event("abc123", 2, AT, "effect.done", "a", {"name": "x", "call": "#0"}),
        Event(
            "abc123", 2, AT, "effect.done", "a", {"name": "x", "call": "#0", "result": 1, "z": 0}
        ),
    ):
        with pytest.raises(BadEvent):
            made([effect(1, 1), event])


def test_data_json_cannot_hold_is_refused() -> None:
    with pytest.raises(NotJSON):
        made([effect(2, {1, 2})])


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        made([])


@attrs.frozen(kw_only=True)
class _Unknown(kinds.Data):
    KIND: ClassVar[str] = "no.such.kind"
    SUMMARY: ClassVar[str] = "a kind the journal does not have"

    def as_json(self) -> dict[str, Any]:
        return {"x": 1}


class _Counting:
    """A store that counts the appends it is handed."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    def append(self, batch: Batch, **kwargs: Any) -> Any:
        self.appends += 1
        return self.journal.append(batch, **kwargs)


def test_the_kind_check_refuses_before_the_store_is_asked(journal: Journal) -> None:
    """Through the writer, an event not of its kind never reaches the store's append, and its
    seq is taken back: the next event takes it."""
    run, _ = journal.create_run(
        machine="m",
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={},
        input={},
        run_key=None,
        holder=Holder.this_process(),
        lease_ttl=30,
    )
    store = _Counting(journal)
    writer = RunWriter(store, run.run_id, last_seq=1)
    with pytest.raises(BadEvent):
        writer.commit("a", _Unknown())
    assert store.appends == 0
    writer.commit("a", kinds.EffectDone(name="x", call="#0", result=1))
    assert [e.seq for e in journal.events(run.run_id)] == [1, 2]


def test_secrets_are_redacted_before_the_hash_is_computed() -> None:
    """The text stored, the event as written and the hash all hold `[redacted]`, never the
    secret: the chain verifies over what is stored."""
    batch = made([effect(2, {"auth": f"Bearer {SECRET}"})], secrets=[SECRET])
    (row,) = batch.rows(chain.GENESIS)
    assert SECRET not in row[5] and "[redacted]" in row[5]
    assert batch.events[0].data["result"] == {"auth": "Bearer [redacted]"}
    assert row[6] == chain.event_hash(chain.GENESIS, "abc123", 2, AT, "effect.done", "a", row[5])


def test_text_blobs_are_redacted_and_payloads_passed_as_they_are() -> None:
    held = payload(lambda: ("a payload, redacted by its maker",))
    batch = made([effect(2, 1)], blobs=[f"prompt with {SECRET}", held], secrets=[SECRET])
    assert batch.blobs == ["prompt with [redacted]", held]


def test_texts_the_caller_encoded_are_stored_byte_for_byte() -> None:
    """Texts given are not encoded again: with no secret to take out, the very objects."""
    text = '{"name":"x","call":"#0","result":1.0}'
    batch = made([effect(2, 1.0)], texts=[text])
    assert batch.texts[0] is text
    assert batch.rows(chain.GENESIS)[0][5] is text


def test_the_chain_is_the_one_existing_journals_hold() -> None:
    """`rows` chains each event to the one before it exactly as journals written before this
    module did: these hashes were computed then."""
    data = {"call": "#1", "item": 1, "outcome": "skip"}
    decision = Event("abc123", 3, "2026-01-01T00:00:01.000Z", "decision", None, data)
    rows = made([effect(2, "é"), decision]).rows(chain.GENESIS)
    assert [r[6] for r in rows] == [
        "a52423b5d8a9dbb8ca527333305bac3eab7ccd5461de3effc6d7e23c607ae870",
        "844431f180161deaf342dc7effe4584a0e7da818d17db0523e558c9a7872eaa9",
    ]
    assert [r[:6] for r in rows][1] == (
        "abc123",
        3,
        "2026-01-01T00:00:01.000Z",
        "decision",
        None,
        '{"call":"#1","item":1,"outcome":"skip"}',
    )


def test_the_changes_are_computed_from_the_redacted_events() -> None:
    """The runs table reads a run's error: it gets the redacted copy."""
    failed = Event("abc123", 2, AT, "run.failed", "a", {"error": f"401 for {SECRET}"})
    batch = made([failed], secrets=[SECRET])
    assert batch.changes.sets["error"] == "401 for [redacted]"
    assert (batch.first, batch.day, batch.kills) == (2, "2026-01-01", False)
    killed = Event("abc123", 3, AT, "run.killed", "a", {"killed_by": "person", "message": "m"})
    assert made([failed, killed]).kills


def test_a_run_started_holds_its_input_as_a_redacted_blob() -> None:
    secrets = Secrets(secrets=[SECRET])
    batch = start(
        "abc123",
        AT,
        ordinal=7,
        machine="m",
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={"key": SECRET},
        input={"key": SECRET},
        run_key=None,
        limits=None,
        limit_overrides={"max_steps": 3},
        forked_from=("def456", 4),
        redact=secrets.redact,
        secrets=secrets.secrets,
    )
    (event,) = batch.events
    (whole,) = batch.blobs
    assert not isinstance(whole, str)
    assert "".join(whole.pieces()) == '{"key":"[redacted]"}'
    assert event.data["input"] == whole.name
    assert event.data["state"] == {"key": "[redacted]"}
    assert (event.data["ordinal"], event.data["limit_overrides"]) == (7, None)
    assert event.data["forked_from"] == {"run_id": "def456", "seq": 4}
    assert SECRET not in batch.texts[0] and json.loads(batch.texts[0]) == event.data


class TestHeads:
    """`chain.Heads`: the hash a batch chains from."""

    def test_a_runs_first_event_chains_from_the_genesis(self) -> None:
        assert chain.Heads().previous("r", 1, lambda seq: pytest.fail("read")) == chain.GENESIS

    def test_the_last_event_written_is_not_read_back(self) -> None:
        heads = chain.Heads()
        heads.moved("r", 4, "h4")
        assert heads.previous("r", 5, lambda seq: pytest.fail("read")) == "h4"

    def test_otherwise_the_event_before_is_read(self) -> None:
        heads = chain.Heads()
        heads.moved("r", 4, "h4")
        read: list[int] = []

        def hash_of(seq: int) -> str:
            read.append(seq)
            return f"h{seq}"

        assert heads.previous("r", 8, hash_of) == "h7"
        assert read == [7]

    def test_a_gap_is_refused(self) -> None:
        with pytest.raises(ConcurrentAppend, match="no event 2"):
            chain.Heads().previous("r", 3, lambda seq: None)


def test_a_journal_written_through_batches_verifies(journal: Journal) -> None:
    """Batches of several events, redacted ones among them, chain into a journal that
    `journal verify` finds sound."""
    journal.keep_out(SECRET)
    run, _ = journal.create_run(
        machine="m",
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={"n": 0},
        input={"key": SECRET},
        run_key=None,
        holder=Holder.this_process(),
        lease_ttl=30,
    )
    writer = RunWriter(journal, run.run_id, last_seq=1)
    for i in range(5):
        writer.record("a", kinds.Decision(call=f"#{i}", item=i, outcome="skip"))
        writer.commit("a", kinds.EffectDone(name="x", call=f"#{i}", result=f"{SECRET}-{i}"))
    assert verify(journal) == []
    stored = journal.conn.execute("SELECT group_concat(data) FROM events").fetchone()[0]
    assert SECRET not in stored
