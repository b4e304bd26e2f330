"""Tests that the fake Messages API holds each model to its documented contract, through the real
SDK: the 400s (status, error type, message) for what a model refuses, JSON outputs answered as a
text block, thinking blocks and thinking tokens, signatures checked when thinking comes back,
and the newer tokenizer's counts.

The expected statuses and messages are written here from the docs, not read from the
capabilities data, so that a change to the data that the docs do not back fails a test.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import anthropic
import attrs
import pytest
from jsonschema import Draft202012Validator

from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.constrained import fit
from runjournal.machine.model.jsonschema import input_schema
from runjournal.machine.testing import FakeModel, Faults

FORCED_TOOL = 'tool_choice: type "tool" and "any" are not supported for this model.'
USE_ADAPTIVE = (
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
TOOL = {"name": "triage", "description": "Score a ticket.", "input_schema": SCHEMA}


def request(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Ticket 1: the site is down."}],
        **extra,
    }


def create(fake: FakeModel, body: dict[str, Any]) -> anthropic.types.Message:
    extra = {k: body.pop(k) for k in ("temperature", "top_p", "top_k") if k in body}
    # An explicit timeout: the SDK refuses a large max_tokens without one, before sending.
    client = fake.client()
    message: anthropic.types.Message = client.messages.create(**body, extra_body=extra, timeout=600)
    return message


@attrs.frozen
class Refused:
    """An error answer as the API sends it: status, and the body's error type and message."""

    status_code: int
    type: str
    message: str
    error: anthropic.APIStatusError


def refused(fake: FakeModel, body: dict[str, Any]) -> Refused:
    with pytest.raises(anthropic.APIStatusError) as raised:
        create(fake, body)
    error = raised.value.body["error"]  # type: ignore[index]
    return Refused(raised.value.status_code, error["type"], error["message"], raised.value)


@pytest.mark.parametrize("model", ["claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1"])
@pytest.mark.parametrize("choice", [{"type": "tool", "name": "triage"}, {"type": "any"}])
def test_a_forced_tool_is_the_apis_400_on_the_newest_models(
    model: str, choice: dict[str, Any]
) -> None:
    error = refused(FakeModel(), request(model, tools=[TOOL], tool_choice=choice))
    assert error.status_code == 400
    assert isinstance(error.error, anthropic.BadRequestError)
    assert error.type == "invalid_request_error"
    assert error.message == FORCED_TOOL


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "none"}])
def test_auto_and_none_are_still_taken_on_opus_5_5(choice: dict[str, Any]) -> None:
    message = create(FakeModel(), request("claude-opus-5-5", tools=[TOOL], tool_choice=choice))
    kinds = [b.type for b in message.content]
    assert kinds[0] == "thinking"  # always on
    assert kinds[-1] == ("tool_use" if choice["type"] == "auto" else "text")


def test_a_forced_tool_on_a_model_that_takes_one_is_answered() -> None:
    message = create(
        FakeModel(),
        request("claude-haiku-4-5", tools=[TOOL], tool_choice={"type": "tool", "name": "triage"}),
    )
    assert [b.type for b in message.content] == ["tool_use"]


def test_a_forced_tool_while_thinking_is_refused() -> None:
    body = request(
        "claude-haiku-4-5",
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "triage"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
    )
    error = refused(FakeModel(), body)
    assert error.status_code == 400
    assert "tool_choice forces tool use" in error.message


@pytest.mark.parametrize(
    ("model", "thinking", "says"),
    [
        (
            "claude-opus-5-5",
            {"type": "disabled"},
            f'"thinking.type.disabled" is not supported for this model. {USE_ADAPTIVE}',
        ),
        (
            "claude-opus-5-5",
            {"type": "enabled", "budget_tokens": 2048},
            f'"thinking.type.enabled" is not supported for this model. {USE_ADAPTIVE}',
        ),
        ("claude-fable-5-1", {"type": "disabled"}, '"thinking.type.disabled" is not supported'),
        ("claude-sonnet-5-5", {"type": "disabled"}, '"thinking.type.disabled" is not supported'),
        ("claude-haiku-4-5", {"type": "adaptive"}, '"thinking.type.adaptive" is not supported'),
        (
            "claude-haiku-4-5",
            {"type": "enabled", "budget_tokens": 500},
            "greater than or equal to 1024",
        ),
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 4096}, "must be greater than"),
    ],
)
def test_thinking_a_model_refuses_is_a_400(model: str, thinking: dict[str, Any], says: str) -> None:
    error = refused(FakeModel(), request(model, thinking=thinking))
    assert error.status_code == 400
    assert says in error.message


