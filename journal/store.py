"""The journal file: opens it, appends events to runs and reads them back.

This is the only module that writes `events`. Every write is one `BEGIN IMMEDIATE`
transaction that does in SQL only what must happen inside it; the batch it stores was made ready
above it, the same for every backend (journal/batch.py: the kind check, the JSON, the secrets
redacted, the derived tables' changes). An append checks the writer's lease, the action claim
and the cost reservation, stores the blobs and the events (each chained to the run's event
before the batch, read in the transaction), and applies the changes to the derived tables. A seq
already taken makes the whole batch fail (`ConcurrentAppend`), so two writers never interleave.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from secrets import token_hex
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, cast

from runjournal.journal import batch as batches
from runjournal.journal import chain, leases, limits, opening, parts, projection, schema
from runjournal.journal import events as k
from runjournal.journal.base import StoreBase
from runjournal.journal.batch import Batch
from runjournal.journal.blobs import holds as blob_holds
from runjournal.journal.blobs import put as put_blob
from runjournal.journal.blobs import text as blob_text
from runjournal.journal.errors import (
    ActionBusy,
    ActionKeyDone,
    AmbiguousRunId,
    BlobMissing,
    ConcurrentAppend,
    JournalCorrupt,
    JournalError,
    LeaseLost,
    ReadOnlyJournal,
    RunIsDone,
    RunNotFound,
    translate,
)
from runjournal.journal.events import Clock, Event, timestamp
from runjournal.journal.leases import Holder, Lease
from runjournal.journal.query import Rows, query
from runjournal.journal.rows import ACTION_COLUMNS, RUN_COLUMNS, Action, Run
from runjournal.journal.verify import file_problems, verify_part

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

Durability = Literal["normal", "full"]
Tracer = Callable[[str], None]

_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, at, kind, step, data, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_EVENTS = "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = ?"


def _reading(method: Callable[Concatenate[Journal, P], R]) -> Callable[Concatenate[Journal, P], R]:
    """A read whose SQLite errors are raised as the journal's own (JournalError), rows read as
    they are iterated included: nothing above `journal/` sees `sqlite3`."""

    @functools.wraps(method)
    def read(journal: Journal, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(journal, *args, **kwargs)
        except sqlite3.Error as e:
            raise journal._translate(e) from e
        if isinstance(result, Iterator):
            return cast(R, _translated(journal, result))
        return result

    return read


def _translated(journal: Journal, rows: Iterator[T]) -> Iterator[T]:
    try:
        yield from rows
    except sqlite3.Error as e:
        raise journal._translate(e) from e


class Journal(StoreBase):
    """An open journal file. Not shared between processes; each opens its own."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        durability: Durability = "normal",
        clock: Clock = time.time,
        timeout: float = 30.0,
        secrets: Sequence[str] = (),
        readonly: bool = False,
    ) -> None:
        super().__init__(secrets=secrets)
        self.conn = conn
        self.path = path
        self.readonly = readonly
        """Opened for reading: every write is refused (ReadOnlyJournal)."""
        self.schema_found = len(schema.MIGRATIONS)
        """The schema version the file had when it was opened (before any migration)."""
        self.durability = durability
        self.clock = clock
        self.timeout = timeout
        # Any thread of the process may write through this connection; one at a time.
        self._lock = threading.RLock()
        # The seq and hash of each run's last event this connection wrote: the next one chains
        # from it without reading it back.
        self._heads = chain.Heads()
        # Whether SQLite's quick check of the file passed, once, before a writer first built on
        # a run through this connection.
        self._file_checked = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        readonly: bool = False,
        durability: Durability = "normal",
        clock: Clock = time.time,
        timeout: float = 30.0,
        tracer: Tracer | None = None,
        secrets: Sequence[str] = (),
    ) -> Journal:
        """Open the journal at `path` for writing, or with `readonly` for reading only.

        For writing, the schema is brought up to date, and with `create` a journal is made
        where no file is. For reading, nothing is ever written, no lock is taken, and a journal
        whose schema is not this runjournal's is refused (a writing command upgrades it).
        Whatever is at `path`, if it is not a journal it is refused and left as it was.
        """
        path = Path(path)
        if readonly and create:
            raise ValueError("a journal opened read-only cannot be created")
        if create and not path.exists():
            opening.create(path, lambda conn: _build(conn, path))
        identity = opening.identify(path, schema.MIGRATION_SET)
        schema.check_version(identity.schema, path, readonly=readonly)
        if readonly:
            conn = opening.connect_read(path, timeout=timeout)
        else:
            if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
                msg = (
                    f"{path} cannot be written (the file or its folder is read-only): run and "
                    "resume need both writable; the reading commands work on it as it is"
                )
                raise ReadOnlyJournal(msg)
            conn = opening.connect_write(path, timeout=timeout)
        try:
            # Again through the connection, which sees the log: the file alone may lag it.
            identity = opening.schema_of(conn, path, schema.MIGRATION_SET)
            schema.check_version(identity.schema, path, readonly=readonly)
        except BaseException:
            conn.close()
            raise
        if tracer is not None:
            conn.set_trace_callback(tracer)
        journal = cls(
            conn,
            path,
            durability=durability,
            clock=clock,
            timeout=timeout,
            secrets=secrets,
            readonly=readonly,
        )
        journal.schema_found = identity.schema
        try:
            if not readonly:
                conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
                if identity.schema != len(schema.MIGRATIONS) or not identity.named:
                    with journal._write() as c:
                        schema.migrate(c, str(path))
        except sqlite3.Error as e:
            conn.close()
            raise journal._translate(e) from e
        except BaseException:
            conn.close()
            raise
        return journal

    def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        interrupted: Callable[[], bool] | None = None,
    ) -> Rows:
        """Run one read-only statement, on a read-only connection of its own: see
        `journal.query`, which this is."""
        return query(self.path, sql, tuple(params), timeout=timeout, interrupted=interrupted)

    def reopen(self) -> Journal:
        """Another connection to the same file, for another thread."""
        return Journal.open(
            self.path,
            readonly=self.readonly,
            durability=self.durability,
            clock=self.clock,
            timeout=self.timeout,
            secrets=self.secrets,
        )

    def close(self) -> None:
        self.conn.close()

    def _translate(self, e: sqlite3.Error) -> JournalError:
        """Our error for what SQLite said; for a busy journal, naming who holds its runs."""
        holders = ""
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            self.shrink_log()
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            with contextlib.suppress(sqlite3.Error):  # reading is not blocked by the writer
                now = self.clock()
                live = [
                    f"{lease.describe()}, running {run_id}"
                    for run_id, lease in self.leases().items()
                    if lease.is_live(now)
                ]
                holders = "; ".join(live[:3])
        return translate(e, self.path, holders=holders)

    def shrink_log(self) -> bool:
        """Fold the log into the journal and cut it to nothing, if SQLite can now; True if so.

        Called when the disk is full: the log of a stopped run would otherwise keep the room
        it took. Folding writes the log's newest pages into the file, so it fails when the file
        has to grow and the disk has no room at all; the log is then left as it is, whole.
        """
        if self.readonly:
            return False
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                return False
            # Not the busy timeout: another connection reading the log makes this give up.
            self.conn.execute("PRAGMA busy_timeout = 100")
            try:
                (blocked, _, _) = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            return not blocked
        return False

    @_reading
    def check_run(self, run_id: str, *, upto: int | None = None) -> None:
        """Raise JournalCorrupt if the part of the run a writer builds on is damaged.

        That part is the `run.started` event and the input it refers to, and what a fold up to
        `upto` (default: the run's last event) reads: the newest whole state at or before it
        and the events after it, each checked against the hash chain from the event before
        them. Not `journal verify`: the events before that state are not read, so this costs
        what the fold costs, however long the run. The first call on a connection also runs
        SQLite's quick check of the whole file (a fraction of a second per 100 MB).
        """
        if not self._file_checked:
            damaged = file_problems(self.conn, "quick")
            if damaged:
                msg = (
                    f"{self.path} is damaged (sqlite: {damaged[0][0]}); nothing was written: "
                    f"`journal verify --db {self.path}` reports what SQLite finds"
                )
                raise JournalCorrupt(msg)
            self._file_checked = True
        sql = "SELECT max(seq) FROM events WHERE run_id = ? AND kind IN (?, ?)"
        params: list[Any] = [run_id, k.RUN_STARTED, k.SNAPSHOT]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        (base,) = self.conn.execute(sql, params).fetchone()
        found = verify_part(self.conn, run_id, first=base or 1, upto=upto)
        if found is None and base != 1:
            found = verify_part(self.conn, run_id, first=1, upto=1)
        if found is None:
            found = _input_problem(self.conn, run_id)
        if found is not None:
            msg = (
                f"{self.path} is damaged: run {run_id}, {found}; nothing was written: "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise JournalCorrupt(msg)

    def _write(self, *, sync: bool = False) -> _Transaction:
        """One write transaction; with `sync`, its commit reaches the disk before returning."""
        if self.readonly:
            msg = f"{self.path} was opened for reading: nothing can be written through it"
            raise ReadOnlyJournal(msg)
        return _Transaction(self, sync and self.durability != "full")

    # Appending

    def append(
        self,
        batch: Batch,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: limits.Reserve | None = None,
        owner: str | None = None,
    ) -> Sequence[Event]:
        """Append `batch` (see `batch.prepare`) and update the derived tables, atomically.

        `owner` (the writer's lease owner) is checked against the run's lease in the same
        transaction: a process whose lease was taken over writes nothing (LeaseLost), however
        late it noticed.
        `claim` (action name, key) first checks, in the same transaction, that no run has done
        that action key (ActionKeyDone) and no other run is acting on it (ActionBusy).
        `reserve` (with a model request) first checks, in the same transaction, that the request
        cannot take the run past its caps or its machine past today's budget (LimitReached).
        Nothing is appended to a run that is done (RunIsDone).
        Returns the events as written (redacted).
        """
        run_id = batch.run_id
        with self._write(sync=sync) as conn:
            if owner is not None:
                _check_owner(conn, run_id, owner)
            if claim is not None:
                _claim(conn, run_id, *claim)
            if reserve is not None:
                limits._reserve(conn, run_id, reserve, batch.day)
            for blob in batch.blobs:
                put_blob(conn, blob)
            self._insert(conn, batch)
            projection._apply(conn, run_id, batch.changes)
            if batch.kills:
                conn.execute("DELETE FROM kill_requests WHERE run_id = ?", (run_id,))
        return batch.events

    def _insert(self, conn: sqlite3.Connection, batch: Batch) -> None:
        """Insert the events, each chained to the one before it, inside the caller's write."""
        run_id = batch.run_id

        def read(seq: int) -> str | None:
            row = conn.execute(
                "SELECT hash FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)
            ).fetchone()
            return None if row is None else str(row[0])

        rows = batch.rows(self._heads.previous(run_id, batch.first, read))
        try:
            conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                msg = (
                    f"run {run_id}: seq {batch.first} is already taken; "
                    "another process is writing this run"
                )
                raise ConcurrentAppend(msg) from e
            if "run.done" in str(e):
                raise _done(run_id) from e
            raise
        self._heads.moved(run_id, rows[-1][1], rows[-1][-1])

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
        limits: dict[str, Any] | None = None,
        limit_overrides: dict[str, Any] | None = None,
        forked_from: tuple[str, int] | None = None,
    ) -> tuple[Run, bool]:
        """Record a new run and take its lease; with a run key already used, return that run.

        The second value is True when the run was created. `limits` are the limits in force,
        `limit_overrides` those given for this run alone (recorded with `run.started`);
        `forked_from` the run and seq whose state this one starts from.
        """
        if forked_from is not None:  # a fork never starts from a damaged record
            self.check_run(forked_from[0], upto=forked_from[1])
        now = self.clock()
        with self._write() as conn:
            if run_key is not None:
                row = conn.execute(
                    "SELECT run_id FROM runs WHERE machine = ? AND run_key = ?", (machine, run_key)
                ).fetchone()
                if row is not None:
                    return self._run(conn, row[0]), False
            run_id = _new_run_id(conn)
            # Creation order, counted in the same transaction: runs are listed by it, never by
            # a clock that may step back.
            (ordinal,) = conn.execute("SELECT coalesce(max(ordinal), 0) + 1 FROM runs").fetchone()
            started = batches.start(
                run_id,
                timestamp(now),
                ordinal=ordinal,
                machine=machine,
                target=target,
                code_hash=code_hash,
                step=step,
                state=state,
                input=input,
                run_key=run_key,
                limits=limits,
                limit_overrides=limit_overrides,
                forked_from=forked_from,
                redact=self.redact,
                secrets=self.secrets,
            )
            for blob in started.blobs:
                put_blob(conn, blob)
            conn.execute("INSERT INTO runs (run_id) VALUES (?)", (run_id,))
            self._insert(conn, started)
            projection._apply(conn, run_id, started.changes)
            leases._acquire(conn, run_id, holder, now, lease_ttl)
            return self._run(conn, run_id), True

    def rebuild_runs(self) -> None:
        """Derive the runs table again from the events alone."""
        with self._write() as conn:
            projection._rebuild(conn, lambda run_id: self.events(run_id))

    # Leases

    def acquire_lease(self, run_id: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the run's lease; return the one taken over, if any.

        Raises LeaseHeld if a live process has it, and RunIsDone if the run is done: the status
        is read in the same transaction, so a run that another process finished a moment ago
        is never taken up again.
        """
        self.check_run(run_id)  # a writer never builds on a damaged record
        with self._write() as conn:
            if self._run(conn, run_id).status == "done":
                raise _done(run_id)
            return leases._acquire(conn, run_id, holder, self.clock(), ttl)

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        with self._write() as conn:
            return leases._renew(conn, run_id, owner, self.clock(), ttl)

    def release_lease(self, run_id: str | None, owner: str) -> None:
        with self._write() as conn:
            leases._release(conn, run_id, owner)

    # Budgets and kills

    def set_budget(
        self, machine: str, *, per_day_nusd: int | None, per_run_nusd: int | None, by: str
    ) -> None:
        """Set what `machine` may spend per day and per run (None: no such budget)."""
        with self._write() as conn:
            at = timestamp(self.clock())
            limits._set_budget(conn, machine, per_day_nusd, per_run_nusd, at, by)

    @_reading
    def budgets(self, machine: str | None = None) -> list[limits.Budget]:
        """The budgets set, each with what its machine spent today (UTC)."""
        return limits._budgets(self.conn, timestamp(self.clock())[:10], machine)

    def request_kill(self, run_id: str, *, by: str, reason: str | None) -> None:
        """Ask the process executing the run to stop it (it looks every half second)."""
        with self._write() as conn:
            limits._request_kill(conn, run_id, timestamp(self.clock()), by, reason)

    @_reading
    def kill_request(self, run_id: str) -> limits.KillRequest | None:
        return limits._kill_request(self.conn, run_id)

    @_reading
    def lease(self, run_id: str) -> Lease | None:
        return leases._lease(self.conn, run_id)

    @_reading
    def leases(self) -> dict[str, Lease]:
        """Every lease held or left behind, by run id."""
        return leases._leases(self.conn)

    # Reading

    @_reading
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

    @_reading
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

    @_reading
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
        data = json.loads(row[5])
        data["state"] = parts.join(data["state"], data.get("state_parts"), self.blob)
        return Event(row[0], row[1], row[2], row[3], row[4], data)

    @_reading
    def blob(self, ref: str) -> str:
        try:
            text = blob_text(self.conn, ref)
        except UnicodeDecodeError as e:
            msg = (
                f"{self.path} is damaged: the blob {ref} is not UTF-8 text; "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise JournalCorrupt(msg) from e
        if text is None:
            msg = (
                f"{self.path} is damaged: the blob {ref} is gone; "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise BlobMissing(msg)
        return text

    @_reading
    def run(self, run_id: str) -> Run:
        return self._run(self.conn, run_id)

    def _run(self, conn: sqlite3.Connection, run_id: str) -> Run:
        row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            msg = f"no run {run_id} in {self.path}"
            raise RunNotFound(msg)
        return Run(*row)

    @_reading
    def find_run(self, prefix: str) -> Run:
        """The run whose id is or starts with `prefix`."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
            msg = f"no run {prefix!r} in {self.path}: run ids are hex (see `journal runs`)"
            raise RunNotFound(msg)
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id GLOB ? ORDER BY ordinal LIMIT 11",
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

    @_reading
    def actions(self, run_id: str | None = None, *, key: str | None = None) -> list[Action]:
        """Actions by run and key, oldest first; only one run's, or one key's, when asked."""
        columns = ", ".join(f"a.{c}" for c in ACTION_COLUMNS.split(", "))
        sql = f"SELECT {columns} FROM actions a JOIN runs r ON r.run_id = a.run_id WHERE 1"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND a.run_id = ?"
            params.append(run_id)
        if key is not None:
            sql += " AND a.key = ?"
            params.append(key)
        rows = self.conn.execute(sql + " ORDER BY r.ordinal, a.seq", params)
        return [Action.from_row(row) for row in rows]

    @_reading
    def runs(
        self,
        *,
        limit: int | None = None,
        machine: str | None = None,
        statuses: Sequence[str] | None = None,
        before: int | None = None,
    ) -> list[Run]:
        """Runs, newest (last created) first: all, or those of a machine, with a status, or
        created before the run of ordinal `before`."""
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE 1"
        params: list[Any] = []
        if machine is not None:
            sql += " AND machine = ?"
            params.append(machine)
        if statuses is not None:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params.extend(statuses)
        if before is not None:
            sql += " AND ordinal < ?"
            params.append(before)
        sql += " ORDER BY ordinal DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Run(*row) for row in self.conn.execute(sql, params)]


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, under the journal's lock; SQLite's errors become ours.

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
        except BaseException as e:
            self._restore(conn)
            if isinstance(e, sqlite3.Error):
                raise self.journal._translate(e) from e
            raise
        return conn

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        conn = self.journal.conn
        try:
            if kind is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    _rollback(conn)
                    raise self.journal._translate(e) from e
                except BaseException:
                    _rollback(conn)
                    raise
                return
            _rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self.journal._translate(error) from error
        finally:
            self._restore(conn)

    def _restore(self, conn: sqlite3.Connection) -> None:
        try:
            if self.raise_sync:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA synchronous = NORMAL")
        finally:
            self.journal._lock.release()


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (a full disk does): then there is nothing to undo.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _build(conn: sqlite3.Connection, path: Path) -> None:
    """The schema of a new journal, on a connection to its file (see `opening.create`)."""
    conn.execute("BEGIN IMMEDIATE")
    schema.migrate(conn, str(path))
    conn.execute("COMMIT")


def _done(run_id: str) -> RunIsDone:
    return RunIsDone(f"run {run_id} is done: nothing more can be added to it")


def _check_owner(conn: sqlite3.Connection, run_id: str, owner: str) -> None:
    row = conn.execute("SELECT owner FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] != owner:
        msg = (
            f"run {run_id}: another process took over this run's lease; "
            "this process stops without writing"
        )
        raise LeaseLost(msg)


def _claim(conn: sqlite3.Connection, run_id: str, name: str, key: str) -> None:
    row = conn.execute(
        "SELECT run_id, status, result, seq FROM action_keys WHERE name = ? AND key = ?",
        (name, key),
    ).fetchone()
    if row is None:
        return
    owner, status, result, seq = row
    if status == "done":
        raise ActionKeyDone(name, key, owner, seq, json.loads(result) if result else None)
    if status in ("intended", "in_doubt") and owner != run_id:
        raise ActionBusy(name, key, owner)


def _input_problem(conn: sqlite3.Connection, run_id: str) -> str | None:
    """What is wrong with a blob the run's `run.started` refers to (its input and the parts of
    its input and first state), if anything."""
    row = conn.execute(
        "SELECT json_extract(data, '$.input'), json_extract(data, '$.input_parts'), "
        "json_extract(data, '$.state_parts') "
        "FROM events WHERE run_id = ? AND seq = 1",
        (run_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    refs = [row[0], *(ref for held in row[1:] if held for ref in json.loads(held).values())]
    for ref in refs:
        found = conn.execute("SELECT size, data FROM blobs WHERE hash = ?", (ref,)).fetchone()
        if found is None:
            return f"the blob {ref} that seq 1 refers to is gone"
        if not blob_holds(ref, *found):
            return f"the blob {ref} that seq 1 refers to was changed: it fails its hash"
    return None


def _new_run_id(conn: sqlite3.Connection) -> str:
    while True:
        run_id = token_hex(6)
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            return run_id
