"""Rerunning a run: the machine's code as it is now, executed again against the run's journal.

`rerun` executes a recorded run from its start, offline, visit by visit (the events between one
transition and the next): each step's handler is called with a context whose calls meet the
journal through a `visit.Replay`, so that each call is answered from the journal or the step
stops where it differs. Then what the step returned is compared with the transition the run
recorded. The first difference is the result, a `Divergence`; a run the code follows to its
end, or to where its record ends, is `Reproduced`.
"""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import IO, Any, NoReturn

import attrs

from runjournal.journal import Run, Store, delta
from runjournal.journal import events as k
from runjournal.journal.events import dumps
from runjournal.journal.kinds import to_step
from runjournal.machine import convert
from runjournal.machine.context import Context
from runjournal.machine.definition import Handler, Machine
from runjournal.machine.errors import ConversionError, WrongMachine
from runjournal.machine.journaled import Calls
from runjournal.machine.kill_switch import Guard, Limits
from runjournal.machine.model import Models, ModelSession
from runjournal.machine.model.pricing import Price, PriceTable
from runjournal.machine.rerun.visit import (
    Diverged,
    Divergence,
    RecordEnds,
    Replay,
    Unwritten,
    Visit,
    visits,
)
from runjournal.machine.rerun.words import cut, goes, plural, state_changes, went
from runjournal.machine.retry import Retrying, RetryPolicy
from runjournal.machine.transitions import Fail, Finish, Goto


@attrs.frozen
class Reproduced:
    """The code did what the run did, through its last recorded step."""

    run_id: str
    steps: int
    """Transitions reproduced."""
    decisions: int
    model_answers: int
    effects: int
    actions: int
    requests_sent: int
    """Model requests the rerun sent: it answers from the journal, so none."""
    stopped: str | None = None
    """For a run that is not done: where its record ends and how the run stopped there."""

    @property
    def message(self) -> str:
        return self.describe()

    def describe(self) -> str:
        counts = [plural(self.steps, "step"), plural(self.decisions, "decision")]
        counts += [
            plural(n, w) for n, w in ((self.effects, "effect"), (self.actions, "action")) if n
        ]
        counts += [plural(self.model_answers, "model answer")]
        counts += [plural(self.requests_sent, "request") + " sent"]
        through = f" through {self.stopped}" if self.stopped else ""
        return f"run {self.run_id} reproduced{through}: {', '.join(counts)}"


Debug = Callable[[BaseException], None]
"""Called at a divergence with the exception raised there, while the step's frames are live."""


def rerun(
    journal: Store, run_id: str, machine: Machine[Any], *, debug: Debug | None = None
) -> Divergence | Reproduced:
    """Execute the run `run_id` again with `machine`'s code, answering every call from the
    journal, and compare: the first divergence, or what was reproduced. Writes nothing.

    `debug` (e.g. `post_mortem`) is called at the divergence with the exception raised there.
    """
    machine.check()
    run = journal.run(run_id)
    if run.machine != machine.name:
        msg = f"run {run_id} is a run of machine {run.machine!r}, not of {machine.name!r}"
        raise WrongMachine(msg)
    return _Rerun(journal, run, machine, debug).drive()


def post_mortem(
    error: BaseException, *, stdin: IO[str] | None = None, stdout: IO[str] | None = None
) -> None:
    """Stop in pdb where the code diverged: in the step's frame, at the call that diverged
    (`down` goes into the rerun's check), or where the step raised an error the run did not."""
    import pdb  # only when asked: it takes a while to import, and most reruns never need it

    debugger = pdb.Pdb(stdin=stdin, stdout=stdout)
    debugger.reset()
    debugger.message(f"stopped where the code diverges: {error}")
    if isinstance(error, Diverged) and error.__cause__ is not None:
        error = error.__cause__  # the step raised: stop where it did
    step = _step_entry(error.__traceback__)
    if isinstance(error, Diverged) and step is not None:
        below = 0
        tb = step.tb_next
        while tb is not None:
            below, tb = below + 1, tb.tb_next
        debugger.cmdqueue.append(f"up {below}")  # from the rerun's check to the step's frame
    debugger.interaction(None, error.__traceback__)