def test_thinking_off_above_the_effort_that_allows_it_is_a_400() -> None:
    fake = FakeModel()
    ok = request(
        "claude-haiku-5-5", thinking={"type": "disabled"}, output_config={"effort": "high"}
    )
    assert [b.type for b in create(fake, ok).content] == ["text"]
    too_high = request(
        "claude-haiku-5-5", thinking={"type": "disabled"}, output_config={"effort": "max"}
    )
    assert refused(fake, too_high).status_code == 400
    between = request(
        "claude-sonnet-5-5", thinking={"type": "between_tools"}, output_config={"effort": "xhigh"}
    )
    assert refused(fake, between).status_code == 400


@pytest.mark.parametrize("parameter", ["temperature", "top_p", "top_k"])
@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-haiku-4-5"])
def test_sampling_parameters_are_gone_in_the_sdks_api_version(parameter: str, model: str) -> None:
    error = refused(FakeModel(), request(model, **{parameter: 1}))
    assert error.status_code == 400
    assert error.message == f"{parameter}: Extra inputs are not permitted"


@pytest.mark.parametrize(
    "model", ["claude-imaginary-9", "claude-opus-4-1", "claude-opus-4-20250514"]
)
def test_a_model_the_api_does_not_serve_is_a_404(model: str) -> None:
    error = refused(FakeModel(), request(model))
    assert isinstance(error.error, anthropic.NotFoundError)
    assert (error.type, error.message) == ("not_found_error", f"model: {model}")


def test_an_alias_reaches_its_model() -> None:
    message = create(FakeModel(), request("claude-haiku-4-5-20251001"))
    assert message.content[0].type == "text"


@pytest.mark.parametrize(
    ("model", "settings", "says"),
    [
        ("claude-haiku-4-5", {"output_config": {"effort": "high"}}, "effort is not supported"),
        ("claude-opus-4-6", {"output_config": {"effort": "xhigh"}}, '"xhigh" is not supported'),
        ("claude-haiku-4-5", {"max_tokens": 64_001}, "64001 > 64000"),
        (
            "claude-3-haiku-20240307",
            {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
            "Structured outputs are not supported",
        ),
    ],
)
def test_settings_a_model_lacks_are_a_400(model: str, settings: dict[str, Any], says: str) -> None:
    error = refused(FakeModel(), request(model, **settings))
    assert error.status_code == 400
    assert says in error.message


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"minimum": 1},
            "output_config.format.schema: For 'integer' type, property 'minimum' is not supported",
        ),
        ({"pattern": "[0-9]"}, "property 'pattern' is not supported"),
    ],
)
def test_a_schema_beyond_constrained_decoding_is_a_400(change: dict[str, Any], says: str) -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["score"] = {"type": "integer", **change}
    if "pattern" in change:
        schema["properties"]["score"] = {"type": "string", **change}
    body = request(
        "claude-haiku-5-5", output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    error = refused(FakeModel(), body)
    assert error.status_code == 400 and says in error.message


def test_array_min_items_and_additional_properties_rules() -> None:
    fake = FakeModel()
    schema = {
        **SCHEMA,
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
    }
    body = request(
        "claude-haiku-5-5", output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    assert "'minItems' values other than 0 or 1" in refused(fake, body).message
    open_object = {k: v for k, v in SCHEMA.items() if k != "additionalProperties"}
    body = request(
        "claude-haiku-5-5", tools=[{**TOOL, "input_schema": open_object, "strict": True}]
    )
    said = refused(fake, body).message
    assert "tools.0.custom.input_schema" in said and "additionalProperties" in said


def test_json_outputs_are_a_text_block_of_json_that_fits() -> None:
    body = request(
        "claude-haiku-4-5", output_config={"format": {"type": "json_schema", "schema": SCHEMA}}
    )
    for n in range(10):
        body["messages"][0]["content"] = f"Ticket {n}"
        message = create(FakeModel(), copy.deepcopy(body))
        [block] = message.content
        assert block.type == "text" and message.stop_reason == "end_turn"
        assert Draft202012Validator(SCHEMA).is_valid(json.loads(block.text))


def test_constraints_stated_in_a_description_are_followed() -> None:
    """A bound the subset cannot hold, moved to the description by `fit`, is what the fake's
    answers keep to, as a model reading it would."""

    @attrs.frozen
    class Score:
        value: int = attrs.field(validator=[attrs.validators.ge(7), attrs.validators.le(9)])

    fitted = fit(input_schema(Score), Capabilities.load().constrained).schema
    assert fitted is not None
    body = request(
        "claude-haiku-4-5", output_config={"format": {"type": "json_schema", "schema": fitted}}
    )
    for n in range(10):
        body["messages"][0]["content"] = f"Item {n}"
        answer = json.loads(create(FakeModel(), copy.deepcopy(body)).content[0].text)
        assert 7 <= answer["value"] <= 9


def test_constrained_decoding_rules_out_damaged_answers() -> None:
    """wrong_types and missing cannot happen to JSON outputs: the answer is good, logged so."""
    fake = FakeModel(faults=Faults({"wrong_types": 0.5, "missing": 0.5}))
    body = request(
        "claude-haiku-4-5", output_config={"format": {"type": "json_schema", "schema": SCHEMA}}
    )
    answer = json.loads(create(fake, body).content[0].text)
    assert Draft202012Validator(SCHEMA).is_valid(answer)
    assert [s.fault for s in fake.requests] == [None]


@pytest.mark.parametrize(
    ("model", "thinking", "shown"),
    [
        ("claude-opus-5-5", None, False),  # on by default, display omitted
        ("claude-haiku-5-5", {"type": "adaptive", "display": "summarized"}, True),
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 1024}, True),
    ],
)
def test_thinking_comes_first_and_is_billed_as_output(
    model: str, thinking: dict[str, Any] | None, shown: bool
) -> None:
    body = request(model, max_tokens=4096, **({"thinking": thinking} if thinking else {}))
    message = create(FakeModel(), body)
    first, last = message.content[0], message.content[-1]
    assert first.type == "thinking" and last.type == "text"
    assert first.signature.startswith(f"{model}:")
    assert bool(first.thinking) is shown
    details = message.usage.output_tokens_details
    assert details is not None and details.thinking_tokens > 0
    assert message.usage.output_tokens > details.thinking_tokens  # the text is on top
    if thinking and thinking.get("budget_tokens"):
        assert details.thinking_tokens <= thinking["budget_tokens"]


