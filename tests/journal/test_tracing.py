"""Tests for `journal.tracing`: a run's events as OpenTelemetry spans.

The triage example is run once, offline against the fake model with its chaos (retries,
rejected answers), with a live exporter attached; the spans exported from the journal
afterwards are held to the journal's own figures, to the GenAI conventions' names, and to the
live spans. Small made-up runs show what a failure and a crash become.
"""

from __future__ import annotations

import importlib
import itertools
import json
import sys
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from opentelemetry.trace import StatusCode

from runjournal.journal import Event, Store, open_store, tracing
from runjournal.journal.errors import BackendMissing
from runjournal.machine import Models, Options, PriceTable, loader
from runjournal.machine.api import run
from runjournal.machine.testing.fake import FakeModel, parse_spec

RUN = "0123456789ab"


class Blobs:
    """A blob reader for the live exporter: a read-only store, opened once the journal exists
    (the first batch is told after the run is created)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.store: Store | None = None

    def __call__(self, ref: str) -> str:
        if self.store is None:
            self.store = open_store(self.db, readonly=True)
        return self.store.blob(ref)


class Triage:
    """The triage run: its id, its journal, and the spans the live exporter sent."""

    def __init__(self, db: Path, run_id: str, live: list[ReadableSpan]) -> None:
        self.db, self.run_id, self.live = db, run_id, live

    def exported(self, **options: Any) -> list[ReadableSpan]:
        with open_store(self.db, readonly=True) as journal:
            return tracing.spans(journal.events(self.run_id), blob=journal.blob, **options)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with open_store(self.db, readonly=True) as journal:
            return list(journal.query(sql, (self.run_id,)).rows)

    def blob(self, ref: str) -> str:
        with open_store(self.db, readonly=True) as journal:
            return journal.blob(ref)

    def events(self) -> list[Event]:
        with open_store(self.db, readonly=True) as journal:
            return list(journal.events(self.run_id))


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triage]:
    folder = tmp_path_factory.mktemp("triage")
    db = folder / "journal.db"
    fake = FakeModel(retry_after=0.0)
    fake.set_faults(parse_spec("chaos"))
    received = InMemorySpanExporter()
    blobs = Blobs(db)
    live = tracing.Live(SimpleSpanProcessor(received), blob=blobs)
    options = Options(
        models=Models(fake.client, PriceTable.load()), sleep=lambda s: None, on_event=live
    )
    machine = loader.load(str(FIXTURES / "triage.py")).machine
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the pager writes its pages into ./outbox
        outcome = run(machine, FIXTURES / "tickets.jsonl", db=db, options=options)
    assert outcome.run.status == "done"
    yield Triage(db, outcome.run.run_id, list(received.get_finished_spans()))
    if blobs.store is not None:
        blobs.store.close()


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def ns(at: str) -> int:
    return tracing._ns(at)


def test_one_chat_span_per_answer_with_the_journals_tokens_and_cost(triage: Triage) -> None:
    """Each `model.answered` is one `chat {model}` span, whose tokens and cost are the row of
    `model_calls` of its seq; the run's span carries the run's exact cost."""
    spans = triage.exported()
    chats = {attrs_of(s)["runjournal.seq"]: attrs_of(s) for s in named(spans, "chat ")}
    rows = triage.query(
        "SELECT seq, model, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, "
        "cost_usd FROM model_calls WHERE run_id = ? ORDER BY seq"
    )
    assert rows and sorted(chats) == [row[0] for row in rows]
    for seq, model, uncached, output, written, read, cost in rows:
        span = chats[seq]
        assert span[semconv.GEN_AI_REQUEST_MODEL] == model
        assert span[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == output
        # The conventions count cached input tokens in input_tokens; the API does not.
        assert span[semconv.GEN_AI_USAGE_INPUT_TOKENS] == uncached + written + read
        assert span[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == written
        assert span[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == read
        assert span["runjournal.cost_usd"] == cost
        request = json.loads(triage.blob(str(span["runjournal.request"])))
        assert span[semconv.GEN_AI_REQUEST_MAX_TOKENS] == request["max_tokens"] >= 300
    ((billed, nusd),) = triage.query("SELECT cost_usd, cost_nusd FROM runs WHERE run_id = ?")
    ((by_run,),) = triage.query("SELECT cost_usd FROM cost_by_run WHERE run = ?")
    (root,) = named(spans, "run ")
    assert attrs_of(root)["runjournal.cost_usd"] == float(Decimal(nusd) / 1_000_000_000)
    assert attrs_of(root)["runjournal.cost_usd"] == pytest.approx(by_run) == billed
    assert sum(span["runjournal.cost_usd"] for span in chats.values()) == pytest.approx(by_run)


def test_attribute_names_are_the_conventions(triage: Triage) -> None:
    """Every `gen_ai.*` name is a constant of the installed semantic conventions; the rest are
    ours (`runjournal.*`) or `error.type`; the deprecated `gen_ai.system` is never used."""
    known = {v for name, v in vars(semconv).items() if name.startswith("GEN_AI_")}
    spans = triage.exported(include_content=True)
    names = {key for span in spans for key in attrs_of(span)}
    names |= {key for span in spans for event in span.events for key in event.attributes or {}}
    gen_ai = {name for name in names if name.startswith("gen_ai.")}
    assert gen_ai <= known, gen_ai - known
    assert semconv.GEN_AI_SYSTEM not in names
    assert {n for n in names - gen_ai if not n.startswith("runjournal.")} <= {"error.type"}
    ours = {
        tracing.OPERATION_NAME: semconv.GEN_AI_OPERATION_NAME,
        tracing.PROVIDER_NAME: semconv.GEN_AI_PROVIDER_NAME,
        tracing.REQUEST_MODEL: semconv.GEN_AI_REQUEST_MODEL,
        tracing.RESPONSE_FINISH_REASONS: semconv.GEN_AI_RESPONSE_FINISH_REASONS,
        tracing.INPUT_TOKENS: semconv.GEN_AI_USAGE_INPUT_TOKENS,
        tracing.OUTPUT_TOKENS: semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
        tracing.CACHE_CREATION_TOKENS: semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        tracing.CACHE_READ_TOKENS: semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        tracing.REASONING_TOKENS: semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        tracing.INPUT_MESSAGES: semconv.GEN_AI_INPUT_MESSAGES,
        tracing.OUTPUT_MESSAGES: semconv.GEN_AI_OUTPUT_MESSAGES,
        tracing.SYSTEM_INSTRUCTIONS: semconv.GEN_AI_SYSTEM_INSTRUCTIONS,
        **{name: name for name in tracing.REQUEST_PARAMETERS.values()},
    }
    assert all(a == b for a, b in ours.items()) and set(ours) <= known
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the values moved, not changed
        assert semconv.GenAiOperationNameValues.CHAT.value == tracing.CHAT
        assert semconv.GenAiProviderNameValues.ANTHROPIC.value == tracing.ANTHROPIC
    for chat in named(spans, "chat "):
        a = attrs_of(chat)
        assert chat.name == f"chat {a['gen_ai.request.model']}"
        assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"]) == ("chat", "anthropic")
        assert isinstance(a["runjournal.seq"], int) and a["runjournal.run_id"] == triage.run_id
        assert a["runjournal.step"] == "score"


def test_spans_nest_run_step_call(triage: Triage) -> None:
    """One root, the run; each step's parent is the run; each call's and action's a step."""
    spans = triage.exported()
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "run triage"
    assert {s.context.trace_id for s in spans} == {tracing.trace_id(triage.run_id)}
    ((visits, calls, actions),) = triage.query(
        "SELECT steps, model_calls, actions FROM runs WHERE run_id = ?"
    )
    steps = {s.context.span_id for s in named(spans, "step ")}
    assert len(steps) == visits == 61  # 60 tickets, and the visit that finds none left
    assert all(s.parent and s.parent.span_id == root.context.span_id for s in named(spans, "step "))
    children = named(spans, "chat ") + named(spans, "action ")
    assert len(children) == calls + actions
    assert all(s.parent is not None and s.parent.span_id in steps for s in children)
    assert len({s.context.span_id for s in spans}) == len(spans) == 1 + visits + calls + actions


