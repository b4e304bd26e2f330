"""Runs as OpenTelemetry spans: a run's events, read back (`spans`, `export`) or as they are
committed (`Live`), become one trace whose model calls follow the GenAI semantic conventions.

The trace is the run's, not the exporting process's: its id is derived from the run id, each
span's id from the run id and the seq of the event that opens it, every time from the events'
`at`. Exporting a run twice gives the same trace, and the spans a resume sends live go under
the run's span. (The SDK makes spans only through a tracer, so a tracer of our own, whose id
generator hands out the ids planned, makes them.) The spans:

- `run {machine}`, the root, from `run.started` to the run's last event;
- `step {step}`, a step visit: from the event it began after (the previous transition,
  `run.started` or `run.resumed`) to its transition. A process that stops (done, failed,
  killed, interrupted, needing attention, or gone, as the next `run.resumed` shows) ends the
  visit there, and what it left open; the resume re-enters the step in a span of its own.
- under a step, `chat {model}`: one model request and its retries, from its first
  `model.requested` to its `model.answered` or the failure that gave it up (ERROR, with
  `error.type`), each attempt and failure a span event; an answer rejected and asked again is
  a new round, a new span. `effect {name}`: the journal records an effect only as it
  returns, so its span starts at the run's event before it (an upper bound on its length).
  `action {name}`: from its intent to its outcome, each attempt a span event.

Decisions, rejected answers and the kinds these spans do not model (`cost.anomaly`,
`run.resumed`, ...) are span events of their step, or of the run outside a step: a decision is
a point in time with no length, a map step makes hundreds, and as an event each is still found
by its attributes, at its time, on its step. A failed or killed run is an ERROR, and so is the
step it stopped in.

Attributes are the events' own fields, `runjournal.` and the field's name, nested objects with
dotted keys, as `journal logs` prints them: a span has those of the event that opens it and of
the event that ends it, `runjournal.seq` being the latter's (its row in `model_calls`,
`transitions`, `actions` or `effects`) and `runjournal.ended_by` its kind. `runjournal.cost_usd`
is a float, the one the event holds (the exact decimal price's shortest repr); the run's span
sums them as integers of nano-dollars, as `runs.cost_nusd` is, and gives that as a float. By
default nothing big goes in: no state, input, prompt, answer or result. `include_content` adds
the answers (`gen_ai.output.messages`), the prompts (`gen_ai.input.messages`,
`gen_ai.system_instructions`, from the request's blob), rejected answers and results. Events
are redacted before they are written, and so the spans are.

The GenAI names are the string values of the constants of opentelemetry-semantic-conventions
0.66b2 (`opentelemetry/semconv/_incubating/attributes/gen_ai_attributes.py`), copied rather
than imported: that module is private, and marks every `gen_ai.*` name as moved to the
separate semantic-conventions-genai repository. `gen_ai.provider.name` is used, not
`gen_ai.system`, which it marks "Replaced by `gen_ai.provider.name`". `gen_ai.usage.input_tokens`
counts every input token, cached ones included, as the conventions ask; the Messages API's
`input_tokens` (and the journal's) leaves cache reads and writes out, which
`gen_ai.usage.cache_read.input_tokens` and `gen_ai.usage.cache_creation.input_tokens` give. The
journal records neither the response's id nor its model: `gen_ai.response.id` and
`gen_ai.response.model` are left out.

OpenTelemetry is an optional extra: importing this module without it raises BackendMissing.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from runjournal.journal import events as k
from runjournal.journal.errors import BackendMissing, JournalError
from runjournal.journal.events import Event
from runjournal.journal.kinds import to_step
from runjournal.journal.projection import nusd
from runjournal.journal.protocol import Store
from runjournal.journal.spending import NUSD

try:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import (
        NonRecordingSpan,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        Tracer,
        set_span_in_context,
    )
    from opentelemetry.util.types import AttributeValue
except ImportError as e:
    msg = "runs as OpenTelemetry spans need its SDK: pip install 'runjournal[otel]'"
    raise BackendMissing(msg) from e

# opentelemetry-semantic-conventions 0.66b2, semconv/_incubating/attributes/gen_ai_attributes.py:
OPERATION_NAME: Final = "gen_ai.operation.name"  # GEN_AI_OPERATION_NAME
PROVIDER_NAME: Final = "gen_ai.provider.name"  # GEN_AI_PROVIDER_NAME
REQUEST_MODEL: Final = "gen_ai.request.model"  # GEN_AI_REQUEST_MODEL
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"  # GEN_AI_RESPONSE_FINISH_REASONS
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"  # GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"  # GEN_AI_USAGE_OUTPUT_TOKENS
CACHE_CREATION_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
CACHE_READ_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
REASONING_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
INPUT_MESSAGES: Final = "gen_ai.input.messages"  # GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"  # GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"  # GEN_AI_SYSTEM_INSTRUCTIONS
REQUEST_PARAMETERS: Final = {
    # The Messages API's name: GEN_AI_REQUEST_MAX_TOKENS, _TEMPERATURE, _TOP_P, _TOP_K,
    # _STOP_SEQUENCES.
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "stop_sequences": "gen_ai.request.stop_sequences",
}
ERROR_TYPE: Final = "error.type"  # opentelemetry.semconv.attributes.error_attributes.ERROR_TYPE
CHAT: Final = "chat"  # GenAiOperationNameValues.CHAT
ANTHROPIC: Final = "anthropic"  # GenAiProviderNameValues.ANTHROPIC

Blob = Callable[[str], str]
"""Reads a blob by its hash (`Store.blob`): the model requests' parameters are in theirs."""

