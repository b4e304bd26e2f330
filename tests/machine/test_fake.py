"""Tests for `machine.testing.fake`, driven through the real `anthropic` SDK."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from conftest import journal_command

from runjournal.cli.fake import fake_model
from runjournal.machine.testing._fake_limits import delay
from runjournal.machine.testing.fake import (
    CHAOS,
    FAULTS,
    PROMPT_CACHES,
    FakeModel,
    FakeSpecError,
    Faults,
    Reply,
    parse_spec,
    serve,
)

MODEL = "claude-haiku-4-5"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "weight": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "count": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 13},
        "level": {"enum": ["low", "mid", "high"]},
        "kind": {"const": "ticket"},
        "reason": {"type": "string", "description": "One sentence on why."},
        "code": {"type": "string", "minLength": 3, "maxLength": 6},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "owner": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Person"}]},
        "urgent": {"type": "boolean"},
    },
    "required": ["score", "level", "reason", "owner"],
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}},
            "required": ["name"],
        }
    },
}
TOOL = {"name": "triage", "description": "Score a ticket.", "input_schema": SCHEMA}


def forced(prompt: str = "Ticket 1: the site is down.", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "triage"},
        **extra,
    }


def free(prompt: str = "Say something.", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def ask(model: FakeModel, request: dict[str, Any]) -> anthropic.types.Message:
    message: anthropic.types.Message = model.client().messages.create(**request)
    return message


def with_fault(fault: str) -> FakeModel:
    return FakeModel(faults=parse_spec(f"{fault}=1"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    with serve(FakeModel(), log=tmp_path / "requests.jsonl") as s:
        yield s


def check_input(value: dict[str, Any]) -> None:
    """The assertions SCHEMA makes, written out."""
    assert set(value) == set(SCHEMA["properties"])
    assert isinstance(value["score"], int) and 1 <= value["score"] <= 5
    assert isinstance(value["weight"], float) and 0 < value["weight"] < 1
    assert value["count"] in (11, 12)
    assert value["level"] in ("low", "mid", "high")
    assert value["kind"] == "ticket"
    assert isinstance(value["reason"], str) and value["reason"].endswith(".")
    assert 3 <= len(value["code"]) <= 6
    assert len(value["tags"]) == 2 and all(isinstance(t, str) and t for t in value["tags"])
    assert isinstance(value["owner"]["name"], str) and value["owner"]["age"] >= 18
    assert isinstance(value["urgent"], bool)


def test_forced_tool_input_fits_schema() -> None:
    """A request forcing a tool gets one tool_use whose input fits the schema, for many prompts."""
    model = FakeModel()
    for n in range(25):
        message = ask(model, forced(f"Ticket {n}"))
        assert message.stop_reason == "tool_use"
        assert message.type == "message" and message.role == "assistant"
        assert message.model == MODEL and message.stop_sequence is None
        assert message.id.startswith("msg_fake_")
        [block] = message.content
        assert block.type == "tool_use" and block.name == "triage"
        assert block.id.startswith("toolu_")
        check_input(block.input)


def test_free_text_answer() -> None:
    """Without a forced tool the answer is a sentence in one text block, ending the turn."""
    message = ask(FakeModel(), free())
    [block] = message.content
    assert block.type == "text" and block.text.endswith(".") and " " in block.text
    assert message.stop_reason == "end_turn"
    assert message._request_id is not None and message._request_id.startswith("req_fake_")


def test_responder_answers() -> None:
    """A responder gives the tool input or the text, and sees the request body."""
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Any:
        seen.append(body)
        return {"score": 4} if "tools" in body else "Hello."

    model = FakeModel(responder=responder)
    assert ask(model, forced()).content[0].input == {"score": 4}  # type: ignore[union-attr]
    assert ask(model, free()).content[0].text == "Hello."  # type: ignore[union-attr]
    assert seen[0]["tool_choice"]["name"] == "triage"


def broken(body: dict[str, Any]) -> Any:
    raise KeyError("score")


@pytest.mark.parametrize(
    ("responder", "says"),
    [(lambda body: "not a dict", "needs a dict"), (broken, "raised KeyError: 'score'")],
)
def test_responder_failure_is_a_500_not_retried(responder: Any, says: str) -> None:
    """A responder that raises or returns the wrong type gets a 500 saying so, not retried."""
    with pytest.raises(anthropic.InternalServerError) as caught:
        ask(FakeModel(responder=responder), forced())
    assert says in str(caught.value)
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_answers_are_deterministic_across_instances() -> None:
    """Two fakes with the same seed give the same answer; another seed gives another."""
    first = ask(FakeModel(), forced()).model_dump()
    second = ask(FakeModel(), forced()).model_dump()
    other = ask(FakeModel(faults=Faults({}, seed=1)), forced()).model_dump()
    assert first == second
    assert first["content"] != other["content"]


ERRORS = [
    ("429", 429, "rate_limit_error", anthropic.RateLimitError),
    ("529", 529, "overloaded_error", anthropic.OverloadedError),
    ("500", 500, "api_error", anthropic.InternalServerError),
    ("503", 503, "api_error", anthropic.InternalServerError),
    ("400", 400, "invalid_request_error", anthropic.BadRequestError),
]


@pytest.mark.parametrize(("fault", "status", "kind", "error"), ERRORS)
def test_error_faults(fault: str, status: int, kind: str, error: type[Exception]) -> None:
    """Each error fault raises the SDK's error, with the API's error body and a request id."""
    model = with_fault(fault)
    with pytest.raises(error) as caught:
        ask(model, forced())
    e = caught.value
    assert isinstance(e, anthropic.APIStatusError)
    assert e.status_code == status and e.type == kind
    assert e.request_id == model.requests[0].request_id and e.request_id.startswith("req_fake_")
    assert isinstance(e.body, dict)
    assert e.body["type"] == "error" and e.body["request_id"] == e.request_id
    assert (e.response.headers.get("retry-after") == "2") == (fault == "429")
    assert model.requests[0].fault == fault


def test_retry_after_is_configurable() -> None:
    """The 429 retry-after header carries the fake's retry_after, in seconds."""
    model = FakeModel(faults=parse_spec("429=1"), retry_after=0.25)
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(model, free())
    assert caught.value.response.headers["retry-after"] == "0.25"


