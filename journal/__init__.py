"""runjournal's record: the SQLite event log of runs, their leases, and folds of their state.

This package opens, writes and reads the journal file and imports nothing from `machine` or
`cli`. Everything a user or the rest of runjournal may use is listed here.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    __version__: str
else:

    def __getattr__(name: str) -> str:
        # The version is read when asked for: importlib.metadata is slow to import.
        if name != "__version__":
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib.metadata import version

        return version("runjournal")


from runjournal.journal import events, kinds
from runjournal.journal.base import MIN_SECRET, REDACTED
from runjournal.journal.connection import Durability
from runjournal.journal.errors import (
    ActionBusy,
    ActionKeyDone,
    AmbiguousRunId,
    BadPatch,
    ConcurrentAppend,
    DiskFailed,
    DiskFull,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    JournalMissing,
    JournalTooNew,
    JournalTooOld,
    LeaseHeld,
    LeaseLost,
    LimitReached,
    NotAJournal,
    NotJSON,
    QueryFailed,
    QueryRefused,
    QueryStopped,
    ReadOnlyJournal,
    RunIsDone,
    RunNotFound,
)
from runjournal.journal.events import Clock, Event
from runjournal.journal.fold import Change, StateAt, replay, state_at
from runjournal.journal.leases import Holder, Lease
from runjournal.journal.protocol import Querying, Store
from runjournal.journal.query import Rows, query
from runjournal.journal.rows import Action, Problem, Run
from runjournal.journal.store import Journal
from runjournal.journal.stores import is_url, open_store
from runjournal.journal.verify import heads, verify
from runjournal.journal.writer import Heartbeat, RunWriter

__all__ = [
    "MIN_SECRET",
    "REDACTED",
    "Action",
    "ActionBusy",
    "ActionKeyDone",
    "AmbiguousRunId",
    "BadPatch",
    "Change",
    "Clock",
    "ConcurrentAppend",
    "DiskFailed",
    "DiskFull",
    "Durability",
    "Event",
    "Heartbeat",
    "Holder",
    "Journal",
    "JournalBusy",
    "JournalCorrupt",
    "JournalError",
    "JournalMissing",
    "JournalTooNew",
    "JournalTooOld",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "LimitReached",
    "NotAJournal",
    "NotJSON",
    "Problem",
    "QueryFailed",
    "QueryRefused",
    "QueryStopped",
    "Querying",
    "ReadOnlyJournal",
    "Rows",
    "Run",
    "RunIsDone",
    "RunNotFound",
    "RunWriter",
    "StateAt",
    "Store",
    "events",
    "heads",
    "is_url",
    "kinds",
    "open_store",
    "query",
    "replay",
    "state_at",
    "verify",
]
