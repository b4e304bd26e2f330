"""Rerunning a run: the machine's code as it is now, executed again against the run's journal.

`rerun` executes a recorded run from its start, offline: each model call is answered with the
answer the run got, each effect and action with its recorded outcome. Nothing reaches a model or
the outside world (no effect or action function runs, no request is sent) and nothing is
written: the journal is only read. Visit by visit (the events between one transition and the
next) what the code does is compared with what the run did, and the first difference is the
result, a `Divergence` in words: another request (with a diff of the prompt), answer check,
decision, action key or transition, a call the run never made or no longer makes, another
ending. A run the code follows to its end, or to where its record ends, is `Reproduced`.

The step's calls meet the journal through a `Replay` (the rerun's `ports.Journaling`, where a
run executing has `journaled.Live`): every call is handed to it, and wherever a call would run,
send or differ, it raises `Diverged` and the step stops there.
"""

from __future__ import annotations

import datetime
import difflib
import json
import random
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from types import TracebackType
from typing import IO, Any, Literal, NoReturn

import attrs

from runjournal.journal import Event, Run, RunWriter, Store, blobs, delta, kinds
from runjournal.journal import events as k
from runjournal.journal.events import dumps, timestamp
from runjournal.journal.kinds import to_step
from runjournal.journal.limits import Reserve
from runjournal.machine import convert
from runjournal.machine.context import Context
from runjournal.machine.definition import Handler, Machine
from runjournal.machine.errors import ActionError, ConversionError, ModelCallFailed, WrongMachine
from runjournal.machine.journaled import OPERATIONS, Calls
from runjournal.machine.limits import Guard, Limits
from runjournal.machine.model import Models, ModelSession
from runjournal.machine.model.pricing import Price, PriceTable
from runjournal.machine.ports import Step
from runjournal.machine.retry import Retrying, RetryPolicy
from runjournal.machine.transitions import Fail, Finish, Goto

Kind = Literal[
    "start", "step", "request", "answer", "decision", "call", "new call", "missing call",
    "transition", "state", "ending",
]  # fmt: skip
"""What differs: the first state, a step the code lacks, a model request, the check of an
answer, a decision, the call made at a place (an action's key, say), a call the run never made,
one it made that the code does not, where the step goes, the state it returns, how the run ends."""

_STOPS = (k.RUN_FAILED, k.RUN_KILLED, k.RUN_NEEDS_ATTENTION)


@attrs.frozen
class Divergence:
    """Where the code first does otherwise than the run did."""

    run_id: str
    step: str
    visit: int
    """How many transitions the run had made before this step began."""
    call: str | None
    """The call's place in the step (its key, or `#index`), when a call differs."""
    kind: Kind
    what: str
    """What the run did and what the code does now, in words."""
    diff: str = ""
    """For a request: a unified diff of the prompt, recorded (-) against now (+)."""

    @property
    def message(self) -> str:
        at = f"step {self.step!r} (visit {self.visit})"
        if self.call is not None:
            at += f", call {self.call}"
        return f"run {self.run_id} diverges at {at}: {self.what}"

    def describe(self) -> str:
        """The message, then the diff if there is one."""
        return f"{self.message}\n{self.diff}" if self.diff else self.message


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
        counts = [_plural(self.steps, "step"), _plural(self.decisions, "decision")]
        counts += [
            _plural(n, w) for n, w in ((self.effects, "effect"), (self.actions, "action")) if n
        ]
        counts += [_plural(self.model_answers, "model answer")]
        counts += [_plural(self.requests_sent, "request") + " sent"]
        through = f" through {self.stopped}" if self.stopped else ""
        return f"run {self.run_id} reproduced{through}: {', '.join(counts)}"


class Diverged(BaseException):
    """Raised where the code diverges from the run, to stop the step there.

    A BaseException, as Killed is: a step's own `except Exception` must not swallow it.
    """

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.message)
        self.divergence = divergence


class _RecordEnds(BaseException):
    """The step reached a call past the end of an unfinished run's record: nothing to compare."""


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


@attrs.frozen
class _Visit:
    """One visit of a step as the journal has it."""

    number: int
    step: str
    calls: dict[str, list[Event]]
    """The events of each call the step made, by place, oldest first (as a resume gathers)."""
    transition: Event | None
    """The transition that ended it; None where the run's record ends inside it."""
    stop: Event | None
    """How the run last stopped in it (failed, killed, needs attention), if it did."""