class _Rerun:
    """One rerun: the machine, the run, and what was reproduced so far."""

    def __init__(
        self, journal: Store, run: Run, machine: Machine[Any], debug: Debug | None
    ) -> None:
        self.journal, self.run, self.machine, self.debug = journal, run, machine, debug
        guard = Guard(Limits())
        self.retrying = Retrying(RetryPolicy(), guard.sleep, random.Random(0), journal.clock)
        self.offline = _NoModel()
        self.session = ModelSession(self.offline.models(), self.retrying, guard)
        self.counts = {"steps": 0, "decisions": 0, "model_answers": 0, "effects": 0, "actions": 0}

    def drive(self) -> Divergence | Reproduced:
        # Not the runner's loop (`machine.execution.Execution._loop`): that one hands the journal's
        # calls only to the step it re-enters, writes every outcome, and turns a step's error
        # into run.failed; a rerun needs each visit's calls and stops at the first difference.
        machine, run_id = self.machine, self.run.run_id
        started = self.journal.latest_snapshot(run_id, upto=1)
        try:
            state = convert.structure(
                machine.converter, started.data["state"], machine.state, "the state"
            )
        except ConversionError as e:
            what = f"the run's first state no longer fits {machine.state.__name__}: "
            return Divergence(run_id, to_step(started.data) or "", 0, None, "start", what + str(e))
        # The fold's own copy: deltas are applied to it in place.
        recorded = json.loads(dumps(started.data["state"]))
        for visit in visits(self.journal, run_id, started):
            handler = machine.steps.get(visit.step)
            if handler is None:
                what = f"the code has no step {visit.step!r} (steps: {', '.join(machine.steps)})"
                return Divergence(run_id, visit.step, visit.number, None, "step", what)
            outcome = self._visit(visit, handler, state, recorded)
            if not isinstance(outcome, tuple):
                return outcome
            state, recorded = outcome
        return self._reproduced(None)

    def _visit(
        self, visit: Visit, handler: Handler, state: Any, recorded: Any
    ) -> tuple[Any, Any] | Divergence | Reproduced:
        """Execute one visit and compare it: the state to go on with (as a value and as the
        journal has it), or how the rerun ends."""
        writer = Unwritten(self.journal, self.run.run_id)
        replay = Replay(self.run.run_id, visit, writer)
        calls = Calls(
            run_id=self.run.run_id,
            step=visit.step,
            visit=visit.number,
            writer=writer,
            converter=self.machine.converter,
            recorded=visit.calls,
            journaling=replay,
            retrying=self.retrying,
        )
        ctx = Context(
            calls,
            models=self.session,
            model=self.machine.model,
            max_tokens=self.machine.max_tokens,
            thinking=self.machine.thinking,
            effort=self.machine.effort,
        )
        try:
            try:
                result: Any = handler(ctx, state)  # user code: checked below
            except (Diverged, RecordEnds):
                raise
            except Exception as e:
                replay.settle(calls=False)
                return self._failed(visit, replay, f"{type(e).__name__}: {e}", e)
            replay.settle(calls=False)
            if not isinstance(result, Goto | Finish | Fail):
                said = f"step {visit.step!r} returned {type(result).__name__}, not a transition"
                return self._failed(visit, replay, said, None)
            if isinstance(result, Fail):
                return self._failed(visit, replay, result.reason, None)
            try:
                now = self._journaled(convert.to_json(self.machine.converter, result.state))
            except Exception as e:
                said = f"step {visit.step!r} returned a state the journal cannot hold: {e}"
                return self._failed(visit, replay, said, e)
            to = result.step if isinstance(result, Goto) else None
            if visit.transition is None:
                if visit.stop is not None and visit.stop.kind == k.RUN_FAILED:
                    error = visit.stop.data.get("error")
                    what = f"the run failed here ({error}), the code now {goes(to)}"
                    raise replay.diverged("ending", what)
                replay.settle(calls=True)
                self._count(replay)
                return self._reproduced(visit)
            was = to_step(visit.transition.data)
            if to != was:
                what = f"the run {went(was)} here, the code now {goes(to)}"
                missing = replay.missing()
                if missing is not None:
                    what += f", without {missing[1]}, which the run made"
                raise replay.diverged("transition", what)
            replay.settle(calls=True)
            after = delta.apply(recorded, visit.transition.data["delta"])
            changes = delta.diff(after, now)
            if changes:
                what = f"the step {goes(to)} as the run did, with another state: "
                raise replay.diverged("state", what + state_changes(after, changes))
            self._count(replay)
            self.counts["steps"] += 1
            return result.state, after
        except Diverged as e:
            if self.debug is not None:
                self.debug(e)
            return e.divergence
        except RecordEnds:
            self._count(replay)
            return self._reproduced(visit)

    def _failed(
        self, visit: Visit, replay: Replay, error: str, cause: BaseException | None
    ) -> Reproduced:
        """The step failed (raised, or returned ctx.fail): as the run did, or a divergence."""
        error = self.journal.redact(error)
        stop = visit.stop
        if visit.transition is not None:
            what = (
                f"the run {went(to_step(visit.transition.data))} here, the code now fails: {error}"
            )
        elif stop is not None and stop.kind == k.RUN_FAILED:
            if stop.data.get("error") == error:
                replay.settle(calls=True)
                self._count(replay)
                return self._reproduced(visit)
            what = (
                f"the run failed here with {stop.data.get('error')!r}, the code now with {error!r}"
            )
        else:
            what = f"the run stopped here ({self._how(visit)}), the code now fails: {error}"
        raise replay.diverged("ending", what) from cause

    def _journaled(self, value: Any) -> Any:
        """`value` as the journal would hold it: secrets redacted."""
        text = dumps(value)
        redacted = self.journal.redact(text)
        return value if redacted is text else json.loads(redacted)

    def _count(self, replay: Replay) -> None:
        self.counts["decisions"] += replay.decisions
        self.counts["model_answers"] += replay.answers
        for call in replay.placed_calls:
            kinds = {e.kind for e in replay.visit.calls.get(call, [])}
            self.counts["effects"] += k.EFFECT_DONE in kinds
            self.counts["actions"] += bool(kinds & _DONE)

    def _how(self, visit: Visit) -> str:
        stop = visit.stop
        if stop is None:
            return "interrupted" if self.run.status == "running" else self.run.status
        if stop.kind == k.RUN_FAILED:
            return f"failed: {cut(str(stop.data.get('error')))}"
        if stop.kind == k.RUN_KILLED:
            return f"killed: {cut(str(stop.data.get('message')))}"
        return f"needs attention: action {stop.data.get('name')} {stop.data.get('key')!r}"

    def _reproduced(self, visit: Visit | None) -> Reproduced:
        stopped = None
        if visit is not None:
            stopped = (
                f"step {visit.step!r} (visit {visit.number}), where its record ends "
                f"({self._how(visit)})"
            )
        return Reproduced(
            self.run.run_id, **self.counts, requests_sent=self.offline.connects, stopped=stopped
        )


