"""Opening a journal file: knowing it is one without touching it, then connecting to it.

A journal says what it is in its SQLite header: `PRAGMA application_id` is APPLICATION_ID and
`PRAGMA user_version` the number of migrations applied. The header is read as plain bytes, so
a file that is not a journal (another program's database, an empty file, a text file) is
refused byte for byte unchanged: no connection is made, no -wal or -shm file appears beside it.
Journals written before the header said so are known by sqlite-utils' migrations table.

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

_MAGIC = b"SQLite format 3\x00"
_MIGRATIONS_TABLE = "_sqlite_migrations"


@attrs.frozen
class Identity:
    """What a journal file's header says about it."""

    schema: int
    """The number of migrations applied."""
    wal: bool
    """Whether the file is in WAL mode already."""
    named: bool = True
    """Whether the header names it a journal (False: made before it did)."""


def identify(path: Path, migration_set: str) -> Identity:
    """What the journal at `path` is; NotAJournal (the file untouched) if it is not one."""
    if path.is_dir():
        msg = f"{path} is a folder, not a journal file"
        raise NotAJournal(msg)
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except FileNotFoundError as e:
        msg = f"no journal at {path}: start a run with `journal run`, or pass --db"
        raise JournalMissing(msg) from e
    if not header:
        msg = f"{path} is an empty file, not a journal: remove it, and `journal run` makes one"
        raise NotAJournal(msg)
    if len(header) < 100 or not header.startswith(_MAGIC):
        msg = f"{path} is not a journal: it is not an SQLite database"
        raise NotAJournal(msg)
    wal = header[18] == 2 and header[19] == 2
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == APPLICATION_ID:
        return Identity(int.from_bytes(header[60:64], "big"), wal)
    if application_id != 0:
        msg = (
            f"{path} is not a journal: it is another program's SQLite database "
            f"(application_id {application_id:#010x})"
        )
        raise NotAJournal(msg)
    return Identity(_legacy_schema(path, migration_set, wal), wal, named=False)


def _legacy_schema(path: Path, migration_set: str, wal: bool) -> int:
    """The migrations applied to a journal from before the header named it, or NotAJournal."""
    # Only a WAL file whose log is there needs the log read (and may get a -shm beside it);
    # any other file is read alone, immutable, which writes nothing anywhere.
    immutable = not (wal and Path(f"{path}-wal").exists())
    try:
        conn = _connect_ro(path, immutable=immutable, timeout=5.0)
    except sqlite3.Error as e:
        raise translate(e, path) from e
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if _MIGRATIONS_TABLE in names and "events" in names:
            (count,) = conn.execute(
                f"SELECT count(*) FROM {_MIGRATIONS_TABLE} WHERE migration_set = ?",
                (migration_set,),
            ).fetchone()
            if count:
                return int(count)
    except sqlite3.DatabaseError as e:
        raise translate(e, path) from e
    finally:
        conn.close()
    if not names:
        msg = f"{path} is an empty SQLite database, not a journal"
        raise NotAJournal(msg)
    shown = ", ".join(sorted(names)[:5])
    msg = f"{path} is an SQLite database but not a journal (it has tables {shown})"
    raise NotAJournal(msg)


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


def connect_write(path: Path, *, timeout: float, wal: bool) -> sqlite3.Connection:
    """A read-write connection to an existing journal, in WAL mode."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    if not wal:
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