def test_reset_and_timeout_in_process() -> None:
    """In-process, reset is a connection error and timeout a timeout, both without a status."""
    with pytest.raises(anthropic.APIConnectionError) as reset:
        ask(with_fault("reset"), forced())
    assert not isinstance(reset.value, anthropic.APITimeoutError)
    assert isinstance(reset.value.__cause__, httpx2.ConnectError)
    with pytest.raises(anthropic.APITimeoutError):
        ask(with_fault("timeout"), forced())


def text_of(message: anthropic.types.Message) -> str:
    [block] = message.content
    assert block.type == "text"
    return block.text


def test_output_faults_through_the_sdk() -> None:
    """Each output fault gives the content and stop_reason it promises."""
    good = ask(FakeModel(), forced()).content[0].input  # type: ignore[union-attr]

    prose = ask(with_fault("prose"), forced())
    text = text_of(prose)
    assert prose.stop_reason == "end_turn" and not text.startswith("{")
    assert json.loads(text[text.index("{") : text.rindex("}") + 1]) == good

    fence = text_of(ask(with_fault("fence"), forced()))
    assert fence.startswith("```json\n") and fence.endswith("\n```")
    assert json.loads(fence.removeprefix("```json\n").removesuffix("\n```")) == good

    wrong = ask(with_fault("wrong_types"), forced())
    [use] = wrong.content
    assert use.type == "tool_use" and wrong.stop_reason == "tool_use"
    changed = [k for k in good if use.input[k] != good[k]]
    assert len(changed) == 1 and type(use.input[changed[0]]) is not type(good[changed[0]])

    missing = ask(with_fault("missing"), forced())
    [use] = missing.content
    assert use.type == "tool_use"
    assert len(set(good) - set(use.input)) == 1 and set(good) - set(use.input) <= {
        "score",
        "level",
        "reason",
        "owner",
    }

    empty = ask(with_fault("empty"), forced())
    assert empty.content == [] and empty.stop_reason == "end_turn"
    assert empty.usage.output_tokens >= 1

    truncated = ask(with_fault("truncated"), forced())
    assert truncated.stop_reason == "max_tokens"
    whole = json.dumps(good)
    assert whole.startswith(text_of(truncated)) and len(text_of(truncated)) < len(whole)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(truncated))

    refusal = ask(with_fault("refusal"), forced())
    assert refusal.stop_reason == "refusal" and text_of(refusal)


def test_output_faults_on_free_text() -> None:
    """On free text, wrong_types/missing/prose/fence give a good answer logged as no fault."""
    good = text_of(ask(FakeModel(), free()))
    for fault in ("wrong_types", "missing", "prose", "fence"):
        model = with_fault(fault)
        assert text_of(ask(model, free())) == good
        assert model.requests[0].fault is None
    truncated = ask(with_fault("truncated"), free())
    assert truncated.stop_reason == "max_tokens" and good.startswith(text_of(truncated))


def faults_seen(spec: str, times: int) -> list[str | None]:
    model = FakeModel(faults=parse_spec(spec), timeout_seconds=0)
    client = model.client()
    for _ in range(times):
        with contextlib.suppress(anthropic.APIError):
            client.messages.create(**forced())
    assert [s.times for s in model.requests] == list(range(1, times + 1))
    assert len({s.body_hash for s in model.requests}) == 1
    return [s.fault for s in model.requests]


def test_fault_sequence_replays_in_a_fresh_instance() -> None:
    """Repeated identical requests draw afresh each time, and a fresh fake replays the draws."""
    first = faults_seen("errors=0.4,reset=0.1,garbage=0.3,seed=3", 30)
    assert first == faults_seen("errors=0.4,reset=0.1,garbage=0.3,seed=3", 30)
    assert None in first and len(set(first)) > 3
    assert first != faults_seen("errors=0.4,reset=0.1,garbage=0.3,seed=4", 30)


