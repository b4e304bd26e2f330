"""Opening a journal file: knowing it is one without touching it, then connecting to it.

A journal says what it is in its SQLite header: `PRAGMA application_id` is APPLICATION_ID and
`PRAGMA user_version` the number of migrations applied. The header is read through an
immutable read-only connection, which takes no lock and writes nothing, so a file that is not a
journal (another program's database, an empty file, a text file) is refused byte for byte
unchanged, with no -wal or -shm file appearing beside it. Journals written before the header
said so are known by sqlite-utils' migrations table.

Readers connect with `mode=ro`, and fall back to `immutable=1` where the folder cannot take the
-shm file a WAL reader needs (a read-only mount): SQLite then reads the file alone, without
locks, which is right for a copy nobody writes. A new journal is built under a temporary name
and linked into place, so a journal appears whole or not at all, and two processes creating one
at once end up sharing the one that won.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import attrs

from journal.errors import JournalMissing, NotAJournal, translate

APPLICATION_ID = 0x524A4E4C
"""`PRAGMA application_id` of every journal: "RJNL" in ASCII."""

_MIGRATIONS_TABLE = "_sqlite_migrations"


@attrs.frozen
class Identity:
    """What a journal file's header says about it."""

    schema: int
    """The number of migrations applied."""
    named: bool = True
    """Whether the header names it a journal (False: made before it did)."""


def identify(path: Path, migration_set: str) -> Identity:
    """What the journal at `path` is; NotAJournal (the file untouched) if it is not one."""
    if path.is_dir():
        msg = f"{path} is a folder, not a journal file"
        raise NotAJournal(msg)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        msg = f"no journal at {path}: start a run with `journal run`, or pass --db"
        raise JournalMissing(msg) from e
    if size == 0:
        msg = f"{path} is an empty file, not a journal: remove it, and `journal run` makes one"
        raise NotAJournal(msg)
    # Read through SQLite, never with open(): closing any descriptor of a file drops every
    # POSIX lock this process holds on it, SQLite's included, and another process could then
    # fold the log of a journal this one is writing. A file without a log is read immutable
    # (no lock, no -wal, no -shm: nothing written); with a log, the file alone may be half way
    # through taking the log in, so it is read with it.
    log = Path(f"{path}-wal")
    look = _look(path, migration_set, immutable=not (log.exists() and log.stat().st_size))
    if look.application_id == APPLICATION_ID:
        return Identity(look.user_version)
    if look.application_id != 0:
        msg = (
            f"{path} is not a journal: it is another program's SQLite database "
            f"(application_id {look.application_id:#010x})"
        )
        raise NotAJournal(msg)
    if look.migrations:
        return Identity(look.migrations, named=False)
    if not look.tables:
        msg = f"{path} is an empty SQLite database, not a journal"
        raise NotAJournal(msg)
    shown = ", ".join(sorted(look.tables)[:5])
    msg = f"{path} is an SQLite database but not a journal (it has tables {shown})"
    raise NotAJournal(msg)


@attrs.frozen
class _Look:
    application_id: int
    user_version: int
    tables: frozenset[str]
    migrations: int
    """How many runjournal migrations its migrations table lists (journals made before the
    header named them)."""


def _look(path: Path, migration_set: str, *, immutable: bool) -> _Look:
    try:
        conn = _connect_ro(path, immutable=immutable, timeout=5.0)
    except sqlite3.Error as e:
        raise translate(e, path) from e
    try:
        (application_id,) = conn.execute("PRAGMA application_id").fetchone()
        (user_version,) = conn.execute("PRAGMA user_version").fetchone()
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = frozenset(r[0] for r in rows)
        migrations = 0
        if application_id == 0 and _MIGRATIONS_TABLE in tables and "events" in tables:
            (migrations,) = conn.execute(
                f"SELECT count(*) FROM {_MIGRATIONS_TABLE} WHERE migration_set = ?",
                (migration_set,),
            ).fetchone()
    except sqlite3.DatabaseError as e:
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB:
            msg = f"{path} is not a journal: it is not an SQLite database"
            raise NotAJournal(msg) from e
        raise translate(e, path) from e
    finally:
        conn.close()
    return _Look(application_id, user_version, tables, int(migrations))


def _connect_ro(path: Path, *, immutable: bool, timeout: float) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def connect_read(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the journal at `path`, on writable or read-only media."""
    try:
        conn = _connect_ro(path, immutable=False, timeout=timeout)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code != sqlite3.SQLITE_CANTOPEN or os.access(path.parent, os.W_OK):
            raise translate(e, path) from e
    # A WAL reader needs a -shm file, which a read-only folder cannot take.
    return _connect_ro(path, immutable=True, timeout=timeout)


def connect_write(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-write connection to an existing journal, in WAL mode."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    _set_wal(conn, path, timeout)
    return conn


def _set_wal(conn: sqlite3.Connection, path: Path, timeout: float) -> None:
    # Changing the journal mode needs the file to itself, and SQLite does not wait for that
    # with the busy timeout: wait here.
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as e:
            code = getattr(e, "sqlite_errorcode", 0) & 0xFF
            if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise translate(e, path) from e
            if time.monotonic() > deadline:
                raise translate(e, path) from e
            time.sleep(0.01)
    if str(mode).lower() != "wal":
        msg = f"{path}: SQLite would not put the journal in WAL mode (it stays {mode})"
        raise NotAJournal(msg)


def create(path: Path, build: Callable[[sqlite3.Connection], None]) -> bool:
    """Make a journal at `path` if no file is there; True if this call made it.

    `build` gets a connection to the new file and creates its schema. The file is built under
    a temporary name beside `path` and linked into place, which fails if a file appeared
    there meanwhile: then the other one stands, and this one is thrown away.
    """
    temporary = path.with_name(f".{path.name}.new-{secrets.token_hex(6)}")
    try:
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            _set_wal(conn, temporary, 5.0)
            build(conn)
        finally:
            conn.close()
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    except sqlite3.Error as e:
        raise translate(e, path) from e
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
