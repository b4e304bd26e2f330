"""Tests for `ctx.ask` (machine.model): the real SDK against the fake Messages API.

Each fault class of the fake is injected on the first request and the test checks what the run
journaled and how it ended. Waits go to a recording `sleep`, never real time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx2
import pytest
from conftest import ROOT
from sdk_types import problems as sdk_problems

from runjournal.journal import Event, Journal
from runjournal.journal import events as k
from runjournal.machine import (
    Context,
    Machine,
    Models,
    Options,
    Outcome,
    PriceTable,
    Transition,
    Usage,
    runner,
)
from runjournal.machine.kill_switch import Limits
from runjournal.machine.model.pricing import cost
from runjournal.machine.testing import FakeModel, Faults

MODEL = "claude-haiku-4-5"
FORCED = "claude-3-haiku-20240307"
"""A model that gets its answers through a forced tool: no constrained decoding, so the fake's
damaged answers (wrong types, missing fields) can happen to it."""


@attrs.frozen
class Urgency:
    """How urgent a ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


@attrs.frozen
class Tickets:
    texts: tuple[str, ...]
    next: int = 0
    scores: tuple[int, ...] = ()


def scorer(model: str = MODEL, prefix: str = "") -> Machine[Tickets]:
    m = Machine("scorer", state=Tickets, start="score")

    @m.step
    def score(ctx: Context, s: Tickets) -> Transition:
        if s.next == len(s.texts):
            return ctx.finish(s)
        u = ctx.ask(Urgency, system="Score urgency.", prompt=prefix + s.texts[s.next], model=model)
        return ctx.goto("score", attrs.evolve(s, next=s.next + 1, scores=(*s.scores, u.score)))

    return m


class Scripted:
    """A transport whose first requests get the given faults, then good answers; keeps bodies."""

    def __init__(self, *faults: str | None, retry_after: float = 2.0) -> None:
        self.faults = list(faults)
        self.good = FakeModel()
        self.bad = {
            f: FakeModel(faults=Faults({f: 1.0}), retry_after=retry_after) for f in faults if f
        }
        self.bodies: list[dict[str, Any]] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        fault = self.faults.pop(0) if self.faults else None
        model = self.bad[fault] if fault else self.good
        return model.transport().handle_request(request)

    def models(self) -> Models:
        client = anthropic.Anthropic(
            api_key="test-key",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self.handle)),
        )
        return Models(lambda: client, PriceTable.load())


def run(
    journal: Journal,
    models: Models,
    texts: tuple[str, ...] = ("The site is down for everyone",),
    *,
    m: Machine[Tickets] | None = None,
    sleeps: list[float] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> Outcome:
    options = Options(
        models=models,
        sleep=(sleeps if sleeps is not None else []).append,
        seed=1,
        checkpoint=checkpoint or (lambda name: None),
    )
    prepared = runner.prepare(m or scorer(), {"texts": list(texts)})
    return runner.start(journal, prepared, target="test:scorer", code_hash="0", options=options)


def kinds(journal: Journal, run_id: str, *wanted: str) -> list[Event]:
    return list(journal.events(run_id, kinds=wanted))


def test_a_clean_ask_is_journaled_and_priced(journal: Journal) -> None:
    """One request, one answer event with usage and the cost the price table gives."""
    fake = Scripted()
    outcome = run(journal, fake.models())
    assert outcome.run.status == "done"
    (answered,) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    usage = Usage(**answered.data["usage"])
    price = PriceTable.load().price(MODEL)
    assert answered.data["cost_usd"] == float(cost(price, usage))
    assert outcome.run.cost_usd == answered.data["cost_usd"]
    assert outcome.run.model_calls == 1
    assert answered.data["request_id"].startswith("req_fake_")
    # Haiku 4.5 takes JSON outputs: no tool, and the bound the constrained schema cannot hold
    # goes to the description (and is checked after the answer).
    body = fake.bodies[0]
    assert "tools" not in body and "tool_choice" not in body
    score = body["output_config"]["format"]["schema"]["properties"]["score"]
    assert score["type"] == "integer" and "maximum" not in score
    assert '"maximum": 5' in score["description"]
    (requested,) = kinds(journal, outcome.run.run_id, k.MODEL_REQUESTED)
    assert requested.data["mechanism"] == "json_outputs"


def test_a_forced_tool_where_the_model_takes_one(journal: Journal) -> None:
    """Claude 3 Haiku has no constrained decoding: the answer comes through a forced tool,
    with the full schema."""
    fake = Scripted()
    outcome = run(journal, fake.models(), m=scorer(model=FORCED))
    assert outcome.run.status == "done"
    body = fake.bodies[0]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "Urgency",
        "disable_parallel_tool_use": True,
    }
    assert body["tools"][0]["input_schema"]["properties"]["score"]["maximum"] == 5
    (requested,) = kinds(journal, outcome.run.run_id, k.MODEL_REQUESTED)
    assert requested.data["mechanism"] == "forced_tool"


