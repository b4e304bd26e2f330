"""Opening a journal file: knowing it is one without touching it, then connecting to it.

A journal says what it is in its SQLite header: `PRAGMA application_id` is APPLICATION_ID and
`PRAGMA user_version` the number of migrations applied. Whether a file is a journal is decided
from the file alone, through an immutable read-only connection, which takes no lock and neither
reads nor writes a -wal or -shm file: another program's database is refused with its file, its
log and its shared-memory index byte for byte unchanged, even while that program has it open.
Every journal carries APPLICATION_ID in the file itself from its creation (it is built under a
temporary name and linked into place once closed); journals written before the header said so
are known by sqlite-utils' migrations table. The schema version is then read again through the
connection the command uses, which sees the log too.

Readers connect with `mode=ro`. Where SQLite cannot open a WAL journal that way because the
folder cannot take the -shm file a WAL reader needs (a read-only mount, another user's folder),
a journal whose log is empty or absent is read with `immutable=1`: the file alone, without
locks, which holds every commit. One whose log holds commits is refused with what to do, rather
than read without them. A new journal is built under a temporary name and linked into place, so
a journal appears whole or not at all, and two processes creating one at once end up sharing
the one that won.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import attrs

from runjournal.journal.errors import JournalMissing, LogUnreadable, NotAJournal, translate

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
    # fold the log of a journal this one is writing. Immutable: no lock, and the -wal and -shm
    # are left alone (a `mode=ro` reader of a WAL database writes to its -shm).
    look = _look(path, migration_set)
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
    if not look.tables and not _has_log(path):
        msg = f"{path} is an empty SQLite database, not a journal"
        raise NotAJournal(msg)
    if not look.tables:  # what it holds is still in its log: another program's, open now
        msg = f"{path} is an SQLite database but not a journal"
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


def _look(path: Path, migration_set: str) -> _Look:
    try:
        conn = _connect_ro(path, immutable=True, timeout=5.0)
        # The file read without its log may be half way through taking the log in, its pages
        # no whole database by themselves: SQLite then could not even load the schema to read
        # the header. This lets it try; the connection is read-only, so nothing is written.
        conn.execute("PRAGMA writable_schema = ON")
    except sqlite3.Error as e:
        raise translate(e, path) from e
    try:
        return _read_header(conn, migration_set)
    except sqlite3.DatabaseError as e:
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB:
            msg = f"{path} is not a journal: it is not an SQLite database"
            raise NotAJournal(msg) from e
        raise translate(e, path) from e
    finally:
        conn.close()


def _read_header(conn: sqlite3.Connection, migration_set: str) -> _Look:
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    (user_version,) = conn.execute("PRAGMA user_version").fetchone()
    if application_id == APPLICATION_ID:  # known from the header alone
        return _Look(application_id, user_version, frozenset(), 0)
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = frozenset(r[0] for r in rows)
    migrations = 0
    if application_id == 0 and _MIGRATIONS_TABLE in tables and "events" in tables:
        (migrations,) = conn.execute(
            f"SELECT count(*) FROM {_MIGRATIONS_TABLE} WHERE migration_set = ?",
            (migration_set,),
        ).fetchone()
    return _Look(application_id, user_version, tables, int(migrations))


def schema_of(conn: sqlite3.Connection, path: Path, migration_set: str) -> Identity:
    """The schema of the journal `conn` is connected to, log included.

    `identify` read the file alone; a migration whose commit is still in the log shows here.
    """
    try:
        look = _read_header(conn, migration_set)
    except sqlite3.Error as e:
        raise translate(e, path) from e
    if look.application_id == APPLICATION_ID:
        return Identity(look.user_version)
    return Identity(look.migrations, named=False)


def _has_log(path: Path) -> bool:
    """Whether a -wal file with something in it is beside `path`."""
    try:
        return Path(f"{path}-wal").stat().st_size > 0
    except FileNotFoundError:
        return False


def _connect_ro(path: Path, *, immutable: bool, timeout: float) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def connect_read(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the journal at `path`, on writable or read-only media, and in
    a folder this user cannot write."""
    try:
        conn = _connect_ro(path, immutable=False, timeout=timeout)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        code = getattr(e, "sqlite_errorcode", 0)
        # A WAL reader needs a -shm file: a folder it cannot write (a read-only mount, another
        # user's) cannot take one (CANTOPEN, SQLITE_READONLY_DIRECTORY), and one it cannot write
        # may need setting up (SQLITE_READONLY_CANTINIT, _RECOVERY, _CANTLOCK).
        readonly = code & 0xFF == sqlite3.SQLITE_READONLY
        if not readonly and (
            code & 0xFF != sqlite3.SQLITE_CANTOPEN or os.access(path.parent, os.W_OK)
        ):
            raise translate(e, path) from e
        said = getattr(e, "sqlite_errorname", str(e))
    if _has_log(path):
        # The file alone would lack the commits in the log: reading it so would mislead.
        msg = (
            f"{path} cannot be read here ({said}): its log {path.name}-wal holds commits not "
            "yet in the file, and SQLite reads a log only with a -shm file beside it, which "
            f"this user cannot create in {path.parent}; read it as a user who can write that "
            f"folder, or copy {path.name} and {path.name}-wal into a folder you can write and "
            "read the copy"
        )
        raise LogUnreadable(msg)
    # No log: the file holds every commit, and is read alone.
    return _connect_ro(path, immutable=True, timeout=timeout)


def connect_write(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-write connection to an existing journal, in WAL mode."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    _set_wal(conn, path, timeout)
    _bound_log(conn, path)
    return conn


_LOG_PAGES = 1000
"""SQLite's own default: the log is folded into the file once it holds this many pages."""
_MIN_LOG_PAGES = 16


def _bound_log(conn: sqlite3.Connection, path: Path) -> None:
    """Fold the log into the file before it takes a quarter of the free space, and shrink it
    back to that size once folded.

    Folding (a checkpoint) writes the log's pages into the file, which grows: a log let grow
    until the disk is full leaves no room to fold it, and then nothing can be written again.
    On a roomy disk this is SQLite's default, 1000 pages.
    """
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    pages = max(_MIN_LOG_PAGES, min(_LOG_PAGES, free // 4 // page_size))
    try:
        conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        conn.execute(f"PRAGMA journal_size_limit = {pages * page_size}")
    except sqlite3.Error as e:
        conn.close()
        raise translate(e, path) from e


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
