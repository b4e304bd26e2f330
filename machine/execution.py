"""One process's execution of a run: its lease held, its steps executed until it ends or stops.

`Execution.drive` takes the run's lease (how, the runner says: a new run, a resume, a fork),
keeps it alive while steps execute, and lets it go. Each step's handler gets the state and a
context whose calls go through the journal (`machine.journaled`); what it returns is checked and
becomes a transition event holding the change to the state, with a snapshot now and then. The
run ends with `run.done`, `run.failed` or `run.killed`, or stops as needing attention or
interrupted by a signal, which a resume goes on from.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

from runjournal.journal import (
    ConcurrentAppend,
    Event,
    Heartbeat,
    Holder,
    JournalError,
    LeaseLost,
    NotJSON,
    Run,
    RunWriter,
    Store,
    delta,
    kinds,
    parts,
)
from runjournal.machine import anomaly, convert, states
from runjournal.machine.context import Context
from runjournal.machine.definition import Machine
from runjournal.machine.errors import (
    ConversionError,
    Interrupted,
    Killed,
    NeedsAttention,
    Waiting,
)
from runjournal.machine.journaled import Calls, Live, no_checkpoint
from runjournal.machine.kill_switch import Guard, Limits
from runjournal.machine.model import Models, ModelSession
from runjournal.machine.pacing import Pace, RateLimits
from runjournal.machine.ports import Checkpoint
from runjournal.machine.retry import Retrying, RetryPolicy
from runjournal.machine.signals import StopRequest
from runjournal.machine.transitions import Fail, Finish, Goto


@attrs.frozen
class Options:
    """How runs execute; the defaults suit production, tests shorten them."""

    lease_ttl: float = 30.0
    checkpoint: Checkpoint = no_checkpoint
    models: Models | None = None
    """How `ctx.ask` reaches a model; None means the Anthropic API with ANTHROPIC_API_KEY."""
    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    """How model calls and actions are retried."""
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None
    """Seeds the backoff jitter; None draws it from the system."""
    on_start: Callable[[Run], None] | None = None
    """Called once the run exists and this process holds it, before its first step."""
    on_event: Callable[[Sequence[Event]], None] | None = None
    """Told each batch of the run's events as it is committed (redacted): a live log. Events
    a resume reads back from the journal are not told again."""
    rate_limits: RateLimits | None = None
    """The API's limits per minute (requests, input and output tokens) that model requests are
    paced under; unknown ones are learned from the answers' `anthropic-ratelimit-*` headers."""
    limits: Mapping[str, Any] = attrs.Factory(dict)
    """Limits for this run, over the machine's (`max_cost_usd`, `max_tokens`, `max_steps`,
    `max_model_calls`): recorded with the run, they hold for its resumes too."""
    shared_pace: bool = False
    """Pace model requests with the other processes of this journal (`Store.pace`): workers
    sharing an API key share its limits per minute instead of learning of each other from
    429s."""
    holder: Holder | None = None
    """The lease holder the run is executed as: a worker's, whose claim took the run's lease
    for it. None: a holder of this process's own, made for the run."""
    kill_poll: float = 0.5
    """Seconds between two looks for a person's kill request (`journal kill`)."""
    on_heartbeat: Callable[[Heartbeat], None] | None = None
    """Told the run's heartbeat once it beats: a worker that listens for kill notifications
    wakes it with `Heartbeat.wake` rather than wait for its next look."""
    stop: StopRequest | None = None
    """Asked to stop by a signal (see `machine.signals.stop_on_signals`): the run stops at its
    next safe point, records `run.interrupted` and lets its lease go."""


S = TypeVar("S")


@attrs.frozen
class Outcome(Generic[S]):
    """What `start` or `resume` did: the run as it now stands, and its state."""

    run: Run
    state: S
    """The run's state as it now stands, of the machine's state type: for a run found done,
    its final state, read from the journal."""
    created: bool = False
    """A new run was started (rather than one with the same run key found)."""
    executed: bool = True
    """Steps were executed (false for a run that was already done)."""
    code_changed: tuple[str, str] | None = None
    """The code hash the run had and the one it resumed with, when they differ."""
    anomalies: tuple[dict[str, Any], ...] = ()
    """The `cost.anomaly` events the run's end recorded: tokens per step far above usual."""
    interrupted: Interrupted | None = None
    """The signal that stopped this process's execution of the run, which a resume goes on
    with; None if it was not stopped."""


