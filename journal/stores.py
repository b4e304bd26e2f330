"""Which journal a `--db` names, and opening it: a SQLite file (the default) or a PostgreSQL
database (`postgresql://...`).

`open_store` is what machine/ and cli/ call; each backend's own `open` says what its options
mean. The PostgreSQL backend is an optional extra, imported only when a URL names it, so a user
who never does needs no driver.
"""

from __future__ import annotations

import time
from pathlib import Path

from runjournal.journal.connection import Durability
from runjournal.journal.errors import BackendMissing
from runjournal.journal.events import Clock
from runjournal.journal.protocol import Store

_SCHEMES = ("postgresql://", "postgres://")


def is_url(db: str | Path) -> bool:
    """Whether `db` names a PostgreSQL database rather than a journal file."""
    return isinstance(db, str) and db.startswith(_SCHEMES)


def open_store(
    db: str | Path,
    *,
    create: bool = False,
    readonly: bool = False,
    durability: Durability = "normal",
    clock: Clock | None = None,
    timeout: float = 30.0,
    secrets: tuple[str, ...] = (),
) -> Store:
    """The journal `db` names, opened for writing (with `create`: made where there is none)
    or, with `readonly`, for reading only. Clock: the server's for PostgreSQL, this host's for
    SQLite, unless one is given."""
    if is_url(db):
        try:
            from runjournal.journal.postgres import PostgresJournal
        except ImportError as e:
            msg = (
                "a PostgreSQL journal needs the psycopg driver: pip install 'runjournal[postgres]'"
            )
            raise BackendMissing(msg) from e
        return PostgresJournal.open(
            str(db),
            create=create,
            readonly=readonly,
            clock=clock,
            secrets=secrets,
            durability=durability,
            timeout=timeout,
        )
    from runjournal.journal.store import Journal

    return Journal.open(
        Path(db),
        create=create,
        readonly=readonly,
        durability=durability,
        clock=clock or time.time,
        timeout=timeout,
        secrets=secrets,
    )
