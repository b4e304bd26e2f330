"""Moving runs from one journal to another (`journal copy`): SQLite to PostgreSQL and back.

Each run is read as stored (`Store.stored`: the JSON text and hash of every event, byte for
byte) with the blobs its events refer to, and written in one transaction of the destination
(`Store.import_run`), which derives the run's rows from the events as it would have from its own
appends. Nothing is encoded again, so every hash is the same at both ends and `journal verify`
passes on both with the same heads. Runs are copied in the order they were created; a run the
destination has already is left as it is there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import attrs

from runjournal.journal import events as k
from runjournal.journal.batch import Row
from runjournal.journal.protocol import Store


@attrs.frozen
class Copied:
    """What a copy did."""

    runs: int
    events: int
    skipped: tuple[str, ...]
    """Runs the destination had already."""


def copy(
    source: Store,
    destination: Store,
    *,
    run_ids: Sequence[str] | None = None,
    told: Callable[[str, int], None] | None = None,
) -> Copied:
    """Copy every run of `source` (or those of `run_ids`) into `destination`; `told(run_id,
    events)` after each run copied."""
    wanted = run_ids if run_ids is not None else [r.run_id for r in reversed(source.runs())]
    runs, events, skipped = 0, 0, []
    for run_id in wanted:
        copied = _copy_run(source, destination, run_id)
        if copied is None:
            skipped.append(run_id)
            continue
        runs, events = runs + 1, events + copied
        if told is not None:
            told(run_id, copied)
    return Copied(runs, events, tuple(skipped))


def _copy_run(source: Store, destination: Store, run_id: str) -> int | None:
    """Copy one run as it streams from `source`; the number of its events, or None if the
    destination has it already."""
    refs: dict[str, None] = {}  # the blobs its events refer to, in order, each once
    counted = 0

    def rows() -> Iterator[Row]:
        nonlocal counted
        for row in source.stored(run_id):
            counted += 1
            refs.update(dict.fromkeys(_refs(row)))
            yield row

    def blobs() -> Iterator[str]:
        return (source.blob(ref) for ref in refs)

    return counted if destination.import_run(run_id, rows(), blobs) else None


def _refs(row: Row) -> list[str]:
    """The blobs an event refers to: an input, a request, a state's or input's big members."""
    if row[3] not in (k.RUN_STARTED, k.SNAPSHOT, k.MODEL_REQUESTED):
        return []
    data = json.loads(row[5])
    found = [data.get("input"), data.get("request")]
    for held in ("input_parts", "state_parts"):
        found.extend((data.get(held) or {}).values())
    return [ref for ref in found if isinstance(ref, str) and ref.startswith("sha256:")]
