"""The data of each kind of event, defined once: its fields, their types and what each means.

Each kind is a frozen attrs class. The machine builds its events from them, the writer checks
every event's data against its kind, the projections and views read the same field names, the
log prints them as its keys (`journal logs`), and the README's table of events is generated from
them (`markdown_table`, checked by a test). A field read by SQL is a column of the same name in
the view of its kind (`decisions`, `model_failures`, ...).

The data is stored as a JSON object of exactly these fields, in this order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from runjournal.journal import events as k
from runjournal.journal.errors import BadEvent


def _doc(text: str, default: Any = attrs.NOTHING) -> Any:
    return attrs.field(default=default, metadata={"doc": text})


@attrs.frozen(kw_only=True)
class Data:
    """The data of one kind of event."""

    KIND: ClassVar[str]
    SUMMARY: ClassVar[str]

    def as_json(self) -> dict[str, Any]:
        """The event's data as stored: a JSON object of the fields, in order."""
        return {name: getattr(self, name) for name in _NAMES[type(self)]}


# The run


@attrs.frozen(kw_only=True)
class RunStarted(Data):
    KIND = k.RUN_STARTED
    SUMMARY = "a run began: its machine, code, input and first state"
    machine: str = _doc("the machine's name")
    target: str = _doc("where its code is: `path.py:name` or `module:name`")
    code_hash: str = _doc("a hash of that code, to notice a resume under changed code")
    run_key: str | None = _doc("the run key: a second start with it finds this run", None)
    to_step: str = _doc("the step the run begins with")
    input: str = _doc("the input, a blob hash; null in place of each member in `input_parts`")
    state: Any = _doc("the first state; null in place of each member in `state_parts`")
    ordinal: int = _doc("the run's number in the order runs were created", 0)
    limits: dict[str, Any] | None = _doc("the limits in force", None)
    limit_overrides: dict[str, Any] | None = _doc("the limits given for this run alone", None)
    forked_from: dict[str, Any] | None = _doc("{run_id, seq} of the run forked from", None)
    input_parts: dict[str, str] | None = _doc("the input's big members: blob hash by name", None)
    state_parts: dict[str, str] | None = _doc("the state's big members: blob hash by name", None)
    submitted: bool | None = _doc("recorded for a worker to execute (`journal submit`)", None)


@attrs.frozen(kw_only=True)
class RunResumed(Data):
    KIND = k.RUN_RESUMED
    SUMMARY = "a process took up the run again"
    status_before: str = _doc("the run's status before")
    code_hash_before: str = _doc("the code hash it had")
    code_hash: str = _doc("the code hash it goes on with")
    target: str = _doc("where that code is")
    from_seq: int = _doc("the seq of the last transition it goes on from")
    taken_over_from: str | None = _doc("the lease holder it took over from, if any", None)
    limits: dict[str, Any] | None = _doc("the limits in force", None)
    limit_overrides: dict[str, Any] | None = _doc("the limits given for this run alone", None)
    host: str | None = _doc("the host of the process that took it up", None)
    pid: int | None = _doc("that process's id", None)


@attrs.frozen(kw_only=True)
class TransitionEvent(Data):
    """A `transition` event: named so, apart from the `Transition` a step returns
    (`runjournal.machine.Transition`), which this records as a change to the state."""

    KIND = k.TRANSITION
    SUMMARY = "a step ended: where the run goes, and the change to its state"
    to_step: str | None = _doc("the next step; null when the run is done")
    delta: list[dict[str, Any]] = _doc("the change to the state, RFC 6902 JSON Patch")


@attrs.frozen(kw_only=True)
class Snapshot(Data):
    KIND = k.SNAPSHOT
    SUMMARY = "the whole state, so that a fold need not start from the beginning"
    state: Any = _doc("the whole state; null in place of each member in `state_parts`")
    to_step: str | None = _doc("the step the run goes on with")
    transitions: int = _doc("transitions before it")
    state_parts: dict[str, str] | None = _doc("the state's big members: blob hash by name", None)


