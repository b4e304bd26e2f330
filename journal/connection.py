"""An open journal file: its connection, its write transactions, and SQLite's errors as ours.

The SQLite store is three layers, each a module: this one opens the file and holds the
connection (`Connected`), `reading.py` reads runs and events through it (`Reading`), and
`store.py` writes them (`Journal`). Every write is one `BEGIN IMMEDIATE` transaction under the
connection's lock (`_write`). Every SQLite error, in a write or a read (rows read as they are
iterated included), is raised as the journal's own (`translating`): nothing above `journal/`
sees `sqlite3`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar, cast

from runjournal.journal import chain, leases, opening, schema
from runjournal.journal.base import StoreBase
from runjournal.journal.errors import JournalError, ReadOnlyJournal, translate
from runjournal.journal.events import Clock
from runjournal.journal.query import Rows, query

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
C = TypeVar("C", bound="Connected")

Durability = Literal["normal", "full"]
Tracer = Callable[[str], None]


class Connected(StoreBase):
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
        self.location = str(path)
        """What messages call this journal: its file."""
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
    ) -> Self:
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

    def reopen(self) -> Self:
        """Another connection to the same file, for another thread."""
        return type(self).open(
            self.path,
            readonly=self.readonly,
            durability=self.durability,
            clock=self.clock,
            timeout=self.timeout,
            secrets=self.secrets,
        )

    def close(self) -> None:
        self.conn.close()

    def translating(self) -> _Translating:
        """SQLite's errors inside raised as the journal's own (see `_translate`): for a read
        through this journal's connection, by the store or by the reports and checks beside it
        (journal/costs.py, journal/verify.py)."""
        return _Translating(self)

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
                    for run_id, lease in leases._leases(self.conn).items()
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

    def _write(self, *, sync: bool = False) -> _Transaction:
        """One write transaction; with `sync`, its commit reaches the disk before returning."""
        if self.readonly:
            msg = f"{self.path} was opened for reading: nothing can be written through it"
            raise ReadOnlyJournal(msg)
        return _Transaction(self, sync and self.durability != "full")


def reading(method: Callable[Concatenate[C, P], R]) -> Callable[Concatenate[C, P], R]:
    """A method of the store that reads, run inside `translating`, and the rows it returns
    read inside it as they are iterated."""

    @functools.wraps(method)
    def read(journal: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with journal.translating():
            result = method(journal, *args, **kwargs)
        if isinstance(result, Iterator):
            return cast(R, _translated(journal, result))
        return result

    return read


def _translated(journal: Connected, rows: Iterator[T]) -> Iterator[T]:
    with journal.translating():
        yield from rows


class _Translating:
    """A class rather than a generator-based context manager: every read goes through it."""

    __slots__ = ("journal",)

    def __init__(self, journal: Connected) -> None:
        self.journal = journal

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        if isinstance(error, sqlite3.Error):
            raise self.journal._translate(error) from error


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, under the journal's lock; SQLite's errors become ours.

    A class rather than a generator-based context manager: it is on the path of every step.
    """

    __slots__ = ("journal", "raise_sync")

    def __init__(self, journal: Connected, raise_sync: bool) -> None:
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
