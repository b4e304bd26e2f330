"""The state of a run at any seq, folded from its events alone, without the pipeline's code.

The state is JSON as the journal holds it: `run.started` and `snapshot` events carry the whole
state, `transition` events the change to it. A fold starts from the newest whole state at or
before the seq asked for and applies the changes after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import attrs

from runjournal.journal import delta
from runjournal.journal.kinds import to_step
from runjournal.journal.protocol import Store


@attrs.frozen
class StateAt:
    """A run's state after the event at `seq`, and the step it goes on with."""

    seq: int
    step: str | None
    state: Any
    transitions: int


def state_at(journal: Store, run_id: str, seq: int | None = None) -> StateAt:
    """The state after all of the run's events up to `seq` (all of them when None)."""
    snap = journal.latest_snapshot(run_id, upto=seq)
    state, step = snap.data["state"], to_step(snap.data)
    count, last = snap.data.get("transitions", 0), snap.seq
    apply, loads = delta.apply, json.loads
    for at_seq, _, _, data in journal.transitions(run_id, after=snap.seq, upto=seq):
        change = loads(data)
        state = apply(state, change["delta"])
        step, last = to_step(change), at_seq
        count += 1
    return StateAt(last, step, state, count)


class Change(NamedTuple):
    """One transition as replay shows it: the step that ended, the next one, the state after."""

    seq: int
    at: str
    step: str | None
    to: str | None
    ops: list[dict[str, Any]]
    state: Any


def replay(journal: Store, run_id: str, *, upto: int | None = None) -> Iterator[Change]:
    """The run's first state and the state after each transition, in order, up to `upto`.

    The state yielded is the fold's own and changes with the next item: copy or print it
    before asking for the next one. Memory stays that of one state however long the run.
    """
    started = journal.latest_snapshot(run_id, upto=1)
    state = started.data["state"]
    yield Change(started.seq, started.at, None, to_step(started.data), [], state)
    apply, loads = delta.apply, json.loads
    for seq, at, step, data in journal.transitions(run_id, after=1, upto=upto):
        change = loads(data)
        state = apply(state, change["delta"])
        yield Change(seq, at, step, to_step(change), change["delta"], state)
