"""A person's kill of a run: asked for from any process, carried out by the run's own.

Only the process executing a run may append to it, so a kill is first a request (a row the
executing process polls, see `journal.Heartbeat`); that process ends the run `killed` within a
second, wherever it waits. A run that no process executes is killed at once, by the process
that asks: it takes the run's lease and records `run.killed` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from runjournal.journal import Holder, LeaseHeld, RunWriter, Store, kinds
from runjournal.machine.errors import NothingToKill
from runjournal.machine.model.batching import canceled, open_batches

KILLABLE = ("running", "needs_attention", "waiting", "resolved", "failed")
"""Statuses of a run that a kill ends; done is final, and killed already is killed."""


def kill(
    journal: Store,
    run_id: str,
    *,
    by: str,
    reason: str | None,
    lease_ttl: float = 30.0,
    cancel: Callable[[str], bool] | None = None,
) -> Literal["killed", "requested"]:
    """Kill the run: at once if no live process executes it ("killed"), else ask that process
    to ("requested"), which it does within a second.

    A run killed at once may be waiting on Message Batches (`ctx.ask_batch`): `cancel(batch_id)`
    cancels each and says whether it could (`batch.canceled` is recorded if so); the process
    executing a run cancels its own."""
    run = journal.run(run_id)
    if run.status not in KILLABLE:
        msg = f"run {run_id} is {run.status} already: there is nothing to kill"
        raise NothingToKill(msg)
    journal.request_kill(run_id, by=by, reason=reason)
    holder = Holder.this_process()
    try:
        journal.acquire_lease(run_id, holder, lease_ttl)
    except LeaseHeld:
        return "requested"
    try:
        run = journal.run(run_id)
        said = f": {reason}" if reason else ""
        data = kinds.RunKilled(
            killed_by="person", who=by, reason=reason, message=f"killed by {by}{said}"
        )
        writer = RunWriter(journal, run_id, last_seq=run.last_seq, owner=holder.owner)
        writer.commit(run.step, data)
        for created in open_batches(journal, run_id) if cancel is not None else ():
            if cancel is not None and cancel(created.data["batch_id"]):
                writer.commit(created.step, canceled(created, by=by))
        return "killed"
    finally:
        journal.release_lease(run_id, holder.owner)