_NEVER = frozenset({"state", "delta", "input", "state_parts", "input_parts", "content"})
_CONTENT = frozenset({"raw", "result"})
_STOPS = frozenset(
    {k.RUN_DONE, k.RUN_FAILED, k.RUN_KILLED, k.RUN_NEEDS_ATTENTION, k.RUN_INTERRUPTED}
)
_INT64 = 2**63
_log = logging.getLogger(__name__)


class ExportFailed(JournalError):
    """The spans could not be handed to their receiver: it cannot be reached, or refused them."""


def trace_id(run_id: str) -> int:
    """The run's trace id: the same every time the run is exported."""
    return _hash(f"runjournal trace {run_id}", 16)


def span_id(run_id: str, seq: int, what: str) -> int:
    """The id of the `what` span (run, step, chat, effect, action) opened by event `seq`."""
    return _hash(f"runjournal span {run_id} {seq} {what}", 8)


def _hash(text: str, size: int) -> int:
    # An id of 0 is invalid; a digest of 0 would need 2^64 tries.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big") or 1


def _ns(at: str) -> int:
    """An event's `at` in nanoseconds since the epoch, exactly: no float in between."""
    t = datetime.datetime.fromisoformat(at)
    return calendar.timegm(t.utctimetuple()) * 1_000_000_000 + t.microsecond * 1000


def default_resource() -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), `runjournal` naming
    the service when nothing else does."""
    found = Resource.create()
    if str(found.attributes.get("service.name", "")).startswith("unknown_service"):
        found = found.merge(Resource({"service.name": "runjournal"}))
    return found


class _Planned(IdGenerator):
    """The ids of the next span, set before it is started: a run's spans take their ids from
    the run, and a tracer (the one way the SDK makes a span) asks its generator for them."""

    def __init__(self) -> None:
        self.trace_id, self.span_id = 0, 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _Tracer:
    """A tracer of our own, handing every span it ends to `processor`."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        from importlib.metadata import version  # slow to import: only once spans are made

        self.ids = _Planned()
        # Every span is kept (no sampler from the environment drops some of a run), and the
        # processor is the caller's to shut down, not ours at exit.
        provider = TracerProvider(
            sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False, id_generator=self.ids
        )
        provider.add_span_processor(processor)
        self.tracer: Tracer = provider.get_tracer("runjournal", version("runjournal"))


def _attribute(value: Any) -> AttributeValue | None:
    """`value` as OpenTelemetry can hold it: a scalar, a list of one type, else JSON text."""
    if value is None:
        return None
    if isinstance(value, str | bool | float) or (isinstance(value, int) and abs(value) < _INT64):
        return value
    if isinstance(value, list | tuple) and len({type(v) for v in value}) == 1:
        first = value[0]
        if isinstance(first, str | bool | float) or (
            isinstance(first, int) and all(abs(v) < _INT64 for v in value)
        ):
            return list(value)
    return k.dumps(value)