@attrs.frozen(kw_only=True)
class RunDone(Data):
    KIND = k.RUN_DONE
    SUMMARY = "the run ended done: final"
    steps: int = _doc("the steps it took")


@attrs.frozen(kw_only=True)
class RunFailed(Data):
    KIND = k.RUN_FAILED
    SUMMARY = "the run ended failed; a resume enters the step again"
    error: str = _doc("what went wrong, on one line")
    traceback: str | None = _doc("where, for an exception", None)


@attrs.frozen(kw_only=True)
class RunNeedsAttention(Data):
    KIND = k.RUN_NEEDS_ATTENTION
    SUMMARY = "the run stopped for a person: an action whose outcome is unknown"
    call: str = _doc("the place of the action in its step")
    name: str = _doc("the action's name")
    key: str = _doc("its action key")
    message: str = _doc("what to check and do")


@attrs.frozen(kw_only=True)
class RunWaiting(Data):
    KIND = k.RUN_WAITING
    SUMMARY = "the run stopped to wait for an answer (`journal answer`), until its deadline"
    call: str = _doc("the place of the wait in its step")
    name: str = _doc("what it waits for")
    of: str | None = _doc("who is asked", None)
    deadline: str | None = _doc("when the default is taken instead, if ever", None)
    message: str = _doc("what to do, on one line")


@attrs.frozen(kw_only=True)
class RunKilled(Data):
    KIND = k.RUN_KILLED
    SUMMARY = "the run was stopped: a limit was reached, or a person killed it"
    killed_by: str = _doc("`limit` or `person`")
    message: str = _doc("why, on one line")
    who: str | None = _doc("the person, for a kill", None)
    reason: str | None = _doc("the reason they gave", None)
    requested_at: str | None = _doc("when they asked", None)
    limit_name: str | None = _doc("the limit: max_cost_usd, max_tokens, ..., breaker", None)
    value: Any = _doc("what was spent or done (the breaker: its figures)", None)
    cap: Any = _doc("the limit's value", None)
    worst_case: Any = _doc("what the refused request could have added", None)


@attrs.frozen(kw_only=True)
class RunInterrupted(Data):
    KIND = k.RUN_INTERRUPTED
    SUMMARY = "the process executing the run was asked to stop (SIGTERM, Ctrl-C) and let it go"
    signal: str = _doc("the signal: SIGTERM or SIGINT")
    at_once: bool = _doc("true after a second signal: the step was cut where it was")
    message: str = _doc("what happened and how to go on, on one line")


@attrs.frozen(kw_only=True)
class CostAnomaly(Data):
    KIND = k.COST_ANOMALY
    SUMMARY = "the run used far more tokens per step than its machine's usual"
    metric: str = _doc("input_tokens_per_step or output_tokens_per_step")
    value: float = _doc("this run's figure")
    baseline: float = _doc("the median over the machine's last finished runs")
    ratio: float = _doc("value / baseline")
    threshold: float = _doc("the ratio above which it is recorded")
    baseline_runs: int = _doc("how many runs make the baseline")
    code_hash: str = _doc("this run's code version")
    baseline_code_hashes: list[str] = _doc("the versions of the baseline's runs")


# Effects and decisions


@attrs.frozen(kw_only=True)
class EffectDone(Data):
    KIND = k.EFFECT_DONE
    SUMMARY = "a call to the outside world returned; never run again"
    name: str = _doc("the effect's name")
    call: str = _doc("its place in the step: its call key, or #index")
    result: Any = _doc("what it returned")


@attrs.frozen(kw_only=True)
class Decision(Data):
    KIND = k.DECISION
    SUMMARY = "a judgment: about what, the outcome, why, on what inputs"
    call: str = _doc("its place in the step")
    item: Any = _doc("what was judged")
    outcome: str = _doc("the outcome")
    reason: str | None = _doc("why", None)
    inputs: dict[str, Any] = _doc("the inputs to the judgment", attrs.Factory(dict))


# Model calls