_DONE = frozenset({k.ACTION_DONE, k.ACTION_SKIPPED, k.ACTION_RESOLVED})


class _NoModel:
    """The model side of a rerun: every answer comes from the journal, and no client is made."""

    def __init__(self) -> None:
        self.connects = 0

    def models(self) -> Models:
        # The shipped aliases: a dated model id names the same capabilities as its model.
        return Models(self._connect, _Unpriced(entries={}, aliases=PriceTable.load().aliases))

    def _connect(self) -> NoReturn:
        self.connects += 1
        msg = "a rerun sends no model request: the journal has no answer for this call"
        raise RuntimeError(msg)


class _Unpriced(PriceTable):
    """Prices every model at nothing: a rerun sends nothing, and a model priced from a price
    file when the run was made must not stop it."""

    def price(self, model: str, on: datetime.date | None = None) -> Price:
        zero = Decimal(0)
        name = self.aliases.get(model, model)
        return Price(name, zero, zero, zero, zero, zero, datetime.date.min, "rerun")


def _step_entry(tb: TracebackType | None) -> TracebackType | None:
    """The traceback entry of the step's handler (what `_Rerun._visit` called), if the
    exception came from inside the step, not from the rerun's own checks after it."""
    while tb is not None:
        if tb.tb_frame.f_code is _Rerun._visit.__code__:
            step = tb.tb_next
            inside = step is not None and not _own(step.tb_frame.f_globals.get("__name__", ""))
            return step if inside else None
        tb = tb.tb_next
    return None


def _own(module: str) -> bool:
    """Whether `module` is one of the rerun's: this one or its siblings (`visit`, `words`)."""
    package = __name__.rpartition(".")[0]
    return module.startswith(package + ".")
