"""The runner: starts a run, resumes one, and executes steps until the run ends.

A run executes in one process at a time, the holder of its lease. Each step's handler gets the
state and a context; what it returns becomes a transition event holding the change to the
state. Resuming folds the state from the journal, re-enters the unfinished step, and lets the
context answer from the journal every call already made.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Generic, TypeVar

import attrs

from runjournal.journal import (
    ConcurrentAppend,
    Event,
    Heartbeat,
    Holder,
    JournalError,
    Lease,
    LeaseLost,
    NotJSON,
    Run,
    RunIsDone,
    RunWriter,
    Store,
    delta,
    fold,
    kinds,
    parts,
)
from runjournal.journal.limits import NUSD
from runjournal.machine import anomaly, convert, states
from runjournal.machine.context import Context
from runjournal.machine.definition import Machine
from runjournal.machine.errors import (
    ConversionError,
    Ignored,
    IgnoredInput,
    InputMismatch,
    Interrupted,
    Killed,
    ModelUnavailable,
    NeedsAttention,
    StateNotJSON,
    WrongMachine,
)
from runjournal.machine.journaled import OPERATIONS, Calls, Live, no_checkpoint
from runjournal.machine.limits import Guard, Limits
from runjournal.machine.model import Models, ModelSession, anthropic_api
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
class Prepared:
    """A run's first state, checked, before anything is written."""

    machine: Machine[Any]
    input: Any
    state: Any
    state_json: Any
    ignored: tuple[Ignored, ...] = ()
    """Fields of the input that no class of the state has, left out of it (an `IgnoredInput`
    warning said so)."""


def prepare(machine: Machine[Any], input: Any) -> Prepared:
    """Check `machine` and turn `input` into its first state, or raise saying what is wrong.

    Input fields the state has no place for are refused if the machine takes strict input;
    else they are left out, and an `IgnoredInput` warning names them, once per field however
    many items have it.
    """
    machine.check()
    state, ignored = machine.structure_input(input)
    if not convert.round_trips(machine.converter, state, machine.state):
        msg = (
            f"the state of machine {machine.name!r} does not survive JSON unchanged; "
            "use JSON-friendly field types (str, int, float, bool, lists, tuples, attrs classes)"
        )
        raise StateNotJSON(msg)
    if ignored:
        warnings.warn(IgnoredInput(ignored), stacklevel=2)
    state_json = convert.to_json(machine.converter, state)
    return Prepared(machine, _held_once(input, state_json), state, state_json, ignored)


def _held_once(input: Any, state_json: Any) -> Any:
    """`input`, with what the first state holds equal to it (the whole input, or an input's
    member, as the tickets the state works through) made the state's own JSON: a big input is
    then held in memory once, not as two equal trees, until it is written."""
    if not isinstance(state_json, dict):
        return input
    if isinstance(input, list):
        for member in state_json.values():
            if isinstance(member, list) and len(member) == len(input) and delta.same(member, input):
                return member
        return input
    if isinstance(input, dict):
        held = dict(input)
        for name, value in input.items():
            mine = state_json.get(name)
            if (
                isinstance(value, list | dict)
                and isinstance(mine, list | dict)
                and len(mine) == len(value)
                and delta.same(mine, value)
            ):
                held[name] = mine
        return held
    return input


def start(
    journal: Store,
    prepared: Prepared,
    *,
    target: str,
    code_hash: str,
    run_key: str | None = None,
    options: Options | None = None,
) -> Outcome[Any]:
    """Start a run of the prepared machine and input, and execute it to its end.

    With a `run_key` already used by a run of this machine, nothing new starts: a done run is
    reported and an unfinished one resumed.
    """
    options = options or Options()
    machine = prepared.machine
    if options.stop is not None:
        options.stop.check()  # asked to stop before the run existed: nothing is written
    live = _Live(journal, machine, options)
    limits, overrides = _limits_for(journal, machine, {}, options.limits)
    found: list[Run] = []

    def take() -> Run | None:
        run, created = journal.create_run(
            machine=machine.name,
            target=target,
            code_hash=code_hash,
            step=machine.start,
            state=prepared.state_json,
            input=prepared.input,
            run_key=run_key,
            holder=live.holder,
            lease_ttl=options.lease_ttl,
            limits=limits.to_json(),
            limit_overrides=overrides,
        )
        if created:
            return run
        found.append(run)  # the run key's: no lease was taken
        return None

    def begin(writer: RunWriter, run: Run) -> _Start:
        if options.on_event is not None:  # run.started was written with the run, not by it
            options.on_event(list(journal.events(run.run_id, upto=1)))
        return _Start(prepared.state, prepared.state_json, machine.start, 0, {}, limits)

    outcome = live.drive(take, begin)
    if outcome is not None:
        return attrs.evolve(outcome, created=True)
    (run,) = found
    if run.status == "done":
        return _found_done(journal, machine, run)
    return resume(journal, run.run_id, machine, target=target, code_hash=code_hash, options=options)