def test_429_waits_what_retry_after_says(journal: Journal) -> None:
    """A 429 with retry-after: 2 is retried once, after a wait of exactly 2 seconds."""
    sleeps: list[float] = []
    outcome = run(journal, Scripted("429").models(), sleeps=sleeps)
    assert outcome.run.status == "done"
    assert sleeps == [2.0]
    (failed,) = kinds(journal, outcome.run.run_id, k.MODEL_FAILED)
    assert failed.data["status"] == 429
    assert failed.data["error_type"] == "rate_limit_error"
    assert failed.data["delay_s"] == 2.0
    assert failed.data["request_id"].startswith("req_fake_")
    assert failed.data["retryable"] is True


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("529", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("503", 503, "api_error"),
        ("reset", None, "connection_error"),
        ("timeout", None, "timeout"),
    ],
)
def test_transport_faults_are_retried_with_backoff(
    journal: Journal, fault: str, status: int | None, error_type: str
) -> None:
    """Overloaded, server errors, resets and timeouts: one failed attempt, a jittered wait, done."""
    sleeps: list[float] = []
    outcome = run(journal, Scripted(fault).models(), sleeps=sleeps)
    assert outcome.run.status == "done"
    (failed,) = kinds(journal, outcome.run.run_id, k.MODEL_FAILED)
    assert (failed.data["status"], failed.data["error_type"]) == (status, error_type)
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 0.5  # full jitter below the first backoff step
    assert [e.data["attempt"] for e in kinds(journal, outcome.run.run_id, k.MODEL_REQUESTED)] == [
        1,
        2,
    ]


def test_a_400_is_sent_exactly_once(journal: Journal) -> None:
    """A bad request is fatal at once: one request, no wait, the run fails saying why."""
    fake = Scripted("400", None, None)
    sleeps: list[float] = []
    outcome = run(journal, fake.models(), sleeps=sleeps)
    assert len(fake.bodies) == 1
    assert sleeps == []
    assert outcome.run.status == "failed"
    assert "not retryable: 400 invalid_request_error" in (outcome.run.error or "")
    (failed,) = kinds(journal, outcome.run.run_id, k.MODEL_FAILED)
    assert failed.data["retryable"] is False
    assert failed.data["delay_s"] is None


def test_retries_run_out(journal: Journal) -> None:
    """An API that stays overloaded: six attempts, five waits, then the run fails naming it
    (with the breaker off: by default it stops such a run first, see test_kill_switch.py)."""
    fake = Scripted(*["529"] * 10)
    sleeps: list[float] = []
    m = scorer()
    m.limits = Limits(breaker=None)
    outcome = run(journal, fake.models(), sleeps=sleeps, m=m)
    assert len(fake.bodies) == 6
    assert len(sleeps) == 5
    assert outcome.run.status == "failed"
    assert "gave up after 6 attempts: 529 overloaded_error" in (outcome.run.error or "")