@attrs.frozen(kw_only=True)
class _Attempt(Data):
    call: str = _doc("the ask's place in its step: its call key, or #index")
    name: str = _doc("the schema asked for")
    round: int = _doc("0, then 1, 2, ... when an answer was rejected and asked again")
    attempt: int = _doc("1, 2, ... within the round: transport retries")
    model: str = _doc("the model")
    custom_id: str | None = _doc("its `custom_id` in a Message Batch (`ctx.ask_batch`)", None)


@attrs.frozen(kw_only=True)
class ModelRequested(_Attempt):
    KIND = k.MODEL_REQUESTED
    SUMMARY = "a request is about to be sent; its worst case is reserved against the limits"
    request_hash: str = _doc("a hash of the request, to recognise it on resume")
    request: str = _doc("the request, a blob hash")
    mechanism: str | None = _doc(
        "how it asks for the answer's shape: json_outputs, strict_tool, forced_tool, auto_tool "
        "or text",
        None,
    )
    worst_case_usd: float = _doc("what it can cost at most", 0.0)
    worst_case_tokens: int = _doc("how many tokens it can be billed for at most", 0)


@attrs.frozen(kw_only=True)
class _Outcome(_Attempt):
    requested_at: str | None = _doc("when its request was sent", None)
    worst_case_usd: float = _doc("its request's worst case", 0.0)
    worst_case_tokens: int = _doc("its request's worst case in tokens", 0)
    request_id: str | None = _doc("the API's request id", None)
    batch_id: str | None = _doc("the Message Batch it was answered in; null: asked alone", None)


@attrs.frozen(kw_only=True)
class ModelFailed(_Outcome):
    KIND = k.MODEL_FAILED
    SUMMARY = "an attempt failed: retried after delay_s, or not"
    status: int | None = _doc("the HTTP status; null for a timeout or a lost connection")
    error_type: str = _doc("the API's error type, or timeout, connection_error, abandoned")
    message: str = _doc("the error, on one line")
    retryable: bool = _doc("whether it is retried")
    delay_s: float | None = _doc("seconds waited before the next attempt; null: none", None)


@attrs.frozen(kw_only=True)
class ModelAnswered(_Outcome):
    KIND = k.MODEL_ANSWERED
    SUMMARY = "the model answered: what it said, its usage and cost"
    request_hash: str = _doc("a hash of the request")
    mechanism: str | None = _doc("how its request asked for the answer's shape", None)
    stop_reason: str | None = _doc("why the model stopped")
    stop_details: dict[str, Any] | None = _doc(
        "more on a refusal: its policy category and explanation", None
    )
    content: list[Any] = _doc("the answer's content blocks, thinking blocks included")
    usage: dict[str, int] = _doc("tokens billed by type")
    cost_usd: float = _doc("what it cost, exactly")
    latency_ms: float = _doc("how long it took")


@attrs.frozen(kw_only=True)
class OutputRejected(Data):
    KIND = k.OUTPUT_REJECTED
    SUMMARY = "an answer was not accepted: it did not fit its schema, was cut off or refused"
    call: str = _doc("the ask's place in its step")
    name: str = _doc("the schema asked for")
    round: int = _doc("the round whose answer it was")
    errors: list[str] = _doc("what was wrong, one line each")
    raw: str = _doc("the answer as text (cut)")


# Actions


@attrs.frozen(kw_only=True)
class _Action(Data):
    call: str = _doc("the action's place in its step")
    name: str = _doc("the action's name")
    key: str = _doc("its action key: the idempotency key handed to the outside system")


@attrs.frozen(kw_only=True)
class _Acting(_Action):
    idempotent: bool = _doc("whether the outside system dedupes by the action key")
    repeat: bool = _doc("whether it is meant to repeat (kept out of the seen-store)", False)


@attrs.frozen(kw_only=True)
class ActionIntended(_Acting):
    KIND = k.ACTION_INTENDED
    SUMMARY = "an action is about to run: on disk (synced) first"
    attempt: int = _doc("1, 2, ...")
    intent: str = _doc("a hash of what it does")


@attrs.frozen(kw_only=True)
class ActionDone(_Acting):
    KIND = k.ACTION_DONE
    SUMMARY = "the action ran: never again"
    attempt: int = _doc("the attempt that did it")
    result: Any = _doc("what it returned")