def resume(
    journal: Store,
    run_id: str,
    machine: Machine[Any],
    *,
    target: str,
    code_hash: str,
    options: Options | None = None,
) -> Outcome[Any]:
    """Take the run's lease, rebuild its state from the journal, and execute it to its end."""
    options = options or Options()
    machine.check()
    run = journal.run(run_id)
    if run.status == "done":
        return _found_done(journal, machine, run)
    if run.machine != machine.name:
        msg = f"run {run_id} is a run of machine {run.machine!r}, but {target} is {machine.name!r}"
        raise WrongMachine(msg)
    if options.stop is not None:
        options.stop.check()
    live = _Live(journal, machine, options)
    options.checkpoint("resume.lease")
    taken: list[Lease | None] = []

    def take() -> Run:
        # The status is read again under the lease, in its transaction: a run that another
        # process finished since the look above is reported, never taken up again.
        taken.append(journal.acquire_lease(run_id, live.holder, options.lease_ttl))
        return journal.run(run_id)  # again: the last holder may have written until it let go

    def begin(writer: RunWriter, run: Run) -> _Start:
        given = json.loads(run.limit_overrides) if run.limit_overrides else {}
        limits, overrides = _limits_for(journal, machine, given, options.limits)
        at = fold.state_at(journal, run_id)
        state = _structured(machine, run_id, at.state)
        recorded: dict[str, list[Event]] = {}
        for event in journal.events(run_id, after=at.seq, kinds=tuple(OPERATIONS)):
            recorded.setdefault(event.data["call"], []).append(event)
        writer.commit(
            at.step,
            kinds.RunResumed(
                status_before=run.status,
                code_hash_before=run.code_hash,
                code_hash=code_hash,
                target=target,
                from_seq=at.seq,
                taken_over_from=taken[0].describe() if taken[0] else None,
                limits=limits.to_json(),
                limit_overrides=overrides,
            ),
        )
        return _Start(state, at.state, at.step, at.transitions, recorded, limits)

    try:
        outcome = live.drive(take, begin)
    except RunIsDone:
        return _found_done(journal, machine, journal.run(run_id))
    assert outcome is not None
    changed = (run.code_hash, code_hash) if run.code_hash != code_hash else None
    return attrs.evolve(outcome, code_changed=changed)


