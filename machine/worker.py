"""Workers: processes, on any number of hosts, that execute the runs others submitted.

A worker claims runnable runs (submitted, interrupted, resolved, waiting past the deadline of
their wait (`runs.wake_at`: a default to take, a Message Batch to look at again), or left
running by a process that died: its lease expired), each with a lease of its own, executes up
to `concurrency` of them at once, each on a thread and a connection of its own, and claims more
as they end.
Claiming is the journal's (`Store.claim_run`): on PostgreSQL, workers claiming at once skip the
rows another is locking and never wait on each other. A worker never refuses a run for the code
it was started with: a run whose code changed since is executed, the change reported with it
(as `journal resume` does), never left stranded.

Asked to stop (SIGTERM: `Options.stop`), a worker claims nothing more and each of its runs stops
at its next safe point, records `run.interrupted` and lets its lease go, for another worker to
take up. A worker killed outright leaves its leases to expire, and then another takes its runs.

Kill requests reach a run within `kill_poll` seconds, or at once where the journal notifies
them (PostgreSQL's LISTEN): the worker listens on one connection and wakes the run's heartbeat.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import attrs

from runjournal.journal import Heartbeat, Holder, Run, Store
from runjournal.machine import loader
from runjournal.machine.execution import Options, Outcome
from runjournal.machine.loader import Target
from runjournal.machine.runner import resume


@attrs.frozen
class Executed:
    """What a worker did with one run it claimed."""

    run_id: str
    outcome: Outcome[Any] | None
    error: BaseException | None = None


@attrs.define
class Worker:
    """Claims runs from `journal` and executes them, `concurrency` at a time."""

    journal: Store
    options: Options
    concurrency: int = 1
    machines: Sequence[str] | None = None
    idle_poll: float = 1.0
    """Seconds between two looks for runnable runs while there are none."""
    exit_when_idle: bool = False
    """End once no run is runnable and none is executing (tests, batch jobs)."""
    listen: bool = True
    """Wake a run's heartbeat on a kill notification where the journal sends them."""
    told: Callable[[Executed], None] | None = None
    """Told each run's end, from the worker's own thread."""
    _heartbeats: dict[str, Heartbeat] = attrs.field(factory=dict, init=False)
    _targets: dict[str, Target] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def work(self) -> list[Executed]:
        """Claim and execute runs until asked to stop (or idle, with `exit_when_idle`)."""
        stop = self.options.stop
        stop_listening = self.journal.notify_kills(self._woken) if self.listen else None
        # Listening, a run looks for a kill once a heartbeat; the notification wakes it sooner.
        poll = self.options.lease_ttl / 3 if stop_listening is not None else self.options.kill_poll
        done: list[Executed] = []
        # Runs that failed here (their code gone, the journal refusing them) are left to
        # others and to a person, not claimed again in a loop.
        failed: set[str] = set()
        executing: dict[Future[Executed], str] = {}
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="run") as pool:
                while True:
                    asked = stop is not None and stop.asked.is_set()
                    while not asked and len(executing) < self.concurrency:
                        holder = Holder.this_process()
                        run = self.journal.claim_run(
                            holder,
                            self.options.lease_ttl,
                            machines=self.machines,
                            excluded=sorted(failed),
                        )
                        if run is None:
                            break
                        future = pool.submit(self._execute, run, holder, poll)
                        executing[future] = run.run_id
                    if not executing and (asked or self.exit_when_idle):
                        return done
                    finished, _ = wait(
                        list(executing), timeout=self.idle_poll, return_when=FIRST_COMPLETED
                    )
                    if not executing and stop is not None:
                        stop.asked.wait(self.idle_poll)
                    for future in finished:
                        del executing[future]
                        executed = future.result()
                        done.append(executed)
                        if executed.error is not None:
                            failed.add(executed.run_id)
                        if self.told is not None:
                            self.told(executed)
        finally:
            if stop_listening is not None:
                stop_listening()

    def _execute(self, run: Run, holder: Holder, poll: float) -> Executed:
        journal = self.journal.reopen()
        try:
            target = self._target(run.target)
            options = attrs.evolve(
                self.options,
                holder=holder,
                kill_poll=poll,
                on_heartbeat=lambda heartbeat: self._beating(run.run_id, heartbeat),
            )
            outcome = resume(
                journal,
                run.run_id,
                target.machine,
                target=target.location,
                code_hash=target.code_hash,
                options=options,
            )
            return Executed(run.run_id, outcome)
        except Exception as e:  # one run's failure is reported; the worker goes on
            journal.release_lease(run.run_id, holder.owner)
            return Executed(run.run_id, None, e)
        finally:
            with self._lock:
                self._heartbeats.pop(run.run_id, None)
            journal.close()

    def _target(self, name: str) -> Target:
        with self._lock:
            found = self._targets.get(name)
        if found is None:
            found = loader.load(name)
            with self._lock:
                self._targets[name] = found
        return found

    def _beating(self, run_id: str, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._heartbeats[run_id] = heartbeat

    def _woken(self, run_id: str) -> None:
        with self._lock:
            heartbeat = self._heartbeats.get(run_id)
        if heartbeat is not None:
            heartbeat.wake()