@attrs.frozen(kw_only=True)
class ActionFailed(_Acting):
    KIND = k.ACTION_FAILED
    SUMMARY = "an attempt failed: for sure, or with its outcome unknown (in doubt)"
    attempt: int = _doc("the attempt")
    status: int | None = _doc("the HTTP status, if any")
    error_type: str = _doc("what kind of failure")
    message: str = _doc("the error, on one line")
    retryable: bool = _doc("whether it is retried")
    in_doubt: bool = _doc("whether it may have happened")
    delay_s: float | None = _doc("seconds waited before the next attempt", None)


@attrs.frozen(kw_only=True)
class ActionSkipped(_Acting):
    KIND = k.ACTION_SKIPPED
    SUMMARY = "the action key was done by another run: not done again"
    done_in_run: str = _doc("the run that did it")
    result: Any = _doc("its result")


@attrs.frozen(kw_only=True)
class ActionResolved(_Action):
    KIND = k.ACTION_RESOLVED
    SUMMARY = "a person said what happened to an action in doubt"
    outcome: str = _doc("done or not_done")
    result: Any = _doc("with done: what the action returned")
    by: str = _doc("who")
    reason: str | None = _doc("why they said so (what they checked)", None)


# Waits for a person


@attrs.frozen(kw_only=True)
class WaitStarted(Data):
    KIND = k.WAIT_STARTED
    SUMMARY = "a step asks a person for an answer, of a declared shape, by a deadline"
    call: str = _doc("the wait's place in its step")
    name: str = _doc("what it waits for: the name `journal answer` gives")
    prompt: str = _doc("the question, for the person")
    schema: dict[str, Any] = _doc("the JSON Schema an answer must fit")
    of: str | None = _doc("who is asked", None)
    deadline: str | None = _doc("when the default is taken instead; null: never", None)
    default: Any = _doc("the answer taken at the deadline", None)


@attrs.frozen(kw_only=True)
class WaitAnswered(Data):
    KIND = k.WAIT_ANSWERED
    SUMMARY = "a person answered a wait: the value, who, why"
    call: str = _doc("the wait's place in its step")
    name: str = _doc("what it waited for")
    value: Any = _doc("the answer, as JSON")
    by: str = _doc("who answered")
    reason: str | None = _doc("why, in their words", None)


@attrs.frozen(kw_only=True)
class WaitExpired(Data):
    KIND = k.WAIT_EXPIRED
    SUMMARY = "a wait's deadline passed unanswered: its default was taken"
    call: str = _doc("the wait's place in its step")
    name: str = _doc("what it waited for")
    deadline: str = _doc("the deadline that passed")
    value: Any = _doc("the default, taken as the answer")


# Message Batches


@attrs.frozen(kw_only=True)
class _Batch(Data):
    call: str = _doc("the `ask_batch`'s place in its step")
    name: str = _doc("the schema asked for")
    batch: int = _doc("0, then 1, 2, ...: the batches one `ask_batch` makes, for items still due")


@attrs.frozen(kw_only=True)
class BatchIntended(_Batch):
    KIND = k.BATCH_INTENDED
    SUMMARY = (
        "a Message Batch is about to be created; each item's model.requested is written with "
        "it, their worst case reserved at batch prices"
    )
    model: str = _doc("the model")
    items: list[str] = _doc("the item keys, in the order of their custom_ids")
    custom_id_prefix: str = _doc("each item's custom_id is this and its index in `items`")
    requests_hash: str = _doc("a hash of the items' request hashes, to recognise it on resume")
    worst_case_usd: float = _doc("what the batch can cost at most, at batch prices")
    worst_case_tokens: int = _doc("how many tokens it can be billed for at most")


@attrs.frozen(kw_only=True)
class BatchCreated(_Batch):
    KIND = k.BATCH_CREATED
    SUMMARY = "the Message Batch exists: its id, as the API gave it or as found by listing"
    batch_id: str = _doc("the API's id, msgbatch_...")
    expires_at: str | None = _doc("when its unfinished items expire", None)
    adopted: bool = _doc(
        "true: the create's answer was lost and the batch was found by listing", False
    )


