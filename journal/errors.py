"""Errors raised by the journal: every one says what is wrong and what to do next."""

from __future__ import annotations


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


class LeaseHeld(JournalError):
    """Another live process holds the run's lease."""


class LeaseLost(JournalError):
    """This process's lease on the run was taken over while it ran."""


class QueryRefused(JournalError, ValueError):
    """A statement given to the read-only query interface tries to change something."""


class QueryFailed(JournalError, ValueError):
    """A read-only query is not valid SQL or fails in SQLite."""


class ActionDone(JournalError):
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


class NotJSON(JournalError, TypeError):
    """Event data holds a value that cannot be written as JSON."""
