"""The runner: starts a run, resumes one, or forks one, and has it executed to its end.

A run executes in one process at a time, the holder of its lease. `start` turns an input into
the run's first state (`prepare`) and records the run; `resume` folds the state from the
journal and gathers the calls its unfinished step already made, which the step's context
answers from the journal; `fork` starts a new run from an old one's state. Each takes the lease
its own way and hands the run to `machine.execution`, which executes its steps.
"""

from __future__ import annotations

import json
import types
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from runjournal.journal import (
    Event,
    Lease,
    Run,
    RunIsDone,
    RunWriter,
    Store,
    delta,
    fold,
    kinds,
    parts,
)
from runjournal.journal.spending import NUSD
from runjournal.machine import convert
from runjournal.machine.definition import Machine
from runjournal.machine.errors import (
    ConversionError,
    Ignored,
    IgnoredInput,
    InputMismatch,
    ModelUnavailable,
    StateNotJSON,
    WrongMachine,
)
from runjournal.machine.execution import Execution, Options, Outcome, Start
from runjournal.machine.journaled import OPERATIONS
from runjournal.machine.kill_switch import Limits
from runjournal.machine.model import Models, anthropic_api

__all__ = [
    "Options",
    "Outcome",
    "Prepared",
    "check_models",
    "fork",
    "prepare",
    "resume",
    "start",
]


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
    execution = _execution(journal, machine, options)
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
            holder=execution.holder,
            lease_ttl=options.lease_ttl,
            limits=limits.to_json(),
            limit_overrides=overrides,
        )
        if created:
            return run
        found.append(run)  # the run key's: no lease was taken
        return None

    def begin(writer: RunWriter, run: Run) -> Start:
        if options.on_event is not None:  # run.started was written with the run, not by it
            options.on_event(list(journal.events(run.run_id, upto=1)))
        return Start(prepared.state, prepared.state_json, machine.start, 0, {}, limits)

    outcome = execution.drive(take, begin)
    if outcome is not None:
        return attrs.evolve(outcome, created=True)
    (run,) = found
    if run.status == "done":
        return _found_done(journal, machine, run)
    return resume(journal, run.run_id, machine, target=target, code_hash=code_hash, options=options)


def submit(
    journal: Store,
    prepared: Prepared,
    *,
    target: str,
    code_hash: str,
    run_key: str | None = None,
    limits: Mapping[str, Any] | None = None,
) -> tuple[Run, bool]:
    """Record a run of the prepared machine and input for a worker to execute
    (`journal worker`), executing nothing: `(run, True)`; with a run key the machine used
    before, that run and False."""
    machine = prepared.machine
    machine.check()
    in_force, overrides = _limits_for(journal, machine, {}, limits or {})
    return journal.create_run(
        machine=machine.name,
        target=target,
        code_hash=code_hash,
        step=machine.start,
        state=prepared.state_json,
        input=prepared.input,
        run_key=run_key,
        holder=None,
        lease_ttl=0,
        limits=in_force.to_json(),
        limit_overrides=overrides,
    )


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
    execution = _execution(journal, machine, options)
    options.checkpoint("resume.lease")
    taken: list[Lease | None] = []

    def take() -> Run:
        # The status is read again under the lease, in its transaction: a run that another
        # process finished since the look above is reported, never taken up again.
        taken.append(journal.acquire_lease(run_id, execution.holder, options.lease_ttl))
        return journal.run(run_id)  # again: the last holder may have written until it let go

    def begin(writer: RunWriter, run: Run) -> Start:
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
                host=execution.holder.host,
                pid=execution.holder.pid,
            ),
        )
        return Start(state, at.state, at.step, at.transitions, recorded, limits)

    try:
        outcome = execution.drive(take, begin)
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
    execution = _execution(journal, machine, options)
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
            holder=execution.holder,
            lease_ttl=options.lease_ttl,
            limits=limits.to_json(),
            limit_overrides=overrides,
            forked_from=(run_id, min(at, old.last_seq)),
        )
        return run

    def begin(writer: RunWriter, run: Run) -> Start:
        if options.on_event is not None:
            options.on_event(list(journal.events(run.run_id, upto=1)))
        return Start(state, state_json, first_step, 0, {}, limits)

    outcome = execution.drive(take, begin)
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


def _execution(journal: Store, machine: Machine[Any], options: Options) -> Execution:
    """The run's execution by this process; a machine that asks models when no client can be
    made is refused first."""
    models = options.models or anthropic_api()
    check_models(machine, models)
    return Execution(journal, machine, options, models)


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
