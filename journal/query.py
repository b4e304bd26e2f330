"""Read-only SQL over the journal, for `journal sql` and anyone auditing a journal.

Three locks, each enough alone for the common case: the file is opened read-only, the
connection is `query_only`, and an authorizer refuses at prepare time every statement that
would write, attach another file or change a setting, naming what it refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from journal.errors import JournalMissing, QueryFailed, QueryRefused

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


def query(path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> Rows:
    """Run one read-only statement against the journal at `path`."""
    path = Path(path)
    if not path.exists():
        msg = f"no journal at {path}: start a run with `journal run`, or pass --db"
        raise JournalMissing(msg)
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = ON")
    guard = _Guard()
    conn.set_authorizer(guard)
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.DatabaseError as e:
        conn.close()
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
            yield from cursor
        except sqlite3.Error as e:
            msg = f"query failed: {e}"
            raise QueryFailed(msg) from e
        finally:
            conn.close()

    return Rows(columns, rows())