def test_no_thinking_where_the_model_does_not_think() -> None:
    message = create(FakeModel(), request("claude-haiku-4-5"))
    assert [b.type for b in message.content] == ["text"]
    details = message.usage.output_tokens_details
    assert details is not None and details.thinking_tokens == 0


def test_thinking_and_answer_past_max_tokens_stop_at_max_tokens() -> None:
    """With a few tokens of room, thinking uses them and the answer is cut: billed max_tokens."""
    message = create(FakeModel(), request("claude-opus-5-5", max_tokens=20))
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 20


def test_thinking_passed_back_unchanged_is_taken_and_changed_is_refused() -> None:
    """The signature binds a block to the model, the conversation and its text."""
    fake = FakeModel()
    body = request(
        "claude-haiku-5-5",
        tools=[TOOL],
        thinking={"type": "adaptive", "display": "summarized"},
        max_tokens=4096,
    )
    first = create(fake, copy.deepcopy(body))
    blocks = [b.model_dump(exclude_none=True) for b in first.content]
    call = blocks[-1]
    assert call["type"] == "tool_use"
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "ok"}
    follow = copy.deepcopy(body)
    follow["messages"] += [
        {"role": "assistant", "content": blocks},
        {"role": "user", "content": [result]},
    ]
    assert create(fake, copy.deepcopy(follow)).content
    changed = copy.deepcopy(follow)
    changed["messages"][1]["content"][0]["thinking"] += " (edited)"
    error = refused(fake, changed)
    assert error.status_code == 400 and "Invalid `signature` in `thinking` block" in error.message
    elsewhere = copy.deepcopy(follow)
    elsewhere["messages"][0]["content"] = "Another conversation."
    assert "bound to a different conversation" in refused(fake, elsewhere).message


def test_the_newer_tokenizer_counts_about_thirty_percent_more() -> None:
    """The same prompt: Haiku 5.5 counts 1.3 tokens where Haiku 4.5 counts one."""
    text = "The site is down for every customer in the region. " * 40
    off = {"thinking": {"type": "disabled"}}
    old = create(
        FakeModel(), request("claude-haiku-4-5", messages=[{"role": "user", "content": text}])
    )
    new = create(
        FakeModel(),
        request("claude-haiku-5-5", messages=[{"role": "user", "content": text}], **off),
    )
    assert 1.25 < new.usage.input_tokens / old.usage.input_tokens < 1.35


def test_a_refusal_says_its_category() -> None:
    message = create(FakeModel(faults=Faults({"refusal": 1.0})), request("claude-haiku-5-5"))
    assert message.stop_reason == "refusal"
    assert message.stop_details is not None and message.stop_details.category == "general_harms"


@pytest.mark.parametrize(
    ("model", "refuses"), [("claude-haiku-5-5", True), ("claude-haiku-4-5", False)]
)
def test_an_assistant_prefill_is_refused_where_the_model_takes_none(
    model: str, refuses: bool
) -> None:
    turns = [{"role": "user", "content": "Score it."}, {"role": "assistant", "content": "{"}]
    body = request(model, messages=turns, thinking={"type": "disabled"})
    if refuses:
        error = refused(FakeModel(), body)
        assert error.status_code == 400 and "prefill" in error.message
    else:
        assert create(FakeModel(), body).content