def _visits(journal: Store, run_id: str, started: Event) -> Iterator[_Visit]:
    step: str | None = to_step(started.data)
    number = started.data.get("transitions", 0)
    calls: dict[str, list[Event]] = {}
    stop: Event | None = None
    for event in journal.events(run_id, after=started.seq):
        if event.kind in OPERATIONS:
            calls.setdefault(event.data["call"], []).append(event)
        elif event.kind in _STOPS:
            stop = event
        elif event.kind == k.RUN_RESUMED:
            stop = None  # a resume went on from that stop
        elif event.kind == k.TRANSITION and step is not None:
            yield _Visit(number, step, calls, event, stop)
            step, number, calls, stop = to_step(event.data), number + 1, {}, None
    if step is not None:
        yield _Visit(number, step, calls, None, stop)


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
        # Not the runner's loop (`machine.runner._Live._loop`): that one hands the journal's
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
        for visit in _visits(self.journal, run_id, started):
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
        self, visit: _Visit, handler: Handler, state: Any, recorded: Any
    ) -> tuple[Any, Any] | Divergence | Reproduced:
        """Execute one visit and compare it: the state to go on with (as a value and as the
        journal has it), or how the rerun ends."""
        writer = _Unwritten(self.journal, self.run.run_id)
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
            except (Diverged, _RecordEnds):
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
                    what = f"the run failed here ({error}), the code now {_goes(to)}"
                    raise replay.diverged("ending", what)
                replay.settle(calls=True)
                self._count(replay)
                return self._reproduced(visit)
            was = to_step(visit.transition.data)
            if to != was:
                what = f"the run {_went(was)} here, the code now {_goes(to)}"
                missing = replay.missing()
                if missing is not None:
                    what += f", without {missing[1]}, which the run made"
                raise replay.diverged("transition", what)
            replay.settle(calls=True)
            after = delta.apply(recorded, visit.transition.data["delta"])
            changes = delta.diff(after, now)
            if changes:
                what = f"the step {_goes(to)} as the run did, with another state: "
                raise replay.diverged("state", what + _changes(after, changes))
            self._count(replay)
            self.counts["steps"] += 1
            return result.state, after
        except Diverged as e:
            if self.debug is not None:
                self.debug(e)
            return e.divergence
        except _RecordEnds:
            self._count(replay)
            return self._reproduced(visit)

    def _failed(
        self, visit: _Visit, replay: Replay, error: str, cause: BaseException | None
    ) -> Reproduced:
        """The step failed (raised, or returned ctx.fail): as the run did, or a divergence."""
        error = self.journal.redact(error)
        stop = visit.stop
        if visit.transition is not None:
            what = (
                f"the run {_went(to_step(visit.transition.data))} here, the code now fails: {error}"
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

    def _how(self, visit: _Visit) -> str:
        stop = visit.stop
        if stop is None:
            return "interrupted" if self.run.status == "running" else self.run.status
        if stop.kind == k.RUN_FAILED:
            return f"failed: {_cut(str(stop.data.get('error')))}"
        if stop.kind == k.RUN_KILLED:
            return f"killed: {_cut(str(stop.data.get('message')))}"
        return f"needs attention: action {stop.data.get('name')} {stop.data.get('key')!r}"

    def _reproduced(self, visit: _Visit | None) -> Reproduced:
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
_ABSENT = object()


class Replay:
    """The journaling of one visit being rerun (a `ports.Journaling`): what the run did in it,
    and what the code has done so far. A call is answered from the journal or the step stops;
    nothing runs.

    Each method that finds the code doing otherwise than the run raises `Diverged`, and keeps it
    in `found` too, so that a step which catches everything cannot hide it.
    """

    parallel = False
    """A map's items one at a time: the first divergence is the first in the items' order."""

    def __init__(self, run_id: str, visit: _Visit, writer: _Unwritten) -> None:
        self.run_id = run_id
        self.visit = visit
        self.writer = writer
        self.placed_calls: set[str] = set()
        self.decisions = 0
        self.answers = 0
        self.found: Diverged | None = None
        self._retry_due: tuple[str, int, str] | None = None
        """An ask whose answer the run rejected and asked again: (call, round, errors)."""

    def diverged(self, kind: Kind, what: str, call: str | None = None, diff: str = "") -> Diverged:
        visit = self.visit
        error = Diverged(Divergence(self.run_id, visit.step, visit.number, call, kind, what, diff))
        if self.found is None:
            self.found = error
        return error

    def placed(self, ctx: Step, call: str) -> None:
        """A call is made at `call`."""
        self._check_retry()
        self.placed_calls.add(call)

    def mismatch(self, ctx: Step, call: str, had: str, now: str) -> NoReturn:
        """At `call` the journal holds `had`, but the code makes `now`."""
        what = f"the run made {had.strip()!r} here, the code now makes {now.strip()!r}"
        if call.startswith("#") and had.split()[:1] != now.split()[:1]:
            what += " (a call added or removed before this one moves the places after it)"
        raise self.diverged("call", what, call)

    def unrecorded(self, ctx: Step, call: str, what: str, events: list[Event]) -> NoReturn:
        """The code makes `what` at `call`, where the journal holds no outcome: never run it."""
        self._unrecorded(call, what, events)

    def decided(
        self,
        ctx: Step,
        call: str,
        events: list[Event],
        item: Any,
        outcome: str,
        reason: str | None,
        inputs: Mapping[str, Any],
    ) -> None:
        """Compare a decision with the one the run recorded at `call`."""
        to_json = convert.to_json
        now = {
            "item": to_json(ctx.converter, item),
            "outcome": outcome,
            "reason": reason,
            "inputs": to_json(ctx.converter, dict(inputs)),
        }
        now = json.loads(ctx.writer.journal.redact(dumps(now)))
        if not events:
            self._unrecorded(call, f"decision about {_show(now['item'])} ({outcome})", events)
        was = events[-1].data
        if all(delta.same(was.get(f), now[f]) for f in ("item", "outcome", "reason", "inputs")):
            self.decisions += 1
            return
        raise self.diverged("decision", _decision_change(was, now), call)

    def asked(
        self,
        ctx: Step,
        call: str,
        name: str,
        round_: int,
        request: dict[str, Any],
        request_hash: str,
        journaled: Mapping[str, Event],
    ) -> None:
        """Let a model request through if the run asked the same and got an answer; else stop."""
        if self._retry_due is not None and self._retry_due[:2] == (call, round_ - 1):
            self._retry_due = None
        for kind in (k.MODEL_ANSWERED, k.MODEL_REQUESTED):
            event = journaled.get(kind)
            if event is not None and event.data["request_hash"] != request_hash:
                what = (
                    f"the code now builds another request for {name} (round {round_}) than the "
                    f"run sent (request {event.data['request_hash']} then, {request_hash} now); "
                    "the prompt, recorded (-) and now (+):"
                )
                was = journaled.get(k.MODEL_REQUESTED)
                diff = _prompt_diff(self.writer.journal, was, request)
                raise self.diverged("request", what, call, diff)
        events = self.visit.calls.get(call, [])
        if k.MODEL_ANSWERED in journaled:
            self.answers += 1
            rejected = journaled.get(k.OUTPUT_REJECTED)
            if rejected is not None and any(e.data.get("round") == round_ + 1 for e in events):
                self._retry_due = (call, round_, "; ".join(rejected.data.get("errors", [])))
            return
        if round_ > 0 and not any(
            e.kind == k.OUTPUT_REJECTED and e.data.get("round") == round_ - 1 for e in events
        ):
            errors = [
                "; ".join(e.data.get("errors", []))
                for e in self.writer.held
                if e.kind == k.OUTPUT_REJECTED and e.data.get("call") == call
            ]
            what = (
                f"the code now rejects the model's answer to {name} (round {round_ - 1}), which "
                f"the run accepted: {errors[-1] if errors else 'no reason given'}"
            )
            raise self.diverged("answer", what, call)
        self._unrecorded(call, f"ask {name}", events, request=request)

    def settle(self, *, calls: bool) -> None:
        """At the step's end: a divergence the step caught, an answer the code accepted that the
        run rejected, and (with `calls`) a call the run made that the code did not."""
        if self.found is not None:
            raise self.found
        self._check_retry()
        if not calls:
            return
        missing = self.missing()
        if missing is not None:
            what = f"the code no longer makes {missing[1]}, which the run made here"
            raise self.diverged("missing call", what, missing[0])

    def missing(self) -> tuple[str, str] | None:
        """The first call the run made that the code has not: its place, and it in words."""
        left = self._left()
        return (left[0], _describe(self.visit.calls[left[0]][0])) if left else None

    def _left(self) -> list[str]:
        """The places of the run's calls the code has not made, oldest first."""
        return [c for c in self.visit.calls if c not in self.placed_calls]

    def _check_retry(self) -> None:
        if self._retry_due is not None:
            call, round_, errors = self._retry_due
            self._retry_due = None
            what = (
                f"the code now accepts the model's answer of round {round_}, which the run "
                f"rejected ({errors}) and asked again"
            )
            raise self.diverged("answer", what, call)

    def _unrecorded(
        self,
        call: str,
        what: str,
        events: list[Event],
        *,
        request: dict[str, Any] | None = None,
    ) -> NoReturn:
        stop = self.visit.stop
        if self.visit.transition is None and not self._left():
            failed = stop is not None and stop.kind == k.RUN_FAILED
            # The run stopped at this call, or before it: its record ends here. Unless it failed
            # before it; a failed effect leaves no event, but its frame in the traceback.
            if not failed or events or (what.startswith("effect ") and _in_effect(stop)):
                raise _RecordEnds
            assert stop is not None
            said = (
                f"the run failed here ({stop.data.get('error')}) before {what}; the code now "
                "gets that far (it was not run)"
            )
            raise self.diverged("ending", said, call)
        failure = next((e for e in reversed(events) if e.kind in _FAILURES), None)
        if failure is not None and self.visit.transition is not None:
            # The run's call failed for sure and the step went on (it caught the error): the
            # rerun raises the same error, as the run got it.
            said = f"run {self.run_id}, step {self.visit.step!r}, call {call}: {what} failed: "
            error = ActionError if failure.kind == k.ACTION_FAILED else ModelCallFailed
            raise error(said + str(failure.data.get("message")))
        if events:
            said = f"the run has no outcome for {what} here, yet its step went on"
            raise self.diverged("call", said, call)
        said = f"the code now makes {what}, a call the run never made; it was not run"
        if request is None:
            raise self.diverged("new call", said, call)
        said = f"the code now makes {what}, a call the run never made; nothing was sent:"
        raise self.diverged(
            "new call", said, call, _prompt_diff(self.writer.journal, None, request)
        )


_FAILURES = (k.ACTION_FAILED, k.MODEL_FAILED)


def _in_effect(stop: Event | None) -> bool:
    """Whether the run failed inside an effect's function (`Context.effect` in its traceback)."""
    return stop is not None and ", in effect\n" in str(stop.data.get("traceback", ""))


class _Unwritten(RunWriter):
    """The writer of a rerun's context: keeps what the code would write in memory, writes nothing.

    Its journal is the real one, open read-only, for `redact`: a request is hashed as the journal
    keeps it, secrets redacted.
    """

    def __init__(self, journal: Store, run_id: str) -> None:
        super().__init__(journal, run_id, last_seq=0)
        self.held: list[Event] = []

    def record(self, step: str | None, data: kinds.Data) -> Event:
        return self._hold(data.KIND, step, data.as_json())

    def commit(
        self,
        step: str | None,
        data: kinds.Data,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: Reserve | None = None,
    ) -> Event:
        return self._hold(data.KIND, step, data.as_json())

    def flush(self) -> None:
        return None

    def blob(self, text: str | blobs.Payload) -> str:
        if isinstance(text, blobs.Payload):
            return text.name
        return blobs.ref(self.journal.redact(text))

    def _hold(self, kind: str, step: str | None, data: dict[str, Any]) -> Event:
        text = self.journal.redact(dumps(data))  # NotJSON, as the real writer raises it
        self.last_seq += 1
        self.bytes_written += len(text)
        at = timestamp(self.journal.clock())
        event = Event(self.run_id, self.last_seq, at, kind, step, json.loads(text))
        self.held.append(event)
        return event


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


def render_request(request: Mapping[str, Any]) -> list[str]:
    """A model request as a person reads it: its settings (thinking, effort, tool_choice), the
    system prompt, each message's text, then each tool's description and schema, and the schema
    of its JSON outputs."""
    lines = [f"{f}: {request[f]}" for f in ("model", "max_tokens") if f in request]
    output = request.get("output_config") or {}
    settings = {
        "thinking": request.get("thinking"),
        "effort": output.get("effort"),
        "tool_choice": request.get("tool_choice"),
    }
    lines += [f"{f}: {json.dumps(v, sort_keys=True)}" for f, v in settings.items() if v is not None]
    if request.get("system") is not None:
        lines += ["[system]", *_text(request["system"])]
    for message in request.get("messages", []):
        lines += [f"[{message.get('role')}]", *_text(message.get("content"))]
    for tool in request.get("tools", []):
        lines += [f"[tool {tool.get('name')}]", *str(tool.get("description", "")).splitlines()]
        schema = json.dumps(tool.get("input_schema"), indent=2, sort_keys=True, ensure_ascii=False)
        lines += schema.splitlines()
    answer_format = output.get("format")
    if answer_format is not None:
        lines.append("[answer format: JSON outputs]")
        lines += json.dumps(answer_format.get("schema"), indent=2, sort_keys=True).splitlines()
    return lines


def _text(content: Any) -> list[str]:
    if isinstance(content, str):
        return content.splitlines() or [""]
    lines: list[str] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            lines += _text(block.get("text", ""))
        elif kind == "tool_use":
            lines.append(
                f"(calls {block.get('name')}) {json.dumps(block.get('input'), sort_keys=True)}"
            )
        elif kind == "tool_result":
            lines += ["(tool result)", *_text(block.get("content"))]
        else:
            lines.append(json.dumps(block, sort_keys=True, ensure_ascii=False))
    return lines


def _prompt_diff(journal: Store, was: Event | None, request: dict[str, Any]) -> str:
    """A unified diff of the recorded request (from its blob) against the one built now."""
    now = json.loads(journal.redact(json.dumps(request, ensure_ascii=False)))
    old: Any = None
    if was is not None:
        try:
            old = json.loads(journal.blob(was.data["request"]))
        except LookupError:
            old = None
    before = render_request(old) if old is not None else []
    after = render_request(now)
    if before == after:  # a difference the rendering leaves out (tool_choice, cache_control)
        before = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
        after = json.dumps(now, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    source = f"recorded request (seq {was.seq})" if was is not None else "(no request recorded)"
    return "\n".join(difflib.unified_diff(before, after, source, "request now", lineterm=""))


def _decision_change(was: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    if not delta.same(was.get("item"), now["item"]):
        return (
            f"the run decided about {_show(was.get('item'))} here ({was.get('outcome')!r}), "
            f"the code now about {_show(now['item'])} ({now['outcome']!r})"
        )
    item = _show(now["item"])
    old, new = was.get("inputs") or {}, now["inputs"] or {}
    changed = [
        n for n in {**old, **new} if n not in old or n not in new or not delta.same(old[n], new[n])
    ]
    inputs = ", ".join(
        f"{n} {_show(old.get(n, _ABSENT))} then, {_show(new.get(n, _ABSENT))} now" for n in changed
    )
    if was.get("outcome") == now["outcome"] and was.get("reason") == now["reason"]:
        return f"the decision about {item} ({now['outcome']!r}) differs in its inputs: {inputs}"
    said = (
        f"the decision about {item} differs: the run decided "
        f"{_outcome(was.get('outcome'), was.get('reason'))}, the code now decides "
        f"{_outcome(now['outcome'], now['reason'])}"
    )
    return f"{said}; inputs: {inputs}" if inputs else said


def _outcome(outcome: Any, reason: Any) -> str:
    return f"{outcome!r} ({reason})" if reason else repr(outcome)


def _describe(event: Event) -> str:
    """A recorded call in words: `act page 'T-1004'`, `ask Urgency`, `decision about 'T-1'`."""
    operation = OPERATIONS.get(event.kind, event.kind)
    data = event.data
    if operation == "decision":
        return f"decision about {_show(data.get('item'))} ({data.get('outcome')})"
    if operation == "act":
        return f"act {data.get('name')} {data.get('key')!r}"
    return f"{operation} {data.get('name')}"


def _went(to: str | None) -> str:
    return f"went to {to!r}" if to is not None else "finished"


def _goes(to: str | None) -> str:
    return f"goes to {to!r}" if to is not None else "finishes"


def _changes(before: Any, ops: list[dict[str, Any]]) -> str:
    """The first changed paths of a state, each with its value then and now."""
    said = []
    for op in ops[:3]:
        path = op["path"] or "/"
        old = _show(_at(before, op["path"])) if op["op"] != "add" else "absent"
        new = _show(op["value"]) if "value" in op else "absent"
        said.append(f"{path} {old} then, {new} now")
    more = f" (and {len(ops) - 3} more)" if len(ops) > 3 else ""
    return "; ".join(said) + more


def _at(doc: Any, path: str) -> Any:
    """The value at a JSON Pointer."""
    for token in path.split("/")[1:] if path else []:
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def _show(value: Any, limit: int = 80) -> str:
    if value is _ABSENT:
        return "absent"
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _step_entry(tb: TracebackType | None) -> TracebackType | None:
    """The traceback entry of the step's handler (what `_Rerun._visit` called), if the
    exception came from inside the step."""
    while tb is not None:
        if tb.tb_frame.f_code is _Rerun._visit.__code__:
            step = tb.tb_next
            inside = step is not None and step.tb_frame.f_globals.get("__name__") != __name__
            return step if inside else None
        tb = tb.tb_next
    return None
