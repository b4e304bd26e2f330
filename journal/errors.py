"""Errors raised by the journal: every one says what is wrong and what to do next."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path


class JournalError(Exception):
    """Base class of every error the journal raises."""


class JournalMissing(JournalError, FileNotFoundError):
    """No journal file exists at the path given."""


class NotAJournal(JournalError, ValueError):
    """The file exists but is not a runjournal journal."""


class JournalTooNew(JournalError):
    """The journal was written by a newer version of runjournal."""


class RunNotFound(JournalError, LookupError):
    """No run matches the id or prefix given."""


class AmbiguousRunId(JournalError, LookupError):
    """A run id prefix matches more than one run."""


class ConcurrentAppend(JournalError):
    """Another writer appended to the run first: the seq this writer expected is taken."""


class RunIsDone(JournalError):
    """The run is done: `done` is final, and nothing may be appended to it or take its lease."""


class LeaseHeld(JournalError):
    """Another live process holds the run's lease."""


class LeaseLost(JournalError):
    """This process's lease on the run was taken over while it ran."""


class QueryRefused(JournalError, ValueError):
    """A statement given to the read-only query interface tries to change something."""


class QueryFailed(JournalError, ValueError):
    """A read-only query is not valid SQL or fails in SQLite."""


class ActionKeyDone(JournalError):
    """An action key claimed for an intent is done already, by this run or another."""

    def __init__(self, name: str, key: str, run_id: str, seq: int, result: object) -> None:
        self.name, self.key, self.run_id, self.seq, self.result = name, key, run_id, seq, result
        super().__init__(f"action {name} {key!r} was done by run {run_id} (seq {seq})")


class ActionBusy(JournalError):
    """An action key claimed for an intent is being acted on by another run right now."""

    def __init__(self, name: str, key: str, run_id: str) -> None:
        self.name, self.key, self.run_id = name, key, run_id
        super().__init__(f"action {name} {key!r} is in progress in run {run_id}")


class BadPatch(JournalError, ValueError):
    """A state change in the journal cannot be applied to the state it follows."""


class BadEvent(JournalError, ValueError):
    """An event's data is not of its kind: a field missing, or one its kind does not have."""


class NotJSON(JournalError, TypeError):
    """Event data holds a value that cannot be written as JSON."""


class JournalTooOld(JournalError):
    """The journal's schema is older than this runjournal reads: a writing command upgrades it."""


class ReadOnlyJournal(JournalError):
    """The journal cannot be written here: a read-only file, folder or medium, or a journal
    opened for reading."""


class LogUnreadable(ReadOnlyJournal):
    """A reader cannot read the journal's log here: the log holds commits, and the folder
    cannot take the -shm file SQLite reads a log with."""


class JournalBusy(JournalError):
    """Another process held the journal's write lock for longer than the busy timeout."""


class JournalCorrupt(JournalError):
    """The journal is damaged: SQLite finds the file so, or a run's hash chain or a blob fails
    its check."""


class BlobMissing(JournalCorrupt, LookupError):
    """An event refers to a blob that is not in the journal."""


class DiskFull(JournalError):
    """The disk holding the journal is full: nothing was lost, and the run goes on once there
    is room again."""


class DiskFailed(JournalError):
    """SQLite could not read or write the file: an I/O error from the disk or the system."""


class JournalUnreachable(JournalError):
    """The journal's database server cannot be reached, or refused this connection."""


class BackendMissing(JournalError):
    """The journal names a database whose driver is not installed (an optional extra)."""


class QueryStopped(JournalError):
    """A read-only query was stopped before it ended: interrupted, or out of time.

    `timeout` is the time limit it ran out of, or None when it was interrupted.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        what = "interrupted" if timeout is None else f"stopped after {timeout:g} s"
        super().__init__(f"query {what}")


_MB = 1024 * 1024


def translate(e: sqlite3.Error, path: Path, *, holders: str = "") -> JournalError:
    """The journal's own error for what SQLite said, with what a person can do about it.

    `holders` names the processes that hold runs of the journal, for a busy journal.
    """
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    said = str(e)
    if primary == sqlite3.SQLITE_FULL:
        return DiskFull(
            f"the disk holding {path} is full ({_free(path)} free; the journal's own files "
            f"take {own_files(path)}): nothing was lost; free some space, or move the journal "
            "to a larger disk, and go on (`journal resume RUN`, for a run that had started)"
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return JournalCorrupt(
            f"{path} is damaged ({said}): `journal verify --db {path}` reports what SQLite "
            f"finds; `sqlite3 {path} .recover | sqlite3 recovered.db` saves what can be read"
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        who = f" ({holders})" if holders else ""
        return JournalBusy(
            f"{path} is busy: another process{who} held its write lock past the busy "
            "timeout; try again once it is done"
        )
    if primary == sqlite3.SQLITE_CANTOPEN and not path.parent.is_dir():
        return JournalError(
            f"{path} cannot be made: its folder {path.parent} does not exist; create it, or "
            "name a journal in a folder that exists"
        )
    if primary == sqlite3.SQLITE_READONLY or (
        primary == sqlite3.SQLITE_CANTOPEN and not os.access(path.parent, os.W_OK)
    ):
        return ReadOnlyJournal(
            f"{path} cannot be written ({said}): run and resume need a writable file and "
            "folder; the reading commands work on it as it is"
        )
    if primary == sqlite3.SQLITE_IOERR:
        name = getattr(e, "sqlite_errorname", "SQLITE_IOERR")
        return DiskFailed(
            f"the disk failed reading or writing {path} ({said}, {name}); check the disk"
        )
    if primary == sqlite3.SQLITE_CANTOPEN:
        return DiskFailed(f"cannot open {path} ({said})")
    return JournalError(f"{path}: {said}")


def own_files(path: Path) -> str:
    """What the journal's files take on disk: the file, its log and its shared-memory index."""
    sizes = []
    for suffix, what in (("", "journal"), ("-wal", "log"), ("-shm", "index")):
        try:
            sizes.append((what, Path(f"{path}{suffix}").stat().st_size))
        except OSError:
            sizes.append((what, 0))
    each = ", ".join(f"{what} {_size(n)}" for what, n in sizes)
    return f"{_size(sum(n for _, n in sizes))}: {each}"


def _free(path: Path) -> str:
    try:
        return _size(shutil.disk_usage(path.parent).free)
    except OSError:
        return "unknown"


def _size(n: int) -> str:
    return f"{n / _MB:,.1f} MB" if n >= _MB else f"{n / 1024:,.0f} KB"


class LimitReached(JournalError):
    """A model request could take its run (or its machine's day) past a cap: it is not sent.

    `limit` names the cap (`max_cost_usd`, `max_tokens`, `max_model_calls`, `budget_per_day`),
    `value` is what was spent (or may have been) before the request, `cap` the cap, and
    `worst_case` what the request could add.
    """

    def __init__(
        self, limit: str, value: float, cap: float, unit: str, *, worst_case: float = 1
    ) -> None:
        self.limit, self.value, self.cap, self.worst_case = limit, value, cap, worst_case
        super().__init__(
            f"{limit} reached: {value:g} {unit} spent or possibly spent, and the next model "
            f"request could add {worst_case:g}, past the cap of {cap:g}"
        )