def test_times_are_the_events(triage: Triage) -> None:
    """A call spans its first request to its answer; steps tile the run, from run.started to
    run.done; no time is the export's."""
    events = triage.events()
    spans = triage.exported()
    (root,) = named(spans, "run ")
    assert (root.start_time, root.end_time) == (ns(events[0].at), ns(events[-1].at))
    steps = sorted(named(spans, "step "), key=lambda s: s.start_time or 0)
    assert steps[0].start_time == root.start_time
    assert (steps[-1].end_time or 0) <= (root.end_time or 0)
    assert all(a.end_time == b.start_time for a, b in itertools.pairwise(steps))
    by_seq = {e.seq: e for e in events}
    for chat in named(spans, "chat "):
        a = attrs_of(chat)
        answered = by_seq[a["runjournal.seq"]]
        first = min(
            e.seq
            for e in events
            if e.kind == "model.requested"
            and (e.data["call"], e.data["round"]) == (answered.data["call"], a["runjournal.round"])
        )
        assert (chat.start_time, chat.end_time) == (ns(by_seq[first].at), ns(answered.at))


def test_retries_are_span_events_of_their_call(triage: Triage) -> None:
    """The chaos's failed attempts are events of the call that went on to an answer; each
    decision and rejected answer is an event of its step."""
    spans = triage.exported()
    failures = [e for s in named(spans, "chat ") for e in s.events if e.name == "model.failed"]
    (count,) = triage.query("SELECT count(*) FROM model_failures WHERE run_id = ?")[0]
    assert len(failures) == count > 0
    retried = [s for s in named(spans, "chat ") if any(e.name == "model.failed" for e in s.events)]
    assert all(s.status.status_code is StatusCode.UNSET for s in retried)
    assert all(len({e.name for e in s.events}) == 2 for s in retried)
    steps = named(spans, "step ")
    decisions = [e for s in steps for e in s.events if e.name == "decision"]
    assert len(decisions) == 60
    assert {(e.attributes or {})["runjournal.outcome"] for e in decisions} == {"page", "skip"}
    rejected = [e for s in steps for e in s.events if e.name == "output.rejected"]
    assert len(rejected) == triage.query("SELECT count(*) FROM rejections WHERE run_id = ?")[0][0]


