"""The journal's tables, triggers and views, as numbered migrations, and the check of its version.

Migrations are applied with sqlite-utils' `Migrations`, inside the caller's `BEGIN IMMEDIATE`
so that two processes opening a new journal at once cannot both create it. A journal that has
a migration this code does not know was written by a newer runjournal and is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from journal.errors import JournalTooNew

if TYPE_CHECKING:
    import sqlite_utils

MIGRATION_SET = "runjournal"


_M0001 = (
    """
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        data TEXT NOT NULL CHECK (json_valid(data)),
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID
    """,
    """
    -- Resume and replay start from the newest snapshot; this keeps finding it cheap.
    CREATE INDEX events_snapshots ON events (run_id, seq)
        WHERE kind IN ('run.started', 'snapshot')
    """,
    """
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed'); END
    """,
    """
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END
    """,
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        machine TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        code_hash TEXT NOT NULL DEFAULT '',
        run_key TEXT,
        status TEXT NOT NULL DEFAULT 'running',
        step TEXT,
        steps INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        transition_seq INTEGER NOT NULL DEFAULT 0,
        snapshot_seq INTEGER NOT NULL DEFAULT 0,
        effects INTEGER NOT NULL DEFAULT 0,
        decisions INTEGER NOT NULL DEFAULT 0,
        resumes INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        started_at TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL DEFAULT '',
        ended_at TEXT
    )
    """,
    """
    CREATE UNIQUE INDEX runs_machine_key ON runs (machine, run_key)
        WHERE run_key IS NOT NULL
    """,
    """
    CREATE TABLE leases (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        process_start TEXT,
        acquired_at TEXT NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE blobs (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data TEXT NOT NULL
    )
    """,
    """
    CREATE VIEW decisions AS
    SELECT run_id, seq, at, step,
           json_extract(data, '$.item') AS item,
           json_extract(data, '$.outcome') AS outcome,
           json_extract(data, '$.reason') AS reason,
           json_extract(data, '$.inputs') AS inputs
    FROM events WHERE kind = 'decision'
    """,
    """
    CREATE VIEW effects AS
    SELECT run_id, seq, at, step,
           json_extract(data, '$.name') AS name,
           json_extract(data, '$.call') AS call,
           json_extract(data, '$.result') AS result
    FROM events WHERE kind = 'effect.done'
    """,
    """
    CREATE VIEW transitions AS
    SELECT run_id, seq, at, step,
           json_extract(data, '$.to') AS to_step,
           json_array_length(data, '$.delta') AS changes,
           json_extract(data, '$.delta') AS delta
    FROM events WHERE kind = 'transition'
    """,
)


def _m0001(db: sqlite_utils.Database) -> None:
    # Statement by statement: executescript() would commit the caller's transaction.
    for statement in _M0001:
        db.execute(statement)


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("0001_events_runs_leases", _m0001),
]


def _applied(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations applied, read from sqlite-utils' own table."""
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
    ).fetchone()
    if table is None:
        return []
    rows = conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id", (MIGRATION_SET,)
    )
    return [row[0] for row in rows]


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create or bring the schema up to date inside the caller's write transaction."""
    names = [name for name, _ in MIGRATIONS]
    applied = _applied(conn)
    unknown = [name for name in applied if name not in names]
    if unknown:
        msg = (
            f"{path} was written by a newer runjournal (schema {', '.join(unknown)}); "
            "upgrade runjournal to use it"
        )
        raise JournalTooNew(msg)
    if len(applied) == len(names):
        return
    # Imported only here: opening an up-to-date journal, which every command does, skips it.
    import sqlite_utils

    migrations = sqlite_utils.Migrations(MIGRATION_SET)
    for name, fn in MIGRATIONS:
        migrations(name=name)(fn)
    migrations.apply(sqlite_utils.Database(conn, execute_plugins=False))
    # The schema version, for tools that read it without knowing sqlite-utils' table.
    conn.execute(f"PRAGMA user_version = {len(names)}")