def test_parse_spec_examples() -> None:
    """The documented specs parse; groups spread their rate evenly."""
    faults = parse_spec("429=0.2,garbage=0.1,seed=7")
    assert faults.seed == 7 and faults.rates["429"] == 0.2
    assert all(math.isclose(faults.rates[n], 0.1 / 6) for n in ("prose", "empty", "truncated"))
    assert parse_spec("errors=0.4").rates == {
        n: pytest.approx(0.1) for n in ("429", "529", "500", "503")
    }
    assert parse_spec("none") == Faults({}, seed=0)
    chaos = parse_spec("chaos")
    assert chaos.rates == CHAOS and chaos.seed == parse_spec("chaos").seed
    assert "400" not in chaos.rates and "refusal" not in chaos.rates
    assert {"reset", "timeout", "429", "prose"} <= set(chaos.rates)
    assert parse_spec(" chaos , seed=3 ").seed == 3


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nope=0.1", "unknown fault 'nope'"),
        ("429=1.5", "outside [0, 1]"),
        ("429=-0.1", "outside [0, 1]"),
        ("429=nan", "outside [0, 1]"),
        ("429=0.6,500=0.6", "above 1"),
        ("429", "not name=rate"),
        ("429=lots", "must be a number"),
        ("seed=x", "seed must be an integer"),
        ("", "empty item"),
        ("429=0.1,", "empty item"),
        ("chaos,429=0.1", "cannot be combined"),
        ("429=0.1,429=0.2", "given twice"),
    ],
)
def test_parse_spec_rejects(spec: str, says: str) -> None:
    """A bad spec raises FakeSpecError: one line, saying what is wrong, listing valid names."""
    with pytest.raises(FakeSpecError) as caught:
        parse_spec(spec)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "valid names: " + ", ".join(FAULTS) in message and "garbage" in message


def test_faults_validate_when_built_directly() -> None:
    """Faults checks its rates too, and they cannot be changed afterwards."""
    with pytest.raises(FakeSpecError, match="unknown fault 'garbage'"):
        Faults({"garbage": 0.1})
    faults = Faults({"429": 0.5})
    with pytest.raises(TypeError):
        faults.rates["429"] = 1.0  # type: ignore[index]


def test_401_without_a_key() -> None:
    """A request without x-api-key or a bearer token gets 401 authentication_error."""
    client = FakeModel().client()
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(**forced(), extra_headers={"Authorization": anthropic.omit})
    assert caught.value.type == "authentication_error"
    ok = FakeModel().handle(json.dumps(free()).encode(), {"X-Api-Key": "k"})
    assert getattr(ok, "status", None) == 200


def test_400_for_bad_bodies() -> None:
    """Not JSON, or a body missing model, max_tokens or messages, gets 400 invalid_request_error."""
    model = FakeModel()
    headers = {"x-api-key": "k"}
    for body, says in [
        (b"{not json", "JSON object"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), "max_tokens: Field required"),
        (json.dumps({**free(), "stream": True}).encode(), "non-streaming"),
        (json.dumps({**forced(), "tool_choice": {"type": "tool", "name": "x"}}).encode(), "x"),
    ]:
        reply = model.handle(body, headers)
        assert getattr(reply, "status", None) == 400
        error = reply.body["error"]  # type: ignore[union-attr]
        assert error["type"] == "invalid_request_error" and says in error["message"]
    assert [s.fault for s in model.requests] == [None] * 4