@pytest.mark.parametrize("fault", ["prose", "fence"])
def test_json_in_prose_or_a_fence_is_found(journal: Journal, fault: str) -> None:
    """An answer in text rather than through the tool is read from the text: no rejection."""
    outcome = run(journal, Scripted(fault).models(), m=scorer(model=FORCED))
    assert outcome.run.status == "done"
    assert kinds(journal, outcome.run.run_id, k.OUTPUT_REJECTED) == []
    (answered,) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    assert answered.data["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("fault", "model", "says"),
    [
        ("wrong_types", FORCED, "expected"),
        ("missing", FORCED, "required field missing"),
        ("empty", FORCED, "the answer was empty"),
        ("empty", MODEL, "the answer was empty"),
    ],
)
def test_a_bad_answer_is_rejected_and_asked_again(
    journal: Journal, fault: str, model: str, says: str
) -> None:
    """The rejection is journaled with the raw output, and the errors go back to the model."""
    fake = Scripted(fault)
    outcome = run(journal, fake.models(), m=scorer(model=model))
    assert outcome.run.status == "done"
    (rejected,) = kinds(journal, outcome.run.run_id, k.OUTPUT_REJECTED)
    assert any(says in error for error in rejected.data["errors"])
    assert rejected.data["round"] == 0
    assert len(fake.bodies) == 2
    feedback = json.dumps(fake.bodies[1]["messages"][-1])
    assert "was not accepted" in feedback
    assert says.split()[0] in feedback
    assert sdk_problems(fake.bodies[1]) == []  # the turns that ask again are the SDK's types
    # Transport and validation never mix: the API's words are not in the prompt, and no wait.
    assert "rate_limit" not in json.dumps(fake.bodies[1])
    assert len(fake.bodies[1]["messages"]) >= 2


def test_answers_that_never_fit_fail_the_step_naming_schema_and_run(journal: Journal) -> None:
    """Three answers missing a field (the first and two retries): the run fails with the last
    errors."""
    fake = Scripted("missing", "missing", "missing", "missing")
    outcome = run(journal, fake.models(), m=scorer(model=FORCED))
    assert len(fake.bodies) == 3
    assert outcome.run.status == "failed"
    error = outcome.run.error or ""
    assert "NoValidAnswer" in error and "did not fit Urgency" in error
    assert outcome.run.run_id in error and "required field missing" in error
    assert len(kinds(journal, outcome.run.run_id, k.OUTPUT_REJECTED)) == 3


def test_a_refusal_fails_the_step_at_once_saying_why(journal: Journal) -> None:
    """A refusal is journaled as one (stop reason, category) and not asked again: the same
    question gets the same classifier's answer."""
    fake = Scripted("refusal")
    outcome = run(journal, fake.models())
    assert len(fake.bodies) == 1
    assert outcome.run.status == "failed"
    error = outcome.run.error or ""
    assert "ModelRefused" in error and "category general_harms" in error
    (answered,) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    assert answered.data["stop_reason"] == "refusal"
    assert answered.data["stop_details"]["category"] == "general_harms"
    (rejected,) = kinds(journal, outcome.run.run_id, k.OUTPUT_REJECTED)
    assert rejected.data["errors"][0].startswith("the model refused (category general_harms)")


def test_a_cut_answer_is_asked_again_with_twice_the_room(journal: Journal) -> None:
    """Cut off at max_tokens: journaled as such, then the same question with twice max_tokens,
    no feedback turn."""
    fake = Scripted("truncated")
    outcome = run(journal, fake.models())
    assert outcome.run.status == "done"
    assert [b["max_tokens"] for b in fake.bodies] == [1024, 2048]
    assert fake.bodies[0]["messages"] == fake.bodies[1]["messages"]
    (answered, _) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    assert answered.data["stop_reason"] == "max_tokens"
    assert answered.data["usage"]["output_tokens"] == 1024  # a cut answer used all its room
    (rejected,) = kinds(journal, outcome.run.run_id, k.OUTPUT_REJECTED)
    assert rejected.data["errors"] == ["the answer was cut off at max_tokens"]


