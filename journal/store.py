"""The journal file: opens it, appends events to runs and reads them back.

This is the only module that writes `events`. Every write is one `BEGIN IMMEDIATE`
transaction that appends a batch of events and updates the runs projection with them; a seq
already taken makes the whole batch fail (`ConcurrentAppend`), so two writers never interleave.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from journal import events as k
from journal import leases, projection, schema
from journal.errors import (
    ActionBusy,
    ActionDone,
    AmbiguousRunId,
    ConcurrentAppend,
    JournalMissing,
    NotAJournal,
    RunNotFound,
)
from journal.events import Clock, Event, dumps, timestamp
from journal.leases import Holder, Lease
from journal.rows import ACTION_COLUMNS, RUN_COLUMNS, Action, Run

Durability = Literal["normal", "full"]
Tracer = Callable[[str], None]

_INSERT_EVENT = "INSERT INTO events (run_id, seq, at, kind, step, data) VALUES (?, ?, ?, ?, ?, ?)"
_SELECT_EVENTS = "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = ?"


class Journal:
    """An open journal file. Not shared between processes; each opens its own."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        durability: Durability = "normal",
        clock: Clock = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.conn = conn
        self.path = path
        self.durability = durability
        self.clock = clock
        self.timeout = timeout
        # Any thread of the process may write through this connection; one at a time.
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        durability: Durability = "normal",
        clock: Clock = time.time,
        timeout: float = 30.0,
        tracer: Tracer | None = None,
    ) -> Journal:
        """Open the journal at `path`, creating it when `create` is true, and migrate it."""
        path = Path(path)
        if not create and not path.exists():
            msg = f"no journal at {path}: start a run with `journal run`, or pass --db"
            raise JournalMissing(msg)
        if path.is_dir():
            msg = f"{path} is a folder, not a journal file"
            raise NotAJournal(msg)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        if tracer is not None:
            conn.set_trace_callback(tracer)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
            journal = cls(conn, path, durability=durability, clock=clock, timeout=timeout)
            with journal._write() as c:
                _check_is_journal(c, path)
                schema.migrate(c, str(path))
        except sqlite3.DatabaseError as e:
            conn.close()
            msg = f"{path} is not a journal: {e}"
            raise NotAJournal(msg) from e
        except BaseException:
            conn.close()
            raise
        return journal

    def reopen(self) -> Journal:
        """Another connection to the same file, for another thread."""
        return Journal.open(
            self.path, durability=self.durability, clock=self.clock, timeout=self.timeout
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, *, sync: bool = False) -> _Transaction:
        """One write transaction; with `sync`, its commit reaches the disk before returning."""
        return _Transaction(self, sync and self.durability != "full")

    # Appending

    def append(
        self,
        events: Sequence[Event],
        *,
        texts: Sequence[str] | None = None,
        blobs: Sequence[str] = (),
        sync: bool = False,
        claim: tuple[str, str] | None = None,
    ) -> None:
        """Append `events` (all of one run, seqs in order) and update the run's row, atomically.

        `texts` are the events' data already encoded as JSON, when the caller has them;
        `blobs` are payloads the events refer to by `blob_ref`, stored in the same transaction.
        `claim` (action name, key) first checks, in the same transaction, that no run has done
        that action key (ActionDone) and no other run is acting on it (ActionBusy).
        """
        if not events:
            return
        run_id = events[0].run_id
        if texts is None:
            texts = [dumps(e.data) for e in events]
        rows = [
            (run_id, e.seq, e.at, e.kind, e.step, t) for e, t in zip(events, texts, strict=True)
        ]
        with self._write(sync=sync) as conn:
            if claim is not None:
                _claim(conn, run_id, *claim)
            for blob in blobs:
                _put_blob(conn, blob)
            _insert(conn, run_id, rows)
            projection._apply(conn, run_id, projection.project(events))

    def create_run(
        self,
        *,
        machine: str,
        target: str,
        code_hash: str,
        step: str,
        state: Any,
        input: Any,
        run_key: str | None,
        holder: Holder,
        lease_ttl: float,
    ) -> tuple[Run, bool]:
        """Record a new run and take its lease; with a run key already used, return that run.

        The second value is True when the run was created.
        """
        now = self.clock()
        with self._write() as conn:
            if run_key is not None:
                row = conn.execute(
                    "SELECT run_id FROM runs WHERE machine = ? AND run_key = ?", (machine, run_key)
                ).fetchone()
                if row is not None:
                    return self._run(conn, row[0]), False
            run_id = _new_run_id(conn)
            started = Event(
                run_id,
                1,
                timestamp(now),
                k.RUN_STARTED,
                None,
                {
                    "machine": machine,
                    "target": target,
                    "code_hash": code_hash,
                    "run_key": run_key,
                    "step": step,
                    "input": _put_blob(conn, dumps(input)),
                    "state": state,
                },
            )
            conn.execute("INSERT INTO runs (run_id) VALUES (?)", (run_id,))
            _insert(
                conn, run_id, [(run_id, 1, started.at, started.kind, None, dumps(started.data))]
            )
            projection._apply(conn, run_id, projection.project([started]))
            leases._acquire(conn, run_id, holder, now, lease_ttl)
            return self._run(conn, run_id), True

    def rebuild_runs(self) -> None:
        """Derive the runs table again from the events alone."""
        with self._write() as conn:
            projection._rebuild(conn, lambda run_id: self.events(run_id))

    # Leases

    def acquire_lease(self, run_id: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the run's lease (LeaseHeld if a live process has it); return the one taken over."""
        with self._write() as conn:
            return leases._acquire(conn, run_id, holder, self.clock(), ttl)

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        with self._write() as conn:
            return leases._renew(conn, run_id, owner, self.clock(), ttl)

    def release_lease(self, run_id: str, owner: str) -> None:
        with self._write() as conn:
            leases._release(conn, run_id, owner)

    def lease(self, run_id: str) -> Lease | None:
        return leases._lease(self.conn, run_id)

    def leases(self) -> dict[str, Lease]:
        """Every lease held or left behind, by run id."""
        return leases._leases(self.conn)

    # Reading

    def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """The run's events with `after < seq <= upto`, in order, read as they are iterated."""
        sql = _SELECT_EVENTS + " AND seq > ?"
        params: list[Any] = [run_id, after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(kinds)
        loads = json.loads
        for run, seq, at, kind, step, data in self.conn.execute(sql + " ORDER BY seq", params):
            yield Event(run, seq, at, kind, step, loads(data))

    def transitions(
        self, run_id: str, *, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, str, str | None, str]]:
        """`(seq, at, step, data as JSON text)` of the run's transitions: what a fold reads.

        Rows, not events: a replay reads hundreds of thousands of them.
        """
        sql = "SELECT seq, at, step, data FROM events WHERE run_id = ? AND kind = ? AND seq > ?"
        params: list[Any] = [run_id, k.TRANSITION, after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        return iter(self.conn.execute(sql + " ORDER BY seq", params))

    def latest_snapshot(self, run_id: str, upto: int | None = None) -> Event:
        """The newest event holding a whole state (`run.started`, `snapshot`) up to `upto`."""
        sql = _SELECT_EVENTS + " AND kind IN (?, ?)"
        params: list[Any] = [run_id, k.RUN_STARTED, k.SNAPSHOT]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        row = self.conn.execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        if row is None:
            msg = f"run {run_id} has no recorded state at or before seq {upto}"
            raise RunNotFound(msg)
        return Event(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))

    def blob(self, ref: str) -> str:
        row = self.conn.execute("SELECT data FROM blobs WHERE hash = ?", (ref,)).fetchone()
        if row is None:
            msg = f"no blob {ref} in {self.path}"
            raise LookupError(msg)
        return str(row[0])

    def run(self, run_id: str) -> Run:
        return self._run(self.conn, run_id)

    def _run(self, conn: sqlite3.Connection, run_id: str) -> Run:
        row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            msg = f"no run {run_id} in {self.path}"
            raise RunNotFound(msg)
        return Run(*row)

    def find_run(self, prefix: str) -> Run:
        """The run whose id is or starts with `prefix`."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
            msg = f"no run {prefix!r} in {self.path}: run ids are hex (see `journal runs`)"
            raise RunNotFound(msg)
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id GLOB ? ORDER BY started_at LIMIT 11",
            (prefix.lower() + "*",),
        ).fetchall()
        if not rows:
            msg = f"no run {prefix!r} in {self.path} (see `journal runs`)"
            raise RunNotFound(msg)
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            msg = f"run id prefix {prefix!r} is ambiguous: it matches {shown}"
            raise AmbiguousRunId(msg)
        return self._run(self.conn, rows[0][0])

    def actions(self, run_id: str | None = None, *, key: str | None = None) -> list[Action]:
        """Actions by run and key, oldest first; only one run's, or one key's, when asked."""
        sql = f"SELECT {ACTION_COLUMNS} FROM actions WHERE 1"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        if key is not None:
            sql += " AND key = ?"
            params.append(key)
        rows = self.conn.execute(sql + " ORDER BY intended_at, run_id, seq", params)
        return [Action(*row) for row in rows]

    def runs(self, *, limit: int | None = None) -> list[Run]:
        """All runs, newest first."""
        sql = f"SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, run_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Run(*row) for row in self.conn.execute(sql)]


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, under the journal's lock.

    A class rather than a generator-based context manager: it is on the path of every step.
    """

    __slots__ = ("journal", "raise_sync")

    def __init__(self, journal: Journal, raise_sync: bool) -> None:
        self.journal = journal
        self.raise_sync = raise_sync

    def __enter__(self) -> sqlite3.Connection:
        self.journal._lock.acquire()
        conn = self.journal.conn
        try:
            if self.raise_sync:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore(conn)
            raise
        return conn

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        conn = self.journal.conn
        try:
            if kind is None:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            self._restore(conn)

    def _restore(self, conn: sqlite3.Connection) -> None:
        try:
            if self.raise_sync:
                conn.execute("PRAGMA synchronous = NORMAL")
        finally:
            self.journal._lock.release()


def _check_is_journal(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse an SQLite database that holds tables but is not a journal."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if names and "events" not in names:
        shown = ", ".join(sorted(names)[:5])
        msg = f"{path} is an SQLite database but not a journal (it has tables {shown})"
        raise NotAJournal(msg)


def _insert(conn: sqlite3.Connection, run_id: str, rows: list[tuple[Any, ...]]) -> None:
    try:
        conn.executemany(_INSERT_EVENT, rows)
    except sqlite3.IntegrityError as e:
        if "UNIQUE" not in str(e):
            raise
        msg = (
            f"run {run_id}: seq {rows[0][1]} is already taken; another process is writing this run"
        )
        raise ConcurrentAppend(msg) from e


def _claim(conn: sqlite3.Connection, run_id: str, name: str, key: str) -> None:
    row = conn.execute(
        "SELECT run_id, status, result, seq FROM action_keys WHERE name = ? AND key = ?",
        (name, key),
    ).fetchone()
    if row is None:
        return
    owner, status, result, seq = row
    if status == "done":
        raise ActionDone(name, key, owner, seq, json.loads(result) if result else None)
    if status in ("intended", "in_doubt") and owner != run_id:
        raise ActionBusy(name, key, owner)


def blob_ref(text: str) -> str:
    """The name a payload is stored under: `sha256:` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _put_blob(conn: sqlite3.Connection, text: str) -> str:
    """Store `text` once under its content hash and return the hash."""
    ref = blob_ref(text)
    conn.execute(
        "INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)", (ref, len(text), text)
    )
    return ref


def _new_run_id(conn: sqlite3.Connection) -> str:
    while True:
        run_id = secrets.token_hex(6)
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            return run_id