def fork(
    journal: Store,
    run_id: str,
    machine: Machine[Any],
    *,
    at: int,
    changes: Mapping[str, Any] | None = None,
    target: str,
    code_hash: str,
    options: Options | None = None,
) -> Outcome[Any]:
    """Start a new run from run `run_id`'s state after seq `at`, and execute it to its end.

    `changes` sets fields of that state first (JSON values, checked against the state type).
    The new run starts at the step the old one was to go on with, records where it came from
    (`forked_from`), and runs under the machine's current code; the old run is untouched.
    """
    options = options or Options()
    machine.check()
    old = journal.run(run_id)
    if old.machine != machine.name:
        msg = f"run {run_id} is a run of machine {old.machine!r}, but {target} is {machine.name!r}"
        raise WrongMachine(msg)
    at_state = fold.state_at(journal, run_id, at)
    if at_state.step is None:
        msg = f"run {run_id} had ended at seq {at_state.seq}: there is no step to go on with"
        raise InputMismatch(msg)
    first_step = at_state.step
    state_json = at_state.state
    unknown = sorted(set(changes or {}) - set(state_json))
    if unknown:
        msg = f"--set {unknown[0]}: {machine.state.__name__} has no field {unknown[0]!r}"
        raise InputMismatch(msg)
    state_json = {**state_json, **(changes or {})}
    try:
        state = convert.structure(machine.converter, state_json, machine.state, "the state")
    except ConversionError as e:
        raise InputMismatch(str(e)) from e
    started = next(journal.events(run_id, upto=1)).data
    first_input = parts.join(
        json.loads(journal.blob(started["input"])), started.get("input_parts"), journal.blob
    )
    if options.stop is not None:
        options.stop.check()
    live = _Live(journal, machine, options)
    limits, overrides = _limits_for(journal, machine, {}, options.limits)

    def take() -> Run:
        run, _ = journal.create_run(
            machine=machine.name,
            target=target,
            code_hash=code_hash,
            step=first_step,
            state=state_json,
            input=first_input,
            run_key=None,
            holder=live.holder,
            lease_ttl=options.lease_ttl,
            limits=limits.to_json(),
            limit_overrides=overrides,
            forked_from=(run_id, min(at, old.last_seq)),
        )
        return run

    def begin(writer: RunWriter, run: Run) -> _Start:
        if options.on_event is not None:
            options.on_event(list(journal.events(run.run_id, upto=1)))
        return _Start(state, state_json, first_step, 0, {}, limits)

    outcome = live.drive(take, begin)
    assert outcome is not None
    return attrs.evolve(outcome, created=True)


def check_models(machine: Machine[Any], models: Models) -> None:
    """Refuse, before a run starts, a machine that asks models when no client can be made (no
    API key), rather than let it fail at its first ask."""
    if models.unavailable is not None and _asks(machine):
        raise ModelUnavailable(f"machine {machine.name!r} asks a model; {models.unavailable}")


def _asks(machine: Machine[Any]) -> bool:
    """Whether the machine asks models: it names one, or a step's code calls an `ask`.

    A step that asks only through a function of its own is not seen: its run fails at its
    first ask instead, saying the same.
    """
    if machine.model is not None:
        return True
    todo = [getattr(step, "__code__", None) for step in machine.steps.values()]
    while todo:
        code = todo.pop()
        if code is None:
            continue
        if "ask" in code.co_names:
            return True
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return False


def _structured(machine: Machine[Any], run_id: str, state: Any) -> Any:
    """The run's state from the journal, as the machine's state type."""
    try:
        return convert.structure(machine.converter, state, machine.state, "the state")
    except ConversionError as e:
        msg = (
            f"run {run_id}: the state in the journal no longer fits "
            f"{machine.state.__name__} ({'; '.join(e.errors)}); the state type changed "
            "since the run started"
        )
        raise InputMismatch(msg) from e


def _found_done(journal: Store, machine: Machine[Any], run: Run) -> Outcome[Any]:
    """A run that was done before this process came to it: its final state, nothing executed."""
    state = _structured(machine, run.run_id, fold.state_at(journal, run.run_id).state)
    return Outcome(run, state, created=False, executed=False)


@attrs.frozen
class _Start:
    """Where a run goes on from: its state (as a value and as JSON), step, visit and the calls
    its unfinished step already made."""

    state: Any
    state_json: Any
    step: str | None
    visit: int
    recorded: dict[str, list[Event]]
    limits: Limits


