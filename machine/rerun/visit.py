"""One visit of a step rerun: the journaling a rerun gives the step's calls (`Replay`, a
`ports.Journaling`), and where the code diverges from the run.

`Replay` is told each call the step makes and what the journal holds for it: it answers the
call from the journal, or raises `Diverged` where the call would run, send or differ, naming
what differs in words. Nothing runs and nothing is written (`Unwritten` keeps in memory what the
code would write).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal, NoReturn

import attrs

from runjournal.journal import Event, RunWriter, Store, blobs, delta, kinds
from runjournal.journal import events as k
from runjournal.journal.events import dumps, timestamp
from runjournal.journal.kinds import to_step
from runjournal.journal.spending import Reserve
from runjournal.machine import convert
from runjournal.machine.errors import ActionError, ModelCallFailed
from runjournal.machine.journaled import OPERATIONS
from runjournal.machine.ports import Step
from runjournal.machine.rerun.words import decision_change, describe, prompt_diff, show

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


class Diverged(BaseException):
    """Raised where the code diverges from the run, to stop the step there.

    A BaseException, as Killed is: a step's own `except Exception` must not swallow it.
    """

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.message)
        self.divergence = divergence


class RecordEnds(BaseException):
    """The step reached a call past the end of an unfinished run's record: nothing to compare."""


@attrs.frozen
class Visit:
    """One visit of a step as the journal has it."""

    number: int
    step: str
    calls: dict[str, list[Event]]
    """The events of each call the step made, by place, oldest first (as a resume gathers)."""
    transition: Event | None
    """The transition that ended it; None where the run's record ends inside it."""
    stop: Event | None
    """How the run last stopped in it (failed, killed, needs attention), if it did."""


def visits(journal: Store, run_id: str, started: Event) -> Iterator[Visit]:
    """The run's visits from `started` (its first state, or a snapshot) on, oldest first."""
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
            yield Visit(number, step, calls, event, stop)
            step, number, calls, stop = to_step(event.data), number + 1, {}, None
    if step is not None:
        yield Visit(number, step, calls, None, stop)


class Replay:
    """The journaling of one visit being rerun (a `ports.Journaling`): what the run did in it,
    and what the code has done so far. A call is answered from the journal or the step stops;
    nothing runs.

    Each method that finds the code doing otherwise than the run raises `Diverged`, and keeps it
    in `found` too, so that a step which catches everything cannot hide it.
    """

    parallel = False
    """A map's items one at a time: the first divergence is the first in the items' order."""

    def __init__(self, run_id: str, visit: Visit, writer: Unwritten) -> None:
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
            self._unrecorded(call, f"decision about {show(now['item'])} ({outcome})", events)
        was = events[-1].data
        if all(delta.same(was.get(f), now[f]) for f in ("item", "outcome", "reason", "inputs")):
            self.decisions += 1
            return
        raise self.diverged("decision", decision_change(was, now), call)

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
                diff = prompt_diff(self.writer.journal, was, request)
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
        return (left[0], describe(self.visit.calls[left[0]][0])) if left else None

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
                raise RecordEnds
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
        raise self.diverged("new call", said, call, prompt_diff(self.writer.journal, None, request))


_FAILURES = (k.ACTION_FAILED, k.MODEL_FAILED)


def _in_effect(stop: Event | None) -> bool:
    """Whether the run failed inside an effect's function: in its traceback, the frame that
    calls it (`journaled._run_effect`), or `Context.effect` (a run made before that frame was
    there, and a function too deep for the traceback's last frames to show it)."""
    if stop is None:
        return False
    trace = str(stop.data.get("traceback", ""))
    return ", in _run_effect\n" in trace or ", in effect\n" in trace


class Unwritten(RunWriter):
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