def test_a_cut_answer_at_the_models_most_fails_saying_so(journal: Journal) -> None:
    """Claude 3 Haiku writes at most 4,096 tokens: cut at 2,048, asked again at 4,096, cut again:
    the step fails with AnswerCut, not a generic rejection."""
    fake = Scripted("truncated", "truncated")
    m = scorer(model=FORCED)
    m.max_tokens = 2048
    outcome = run(journal, fake.models(), m=m)
    assert [b["max_tokens"] for b in fake.bodies] == [2048, 4096]
    assert outcome.run.status == "failed"
    error = outcome.run.error or ""
    assert "AnswerCut" in error and "max_tokens 4,096" in error and FORCED in error


def test_an_unknown_model_fails_before_any_request(journal: Journal) -> None:
    """No price, no call: an unknown model is an error, never $0."""
    fake = Scripted()
    outcome = run(journal, fake.models(), m=scorer(model="claude-imaginary-9"))
    assert fake.bodies == []
    assert outcome.run.status == "failed"
    assert "claude-imaginary-9" in (outcome.run.error or "")
    assert outcome.run.cost_usd == 0


def test_a_journaled_answer_is_not_asked_again(journal: Journal) -> None:
    """Interrupted after two answers, the resume asks only for the third ticket."""
    fake = Scripted()
    seen = 0

    def stop_after_two(name: str) -> None:
        nonlocal seen
        if name == "model.answered":
            seen += 1
            if seen == 2:
                raise KeyboardInterrupt

    texts = ("server down", "invoice wrong", "how do I export")
    with pytest.raises(KeyboardInterrupt):
        run(journal, fake.models(), texts, checkpoint=stop_after_two)
    assert len(fake.bodies) == 2
    (run_row,) = journal.runs()
    resumed = runner.resume(
        journal,
        run_row.run_id,
        scorer(),
        target="test:scorer",
        code_hash="0",
        options=Options(models=fake.models(), sleep=[].append),
    )
    assert resumed.run.status == "done"
    assert len(fake.bodies) == 3
    assert resumed.run.model_calls == 3


def resumed_after_first_answer(
    journal: Journal, fake: Scripted, m: Machine[Tickets], models: Models
) -> Outcome:
    """A run of one ticket interrupted once its answer is journaled, resumed with `m`."""

    def stop_at_first_answer(name: str) -> None:
        if name == "model.answered":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(journal, fake.models(), ("server down",), checkpoint=stop_at_first_answer)
    (run_row,) = journal.runs()
    options = Options(models=models, sleep=[].append)
    return runner.resume(
        journal, run_row.run_id, m, target="test:scorer", code_hash="1", options=options
    )


def test_a_changed_prompt_on_resume_is_reported_by_step_and_call(journal: Journal) -> None:
    """The journal answered another question: the step stops instead of reusing the answer."""
    fake = Scripted()
    resumed = resumed_after_first_answer(journal, fake, scorer(prefix="URGENT: "), fake.models())
    assert resumed.run.status == "failed"
    error = resumed.run.error or ""
    assert "step 'score'" in error and "call #0" in error and "request" in error
    assert len(fake.bodies) == 1


def test_cost_with_cache_writes_and_reads_by_hand() -> None:
    """Haiku 4.5: 1,000 in, 2,000 5m writes, 500 1h writes, 30,000 reads, 400 out."""
    usage = Usage.from_api(
        {
            "input_tokens": 1000,
            "output_tokens": 400,
            "cache_creation_input_tokens": 2500,
            "cache_read_input_tokens": 30000,
            "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 500},
        }
    )
    # 1,000 x $1 + 2,000 x $1.25 + 500 x $2 + 30,000 x $0.10 + 400 x $5, per million tokens:
    # 1,000 + 2,500 + 1,000 + 3,000 + 2,000 = 9,500 -> $0.0095
    total = cost(PriceTable.load().price("claude-haiku-4-5"), usage)
    assert total == Decimal("0.0095")
    assert round(float(total), 5) == 0.0095