def test_exporting_twice_gives_the_same_trace(triage: Triage) -> None:
    """Ids and times come from the run: a second export is the same trace, span for span."""
    first, second = triage.exported(), triage.exported()
    assert [shape(s) for s in first] == [shape(s) for s in second]


def test_the_live_exporter_sends_the_spans_the_export_gives(triage: Triage) -> None:
    """`Options(on_event=Live(...))`, for a run executed in one process, sent what the export
    gives from the journal afterwards: names, ids, parents, times, attributes, events."""
    assert len(triage.live) == len(triage.exported()) > 100
    assert sorted(map(shape, triage.live)) == sorted(map(shape, triage.exported()))


def test_content_is_left_out_unless_asked_for(triage: Triage) -> None:
    """No prompt and no answer by default; `include_content` adds them as the conventions'
    messages."""
    prompt = "You triage support tickets"
    answers = [
        block["text"]
        for e in triage.events()
        if e.kind == "model.answered"
        for block in e.data["content"]
        if len(block.get("text", "")) > 20
    ]
    spans = triage.exported()
    plain = json.dumps(
        [attrs_of(s) for s in spans] + [dict(e.attributes or {}) for s in spans for e in s.events]
    )
    assert answers and not [text for text in answers if text in plain]
    assert prompt not in plain
    (chat, *_) = named(triage.exported(include_content=True), "chat ")
    a = attrs_of(chat)
    assert prompt in json.loads(a[semconv.GEN_AI_SYSTEM_INSTRUCTIONS])[0]["content"]
    (message,) = json.loads(a[semconv.GEN_AI_INPUT_MESSAGES])
    assert message["role"] == "user" and message["parts"][0]["type"] == "text"
    (answer,) = json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert answer["role"] == "assistant" and answer["finish_reason"] == a["runjournal.stop_reason"]


def shape(span: ReadableSpan) -> tuple[Any, ...]:
    """Everything a receiver gets of a span, comparable."""
    return (
        span.name,
        span.context.trace_id,
        span.context.span_id,
        span.parent.span_id if span.parent else None,
        span.kind,
        span.start_time,
        span.end_time,
        span.status.status_code,
        span.status.description,
        sorted(attrs_of(span).items(), key=repr),
        [
            (e.name, e.timestamp, sorted((e.attributes or {}).items(), key=repr))
            for e in span.events
        ],
    )


# Made-up runs: a failure, a crash


def at(seq: int) -> str:
    return f"2026-12-01T10:00:{seq:02d}.250Z"


def event(seq: int, kind: str, step: str | None = "ask", **data: Any) -> Event:
    return Event(RUN, seq, at(seq), kind, step, data)


