"""The hash chain that binds each event of a run to the one before it.

Every event row holds `hash = sha256(previous hash, run_id, seq, at, kind, step, data)`, the
first event of a run chaining from the empty string. An edit of any field of any event, a
deletion, or two events swapped breaks the chain at that event and at every one after it, and
`journal verify` names the first broken link. The chain is not keyed: someone who can write the
file can also compute a new chain, so it finds damage and careless edits, not a forger. Keep a
copy of a run's last hash elsewhere (`journal verify --json` prints it) to catch that too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from runjournal.journal.errors import ConcurrentAppend

GENESIS = ""
"""The hash the first event of every run chains from."""

_header = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def event_hash(
    previous: str, run_id: str, seq: int, at: str, kind: str, step: str | None, data: str
) -> str:
    """The hex sha256 of an event as stored, chained to `previous`.

    The fields other than `data` are written as one JSON array, which cannot run into what
    follows it; `data` is the stored JSON text itself, byte for byte, so verifying never has
    to encode it again.
    """
    head = _header([previous, run_id, seq, at, kind, step])
    return hashlib.sha256(f"{head}\n{data}".encode()).hexdigest()


def first_break(
    run_id: str, first: int, previous: str, rows: Iterable[Sequence[Any]]
) -> str | None:
    """What is wrong with a run's events from seq `first` on, given as rows `(seq, at, kind,
    step, data, hash)` in seq order, the event before `first` having hash `previous`: a
    missing seq, or an event its stored hash does not chain to. None when they are sound."""
    expected = first
    for seq, at, kind, step, data, stored in rows:
        if seq != expected:
            return f"seq {expected} is gone"
        previous = event_hash(previous, run_id, seq, at, kind, step, data)
        if previous != stored:
            return (
                f"the hash chain breaks at seq {seq} ({kind}): this event, or one before it, "
                "was changed, removed or moved"
            )
        expected += 1
    return None


class Heads:
    """The seq and hash of the last event of each run a store wrote: the next batch of the run
    chains from it without reading it back. One per connection; used inside its transactions.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, str]] = {}

    def previous(self, run_id: str, first: int, read: Callable[[int], str | None]) -> str:
        """The hash a batch whose first seq is `first` chains from: remembered, the genesis for
        a run's first event, or `read(seq)` in the caller's transaction (None: no such event).

        ConcurrentAppend when the run has no event `first - 1`: a gap would break the chain
        that `journal verify` checks, and the folds.
        """
        head = self._last.get(run_id)
        if head is not None and head[0] == first - 1:
            return head[1]
        if first == 1:
            return GENESIS
        found = read(first - 1)
        if found is None:
            msg = f"run {run_id}: event {first} appended, but the run has no event {first - 1}"
            raise ConcurrentAppend(msg)
        return found

    def moved(self, run_id: str, seq: int, hash_: str) -> None:
        """Remember the run's last event, once the batch's insert succeeded; a commit rolled
        back after it is caught by the seq test of the next batch."""
        self._last[run_id] = (seq, hash_)