@pytest.mark.slow
def test_sql_total_equals_the_total_journal_show_gives(tmp_path: Path) -> None:
    """`journal sql` over model_calls and `journal show` agree on a chaos run's cost."""
    from conftest import FIXTURES, cli

    db = tmp_path / "journal.db"
    done = cli(
        "run",
        str(FIXTURES / "triage.py"),
        "--input",
        str(FIXTURES / "tickets.jsonl"),
        "--fake-model",
        "chaos",
        db=db,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    shown = json.loads(cli("show", run_id, "--json", db=db).stdout)
    summed = cli(
        "sql",
        f"select sum(cost_usd) as total from model_calls where run_id = '{run_id}'",
        "--json",
        db=db,
    )
    total = json.loads(summed.stdout)["total"]
    assert shown["cost_usd"] > 0
    assert abs(total - shown["cost_usd"]) < 1e-9
    exact = Decimal(shown["cost_nusd"]) / 1_000_000_000
    assert f"cost ${exact:f}" in cli("show", run_id, db=db).stdout
    by_day = json.loads(cli("cost", "--by", "day", "--json", db=db).stdout)
    assert abs(by_day["cost_usd"] - total) < 1e-9
    # The fake bills a marked prefix as a warm-cache read by default.
    assert shown["cache_read_tokens"] > 0 and shown["cache_write_tokens"] == 0


@attrs.frozen
class Thread:
    """A recursive class: no constrained decoding, so Opus 5.5 answers through a plain tool."""

    text: str
    replies: tuple[Thread, ...] = ()


def threads(model: str) -> Machine[Tickets]:
    m = Machine("threads", state=Tickets, start="read", model=model)

    @m.step
    def read(ctx: Context, s: Tickets) -> Transition:
        t = ctx.ask(Thread, prompt=s.texts[0])
        return ctx.finish(attrs.evolve(s, scores=(len(t.replies),)))

    return m


def test_thinking_goes_back_unchanged_when_an_answer_is_asked_again(journal: Journal) -> None:
    """Opus 5.5 thinks always and takes no forced tool: a plain tool, auto. Its first answer
    misses a field; the second request passes the thinking block back as it came (the fake
    checks its signature, bound to the conversation) with the tool result marked as an error."""
    fake = Scripted("missing")
    outcome = run(journal, fake.models(), m=threads("claude-opus-5-5"))
    assert outcome.run.status == "done", outcome.run.error
    first, second = fake.bodies
    assert first["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "thinking" not in first  # always on: nothing to ask for
    (answered, _) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    thought = answered.data["content"][0]
    assert thought["type"] == "thinking"
    assert sdk_problems(first) == [] and sdk_problems(second) == []
    assistant, result = second["messages"][1:]
    assert assistant["content"][0] == thought
    assert result["content"][0]["is_error"] is True
    assert [e.data["mechanism"] for e in kinds(journal, outcome.run.run_id, k.MODEL_REQUESTED)] == [
        "auto_tool",
        "auto_tool",
    ]


def test_a_request_the_model_refuses_is_not_sent(journal: Journal) -> None:
    """Thinking turned off on Opus 5.5: refused before sending, naming the rule; nothing spent."""
    fake = Scripted()
    m = scorer(model="claude-opus-5-5")
    m.thinking = "disabled"
    outcome = run(journal, fake.models(), m=m)
    assert fake.bodies == []
    assert outcome.run.status == "failed"
    error = outcome.run.error or ""
    assert "RequestRefused" in error and "does not accept thinking 'disabled'" in error
    assert outcome.run.cost_usd == 0 and outcome.run.model_calls == 0


def test_a_large_max_tokens_is_sent_without_streaming(journal: Journal) -> None:
    """The SDK refuses a non-streaming request it expects to take over 10 minutes unless given
    a timeout: asks with 64,000 max_tokens go through."""
    fake = Scripted()
    m = scorer()
    m.max_tokens = 64_000
    outcome = run(journal, fake.models(), m=m)
    assert outcome.run.status == "done", outcome.run.error
    assert fake.bodies[0]["max_tokens"] == 64_000


def test_a_changed_mechanism_on_resume_is_reported_like_any_changed_request(
    journal: Journal, tmp_path: Path
) -> None:
    """Capabilities that change between a crash and its resume (say, an upgrade) change the
    request: the step stops, named by step and call, instead of reusing another question's
    answer."""
    from runjournal.machine.model.capabilities import Capabilities

    fake = Scripted()
    shipped = json.loads((ROOT / "machine/model/capabilities.json").read_text())
    entry = {**shipped["models"][MODEL], "structured_answer": "forced_tool"}
    override = tmp_path / "caps.json"
    override.write_text(json.dumps({"models": {MODEL: entry}}))
    models = attrs.evolve(fake.models(), capabilities=Capabilities.load(override))
    resumed = resumed_after_first_answer(journal, fake, scorer(), models)
    assert resumed.run.status == "failed"
    error = resumed.run.error or ""
    assert "step 'score'" in error and "call #0" in error and "request" in error
    assert len(fake.bodies) == 1


@pytest.mark.parametrize(
    ("asked", "answered", "cache_read"),
    [
        ("2026-10-06T12:00:00", "2026-10-06T12:00:01", "0.20"),
        ("2026-10-08T12:00:00", "2026-10-08T12:00:01", "0.10"),
        ("2026-10-06T23:59:59", "2026-10-07T00:00:01", "0.10"),  # priced the day it was answered
    ],
)
def test_an_answer_is_priced_at_the_prices_of_the_day_it_was_answered(
    tmp_path: Path, asked: str, answered: str, cache_read: str
) -> None:
    """Sonnet 5.5's cache reads cost $0.20 per million tokens before 2026-10-07 and $0.10
    from then on: the cost journaled is that of the day the answer came, to the token."""
    import datetime

    m = Machine("cached", state=Tickets, start="score", model="claude-sonnet-5-5")

    @m.step
    def score(ctx: Context, s: Tickets) -> Transition:
        u = ctx.ask(Urgency, system="Score urgency. " * 50, prompt=s.texts[0], cache_system=True)
        return ctx.finish(attrs.evolve(s, scores=(u.score,)))

    def at(text: str) -> float:
        return datetime.datetime.fromisoformat(f"{text}+00:00").timestamp()

    now = [at(asked)]

    def sent(name: str) -> None:
        if name == "model.before":  # the request is on its way: the answer comes later
            now[0] = at(answered)

    with Journal.open(tmp_path / "journal.db", create=True, clock=lambda: now[0]) as journal:
        outcome = run(journal, Scripted().models(), m=m, checkpoint=sent)
        (event,) = kinds(journal, outcome.run.run_id, k.MODEL_ANSWERED)
    usage = Usage(**event.data["usage"])
    assert usage.cache_read_tokens > 0  # the fake reads a marked prefix from a warm cache
    unread = attrs.evolve(usage, cache_read_tokens=0)
    sonnet = PriceTable.load().price("claude-sonnet-5-5", on=datetime.date(2026, 12, 1))
    read = usage.cache_read_tokens * Decimal(cache_read) / 1_000_000
    assert Decimal(str(event.data["cost_usd"])) == cost(sonnet, unread) + read


@pytest.mark.parametrize("setting", [{"thinking": ["adaptive"]}, {"effort": ["high"]}])
def test_a_setting_of_the_wrong_kind_is_refused_not_a_traceback(
    journal: Journal, setting: dict[str, Any]
) -> None:
    fake = Scripted()
    m = Machine("odd", state=Tickets, start="score", model="claude-haiku-5-5")

    @m.step
    def score(ctx: Context, s: Tickets) -> Transition:
        ctx.ask(Urgency, prompt="x", **setting)
        return ctx.finish(s)

    outcome = run(journal, fake.models(), m=m)
    assert fake.bodies == []
    assert outcome.run.status == "failed"
    assert "RequestRefused" in (outcome.run.error or "")