@attrs.frozen
class Start:
    """Where a run goes on from: its state (as a value and as JSON), step, visit and the calls
    its unfinished step already made."""

    state: Any
    state_json: Any
    step: str | None
    visit: int
    recorded: dict[str, list[Event]]
    limits: Limits


class Execution:
    """A run being executed by this process: its model session, retries and lease holder."""

    def __init__(
        self, journal: Store, machine: Machine[Any], options: Options, models: Models
    ) -> None:
        self.journal = journal
        self.machine = machine
        self.options = options
        self.holder = options.holder or Holder.this_process()
        self.models = models
        journal.keep_out(*self.models.secrets)
        self.fields = typing.get_type_hints(machine.state)
        self.state: Any = None
        """The run's state as the steps left it: the last good one."""
        self.step: str | None = None
        """The step being executed (or to be)."""

    def drive(
        self,
        take: Callable[[], Run | None],
        begin: Callable[[RunWriter, Run], Start],
    ) -> Outcome[Any] | None:
        """Take the run's lease (`take`, None if it took none), execute the run to its end or
        until it is interrupted, then let the lease go.

        Everything from taking the lease to letting it go is in this one try/finally, the
        taking included: whatever cuts it short (a signal, `on_start`, the journal), the
        heartbeat stops and the lease is released, unless another process took the run over.
        The lease is released by its owner, so one whose taking was cut short after it was
        written is released too.
        """
        journal, options, owner = self.journal, self.options, self.holder.owner
        heartbeat: Heartbeat | None = None
        writer: RunWriter | None = None
        writable = True
        anomalies: tuple[dict[str, Any], ...] = ()
        interrupted: Interrupted | None = None
        try:
            run = take()
            if run is None:
                return None
            run_id = run.run_id
            options.checkpoint("run.lease")
            heartbeat = Heartbeat(
                journal, run_id, self.holder, options.lease_ttl, poll=options.kill_poll
            ).start()
            if options.on_heartbeat is not None:
                options.on_heartbeat(heartbeat)
            writer = RunWriter(
                journal,
                run_id,
                last_seq=run.last_seq,
                heartbeat=heartbeat,
                on_commit=options.on_event,
            )
            self.step = run.step
            try:
                begun = begin(writer, run)
                guard = Guard(begun.limits, heartbeat, options.sleep, options.stop)
                retrying = Retrying(
                    options.retry, guard.sleep, random.Random(options.seed), journal.clock
                )
                pace = Pace(
                    options.rate_limits,
                    seed=options.seed,
                    shared=journal.pace if options.shared_pace else None,
                )
                session = ModelSession(self.models, retrying, guard, pace)
                means = _Means(writer, guard, retrying, session)
                if options.on_start is not None:
                    options.on_start(journal.run(run_id))
                if begun.step is not None:
                    anomalies = self._loop(means, run_id, begun)
            except Interrupted as e:
                interrupted = e
                self._interrupted(writer, e)
        except (LeaseLost, ConcurrentAppend):
            writable = False  # another process owns the run now
            raise
        except BaseException:
            # Cut short (a journal error, Ctrl-C without `Options.stop`): what is held was
            # computed and is true.
            if writer is not None:
                with contextlib.suppress(JournalError):
                    writer.flush()
            raise
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            if writable and not (heartbeat is not None and heartbeat.lost):
                with contextlib.suppress(JournalError):
                    journal.release_lease(None, owner)
        return Outcome(
            journal.run(run_id), state=self.state, anomalies=anomalies, interrupted=interrupted
        )

    def _interrupted(self, writer: RunWriter, e: Interrupted) -> None:
        """Record that a signal stopped this execution of the run, which a resume goes on."""
        writer.flush()
        where = "where the step was" if e.at_once else "at a safe point"
        step = f" in step {self.step!r}" if self.step else ""
        writer.commit(
            self.step,
            kinds.RunInterrupted(
                signal=e.signal,
                at_once=e.at_once,
                message=f"stopped by {e.signal}{step}, {where}: `journal resume` goes on",
            ),
        )

    def _loop(self, means: _Means, run_id: str, begun: Start) -> tuple[dict[str, Any], ...]:
        """Execute steps until the run ends or stops; the anomalies its end recorded."""
        machine, writer = self.machine, means.writer
        state, state_json, step, visit = begun.state, begun.state_json, begun.step, begun.visit
        self.state = state
        recorded = begun.recorded
        assert step is not None
        state_bytes = parts.size(state_json)
        since_snapshot = delta_bytes = 0
        fields = states.layout(machine.converter, state, state_json)
        while True:
            self.step = step
            handler = machine.steps.get(step)
            if handler is None:
                known = ", ".join(machine.steps)
                return self._fail(means, step, f"the machine has no step {step!r} (steps: {known})")
            calls = Calls(
                run_id=run_id,
                step=step,
                visit=visit,
                writer=writer,
                converter=machine.converter,
                recorded=recorded,
                journaling=Live(),
                checkpoint=self.options.checkpoint,
                retrying=means.retrying,
                guard=means.guard,
            )
            ctx = Context(
                calls,
                models=means.session,
                model=machine.model,
                max_tokens=machine.max_tokens,
                thinking=machine.thinking,
                effort=machine.effort,
            )
            recorded = {}
            try:
                means.guard.before_step(visit)
                result = handler(ctx, state)
            except Killed as e:
                return self._end(means, step, e.record)
            except NotJSON as e:
                return self._fail(means, step, f"step {step!r}: {e}")
            except NeedsAttention as e:
                self._stop(writer, step, calls.stopped or e)
                return ()
            except JournalError:
                raise
            except Exception as e:
                if calls.stopped is not None and calls.mismatch is None:
                    self._stop(writer, step, calls.stopped)
                    return ()
                error = calls.mismatch or e
                trace = traceback.format_exc(limit=-12)
                return self._fail(means, step, f"{type(error).__name__}: {error}", trace=trace)
            if calls.mismatch is not None:
                return self._fail(means, step, str(calls.mismatch))
            if calls.stopped is not None:
                self._stop(writer, step, calls.stopped)
                return ()
            problem = self._check(step, result)
            if problem is not None:
                return self._fail(means, step, problem)
            if isinstance(result, Fail):
                return self._fail(means, step, result.reason)
            assert isinstance(result, Goto | Finish)
            new_json, ops = states.change(
                machine.converter, fields, state, state_json, result.state
            )
            problem = self._misfit(step, new_json, ops)
            if problem is not None:
                return self._fail(means, step, problem)  # the last good state stays the run's
            to = result.step if isinstance(result, Goto) else None
            before = writer.bytes_written
            try:
                writer.record(step, kinds.TransitionEvent(to_step=to, delta=ops))
            except NotJSON as e:
                return self._fail(
                    means, step, f"step {step!r} returned a state the journal cannot hold: {e}"
                )
            delta_bytes += writer.bytes_written - before
            self.state = result.state
            visit += 1
            since_snapshot += 1
            # A snapshot costs the size of the state: take one only once the changes since the
            # last have cost as much, so snapshots never more than double the journal.
            if since_snapshot >= machine.snapshot_every and delta_bytes >= state_bytes:
                # Its big members are blobs, stored once however many snapshots hold them.
                held, held_parts, payloads, state_bytes = parts.split(
                    new_json, self.journal.redact, self.journal.secrets
                )
                for payload in payloads:
                    writer.blob(payload)
                snapshot = kinds.Snapshot(
                    state=held, to_step=to, transitions=visit, state_parts=held_parts
                )
                writer.record(step, snapshot)
                since_snapshot = delta_bytes = 0
            if to is None:
                return self._end(means, step, kinds.RunDone(steps=visit))
            state, state_json, step = result.state, new_json, to

    def _end(self, means: _Means, step: str, data: kinds.Data) -> tuple[dict[str, Any], ...]:
        """End the run (done, failed or killed), first recording any cost anomaly."""
        means.writer.flush()
        anomalies = anomaly.check(self.journal, means.writer.run_id, self.machine.anomaly_threshold)
        for found in anomalies:
            means.writer.record(step, kinds.CostAnomaly(**found))
        means.writer.commit(step, data)
        return anomalies

    def _check(self, step: str, result: Any) -> str | None:
        machine = self.machine
        if not isinstance(result, Goto | Finish | Fail):
            return (
                f"step {step!r} returned {type(result).__name__}, not a transition: "
                "return ctx.goto(step, state), ctx.finish(state) or ctx.fail(reason)"
            )
        if isinstance(result, Goto) and result.step not in machine.steps:
            return (
                f"step {step!r} goes to {result.step!r}, which is not a step "
                f"(steps: {', '.join(machine.steps)})"
            )
        if isinstance(result, Goto) and not machine.may_go(step, result.step):
            declared = ", ".join(machine.goes_to.get(step) or ())
            return (
                f"step {step!r} goes to {result.step!r}, but it declared it goes only to "
                f"({declared}): declare it, or go where it said"
            )
        if not isinstance(result, Fail) and not isinstance(result.state, machine.state):
            return (
                f"step {step!r} returned a state of type {type(result.state).__name__}, "
                f"not {machine.state.__name__}"
            )
        return None

    def _misfit(self, step: str, new_json: Any, ops: list[dict[str, Any]]) -> str | None:
        """Why the new state does not fit the state type, or None.

        attrs does not check types, so `attrs.evolve(s, n="x")` with `n: int` is a state a
        resume could never read back. Only the fields the step changed are structured again,
        strictly: the check costs what changed, not the whole state.
        """
        machine = self.machine
        # A field that only grew (`add` at its end) has only its new items checked.
        added: dict[str, list[Any]] = {}
        changed = set()
        for op in ops:
            field = _top_field(op["path"])
            if op["op"] == "add" and op["path"] == f"/{delta.escape(field)}/-":
                added.setdefault(field, []).append(op["value"])
            else:
                changed.add(field)
        if "" in changed:
            checks: list[tuple[str, Any, Any]] = [("", new_json, machine.state)]
        else:
            checks = [(f, new_json.get(f), self.fields.get(f, Any)) for f in sorted(changed)]
            for field in sorted(added.keys() - changed):
                type_ = self.fields.get(field, Any)
                item = states.item_type(type_)
                if item is None:
                    checks.append((field, new_json.get(field), type_))
                    continue
                first = len(new_json[field]) - len(added[field])
                checks += (
                    (f"{field}[{first + i}]", value, item) for i, value in enumerate(added[field])
                )
        errors = []
        for field, value, type_ in checks:
            try:
                convert.structure(machine.converter, value, type_, f"field {field}")
            except ConversionError as e:
                errors += [_at(field, error) for error in e.errors]
        if not errors:
            return None
        return (
            f"step {step!r} returned a state that does not fit {machine.state.__name__}: "
            f"{'; '.join(errors)}; the state before the step stays the run's"
        )

    def _stop(self, writer: RunWriter, step: str, stop: NeedsAttention) -> None:
        data: kinds.Data
        if isinstance(stop, Waiting):
            data = kinds.RunWaiting(
                call=stop.call,
                name=stop.name,
                of=stop.of,
                deadline=stop.deadline,
                message=str(stop),
            )
        else:
            data = kinds.RunNeedsAttention(
                call=stop.call, name=stop.name, key=stop.key, message=str(stop)
            )
        writer.commit(step, data)

    def _fail(
        self, means: _Means, step: str, error: str, *, trace: str | None = None
    ) -> tuple[dict[str, Any], ...]:
        return self._end(means, step, kinds.RunFailed(error=error, traceback=trace))


@attrs.frozen
class _Means:
    """What one execution of a run works with: its writer, its kill switch, retries and model."""

    writer: RunWriter
    guard: Guard
    retrying: Retrying
    session: ModelSession


def _top_field(path: str) -> str:
    """The state field a JSON Pointer points into ("" for the whole state)."""
    token = path.split("/", 2)[1] if path else ""
    return token.replace("~1", "/").replace("~0", "~")


def _at(field: str, error: str) -> str:
    """A converter error about one field of the state, with the field's path in it."""
    if not field:
        return error
    if " @ $" in error:
        return error.replace(" @ $", f" @ $.{field}", 1)
    return f"{error} @ $.{field}"
