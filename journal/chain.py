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
