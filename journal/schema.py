"""The journal's schema version: its numbered migrations, applying them, and checking a file's.

Each migration is the statements of journal/tables.py, for one of them with some work in Python
(the hash chain of events written before there was one); the derived tables are rebuilt once the
migrations that make them anew have run. Migrations are applied with sqlite-utils'
`Migrations`, inside the caller's `BEGIN IMMEDIATE` so that two processes opening a new journal
at once cannot both create it. A journal that has a migration this code does not know was
written by a newer runjournal and is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runjournal.journal import chain, projection, tables
from runjournal.journal.errors import JournalTooNew, JournalTooOld
from runjournal.journal.opening import APPLICATION_ID

if TYPE_CHECKING:
    import sqlite_utils

MIGRATION_SET = "runjournal"


def _chain_existing(db: sqlite_utils.Database) -> None:
    """Compute the hash chain of the events written before there was one."""
    conn = db.conn
    conn.execute("DROP TRIGGER events_no_update")
    runs = [row[0] for row in conn.execute("SELECT DISTINCT run_id FROM events")]
    for run_id in runs:
        previous = chain.GENESIS
        rows = conn.execute(
            "SELECT seq, at, kind, step, data FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
        for seq, at, kind, step, data in rows:
            previous = chain.event_hash(previous, run_id, seq, at, kind, step, data)
            conn.execute(
                "UPDATE events SET hash = ? WHERE run_id = ? AND seq = ?", (previous, run_id, seq)
            )
    conn.execute(tables.NO_UPDATE)


def _m0004(db: sqlite_utils.Database) -> None:
    _statements(tables.M0004)(db)
    _chain_existing(db)


def _statements(statements: tuple[str, ...]) -> Callable[[sqlite_utils.Database], None]:
    def migrate(db: sqlite_utils.Database) -> None:
        # Statement by statement: executescript() would commit the caller's transaction.
        for statement in statements:
            db.execute(statement)

    return migrate


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("0001_events_runs_leases", _statements(tables.M0001)),
    ("0002_model_calls", _statements(tables.M0002)),
    ("0003_actions", _statements(tables.M0003)),
    ("0004_hash_chain_done_order", _m0004),
    ("0005_limits_exact_costs", _statements(tables.M0005)),
    ("0006_model_calls_mechanism_thinking", _statements(tables.M0006)),
    ("0007_big_members_as_blobs", _statements(tables.M0007)),
    ("0008_total_not_exposure", _statements(tables.M0008)),
    ("0009_shared_pace", _statements(tables.M0009)),
    ("0010_batch_items", _statements(tables.M0010)),
]

_REBUILDS = frozenset({"0005_limits_exact_costs"})
"""Migrations that make the derived tables anew. The tables are filled from the events once
every migration has run: by the projection as it is now, which writes the columns by their
names now, not by those a migration in between had made."""


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


def check_version(version: int, path: Path, *, readonly: bool) -> None:
    """Refuse a journal of a newer schema; and, for reading, one of an older schema."""
    current = len(MIGRATIONS)
    if version > current:
        msg = (
            f"{path} was written by a newer runjournal (schema {version}; this one knows "
            f"{current}): upgrade runjournal to use it"
        )
        raise JournalTooNew(msg)
    if readonly and version < current:
        msg = (
            f"{path} has schema {version}, older than this runjournal reads ({current}): "
            f"`journal migrate --db {path}` upgrades it (so does any writing command), or read "
            "it with the runjournal that wrote it"
        )
        raise JournalTooOld(msg)


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
        _name_it(conn)
        return
    # Imported only here: opening an up-to-date journal, which every command does, skips it.
    import sqlite_utils

    migrations = sqlite_utils.Migrations(MIGRATION_SET)
    for name, fn in MIGRATIONS:
        migrations(name=name)(fn)
    migrations.apply(sqlite_utils.Database(conn, execute_plugins=False))
    if _REBUILDS - set(applied):
        projection._rebuild(conn, lambda run_id: projection.read_events(conn, run_id))
    # The schema version, for tools that read it without knowing sqlite-utils' table.
    conn.execute(f"PRAGMA user_version = {len(names)}")
    _name_it(conn)


def _name_it(conn: sqlite3.Connection) -> None:
    """Say in the file's header that it is a journal (journals made before did not)."""
    (current,) = conn.execute("PRAGMA application_id").fetchone()
    if current != APPLICATION_ID:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