@attrs.frozen(kw_only=True)
class BatchEnded(_Batch):
    KIND = k.BATCH_ENDED
    SUMMARY = "a Message Batch ended and every item's result was journaled"
    batch_id: str = _doc("the API's id; empty if the API refused to create it")
    succeeded: int = _doc("items answered (each a model.answered)")
    errored: int = _doc("items that failed (each a model.failed, not billed)")
    expired: int = _doc("items not done within 24 hours (not billed)")
    canceled: int = _doc("items canceled before they were done (not billed)")


@attrs.frozen(kw_only=True)
class BatchCanceled(_Batch):
    KIND = k.BATCH_CANCELED
    SUMMARY = "a Message Batch was canceled: the run was killed while it waited on it"
    batch_id: str = _doc("the API's id")
    by: str = _doc("who killed the run")


ACTION_STATUSES = ("intended", "in_doubt", "done", "failed", "not_done", "skipped")
"""Where an action stands, in the `actions` and `action_keys` tables and for a resume:
intended (its intent is on disk, no outcome yet: in doubt once no process executes its run),
in_doubt (an attempt failed with its outcome unknown), done (by the run, or so a person said:
`resolved_by`), failed (for sure; it may be retried), not_done (so a person said), skipped (its
action key was done by another run)."""

KINDS: Mapping[str, type[Data]] = {
    cls.KIND: cls
    for cls in (
        RunStarted,
        RunResumed,
        TransitionEvent,
        Snapshot,
        EffectDone,
        Decision,
        ModelRequested,
        ModelFailed,
        ModelAnswered,
        OutputRejected,
        ActionIntended,
        ActionDone,
        ActionFailed,
        ActionSkipped,
        ActionResolved,
        RunNeedsAttention,
        WaitStarted,
        WaitAnswered,
        WaitExpired,
        RunWaiting,
        BatchIntended,
        BatchCreated,
        BatchEnded,
        BatchCanceled,
        RunDone,
        RunFailed,
        RunKilled,
        RunInterrupted,
        CostAnomaly,
    )
}
"""Every kind of event, by its name."""

_NAMES: dict[type[Data], tuple[str, ...]] = {
    cls: tuple(f.name for f in attrs.fields(cls)) for cls in KINDS.values()
}
_REQUIRED: dict[str, frozenset[str]] = {
    cls.KIND: frozenset(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING)
    for cls in KINDS.values()
}
_ALLOWED: dict[str, frozenset[str]] = {cls.KIND: frozenset(_NAMES[cls]) for cls in KINDS.values()}


def check(kind: str, data: Mapping[str, Any]) -> None:
    """Refuse data that is not of its kind: an unknown kind, a field missing or unknown."""
    allowed = _ALLOWED.get(kind)
    if allowed is None:
        msg = f"no event kind {kind!r} (kinds: {', '.join(KINDS)})"
        raise BadEvent(msg)
    keys = data.keys()
    if not (keys <= allowed and _REQUIRED[kind] <= keys):
        unknown = sorted(keys - allowed)
        missing = sorted(_REQUIRED[kind] - keys)
        msg = f"{kind} data: unknown fields {unknown}, missing fields {missing}"
        raise BadEvent(msg)


def to_step(data: Mapping[str, Any]) -> str | None:
    """The step a run.started, transition or snapshot goes on with.

    Journals written before `to_step` said `to` (transition) or `step` (the others).
    """
    for name in ("to_step", "to", "step"):
        if name in data:
            value = data[name]
            return None if value is None else str(value)
    return None


def markdown_table() -> str:
    """The README's table of event kinds and their data, from these classes."""
    lines = ["| kind | what it records | data |", "| --- | --- | --- |"]
    for kind, cls in KINDS.items():
        fields = ", ".join(f"`{name}`" for name in _NAMES[cls])
        lines.append(f"| `{kind}` | {cls.SUMMARY} | {fields} |")
    return "\n".join(lines)


def fields(kind: str) -> tuple[str, ...]:
    """The data fields of a kind, in order."""
    return _NAMES[KINDS[kind]]
