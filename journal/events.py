"""Events, the immutable facts of the journal, and the names of their kinds.

An event is `(run_id, seq, at, kind, step, data)`: `seq` numbers the events of one run from 1
without gaps, `at` is an ISO 8601 UTC time, `step` the step the event belongs to (if any), and
`data` a JSON object whose fields depend on the kind.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Final

import attrs

from runjournal.journal.errors import NotJSON

Clock = Callable[[], float]
"""Seconds since the epoch; passed in everywhere so tests control time."""

RUN_STARTED: Final = "run.started"
RUN_RESUMED: Final = "run.resumed"
RUN_DONE: Final = "run.done"
RUN_FAILED: Final = "run.failed"
TRANSITION: Final = "transition"
SNAPSHOT: Final = "snapshot"
EFFECT_DONE: Final = "effect.done"
DECISION: Final = "decision"
MODEL_REQUESTED: Final = "model.requested"
MODEL_FAILED: Final = "model.failed"
MODEL_ANSWERED: Final = "model.answered"
OUTPUT_REJECTED: Final = "output.rejected"
ACTION_INTENDED: Final = "action.intended"
ACTION_DONE: Final = "action.done"
ACTION_FAILED: Final = "action.failed"
ACTION_SKIPPED: Final = "action.skipped"
ACTION_RESOLVED: Final = "action.resolved"
RUN_NEEDS_ATTENTION: Final = "run.needs_attention"
RUN_KILLED: Final = "run.killed"
RUN_INTERRUPTED: Final = "run.interrupted"
COST_ANOMALY: Final = "cost.anomaly"
WAIT_STARTED: Final = "wait.started"
WAIT_ANSWERED: Final = "wait.answered"
WAIT_EXPIRED: Final = "wait.expired"
RUN_WAITING: Final = "run.waiting"
BATCH_INTENDED: Final = "batch.intended"
BATCH_CREATED: Final = "batch.created"
BATCH_ENDED: Final = "batch.ended"
BATCH_CANCELED: Final = "batch.canceled"


@attrs.frozen
class Event:
    """One fact about one run."""

    run_id: str
    seq: int
    at: str
    kind: str
    step: str | None
    data: dict[str, Any]


def timestamp(t: float) -> str:
    """`t` as ISO 8601 UTC with milliseconds, which SQLite's date functions read."""
    return f"{_second(int(t))}.{int(t * 1000) % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second(t: int) -> str:
    # Every event is stamped; formatting each second once keeps that off the hot path.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(data: Any) -> str:
    """Compact JSON text for the journal; a value JSON cannot hold is an error, never pickled."""
    try:
        return _encode(data)
    except (TypeError, ValueError) as e:
        msg = f"cannot write to the journal as JSON: {e}"
        raise NotJSON(msg) from e