def ask(seq: int, kind: str, attempt: int = 1, **data: Any) -> Event:
    place = {"call": "#1", "name": "Answer", "round": 0, "attempt": attempt, "model": "m-1"}
    return Event(RUN, seq, at(seq), kind, "ask", {**place, **data})


STARTED = event(1, "run.started", None, machine="m", target="m.py:m", code_hash="c", to_step="ask")


def test_a_call_given_up_fails_its_step_and_the_run() -> None:
    """A failure no retry follows ends its call with error.type; the run's failure is the
    step's and the run's error."""
    spans = tracing.spans(
        [
            STARTED,
            ask(2, "model.requested", request="sha256:none"),
            ask(
                3,
                "model.failed",
                status=400,
                error_type="invalid_request_error",
                message="prompt is too long",
                retryable=False,
                delay_s=None,
            ),
            event(4, "run.failed", error="ModelCallFailed: prompt is too long"),
        ]
    )
    (chat,) = named(spans, "chat ")
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.status.description == "prompt is too long"
    assert attrs_of(chat)["error.type"] == "invalid_request_error"
    assert [e.name for e in chat.events] == ["model.requested", "model.failed"]
    (step,) = named(spans, "step ")
    (root,) = named(spans, "run ")
    for span in (step, root):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ModelCallFailed: prompt is too long"
        assert attrs_of(span)["runjournal.ended_by"] == "run.failed"
    assert (root.start_time, root.end_time) == (ns(STARTED.at), ns(at(4)))


def test_a_crash_ends_the_visit_and_the_resume_opens_another() -> None:
    """A request with no outcome when its process died is an unfinished call, ended where the
    run was last seen; the resume's step visit is a span of its own under the same run."""
    spans = tracing.spans(
        [
            STARTED,
            ask(2, "model.requested"),
            event(
                3,
                "run.resumed",
                None,
                status_before="running",
                code_hash_before="c",
                code_hash="c",
                target="m.py:m",
                from_seq=1,
            ),
            ask(4, "model.requested"),
            ask(
                5,
                "model.answered",
                usage={"input_tokens": 10, "output_tokens": 2},
                cost_usd=0.00001,
                stop_reason="end_turn",
                request_hash="h",
                content=[],
                latency_ms=1.0,
            ),
            event(6, "transition", to_step=None, delta=[]),
            event(7, "cost.anomaly", metric="input_tokens_per_step", value=10.0),
            event(8, "run.done", steps=1),
        ]
    )
    (root,) = named(spans, "run ")
    first, second = sorted(named(spans, "step "), key=lambda s: s.start_time or 0)
    assert attrs_of(first)["runjournal.ended_by"] == "run.resumed"
    assert (first.start_time, first.end_time) == (ns(STARTED.at), ns(at(2)))
    assert attrs_of(second)["runjournal.ended_by"] == "transition"
    assert second.start_time == ns(at(3))
    lost, answered = sorted(named(spans, "chat "), key=lambda s: s.start_time or 0)
    assert lost.status.status_code is StatusCode.ERROR and lost.parent == first.context
    assert answered.status.status_code is StatusCode.UNSET and answered.parent == second.context
    assert attrs_of(answered)[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert all(s.parent == root.context for s in (first, second))
    assert root.status.status_code is StatusCode.UNSET
    assert [e.name for e in root.events] == ["run.resumed", "cost.anomaly", "run.done"]


def test_spans_that_cannot_be_made_never_stop_the_run(caplog: pytest.LogCaptureFixture) -> None:
    """A live exporter that fails (here its blob reader) logs it and gives the run's trace up;
    the run, whose thread tells it, goes on."""

    def unreadable(ref: str) -> str:
        raise RuntimeError("no blobs here")

    received = InMemorySpanExporter()
    live = tracing.Live(SimpleSpanProcessor(received), blob=unreadable)
    live([STARTED, ask(2, "model.requested", request="sha256:0")])
    live([ask(3, "model.answered", usage={}, cost_usd=0.0, stop_reason="end_turn")])
    assert received.get_finished_spans() == ()
    assert f"no more spans of run {RUN}" in caplog.text


def test_without_the_sdk_the_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing `journal.tracing` where OpenTelemetry is missing raises BackendMissing, whose
    message says what to install; `journal` itself never imports it."""
    monkeypatch.delitem(sys.modules, "runjournal.journal.tracing")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(BackendMissing, match=r"pip install 'runjournal\[otel\]'"):
        importlib.import_module("runjournal.journal.tracing")