def _flat(name: str, value: Any, into: dict[str, AttributeValue]) -> None:
    if isinstance(value, Mapping):
        for key, v in value.items():
            _flat(f"{name}.{key}", v, into)
    elif (attribute := _attribute(value)) is not None:
        into[name] = attribute


def fields(event: Event, *, include_content: bool = False) -> dict[str, AttributeValue]:
    """The event's data as attributes, `runjournal.` and each field's name (nested ones
    dotted, as `journal logs` prints them), with its seq; state and content left out."""
    out: dict[str, AttributeValue] = {"runjournal.seq": event.seq}
    for name, value in event.data.items():
        if name not in _NEVER and (include_content or name not in _CONTENT):
            _flat(f"runjournal.{name}", value, out)
    return out


class _Trace:
    """The spans of one run, built from its events in seq order; each one, once ended, goes
    to the processor."""

    def __init__(
        self,
        run_id: str,
        tracer: _Tracer,
        *,
        blob: Blob | None,
        include_content: bool,
    ) -> None:
        self.run_id, self.tracer, self.blob = run_id, tracer, blob
        self.include_content = include_content
        self.trace_id = trace_id(run_id)
        self.run: Span | None = None
        # The run's span as a parent, though another process's Live may hold it (a resume).
        self.root = self._context(span_id(run_id, 1, "run"))
        self.step: Span | None = None
        self.boundary: Event | None = None  # what the next step visit begins after
        self.open: dict[tuple[Any, ...], Span] = {}  # model calls and actions, by place
        self.last: Event | None = None
        self.stopped: Event | None = None  # the event that stopped the last execution
        self.spent = {"model_calls": 0, "cost_nusd": 0, **dict.fromkeys(_TOKEN_SUMS, 0)}

    def _context(self, sid: int) -> SpanContext:
        return SpanContext(self.trace_id, sid, is_remote=False, trace_flags=TraceFlags(1))

    def _start(
        self,
        what: str,
        name: str,
        event: Event,
        parent: SpanContext | None,
        *,
        at: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        self.tracer.ids.trace_id = self.trace_id
        self.tracer.ids.span_id = span_id(self.run_id, event.seq, what)
        # An empty context, not the caller's: the run's trace is the run's alone.
        context = (
            Context()
            if parent is None
            else set_span_in_context(NonRecordingSpan(parent), Context())
        )
        span = self.tracer.tracer.start_span(
            name, context, kind=kind, start_time=_ns(at or event.at)
        )
        span.set_attributes({"runjournal.run_id": self.run_id})
        if event.step is not None:
            span.set_attribute("runjournal.step", event.step)
        return span

    def _end(self, span: Span, event: Event, error: str | None = None) -> None:
        span.set_attributes({**fields(event, include_content=self.include_content)})
        span.set_attribute("runjournal.ended_by", event.kind)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_ns(event.at))

    def _note(self, span: Span | None, event: Event) -> None:
        if span is not None:  # None: the run's span, which another process's Live holds
            attributes = fields(event, include_content=self.include_content)
            span.add_event(event.kind, attributes, timestamp=_ns(event.at))

    def feed(self, event: Event) -> None:
        """Take the run's next event."""
        handle = _HANDLERS.get(event.kind)
        if handle is not None:
            handle(self, event)
        elif event.kind != k.SNAPSHOT:  # bookkeeping: a fold's shortcut, no behaviour
            self._note(self._here(event), event)
        self.last = event

    def _here(self, event: Event) -> Span | None:
        """The span an event belongs to: its step's while the run executes, else the run's."""
        if self.boundary is not None and event.step is not None:
            return self._step(event)
        return self.run

    def _step(self, event: Event) -> Span:
        if self.step is None:
            begun = self.boundary or event
            self.step = self._start("step", f"step {event.step}", begun, self.root, at=begun.at)
            self.step.set_attribute("runjournal.step", str(event.step))
        return self.step

    def started(self, event: Event) -> None:
        self.run = self._start("run", f"run {event.data.get('machine')}", event, None)
        self.run.set_attributes(fields(event))
        self.boundary = event

    def resumed(self, event: Event) -> None:
        if self.boundary is not None and self.last is not None:  # its process went away
            self._cut(self.last, "run.resumed", "its process ended before an outcome")
        self._note(self.run, event)
        self.boundary = event

    def transition(self, event: Event) -> None:
        step = self._step(event)
        for place in list(self.open):
            self._end(self.open.pop(place), event, "no outcome before its step ended")
        self._end(step, event)
        # After the last transition no step follows: what comes (cost.anomaly) is the run's.
        self.step, self.boundary = None, event if to_step(event.data) is not None else None

    def stop(self, event: Event) -> None:
        error = _error(event)
        self._note(self.run, event)
        if self.boundary is not None:
            self._cut(event, event.kind, f"no outcome: {event.kind}", error)
        self.stopped = event

    def _cut(self, event: Event, by: str, unfinished: str | None, error: str | None = None) -> None:
        """End what is open at `event`: the execution stopped there."""
        for place in list(self.open):
            span = self.open.pop(place)
            span.set_attribute("runjournal.ended_by", by)
            if unfinished is not None:
                span.set_status(Status(StatusCode.ERROR, unfinished))
            span.end(end_time=_ns(event.at))
        if self.step is not None:
            self.step.set_attribute("runjournal.ended_by", by)
            if error is not None:
                self.step.set_status(Status(StatusCode.ERROR, error))
            self.step.end(end_time=_ns(event.at))
        self.step, self.boundary = None, None

    def finish(self) -> None:
        """End every span still open, the run's last: at the run's last event."""
        last = self.last
        if last is None:
            return
        if self.boundary is not None:  # still executing when read: nothing failed
            self._cut(last, "unfinished", None)
        run, self.run = self.run, None
        if run is None:
            return
        run.set_attributes({f"runjournal.{name}": n for name, n in self.spent.items()})
        # Summed as integers of nano-dollars, as `runs.cost_nusd` is: exact, then one rounding.
        run.set_attribute("runjournal.cost_usd", self.spent["cost_nusd"] / NUSD)
        run.set_attributes({"runjournal.seq": last.seq, "runjournal.ended_by": last.kind})
        stopped = self.stopped
        if stopped is not None and stopped.seq == last.seq:
            run.set_attributes(fields(stopped))
            if (error := _error(stopped)) is not None:
                run.set_status(Status(StatusCode.ERROR, error))
        run.end(end_time=_ns(last.at))

    # Model calls

    def requested(self, event: Event) -> None:
        place = ("chat", event.data.get("call"), event.data.get("round"))
        span = self.open.get(place)
        if span is None:
            span = self.open[place] = self._chat(event, at=event.at)
        self._note(span, event)

    def _chat(self, event: Event, *, at: str) -> Span:
        model = str(event.data.get("model"))
        span = self._start(
            "chat",
            f"chat {model}",
            event,
            self._step(event).get_span_context(),
            at=at,
            kind=SpanKind.CLIENT,
        )
        span.set_attributes({OPERATION_NAME: CHAT, PROVIDER_NAME: ANTHROPIC, REQUEST_MODEL: model})
        span.set_attributes(fields(event))
        request = self._request(event.data.get("request"))
        for name, attribute in REQUEST_PARAMETERS.items():
            if (value := _attribute(request.get(name))) is not None:
                span.set_attribute(attribute, value)
        if self.include_content and request:
            span.set_attribute(INPUT_MESSAGES, k.dumps(_messages(request.get("messages"))))
            if request.get("system"):
                span.set_attribute(SYSTEM_INSTRUCTIONS, k.dumps(_parts(request["system"])))
        return span

    def _request(self, ref: Any) -> dict[str, Any]:
        if self.blob is None or not isinstance(ref, str):
            return {}
        try:
            request = json.loads(self.blob(ref))
        except (LookupError, ValueError):  # the attributes are a nicety; the blob's loss is
            return {}  # `journal verify`'s to report
        return request if isinstance(request, dict) else {}

    def _call(self, event: Event) -> Span:
        place = ("chat", event.data.get("call"), event.data.get("round"))
        span = self.open.pop(place, None)
        if span is None:  # its request was sent by a process that went away
            span = self._chat(event, at=str(event.data.get("requested_at") or event.at))
        return span

    def failed(self, event: Event) -> None:
        d = event.data
        if d.get("delay_s") is not None:  # retried: the call goes on
            place = ("chat", d.get("call"), d.get("round"))
            self._note(self.open.get(place) or self._here(event), event)
            return
        span = self._call(event)
        self._note(span, event)
        span.set_attribute(ERROR_TYPE, str(d.get("error_type")))
        self._end(span, event, str(d.get("message")))

    def answered(self, event: Event) -> None:
        span = self._call(event)
        d = event.data
        usage = d.get("usage") or {}
        written = usage.get("cache_write_5m_tokens", 0) + usage.get("cache_write_1h_tokens", 0)
        read = usage.get("cache_read_tokens", 0)
        gen_ai: dict[str, AttributeValue] = {
            INPUT_TOKENS: usage.get("input_tokens", 0) + written + read,
            OUTPUT_TOKENS: usage.get("output_tokens", 0),
            CACHE_CREATION_TOKENS: written,
            CACHE_READ_TOKENS: read,
        }
        if "thinking_tokens" in usage:
            gen_ai[REASONING_TOKENS] = usage["thinking_tokens"]
        if d.get("stop_reason"):
            gen_ai[RESPONSE_FINISH_REASONS] = [str(d["stop_reason"])]
        if self.include_content:
            answer = {"role": "assistant", "parts": _parts(d.get("content") or [])}
            gen_ai[OUTPUT_MESSAGES] = k.dumps([{**answer, "finish_reason": d.get("stop_reason")}])
        span.set_attributes(gen_ai)
        self.spent["model_calls"] += 1
        self.spent["cost_nusd"] += nusd(d.get("cost_usd"))
        for name, of in _TOKEN_SUMS.items():
            self.spent[name] += sum(usage.get(key, 0) for key in of)
        self._end(span, event)

    # Effects and actions

    def effect(self, event: Event) -> None:
        parent = self._step(event).get_span_context()
        begun = self.last.at if self.last is not None else event.at
        name = f"effect {event.data.get('name')}"
        self._end(self._start("effect", name, event, parent, at=begun), event)

    def _action(self, event: Event) -> Span:
        d = event.data
        place = ("action", d.get("call"), d.get("name"), d.get("key"))
        span = self.open.get(place)
        if span is None:
            parent = self._step(event).get_span_context()
            span = self._start("action", f"action {d.get('name')}", event, parent)
            span.set_attributes(fields(event))
            self.open[place] = span
        return span

    def action(self, event: Event) -> None:
        span = self._action(event)
        self._note(span, event)
        d = event.data
        outcome = event.kind in (k.ACTION_DONE, k.ACTION_SKIPPED, k.ACTION_RESOLVED)
        if outcome or (d.get("delay_s") is None and event.kind == k.ACTION_FAILED):
            del self.open[("action", d.get("call"), d.get("name"), d.get("key"))]
            failed = event.kind == k.ACTION_FAILED or d.get("outcome") == "not_done"
            self._end(span, event, str(d.get("message") or d.get("outcome")) if failed else None)

    def resolved(self, event: Event) -> None:
        d = event.data
        if ("action", d.get("call"), d.get("name"), d.get("key")) in self.open:
            self.action(event)
        else:  # a person's answer while no process executes the run
            self._note(self.run, event)


