"""A batch of one run's events made ready to store: the same work for every backend.

`prepare` checks each event's data against its kind, encodes it as JSON (unless the caller has),
replaces every secret the store keeps out in the data and in the blobs that go with it, and
computes what the events change in the derived tables. It runs before any transaction, so a
batch refused for its data has written nothing. `start` does the same for a run's first event.

A backend's append then does only what must happen inside its transaction: its checks (lease,
action claim, cost reservation), storing the blobs, reading the hash of the run's event before
the batch (`chain.Heads`), storing `rows(previous)` (each event chained to the one before it,
journal/chain.py), and applying `changes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from runjournal.journal import chain, kinds, parts, projection
from runjournal.journal import events as k
from runjournal.journal.blobs import Payload
from runjournal.journal.events import Event, dumps

Redact = Callable[[str], str]
"""Text with every secret a store keeps out replaced (`Store.redact`)."""

Row = tuple[str, int, str, str, str | None, str, str]
"""An event as stored: `(run_id, seq, at, kind, step, data, hash)`, the events table's columns."""


@attrs.frozen
class Batch:
    """Events of one run, in seq order, as they are to be written. Made by `prepare`."""

    run_id: str
    events: Sequence[Event]
    """The events as written: secrets redacted in their data."""
    texts: Sequence[str]
    """Each event's data as the JSON text stored, byte for byte what its hash covers."""
    blobs: Sequence[str | Payload]
    """Payloads the events refer to by their hash, stored with them."""
    changes: projection.Changes
    """What the events change in the derived tables (journal/projection.py)."""

    @property
    def first(self) -> int:
        return self.events[0].seq

    @property
    def day(self) -> str:
        """The UTC day of the batch's last event: the day a reservation counts against."""
        return self.events[-1].at[:10]

    @property
    def kills(self) -> bool:
        """Whether the batch records `run.killed`, which clears the run's kill request."""
        return any(e.kind == k.RUN_KILLED for e in self.events)

    def rows(self, previous: str) -> list[Row]:
        """The events as stored, each chained to the one before it, the first to `previous`
        (the hash of the run's event before the batch, or `chain.GENESIS`)."""
        rows = []
        run_id, event_hash = self.run_id, chain.event_hash
        for e, text in zip(self.events, self.texts, strict=True):
            previous = event_hash(previous, run_id, e.seq, e.at, e.kind, e.step, text)
            rows.append((run_id, e.seq, e.at, e.kind, e.step, text, previous))
        return rows


def prepare(
    events: Sequence[Event],
    *,
    texts: Sequence[str] | None = None,
    blobs: Sequence[str | Payload] = (),
    redact: Redact,
    secrets: Sequence[str],
) -> Batch:
    """`events` (one run's, seqs in order, at least one) made ready to append.

    BadEvent for data not of its kind and NotJSON for data JSON cannot hold, before anything is
    written. `texts` are the events' data already encoded (`dumps`), when the caller has them.
    With `secrets` (what `redact` replaces), each is redacted in the texts, in the events (read
    back from the redacted text) and in the text blobs; payloads come redacted already
    (journal/parts.py).
    """
    if not events:
        raise ValueError("a batch holds at least one event")
    for e in events:
        kinds.check(e.kind, e.data)
    if texts is None:
        texts = [dumps(e.data) for e in events]
    if secrets:
        events, texts = _redacted(events, texts, redact)
        blobs = [redact(b) if isinstance(b, str) else b for b in blobs]
    return Batch(events[0].run_id, events, texts, blobs, projection.project(events))


def _redacted(
    events: Sequence[Event], texts: Sequence[str], redact: Redact
) -> tuple[list[Event], list[str]]:
    out_events, out_texts = list(events), list(texts)
    for i, text in enumerate(texts):
        redacted = redact(text)
        if redacted is not text:
            # The projection reads the data too (a run's error): it gets the redacted copy.
            out_texts[i] = redacted
            out_events[i] = attrs.evolve(events[i], data=json.loads(redacted))
    return out_events, out_texts


def start(
    run_id: str,
    at: str,
    *,
    ordinal: int,
    machine: str,
    target: str,
    code_hash: str,
    step: str,
    state: Any,
    input: Any,
    run_key: str | None,
    limits: dict[str, Any] | None,
    limit_overrides: dict[str, Any] | None,
    forked_from: tuple[str, int] | None,
    redact: Redact,
    secrets: Sequence[str],
    submitted: bool = False,
) -> Batch:
    """A new run's `run.started` as a batch: its input stored as a blob, and the big members of
    its input and first state as blobs of their own (journal/parts.py), secrets redacted.

    `run_id` and `ordinal` are a backend's to choose, in the transaction that creates the run.
    """
    # Big members stored once, as blobs: the first state's tickets are the input's.
    input, input_parts, held, _ = parts.split(input, redact, secrets)
    state, state_parts, more, _ = parts.split(state, redact, secrets)
    whole = parts.whole(input, redact, secrets)
    data = kinds.RunStarted(
        machine=machine,
        target=target,
        code_hash=code_hash,
        run_key=run_key,
        to_step=step,
        input=whole.name,
        state=state,
        ordinal=ordinal,
        limits=limits,
        limit_overrides=limit_overrides if limits is not None else None,
        forked_from={"run_id": forked_from[0], "seq": forked_from[1]} if forked_from else None,
        input_parts=input_parts,
        state_parts=state_parts,
        submitted=submitted or None,
    ).as_json()
    started = Event(run_id, 1, at, k.RUN_STARTED, None, data)
    return prepare([started], blobs=[*held, *more, whole], redact=redact, secrets=secrets)


def chunked(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """`rows` in lists of `size` (the last shorter): inserted a list at a time, a long run is
    copied in flat memory (itertools.batched is Python 3.12's)."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