def cached_request(prompt: str, ttl: str | None = None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    system = [{"type": "text", "text": "s" * 800, "cache_control": control}]
    return {**free(prompt), "system": system}


def test_usage_counts_characters_over_four() -> None:
    """input_tokens is the prompt's characters / 4, output_tokens the answer's; no cache fields."""
    message = ask(FakeModel(), {**free("u" * 40), "system": "s" * 400})
    usage = message.usage
    assert usage.input_tokens == 110
    assert usage.output_tokens == math.ceil(len(text_of(message)) / 4)
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert ask(FakeModel(), free("")).usage.input_tokens == 1


def marked_twice(prompt: str) -> dict[str, Any]:
    """A request whose system (800 characters) and first user block (400) both have
    cache_control; the second ends the cached prefix, and `prompt` follows it."""
    mark = {"type": "ephemeral"}
    system = [{"type": "text", "text": "s" * 800, "cache_control": mark}]
    content = [
        {"type": "text", "text": "d" * 400, "cache_control": mark},
        {"type": "text", "text": prompt},
    ]
    return {**free(), "system": system, "messages": [{"role": "user", "content": content}]}


def test_warm_prompt_cache_always_reads() -> None:
    """By default the prompt up to the last cache_control is read, the first time too."""
    assert FakeModel().prompt_cache == "warm"
    model = FakeModel()
    for prompt in ("u" * 40, "u" * 40, "v" * 80):
        usage = ask(model, cached_request(prompt, ttl="1h")).usage
        assert usage.cache_read_input_tokens == 200 and usage.cache_creation_input_tokens == 0
        assert usage.cache_creation is not None
        assert usage.cache_creation.ephemeral_5m_input_tokens == 0
        assert usage.cache_creation.ephemeral_1h_input_tokens == 0
        assert usage.input_tokens == len(prompt) // 4
    usage = ask(FakeModel(), marked_twice("w" * 40)).usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (300, 0)
    assert usage.input_tokens == 10


def test_cold_prompt_cache_always_writes() -> None:
    """With prompt_cache="cold" the prefix is written every time, at its TTL."""
    model = FakeModel(prompt_cache="cold")
    for prompt in ("u" * 40, "u" * 40):
        usage = ask(model, cached_request(prompt)).usage
        assert usage.cache_creation_input_tokens == 200 and usage.cache_read_input_tokens == 0
        assert usage.cache_creation is not None
        assert usage.cache_creation.ephemeral_5m_input_tokens == 200
        assert usage.cache_creation.ephemeral_1h_input_tokens == 0
        assert usage.input_tokens == 10
    long = ask(model, cached_request("u", ttl="1h")).usage
    assert long.cache_creation is not None
    assert long.cache_creation.ephemeral_1h_input_tokens == 200
    assert long.cache_creation.ephemeral_5m_input_tokens == 0
    usage = ask(model, marked_twice("w" * 40)).usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 300)


def test_instance_prompt_cache_written_then_read() -> None:
    """With prompt_cache="instance" a prefix is written the first time this fake sees it,
    then read; a longer prefix that starts with a cached one reads that part."""
    model = FakeModel(prompt_cache="instance")
    first = ask(model, cached_request("u" * 40)).usage
    assert first.cache_creation_input_tokens == 200 and first.cache_read_input_tokens == 0
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == 200
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.input_tokens == 10
    again = ask(model, cached_request("v" * 80)).usage
    assert again.cache_read_input_tokens == 200 and again.cache_creation_input_tokens == 0
    assert again.input_tokens == 20
    longer = ask(model, marked_twice("w")).usage
    assert (longer.cache_read_input_tokens, longer.cache_creation_input_tokens) == (200, 100)
    fresh = ask(FakeModel(prompt_cache="instance"), cached_request("u" * 40, ttl="1h")).usage
    assert fresh.cache_creation is not None
    assert fresh.cache_creation.ephemeral_1h_input_tokens == 200
    assert fresh.cache_creation.ephemeral_5m_input_tokens == 0


def test_failed_request_writes_no_cache() -> None:
    """A request that errored was never processed: the next one still writes the cache."""
    model = FakeModel(faults=parse_spec("429=0.5,seed=1"), prompt_cache="instance")
    usages = []
    for _ in range(8):
        with contextlib.suppress(anthropic.RateLimitError):
            usages.append(ask(model, cached_request("u")).usage)
    assert usages and usages[0].cache_creation_input_tokens == 200
    assert all(u.cache_read_input_tokens == 200 for u in usages[1:])


def test_an_unknown_prompt_cache_is_refused() -> None:
    assert PROMPT_CACHES == ("warm", "cold", "instance")
    with pytest.raises(ValueError, match="'hot'"):
        FakeModel(prompt_cache="hot")  # type: ignore[arg-type]


# A run's requests: cached prefixes, repeated and not, with both TTLs, and uncached ones.
RUN = [
    cached_request("ticket 1"),
    cached_request("ticket 2", ttl="1h"),
    free("no cache"),
    marked_twice("ticket 3"),
    cached_request("ticket 1"),
    cached_request("ticket 4"),
    marked_twice("ticket 5"),
    cached_request("ticket 2", ttl="1h"),
    forced(
        "ticket 6",
        system=[{"type": "text", "text": "t" * 500, "cache_control": {"type": "ephemeral"}}],
    ),
    cached_request("ticket 7"),
]