def _error(event: Event) -> str | None:
    """What a stop says went wrong: a failed or killed run is an error, a pause is not."""
    if event.kind == k.RUN_FAILED:
        return str(event.data.get("error"))
    if event.kind == k.RUN_KILLED:
        return str(event.data.get("message"))
    return None


_TOKEN_SUMS: Final = {
    # The `runs` table's columns: cache tokens apart from input_tokens, as the API counts.
    "input_tokens": ("input_tokens",),
    "output_tokens": ("output_tokens",),
    "cache_write_tokens": ("cache_write_5m_tokens", "cache_write_1h_tokens"),
    "cache_read_tokens": ("cache_read_tokens",),
}

_HANDLERS: Final[dict[str, Callable[[_Trace, Event], None]]] = {
    k.RUN_STARTED: _Trace.started,
    k.RUN_RESUMED: _Trace.resumed,
    k.TRANSITION: _Trace.transition,
    **dict.fromkeys(_STOPS, _Trace.stop),
    k.MODEL_REQUESTED: _Trace.requested,
    k.MODEL_FAILED: _Trace.failed,
    k.MODEL_ANSWERED: _Trace.answered,
    k.EFFECT_DONE: _Trace.effect,
    **dict.fromkeys((k.ACTION_INTENDED, k.ACTION_DONE, k.ACTION_FAILED), _Trace.action),
    k.ACTION_SKIPPED: _Trace.action,
    k.ACTION_RESOLVED: _Trace.resolved,
}


