"""Read-only SQL over the journal, for `journal sql` and anyone auditing a journal.

Three locks, each enough alone for the common case: the file is opened read-only, the
connection is `query_only`, and an authorizer refuses at prepare time every statement that
would write, attach another file or change a setting, naming what it refused.

A statement can be stopped: by a time limit, or by a flag its caller raises (`journal sql` on
Ctrl-C). SQLite asks a progress handler every few thousand instructions, and the rows are
checked as they are read, so a runaway statement and a huge result both stop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from runjournal.journal.errors import JournalMissing, QueryFailed, QueryRefused, QueryStopped
from runjournal.journal.opening import connect_read

_REFUSED = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TEMP TABLE",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE TEMP VIEW",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_DROP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_DROP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
    sqlite3.SQLITE_TRANSACTION: "BEGIN/COMMIT",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
}
# Pragmas that only describe the schema.
_READ_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"}
# SQLite instructions between two calls of the progress handler: a few hundred microseconds.
_PROGRESS_EVERY = 1000


@attrs.frozen
class Rows:
    """The result of a query: column names and the rows, read as they are iterated."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


class _Guard:
    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and arg2 == "load_extension":
            self.refused = "load_extension()"
            return sqlite3.SQLITE_DENY
        if action in _REFUSED:
            # DROP and CREATE first write sqlite_master: that is a schema change, not a DELETE.
            schema = (arg1 or "").startswith("sqlite_")
            self.refused = self.refused or ("a schema change" if schema else _REFUSED[action])
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class _Watch:
    """The progress handler: says stop (non-zero) once the deadline passed or the flag is up."""

    def __init__(self, timeout: float | None, interrupted: Callable[[], bool] | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.interrupted = interrupted
        self.stopped: QueryStopped | None = None

    def __call__(self) -> int:
        return self.check() is not None

    def check(self) -> QueryStopped | None:
        """Why the statement must stop now, if it must."""
        if self.stopped is None:
            if self.interrupted is not None and self.interrupted():
                self.stopped = QueryStopped(None)
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.stopped = QueryStopped(self.timeout)
        return self.stopped

    def failed(self, e: sqlite3.Error) -> BaseException | None:
        """What to raise for `e` when it is the statement being stopped, not a failure."""
        if self.stopped is not None:
            return self.stopped
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            # Nobody else has this connection: an exception in the progress handler stopped
            # it, and SQLite swallowed it. That is Ctrl-C under Python's own SIGINT handler.
            return KeyboardInterrupt()
        return None


def query(
    path: str | Path,
    sql: str,
    params: tuple[Any, ...] = (),
    *,
    timeout: float | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> Rows:
    """Run one read-only statement against the journal at `path`.

    The statement stops with `QueryStopped` once `timeout` seconds have passed since this call
    (None: no limit), or once `interrupted()` returns true, while it runs or as rows are read.
    `interrupted` is called often and must be quick: a signal handler's flag is the usual one.
    """
    path = Path(path)
    if not path.exists():
        msg = f"no journal at {path}: start a run with `journal run`, or pass --db"
        raise JournalMissing(msg)
    conn = connect_read(path, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    guard = _Guard()
    conn.set_authorizer(guard)
    watch = _Watch(timeout, interrupted)
    conn.set_progress_handler(watch, _PROGRESS_EVERY)
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.DatabaseError as e:
        conn.close()
        why = watch.failed(e)
        if why is not None:
            raise why from e
        if guard.refused:
            what = guard.refused
            if what == "a schema change":
                what = " ".join(sql.split(None, 2)[:2]).upper()
            msg = f"journal sql is read-only: {what} is not allowed"
            raise QueryRefused(msg) from e
        msg = f"query failed: {e}"
        raise QueryFailed(msg) from e
    columns = [d[0] for d in cursor.description or ()]

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            for row in cursor:
                # Reading rows that come quickly, or printing them slowly, runs few instructions.
                stopped = watch.check()
                if stopped is not None:
                    raise stopped
                yield row
        except sqlite3.Error as e:
            why = watch.failed(e)
            if why is not None:
                raise why from e
            msg = f"query failed: {e}"
            raise QueryFailed(msg) from e
        finally:
            conn.close()

    return Rows(columns, rows())
