"""Tests for `journal.store`: opening, appending, the append-only rule, the runs projection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlite_utils

from runjournal.journal import (
    ConcurrentAppend,
    Event,
    Holder,
    Journal,
    JournalMissing,
    JournalTooNew,
    NotAJournal,
    NotJSON,
    RunNotFound,
    RunWriter,
    kinds,
    schema,
    state_at,
    verify,
)
from runjournal.journal import events as k


def new_run(journal: Journal, state: Any = None, **kwargs: Any) -> str:
    run, created = journal.create_run(
        machine=kwargs.get("machine", "m"),
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={"n": 0} if state is None else state,
        input={"n": 0},
        run_key=kwargs.get("run_key"),
        holder=Holder.this_process(),
        lease_ttl=30,
    )
    assert created
    return run.run_id


def test_open_creates_a_wal_journal_with_its_schema_version(db: Path) -> None:
    """A new journal is in WAL mode and its user_version is the number of migrations."""
    Journal.open(db, create=True).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_open_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    """Reading commands never create a journal where there was none."""
    with pytest.raises(JournalMissing, match="no journal at"):
        Journal.open(tmp_path / "nothing.db")
    assert not (tmp_path / "nothing.db").exists()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(NotAJournal, match="not a journal"):
        Journal.open(path)
    assert path.read_text().startswith("these are my notes")


def test_another_sqlite_database_is_refused_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite3.connect(path).execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(NotAJournal, match="tables users"):
        Journal.open(path, create=True)
    names = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert names == [("users",)]


def test_a_journal_from_a_newer_version_is_refused(db: Path) -> None:
    Journal.open(db, create=True).close()
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('runjournal', '0999_from_the_future', '2030-01-01')"
    )
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    for readonly in (False, True):
        with pytest.raises(JournalTooNew, match="newer runjournal"):
            Journal.open(db, readonly=readonly)


def test_processes_creating_one_journal_at_once_all_succeed(db: Path) -> None:
    """The schema is created in one write transaction: racing creators do not collide."""
    code = f"from runjournal.journal import Journal; Journal.open({str(db)!r}, create=True).close()"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)
    ]
    errors = [p.communicate()[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    conn = sqlite3.connect(db)
    applied = conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    assert applied == len(schema.MIGRATIONS)


def test_an_older_journal_is_migrated_and_keeps_its_runs(db: Path) -> None:
    """A journal made by the first schema gains the later tables and columns, rows intact."""
    old = sqlite_utils.Database(db)
    first = sqlite_utils.Migrations(schema.MIGRATION_SET)
    name, fn = schema.MIGRATIONS[0]
    first(name=name)(fn)
    first.apply(old)
    started = {"machine": "m", "target": "t", "code_hash": "c", "step": "a", "state": {}}
    for seq, kind, data in ((1, "run.started", started), (2, "run.done", {"steps": 0})):
        old.execute(
            "INSERT INTO events (run_id, seq, at, kind, step, data) VALUES (?, ?, ?, ?, ?, ?)",
            ("abc123", seq, "2026-11-01T00:00:00.000Z", kind, None, json.dumps(data)),
        )
    old.execute("INSERT INTO runs (run_id, machine, status) VALUES ('abc123', 'm', 'done')")
    old.conn.commit()
    old.close()
    with Journal.open(db) as journal:
        run = journal.run("abc123")
        assert run.status == "done"
        assert run.cost_usd == 0
        assert journal.conn.execute("SELECT count(*) FROM model_calls").fetchone()[0] == 0
        assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)


def test_append_and_read_back_in_order(journal: Journal) -> None:
    run_id = new_run(journal)
    writer = RunWriter(journal, run_id, last_seq=1)
    writer.record(
        "a", kinds.TransitionEvent(to_step="b", delta=[{"op": "replace", "path": "/n", "value": 1}])
    )
    writer.commit("b", kinds.EffectDone(name="x", call="#0", result=[1, "two"]))
    events = list(journal.events(run_id))
    assert [(e.seq, e.kind) for e in events] == [
        (1, k.RUN_STARTED),
        (2, k.TRANSITION),
        (3, k.EFFECT_DONE),
    ]
    assert events[2].data["result"] == [1, "two"]
    assert state_at(journal, run_id).state == {"n": 1}


def test_a_taken_seq_fails_the_whole_batch(journal: Journal) -> None:
    """Optimistic concurrency: a second writer at the same seq fails and writes nothing."""
    run_id = new_run(journal)
    first = RunWriter(journal, run_id, last_seq=1)
    second = RunWriter(journal, run_id, last_seq=1)
    first.commit("a", kinds.EffectDone(name="x", call="#0", result=1))
    second.record("a", kinds.Decision(call="#1", item=1, outcome="o"))
    with pytest.raises(ConcurrentAppend, match="seq 2 is already taken"):
        second.commit("a", kinds.EffectDone(name="y", call="#0", result=2))
    assert [e.kind for e in journal.events(run_id)] == [k.RUN_STARTED, k.EFFECT_DONE]
    assert journal.run(run_id).last_seq == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'x'",
        "UPDATE events SET data = '{}' WHERE seq = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE seq = 1",
    ],
)
def test_events_are_append_only(journal: Journal, db: Path, statement: str) -> None:
    """Not even a plain sqlite3 connection can change or delete an event."""
    new_run(journal)
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_data_that_is_not_json_is_refused_before_writing(journal: Journal) -> None:
    run_id = new_run(journal)
    writer = RunWriter(journal, run_id, last_seq=1)
    with pytest.raises(NotJSON):
        writer.commit("a", kinds.EffectDone(name="x", call="#0", result={1, 2}))
    assert journal.run(run_id).last_seq == 1
    writer.commit("a", kinds.EffectDone(name="x", call="#0", result=[1, 2]))
    assert [e.seq for e in journal.events(run_id)] == [1, 2]


def test_the_runs_table_rebuilds_from_events_alone(journal: Journal) -> None:
    """Dropping the projection and deriving it again gives the same rows."""
    ids = [new_run(journal) for _ in range(3)]
    for i, run_id in enumerate(ids):
        writer = RunWriter(journal, run_id, last_seq=1)
        for j in range(i + 2):
            writer.commit("a", kinds.EffectDone(name="x", call=f"#{j}", result=j))
            writer.record("a", kinds.Decision(call="d", item=j, outcome="o"))
            writer.record("a", kinds.TransitionEvent(to_step="a", delta=[]))
        writer.record("a", kinds.TransitionEvent(to_step=None, delta=[]))
        writer.commit("a", kinds.RunDone(steps=3) if i else kinds.RunFailed(error="boom"))
    before = [attrs.asdict(r) for r in journal.runs()]
    journal.rebuild_runs()
    after = [attrs.asdict(r) for r in journal.runs()]
    assert after == before
    assert {r["status"] for r in after} == {"done", "failed"}


def test_run_key_finds_the_existing_run(journal: Journal) -> None:
    run_id = new_run(journal, run_key="2026-11-26")
    again, created = journal.create_run(
        machine="m",
        target="t.py:m",
        code_hash="c0de",
        step="a",
        state={},
        input={},
        run_key="2026-11-26",
        holder=Holder.this_process(),
        lease_ttl=30,
    )
    assert not created
    assert again.run_id == run_id
    assert len(journal.runs()) == 1


def test_find_run_by_prefix(journal: Journal) -> None:
    run_id = new_run(journal)
    assert journal.find_run(run_id[:4]).run_id == run_id
    with pytest.raises(RunNotFound):
        journal.find_run("not-hex")
    with pytest.raises(RunNotFound):
        journal.find_run("f" * 12 if not run_id.startswith("f") else "0" * 12)


def test_reading_a_long_run_streams_in_flat_memory(journal: Journal) -> None:
    """Memory while iterating 40,000 events stays far below what holding them would take."""
    run_id = new_run(journal)
    writer = RunWriter(journal, run_id, last_seq=1, max_pending=1000)
    payload = "x" * 200
    for i in range(40_000):
        writer.record("a", kinds.Decision(call=str(i), item=i, outcome=payload))
    writer.flush()
    tracemalloc.start()
    count = 0
    for event in journal.events(run_id):
        count += 1
        assert event.kind == k.RUN_STARTED or event.data["outcome"] == payload
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 40_001
    assert peak < 2_000_000, f"peak {peak} bytes: events were held, not streamed"


def test_state_at_uses_the_newest_snapshot(journal: Journal) -> None:
    """The fold starts at the newest whole state before the seq asked for."""
    run_id = new_run(journal, state={"n": 0})
    writer = RunWriter(journal, run_id, last_seq=1)
    for n in range(1, 6):
        delta = [{"op": "replace", "path": "/n", "value": n}]
        writer.record("a", kinds.TransitionEvent(to_step="a", delta=delta))
    writer.record("a", kinds.Snapshot(state={"n": 5}, to_step="a", transitions=5))
    delta = [{"op": "add", "path": "/m", "value": 1}]
    writer.record("a", kinds.TransitionEvent(to_step="b", delta=delta))
    writer.flush()
    assert state_at(journal, run_id).state == {"n": 5, "m": 1}
    assert state_at(journal, run_id).transitions == 6
    assert state_at(journal, run_id, 3).state == {"n": 2}
    assert journal.run(run_id).snapshot_seq == 7


def test_events_carry_their_run_and_time(journal: Journal) -> None:
    run_id = new_run(journal)
    event = next(journal.events(run_id))
    assert isinstance(event, Event)
    assert event.run_id == run_id
    assert event.at.endswith("Z")
    assert journal.conn.execute("SELECT date(at) FROM events").fetchone()[0] == event.at[:10]


@pytest.mark.parametrize(("durability", "level"), [("normal", 1), ("full", 2)])
def test_durability_sets_the_synchronous_level(db: Path, durability: Any, level: int) -> None:
    """normal is synchronous=NORMAL (1) in WAL; full is FULL (2): every commit synced."""
    with Journal.open(db, create=True, durability=durability) as journal:
        assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == level


def test_a_journal_of_schema_3_gains_a_hash_chain_and_an_order_that_verify(db: Path) -> None:
    """Events written before the chain are chained by the migration; runs are numbered in the
    order they started; the result verifies and goes on chaining from there."""
    old = sqlite_utils.Database(db)
    first_three = sqlite_utils.Migrations(schema.MIGRATION_SET)
    for name, fn in schema.MIGRATIONS[:3]:
        first_three(name=name)(fn)
    first_three.apply(old)
    started = (
        json.dumps({"machine": "m", "target": "t", "code_hash": "c", "run_key": None, "step": "a"})[
            :-1
        ]
        + ', "input": %s, "state": {"n": 0}}'
    )
    blob = "{}"
    ref = "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
    old.execute("INSERT INTO blobs (hash, size, data) VALUES (?, 2, ?)", (ref, blob))
    for run_id, at in (
        ("bbb222", "2026-11-02T00:00:00.000Z"),
        ("aaa111", "2026-11-01T00:00:00.000Z"),
    ):
        insert = "INSERT INTO events (run_id, seq, at, kind, step, data) VALUES (?, ?, ?, ?, ?, ?)"
        old.execute(insert, (run_id, 1, at, "run.started", None, started % json.dumps(ref)))
        change = '{"to":"a","delta":[{"op":"replace","path":"/n","value":1}]}'
        old.execute(insert, (run_id, 2, at, "transition", "a", change))
        old.execute(
            "INSERT INTO runs (run_id, machine, target, code_hash, step, steps, last_seq, "
            "transition_seq, snapshot_seq, started_at, updated_at) "
            "VALUES (?, 'm', 't', 'c', 'a', 1, 2, 2, 1, ?, ?)",
            (run_id, at, at),
        )
    old.conn.commit()
    old.close()
    with Journal.open(db) as journal:
        assert [r.run_id for r in journal.runs()] == ["bbb222", "aaa111"]
        assert [journal.run(r).ordinal for r in ("aaa111", "bbb222")] == [1, 2]
        assert verify(journal) == []
        hashes = [row[0] for row in journal.conn.execute("SELECT hash FROM events")]
        assert all(len(h) == 64 for h in hashes) and len(set(hashes)) == 4
        writer = RunWriter(journal, "aaa111", last_seq=2)
        writer.commit("a", kinds.RunDone(steps=1))
        third = new_run(journal)
        assert journal.run(third).ordinal == 3
        assert verify(journal) == []


def test_shrink_log_folds_the_log_in_and_cuts_it_to_nothing(db: Path) -> None:
    """What a full disk calls: the log's room given back when SQLite can fold it; a reader in
    the middle of the log makes it give up at once, the log left whole."""
    with Journal.open(db, create=True) as journal:
        journal.conn.execute("PRAGMA wal_autocheckpoint = 0")
        for n in range(20):
            journal.set_budget(f"m{n}", per_day_nusd=n, per_run_nusd=None, by="test")
        log = Path(f"{db}-wal")
        held = log.stat().st_size
        assert held > 0
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM budgets").fetchone()
        assert journal.shrink_log() is False
        assert log.stat().st_size == held
        reader.close()
        assert journal.shrink_log() is True
        assert log.stat().st_size == 0
        assert len(journal.budgets()) == 20