def _parts(content: Any) -> list[Any]:
    """Messages API content (a string, or blocks) as the conventions' message parts."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    return [_part(block) for block in content] if isinstance(content, list) else []


def _part(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    kind, get = block.get("type"), block.get
    if kind in ("text", "thinking"):
        return {"type": "text" if kind == "text" else "reasoning", "content": get(kind)}
    if kind == "tool_use":
        return {
            "type": "tool_call",
            "id": get("id"),
            "name": get("name"),
            "arguments": get("input"),
        }
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": get("tool_use_id"), "response": get("content")}
    return block  # the conventions let a part of another type be given as it is


def _messages(messages: Any) -> list[dict[str, Any]]:
    return [
        {"role": m.get("role"), "parts": _parts(m.get("content"))}
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    ]


class _Collected(SpanProcessor):
    """Keeps the spans ended, for one export."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def spans(
    events: Iterable[Event],
    *,
    blob: Blob | None = None,
    include_content: bool = False,
    resource: Resource | None = None,
) -> list[ReadableSpan]:
    """The spans of one run's events (all of them, in seq order, as `Store.events` reads
    them), each ended, the run's last. `blob` reads the requests' parameters."""
    collected = _Collected()
    tracer = _Tracer(collected, resource or default_resource())
    trace: _Trace | None = None
    for event in events:
        if trace is None:
            trace = _Trace(event.run_id, tracer, blob=blob, include_content=include_content)
        trace.feed(event)
    if trace is not None:
        trace.finish()
    return collected.spans


