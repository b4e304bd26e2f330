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
        rows = list(source.stored(run_id))
        if not rows:
            continue
        if not destination.import_run(rows, [source.blob(ref) for ref in _refs(rows)]):
            skipped.append(run_id)
            continue
        runs, events = runs + 1, events + len(rows)
        if told is not None:
            told(run_id, len(rows))
    return Copied(runs, events, tuple(skipped))


def _refs(rows: Sequence[Row]) -> Iterator[str]:
    """The blobs the events refer to, each once: inputs, requests and states' big members."""
    seen: set[str] = set()
    for row in rows:
        kind = row[3]
        if kind not in (k.RUN_STARTED, k.SNAPSHOT, k.MODEL_REQUESTED):
            continue
        data = json.loads(row[5])
        found = [data.get("input"), data.get("request")]
        for held in ("input_parts", "state_parts"):
            found.extend((data.get(held) or {}).values())
        for ref in found:
            if isinstance(ref, str) and ref.startswith("sha256:") and ref not in seen:
                seen.add(ref)
                yield ref