def usages_of(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> list[Any]:
    return [client.messages.create(**request).usage.model_dump() for request in requests]


@pytest.mark.parametrize("settings", [{}, {"prompt_cache": "cold"}], ids=["default", "cold"])
def test_usage_does_not_depend_on_a_resume(settings: dict[str, Any]) -> None:
    """A fresh fake asked only the second half of a run (a resumed process) bills each request
    as a fake asked the whole run does; here the first is in-process, the second over HTTP."""
    whole = usages_of(FakeModel(**settings).client(), RUN)
    half = len(RUN) // 2
    with serve(FakeModel(**settings)) as server:
        resumed = usages_of(sdk(server.url), RUN[half:])
    assert resumed == whole[half:]
    assert any(u["cache_read_input_tokens"] or u["cache_creation_input_tokens"] for u in resumed)


def test_instance_usage_depends_on_a_resume() -> None:
    """What prompt_cache="instance" is not: a fresh fake writes again what the first read."""
    whole = usages_of(FakeModel(prompt_cache="instance").client(), RUN)
    resumed = usages_of(FakeModel(prompt_cache="instance").client(), RUN[5:])
    assert resumed != whole[5:]


def test_handle_reports_the_same_usage_as_the_sdk() -> None:
    """`handle`, without the SDK, reports the usage the SDK client sees."""
    for cache in PROMPT_CACHES:
        reply = FakeModel(prompt_cache=cache).handle(
            json.dumps(RUN[3]).encode(), {"x-api-key": "k"}
        )
        assert isinstance(reply, Reply) and reply.status == 200
        through_sdk = ask(FakeModel(prompt_cache=cache), RUN[3]).usage.model_dump()
        assert {k: through_sdk[k] for k in reply.body["usage"]} == reply.body["usage"]


def sdk(url: str, timeout: float = 5.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k-secret-123", base_url=url, max_retries=0, timeout=timeout)


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_server_answers_and_logs_each_request(server: Any, tmp_path: Path) -> None:
    """Over HTTP the SDK gets the same answer; each request is one log line, without the key."""
    client = sdk(server.url)
    message = client.messages.create(**forced())
    assert message.model_dump() == ask(FakeModel(), forced()).model_dump()
    client.messages.create(**free())
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(**free(), extra_headers={"Authorization": anthropic.omit})
    log = tmp_path / "requests.jsonl"
    lines = log_lines(log)
    assert [line["status"] for line in lines] == [200, 200, 401]
    assert set(lines[0]) == {"body_hash", "times", "fault", "request_id", "status"}
    assert lines[0]["request_id"] == message._request_id
    assert "k-secret-123" not in log.read_text()


def test_server_404_elsewhere(server: Any) -> None:
    """Only POST /v1/messages is served; anything else is a 404 not_found_error."""
    response = httpx2.get(server.url + "/v1/models")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert response.headers["request-id"].startswith("req_fake_")


def test_server_reset_and_timeout(tmp_path: Path) -> None:
    """Over HTTP, reset drops the connection; timeout hangs past a short client timeout."""
    log = tmp_path / "log.jsonl"
    with serve(FakeModel(faults=parse_spec("reset=1")), log=log) as server:
        with pytest.raises(anthropic.APIConnectionError) as caught:
            sdk(server.url).messages.create(**free())
        assert not isinstance(caught.value, anthropic.APITimeoutError)
        assert "reset" in repr(caught.value.__cause__)  # an abortive close, not a FIN
    timeouts = FakeModel(faults=parse_spec("timeout=1"), timeout_seconds=1.0)
    with serve(timeouts, log=log) as server, pytest.raises(anthropic.APITimeoutError):
        sdk(server.url, timeout=0.2).messages.create(**free())
    assert [(line["fault"], line["status"]) for line in log_lines(log)] == [
        ("reset", None),
        ("timeout", None),
    ]


def test_server_logs_before_answering(tmp_path: Path) -> None:
    """The log line is on disk while the client still waits, so a killed client loses nothing."""
    log = tmp_path / "log.jsonl"
    model = FakeModel(faults=parse_spec("timeout=1"), timeout_seconds=1.0)
    errors: list[Exception] = []
    with serve(model, log=log) as server:

        def call() -> None:
            try:
                sdk(server.url).messages.create(**free())
            except anthropic.APIError as e:
                errors.append(e)

        waiting = threading.Thread(target=call)
        waiting.start()
        deadline = time.monotonic() + 1.0
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log_lines(log)[0]["fault"] == "timeout"
        assert waiting.is_alive()
        waiting.join()
    # The server closed without answering, before the client's own timeout.
    assert len(errors) == 1 and type(errors[0]) is anthropic.APIConnectionError


def test_journal_fake_model_serves_in_another_process(tmp_path: Path) -> None:
    """`journal fake-model` prints its URL, answers the SDK and logs; the key stays out."""
    log = tmp_path / "requests.jsonl"
    command = [*journal_command(), "fake-model", "--port", "0", "--spec", "none"]
    process = subprocess.Popen(
        [*command, "--log", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        message = sdk(url).messages.create(**forced())
        check_input(message.content[0].input)
    finally:
        process.kill()
        process.wait(timeout=5)
    assert [line["status"] for line in log_lines(log)] == [200]
    assert "k-secret-123" not in log.read_text()


def test_journal_fake_model_rejects_a_bad_spec() -> None:
    """A bad --spec is one line and exit 2, naming the problem."""
    result = subprocess.run(
        [*journal_command(), "fake-model", "--spec", "429=2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "outside [0, 1]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_journal_fake_model_flags_have_help() -> None:
    """Every option of `journal fake-model` says what it does, and the example stays."""
    names = {name for param in fake_model.params for name in param.opts}
    new = {"--latency", "--jitter", "--rpm", "--itpm", "--otpm", "--max-output", "--prompt-cache"}
    assert new <= names
    assert all(getattr(param, "help", None) for param in fake_model.params)
    assert fake_model.help is not None and "journal fake-model --port 8765" in fake_model.help


KEY = {"x-api-key": "k"}
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the wall clock of the rate-limit tests


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(**settings: Any) -> tuple[FakeModel, Clock]:
    clock = Clock()
    return FakeModel(clock=clock, wall_clock=lambda: WALL, **settings), clock


def headers_of(client: anthropic.Anthropic, request: dict[str, Any]) -> Any:
    """The headers of a 200 answer to `request`."""
    raw = client.messages.with_raw_response.create(**request)
    assert raw.status_code == 200
    return raw.headers


def refused(client: anthropic.Anthropic, request: dict[str, Any]) -> anthropic.RateLimitError:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**request)
    return caught.value


def limit_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")}


def waits_of(model: FakeModel, requests: list[dict[str, Any]]) -> list[float]:
    """The latencies `model` would spend on `requests`, one after another, without waiting."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    for request in requests:
        model._handle(json.dumps(request).encode(), KEY, wait)
    return waits


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_latency_delays_each_request() -> None:
    """A request takes the fake's latency (a behaviour check, not a benchmark)."""
    client = FakeModel(latency=0.05).client()
    start = time.monotonic()
    client.messages.create(**free())
    assert 0.05 <= time.monotonic() - start < 2.0


def test_jitter_draws_stay_in_their_range() -> None:
    """Latency 0.2 with jitter 0.5 is uniform in [0.1, 0.3], mean 0.2; no jitter, no spread."""
    rng = random.Random(1)
    draws = [delay(0.2, 0.5, rng) for _ in range(4000)]
    assert all(0.1 <= d <= 0.3 for d in draws)
    assert min(draws) < 0.105 and max(draws) > 0.295
    assert math.isclose(sum(draws) / len(draws), 0.2, abs_tol=0.005)
    assert {delay(0.2, 0.0, rng) for _ in range(10)} == {0.2}
    assert all(0.0 <= delay(0.2, 1.0, rng) <= 0.4 for _ in range(100))


def test_latencies_replay_from_the_seed() -> None:
    """The same requests in the same order take the same times in a fresh fake with the same
    seed, and other times with another seed."""
    requests = [free(f"Ticket {n}") for n in range(20)]

    def waits(seed: int) -> list[float]:
        return waits_of(FakeModel(latency=1.0, jitter=0.5, faults=Faults({}, seed=seed)), requests)

    first = waits(3)
    assert first == waits(3) and first != waits(4)
    assert all(0.5 <= w <= 1.5 for w in first) and len(set(first)) == len(first)


def test_requests_overlap_while_they_wait() -> None:
    """Waiting out the latency holds no lock: two requests wait at the same time."""
    model = FakeModel(latency=1.0)
    both = threading.Barrier(2, timeout=5)
    statuses: list[int] = []

    def wait(seconds: float) -> bool:
        both.wait()  # broken, after 5 s, if the other request cannot get here meanwhile
        return False

    def call() -> None:
        reply = model._handle(json.dumps(free()).encode(), KEY, wait)[1]
        statuses.append(getattr(reply, "status", 0))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert statuses == [200, 200]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"latency": -1.0}, "latency is -1.0"),
        ({"latency": math.nan}, "latency is nan"),
        ({"jitter": 1.5}, "jitter 1.5"),
        ({"rpm": 0}, "rpm is 0"),
        ({"otpm": -5}, "otpm is -5"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], says: str) -> None:
    """A negative or NaN latency, a jitter outside [0, 1] or a limit below 1 is a ValueError."""
    with pytest.raises(ValueError, match=says):
        FakeModel(**settings)


def test_rpm_refuses_the_request_over_the_limit() -> None:
    """RPM 3: the fourth request in the same instant is a 429 with retry-after and the
    ratelimit headers; 20 s later (a third of a minute) one more gets through."""
    model, clock = limited(rpm=3)
    client = model.client()
    first = limit_headers(headers_of(client, free()))
    assert first == {
        "anthropic-ratelimit-requests-limit": "3",
        "anthropic-ratelimit-requests-remaining": "2",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:20Z",
    }
    remaining = [
        headers_of(client, free())["anthropic-ratelimit-requests-remaining"] for _ in range(2)
    ]
    assert remaining == ["1", "0"]
    e = refused(client, free())
    assert e.type == "rate_limit_error" and "3 requests per minute" in str(e)
    assert e.request_id is not None and e.request_id.startswith("req_fake_")
    headers = e.response.headers
    assert headers["retry-after"] == "20"
    assert limit_headers(headers) == {
        "anthropic-ratelimit-requests-limit": "3",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:01:00Z",
    }
    clock.now += 19.5
    assert refused(client, free()).response.headers["retry-after"] == "1"  # rounded up
    clock.now += 0.5
    assert headers_of(client, free())["anthropic-ratelimit-requests-remaining"] == "0"
    refused(client, free())
    assert model.rate_limited == 3
    faults = [(s.times, s.fault) for s in model.requests]
    refusal = (0, "rate_limit")
    assert faults == [(1, None), (2, None), (3, None), refusal, refusal, (4, None), refusal]
    assert len({s.request_id for s in model.requests}) == len(model.requests)


def test_itpm_counts_input_tokens_but_not_cache_reads() -> None:
    """ITPM 100: two prompts of 50 tokens pass, a third waits 30 s; a cached prefix read
    costs nothing, and a prompt larger than the limit passes once, leaving a debt."""
    model, clock = limited(itpm=100)
    client = model.client()
    remaining = [
        headers_of(client, free("u" * 200))["anthropic-ratelimit-input-tokens-remaining"]
        for _ in range(2)
    ]
    assert remaining == ["50", "0"]
    e = refused(client, free("u" * 200))
    assert e.response.headers["retry-after"] == "30" and "100 input tokens" in str(e)
    clock.now += 30
    headers = headers_of(client, free("u" * 200))
    assert limit_headers(headers) == {
        "anthropic-ratelimit-input-tokens-limit": "100",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2026-01-01T00:01:00Z",
        "anthropic-ratelimit-tokens-limit": "100",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T00:01:00Z",
    }

    warm, _ = limited(itpm=100)
    headers = headers_of(warm.client(), cached_request("u" * 40))  # 200 tokens read, 10 not
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "90"
    cold, _ = limited(itpm=100, prompt_cache="cold")
    headers = headers_of(cold.client(), cached_request("u" * 40))  # 210 tokens, 110 over
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "0"
    # 10 tokens need the 110 owed and 10 more, at 100 a minute.
    assert refused(cold.client(), free("u" * 40)).response.headers["retry-after"] == "72"


def test_otpm_admits_on_max_tokens_and_charges_the_output() -> None:
    """OTPM 1000: admission needs max_tokens; the output produced is what stays charged."""
    model, clock = limited(otpm=1000, max_output=True)
    client = model.client()
    remaining = [
        headers_of(client, free(max_tokens=400))["anthropic-ratelimit-output-tokens-remaining"]
        for _ in range(2)
    ]
    assert remaining == ["600", "200"]
    e = refused(client, free(max_tokens=400))
    assert e.response.headers["retry-after"] == "12" and "1000 output tokens" in str(e)
    assert (
        headers_of(client, free(max_tokens=200))["anthropic-ratelimit-output-tokens-remaining"]
        == "0"
    )
    clock.now += 12
    assert refused(client, free(max_tokens=400)).response.headers["retry-after"] == "12"

    model, _ = limited(otpm=1000)
    raw = model.client().messages.with_raw_response.create(**free(max_tokens=400))
    used = raw.parse().usage.output_tokens
    assert 0 < used < 400
    assert raw.headers["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - used)


def test_tokens_headers_repeat_the_tighter_limit_and_only_configured_ones_appear() -> None:
    """tokens-* is whichever of input and output has fewer left; unset limits send nothing."""
    model, _ = limited(itpm=1000, otpm=100, max_output=True)
    headers = limit_headers(headers_of(model.client(), free("u" * 200, max_tokens=60)))
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "950"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "40"
    assert (
        headers["anthropic-ratelimit-tokens-limit"],
        headers["anthropic-ratelimit-tokens-remaining"],
    ) == ("100", "40")
    assert not any(k.startswith("anthropic-ratelimit-requests") for k in headers)
    rpm_only, _ = limited(rpm=10)
    assert set(limit_headers(headers_of(rpm_only.client(), free()))) == {
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    }
    assert limit_headers(headers_of(FakeModel().client(), free())) == {}
    # An injected 429 carries its own retry-after and the headers too.
    faulty, _ = limited(rpm=10, faults=parse_spec("429=1"))
    injected = refused(faulty.client(), free()).response.headers
    assert injected["retry-after"] == "2"
    assert injected["anthropic-ratelimit-requests-remaining"] == "9"


def test_rate_limits_change_no_fault_draw() -> None:
    """Requests refused by a rate limit are not counted: the requests that get through draw
    the faults a fake without limits draws, in the same order, with the same ids."""
    spec = "errors=0.5,garbage=0.2,seed=5"
    model, clock = limited(rpm=2, faults=parse_spec(spec))
    client = model.client()
    for _ in range(6):
        for _ in range(3):
            with contextlib.suppress(anthropic.APIError):
                client.messages.create(**forced())
        clock.now += 60
    counted = [s for s in model.requests if s.fault != "rate_limit"]
    assert len(counted) == 12 and model.rate_limited == 6
    free_model = FakeModel(faults=parse_spec(spec))
    free_client = free_model.client()
    for _ in range(12):
        with contextlib.suppress(anthropic.APIError):
            free_client.messages.create(**forced())
    assert counted == free_model.requests
    assert len({s.fault for s in counted}) > 2


def test_a_refused_request_waits_no_latency() -> None:
    """A rate-limited 429 is answered at once; requests let in wait their latency."""
    model, _ = limited(rpm=1, latency=0.5)
    assert waits_of(model, [free(), free(), free()]) == [0.5]
    assert [s.fault for s in model.requests] == [None, "rate_limit", "rate_limit"]
    assert waits_of(FakeModel(latency=0.5), [{"model": MODEL}]) == []  # a 400, at once


@pytest.mark.parametrize("max_tokens", [1, 7, 256, 4096])
def test_max_output_reports_max_tokens(max_tokens: int) -> None:
    """With max_output every answer bills max_tokens output tokens, whatever its size."""
    client = FakeModel(max_output=True).client()
    for request in (forced(max_tokens=max_tokens), free(max_tokens=max_tokens)):
        assert client.messages.create(**request).usage.output_tokens == max_tokens
    assert ask(FakeModel(), free(max_tokens=4096)).usage.output_tokens < 4096


def test_a_storm_starts_and_ends_at_runtime() -> None:
    """set_faults switches a served fake into a storm of 529s or 429s and back out."""
    model = FakeModel(faults=parse_spec("529=1"))
    with serve(model) as server:
        client = sdk(server.url)
        for _ in range(3):
            with pytest.raises(anthropic.OverloadedError):
                client.messages.create(**forced())
        model.set_faults(Faults({}))
        check_input(client.messages.create(**forced()).content[0].input)
        model.set_faults(parse_spec("429=1"))
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(**forced())
        model.set_faults(parse_spec("none"))
        client.messages.create(**free())
    assert [s.fault for s in model.requests] == ["529", "529", "529", None, "429", None]
    assert model.faults == Faults({})


def test_close_ends_a_slow_request_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Closing the server while a 20 s request waits returns at once; the client sees the
    connection dropped, not a hang, and the server no traceback."""
    model = FakeModel(latency=20.0)
    errors: list[Exception] = []
    with serve(model, log=tmp_path / "log.jsonl") as server:

        def call() -> None:
            try:
                sdk(server.url, timeout=30).messages.create(**free())
            except anthropic.APIError as e:
                errors.append(e)

        waiting = threading.Thread(target=call)
        waiting.start()
        wait_for(lambda: model.in_flight == 1)
        start = time.monotonic()
        server.close()
        assert time.monotonic() - start < 2.0
        waiting.join(timeout=5)
    assert not waiting.is_alive()
    assert len(errors) == 1 and type(errors[0]) is anthropic.APIConnectionError
    wait_for(lambda: model.in_flight == 0)
    assert [s.fault for s in model.requests] == [None]
    assert "Traceback" not in capsys.readouterr().err


def test_an_abandoned_request_leaves_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A client that gives up on a slow request (a killed run) costs the server nothing: it
    answers into the closed connection quietly and serves the next request."""
    model = FakeModel(latency=0.3)
    with serve(model) as server:
        with pytest.raises(anthropic.APITimeoutError):
            sdk(server.url, timeout=0.05).messages.create(**free())
        wait_for(lambda: model.in_flight == 0 and len(model.requests) == 1)
        # Takes the latency again, long after the first answer went to the closed connection.
        assert sdk(server.url).messages.create(**free()).content
    assert "Traceback" not in capsys.readouterr().err


def test_journal_fake_model_rate_limits_in_another_process() -> None:
    """`journal fake-model --rpm 2`: the third request in a minute is a 429 with the headers."""
    command = [*journal_command(), "fake-model", "--port", "0", "--rpm", "2", "--latency", "0.01"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = sdk(url)
        remaining = [
            headers_of(client, free())["anthropic-ratelimit-requests-remaining"] for _ in range(2)
        ]
        assert remaining == ["1", "0"]
        start = datetime.datetime.now(datetime.UTC)
        headers = refused(client, free()).response.headers
    finally:
        process.kill()
        process.wait(timeout=5)
    assert 1 <= int(headers["retry-after"]) <= 30
    assert headers["anthropic-ratelimit-requests-limit"] == "2"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.datetime.strptime(
        headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=datetime.UTC)
    assert start < reset <= start + datetime.timedelta(seconds=62)


def test_journal_fake_model_serves_batches_that_take_their_time(tmp_path: Path) -> None:
    """`--batch-time` makes a batch run that long; `--batch-faults lost=1` loses every create's
    answer (the batch is made all the same); bad values are one line and exit 2."""
    command = [*journal_command(), "fake-model", "--port", "0", "--batch-time", "3600"]
    process = subprocess.Popen(
        [*command, "--batch-faults", "lost=1,lost_as=reset"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        client = sdk(process.stdout.readline().strip())
        item = {"custom_id": "a-1", "params": forced()}
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.batches.create(requests=[item])  # type: ignore[list-item]
        (batch,) = client.messages.batches.list()
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 1
    finally:
        process.kill()
        process.wait(timeout=5)
    for bad, says in (("--batch-faults", "is not a batch fault"), ("--batch-time", "range")):
        result = subprocess.run(
            [*journal_command(), "fake-model", bad, "nope=1" if "faults" in bad else "-1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