def export(
    journal: Store,
    run_id: str,
    exporter: SpanExporter,
    *,
    include_content: bool = False,
    resource: Resource | None = None,
) -> int:
    """Hand the spans of the run `run_id` to `exporter`, all at once; how many there were.

    ExportFailed when the exporter could not deliver them.
    """
    found = spans(
        journal.events(run_id),
        blob=journal.blob,
        include_content=include_content,
        resource=resource,
    )
    if exporter.export(found) is not SpanExportResult.SUCCESS:
        # Exporters say why in their log (OTLP's: `opentelemetry.exporter...`), not in a result.
        msg = f"the {len(found)} spans of run {run_id} were not delivered"
        raise ExportFailed(msg)
    return len(found)


class Live:
    """Spans made as a run executes: `Options(on_event=Live(processor))`.

    Each batch of events a run commits is taken in; a span goes to `processor` (a
    BatchSpanProcessor, say, or the one your TracerProvider has) as soon as its step, call or
    action ends, the run's when the run stops in this process. A span processor, not a
    TracerProvider: the spans carry the run's ids and times, which a tracer would make up.
    For a run executed from start to end in one process, the spans are those `spans` gives
    afterwards (with the same `blob`); a resume's go under the run's span, which the process
    that started the run sent. Runs executed at once (a worker) each get their own trace.
    """

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        blob: Blob | None = None,
        include_content: bool = False,
        resource: Resource | None = None,
    ) -> None:
        self.blob, self.include_content = blob, include_content
        self._tracer = _Tracer(processor, resource or default_resource())
        self._traces: dict[str, _Trace] = {}
        self._given_up: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, events: Sequence[Event]) -> None:
        with self._lock:
            for event in events:
                if event.run_id in self._given_up:
                    continue
                trace = self._traces.get(event.run_id)
                if trace is None:
                    trace = self._traces[event.run_id] = _Trace(
                        event.run_id,
                        self._tracer,
                        blob=self.blob,
                        include_content=self.include_content,
                    )
                try:
                    trace.feed(event)
                    if event.kind in _STOPS:  # this process tells no more of the run
                        del self._traces[event.run_id]
                        trace.finish()
                except Exception:
                    # Told after the commit, on the run's own thread: spans that cannot be made
                    # must not stop the run. The run's trace is given up, the journal holds it.
                    self._traces.pop(event.run_id, None)
                    self._given_up.add(event.run_id)
                    _log.warning("no more spans of run %s", event.run_id, exc_info=True)
