"""The rows a reader gets back: runs (the `runs` table) and actions (the `actions` view)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs


@attrs.frozen
class Run:
    """A row of the `runs` table: where a run stands, derived from its events."""

    run_id: str
    ordinal: int
    """The run's place in the order runs were created in this journal: 1, 2, 3, ..."""
    machine: str
    target: str
    code_hash: str
    run_key: str | None
    forked_from: str | None
    """The run this one was forked from (`journal fork`), if any..."""
    forked_at: int | None
    """... and the seq of that run whose state this one started from."""
    status: str
    step: str | None
    steps: int
    last_seq: int
    transition_seq: int
    snapshot_seq: int
    effects: int
    decisions: int
    actions: int
    resumes: int
    error: str | None
    started_at: str
    updated_at: str
    ended_at: str | None
    limits: str | None
    """The limits in force, as JSON text (None for a run from before limits)."""
    limit_overrides: str | None
    """The limits given for this run on the command line, as JSON text: they outlast resumes."""
    model_requests: int
    """Requests sent to a model: every attempt, answered or not."""
    model_calls: int
    """Requests answered."""
    model_failures: int
    rejections: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    total_tokens: int
    """Tokens billed, plus the worst case of every request whose outcome is unknown."""
    cost_nusd: int
    """What was billed, in nano-dollars (an integer, so that sums are exact)."""
    total_nusd: int
    """Billed, plus the worst case of every request that may have been billed."""
    anomaly: int
    cost_usd: float
    possibly_billed_usd: float
    """The worst case of the requests whose outcome is unknown (a timeout, a crash)."""
    wake_at: str | None = None
    """The deadline of its latest wait (`run.waiting`): when a waiting run may be taken up
    again, to take a wait's default or look at a Message Batch; None: never by itself."""


RUN_COLUMNS = ", ".join(f.name for f in attrs.fields(Run))


@attrs.frozen
class Action:
    """A row of the `actions` view: one action key in one run, as its latest event leaves it."""

    run_id: str
    step: str | None
    call: str
    name: str
    key: str
    status: str
    """One of journal.kinds.ACTION_STATUSES."""
    attempts: int
    result: Any
    """What the action returned, decoded from JSON; None while it has none."""
    resolved_by: str | None
    """Who said what happened to it, when a person did (`journal resolve`)."""
    intended_at: str | None
    updated_at: str
    seq: int

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Action:
        """An action from a row of the view's columns, in order (its result is JSON text)."""
        action = cls(*row)
        if action.result is None:
            return action
        return attrs.evolve(action, result=json.loads(action.result))


ACTION_COLUMNS = ", ".join(f.name for f in attrs.fields(Action))


@attrs.frozen
class Problem:
    """Something wrong in the journal: the run (None for the whole file) and seq it concerns."""

    run_id: str | None
    what: str
    seq: int | None = None