class _Live:
    """A run being executed by this process: its model session, retries and lease holder."""

    def __init__(self, journal: Store, machine: Machine[Any], options: Options) -> None:
        self.journal = journal
        self.machine = machine
        self.options = options
        self.holder = Holder.this_process()
        self.models = options.models or anthropic_api()
        check_models(machine, self.models)
        journal.keep_out(*self.models.secrets)
        self.fields = typing.get_type_hints(machine.state)
        self.state: Any = None
        """The run's state as the steps left it: the last good one."""
        self.step: str | None = None
        """The step being executed (or to be)."""

    def drive(
        self,
        take: Callable[[], Run | None],
        begin: Callable[[RunWriter, Run], _Start],
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
            heartbeat = Heartbeat(journal, run_id, self.holder, options.lease_ttl).start()
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
                pace = Pace(options.rate_limits, seed=options.seed)
                session = ModelSession(self.models, retrying, guard, pace)
                live = _Execution(writer, guard, retrying, session)
                if options.on_start is not None:
                    options.on_start(journal.run(run_id))
                if begun.step is not None:
                    anomalies = self._loop(live, run_id, begun)
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

    def _loop(self, live: _Execution, run_id: str, begun: _Start) -> tuple[dict[str, Any], ...]:
        """Execute steps until the run ends or stops; the anomalies its end recorded."""
        machine, writer = self.machine, live.writer
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
                return self._fail(live, step, f"the machine has no step {step!r} (steps: {known})")
            calls = Calls(
                run_id=run_id,
                step=step,
                visit=visit,
                writer=writer,
                converter=machine.converter,
                recorded=recorded,
                journaling=Live(),
                checkpoint=self.options.checkpoint,
                retrying=live.retrying,
                guard=live.guard,
            )
            ctx = Context(
                calls,
                models=live.session,
                model=machine.model,
                max_tokens=machine.max_tokens,
                thinking=machine.thinking,
                effort=machine.effort,
            )
            recorded = {}
            try:
                live.guard.before_step(visit)
                result = handler(ctx, state)
            except Killed as e:
                return self._end(live, step, e.record)
            except NotJSON as e:
                return self._fail(live, step, f"step {step!r}: {e}")
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
                return self._fail(live, step, f"{type(error).__name__}: {error}", trace=trace)
            if calls.mismatch is not None:
                return self._fail(live, step, str(calls.mismatch))
            if calls.stopped is not None:
                self._stop(writer, step, calls.stopped)
                return ()
            problem = self._check(step, result)
            if problem is not None:
                return self._fail(live, step, problem)
            if isinstance(result, Fail):
                return self._fail(live, step, result.reason)
            assert isinstance(result, Goto | Finish)
            new_json, ops = states.change(
                machine.converter, fields, state, state_json, result.state
            )
            problem = self._misfit(step, new_json, ops)
            if problem is not None:
                return self._fail(live, step, problem)  # the last good state stays the run's
            to = result.step if isinstance(result, Goto) else None
            before = writer.bytes_written
            try:
                writer.record(step, kinds.Transition(to_step=to, delta=ops))
            except NotJSON as e:
                return self._fail(
                    live, step, f"step {step!r} returned a state the journal cannot hold: {e}"
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
                return self._end(live, step, kinds.RunDone(steps=visit))
            state, state_json, step = result.state, new_json, to

    def _end(self, live: _Execution, step: str, data: kinds.Data) -> tuple[dict[str, Any], ...]:
        """End the run (done, failed or killed), first recording any cost anomaly."""
        live.writer.flush()
        anomalies = anomaly.check(self.journal, live.writer.run_id, self.machine.anomaly_threshold)
        for found in anomalies:
            live.writer.record(step, kinds.CostAnomaly(**found))
        live.writer.commit(step, data)
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
        data = kinds.RunNeedsAttention(
            call=stop.call, name=stop.name, key=stop.key, message=str(stop)
        )
        writer.commit(step, data)

    def _fail(
        self, live: _Execution, step: str, error: str, *, trace: str | None = None
    ) -> tuple[dict[str, Any], ...]:
        return self._end(live, step, kinds.RunFailed(error=error, traceback=trace))


@attrs.frozen
class _Execution:
    """What one execution of a run uses: its writer, its kill switch, retries and model."""

    writer: RunWriter
    guard: Guard
    retrying: Retrying
    session: ModelSession


def _limits_for(
    journal: Store, machine: Machine[Any], recorded: Mapping[str, Any], given: Mapping[str, Any]
) -> tuple[Limits, dict[str, Any]]:
    """The limits in force for a run, and the overrides to record with it.

    The machine's own, under the overrides given for this run (at its start, and at each
    resume since: a person's cap outlasts the process). Without a cost cap, the machine's
    budget's per-run default applies.
    """
    overrides = {**recorded, **{k: v for k, v in given.items() if v is not None}}
    overrides = {k: str(v) if isinstance(v, Decimal) else v for k, v in overrides.items()}
    limits = machine.limits.merge(overrides)
    if limits.max_cost_usd is None:
        for budget in journal.budgets(machine.name):
            if budget.per_run_nusd is not None:
                limits = attrs.evolve(limits, max_cost_usd=Decimal(budget.per_run_nusd) / NUSD)
    return limits, overrides


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
