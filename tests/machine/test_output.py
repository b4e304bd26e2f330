"""Tests for `machine.model.output`: reading what the model answered, and asking it again."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runjournal.machine import convert
from runjournal.machine.model.output import Accepted, Rejected, feedback, read_answer


@attrs.frozen
class Urgency:
    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


@attrs.frozen
class Evidence:
    quote: str
    line: int


@attrs.frozen
class Triage:
    urgency: Urgency
    evidence: list[Evidence]


@attrs.frozen
class Scores:
    values: list[int]


def _positive(_: Any, __: Any, value: int) -> None:
    if value < 0:
        raise RuntimeError("the sky fell")


def _interrupted(_: Any, __: Any, value: int) -> None:
    raise KeyboardInterrupt


@attrs.frozen
class Picky:
    n: int = attrs.field(validator=_positive)


@attrs.frozen
class Interrupting:
    n: int = attrs.field(validator=_interrupted)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no words")


def _unprintable(_: Any, __: Any, value: int) -> None:
    raise _Unprintable


@attrs.frozen
class Mute:
    n: int = attrs.field(validator=_unprintable)


CONVERTER = convert.make()
URGENT = {"score": 5, "reason": "data loss"}


def message(content: Any, stop_reason: Any = "end_turn") -> dict[str, Any]:
    """A Messages API response as `message.model_dump(mode="json")` gives it."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 30},
    }


def tool_answer(input_: Any, name: str = "Urgency", id_: str = "toolu_1") -> dict[str, Any]:
    return message([{"type": "tool_use", "id": id_, "name": name, "input": input_}], "tool_use")


def text_answer(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return message([{"type": "text", "text": text, "citations": None}], stop_reason)


def read(
    response: Any, schema: type[Any] = Urgency, tool: str | None = "Urgency"
) -> Accepted[Any] | Rejected:
    return read_answer(response, schema, tool=tool, converter=CONVERTER)


def errors(response: Any, schema: type[Any] = Urgency, tool: str | None = "Urgency") -> list[str]:
    answer = read(response, schema, tool)
    assert isinstance(answer, Rejected), answer
    return answer.errors


# read_answer


def test_tool_call_accepted() -> None:
    """A tool call whose input fits is the value."""
    answer = read(tool_answer({"score": 4, "reason": "the server is down"}))
    assert answer == Accepted(Urgency(4, "the server is down"))


def test_wrong_type() -> None:
    """A string where an integer is due is an error with its path, and raw is the input as JSON."""
    answer = read(tool_answer({"score": "4", "reason": "down"}))
    assert answer == Rejected(
        ["expected an integer, got a string @ $.score"], '{"score": "4", "reason": "down"}'
    )


def test_every_error_listed() -> None:
    """Each wrong field is its own error, so the model can fix them all in one round."""
    assert errors(tool_answer({"score": True, "reason": 3})) == [
        "expected an integer, got a boolean @ $.score",
        "expected a string, got an integer @ $.reason",
    ]


def test_missing_field() -> None:
    """A missing field is named by its path."""
    assert errors(tool_answer({"score": 2})) == ["required field missing @ $.reason"]


def test_validator_failure() -> None:
    """A score outside 1..5 fails the class's validator, which names the field."""
    [error] = errors(tool_answer({"score": 9, "reason": "urgent"}))
    assert "'score' must be in range(1, 6) (got 9)" in error


def test_nested_path() -> None:
    """An error deep in nested classes carries the full path."""
    answer = {
        "urgency": {"score": 2, "reason": "slow"},
        "evidence": [{"quote": "it hangs", "line": 3}, {"quote": "again", "line": "7"}],
    }
    assert errors(tool_answer(answer, "Triage"), Triage, "Triage") == [
        "expected an integer, got a string @ $.evidence[1].line"
    ]


def test_validator_raising_anything() -> None:
    """A validator that raises some other exception is a rejection naming the exception."""
    response = tool_answer({"n": -1}, "Picky")
    assert errors(response, Picky, "Picky") == ["RuntimeError: the sky fell @ $"]


def test_validator_raising_unprintable() -> None:
    """An exception that cannot even be printed is still a rejection."""
    assert errors(tool_answer({"n": 1}, "Mute"), Mute, "Mute") == ["ValueError: no words"]


def test_base_exception_propagates() -> None:
    """KeyboardInterrupt in a validator is not an answer to reject: it stops the run."""
    with pytest.raises(KeyboardInterrupt):
        read(tool_answer({"n": 1}, "Interrupting"), Interrupting, "Interrupting")


def test_wrong_tool() -> None:
    """A call to another tool is an error naming both tools."""
    assert errors(tool_answer({"score": 3, "reason": "x"}, "Sentiment")) == [
        "expected a call to the Urgency tool, got a call to Sentiment"
    ]


def test_named_tool_preferred() -> None:
    """Among several calls, the one to the tool asked for is read."""
    response = message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "Other", "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "Urgency", "input": URGENT},
        ],
        "tool_use",
    )
    assert read(response) == Accepted(Urgency(5, "data loss"))


def test_tool_input_not_an_object() -> None:
    """Tool input that is not an object says what it is."""
    assert errors(tool_answer([4, "down"])) == ["expected an object, got an array"]


def test_prose_around_json() -> None:
    """A JSON object with prose before and after it is found."""
    text = 'Looking at the ticket, I would say {"score": 5, "reason": "data loss"} is right.'
    assert read(text_answer(text), tool=None) == Accepted(Urgency(5, "data loss"))


@pytest.mark.parametrize("info", ["json", "JSON", ""])
def test_json_in_fence(info: str) -> None:
    """JSON in a ```json or bare ``` fence is read, ahead of braces in the prose before it."""
    text = f'Fields go in {{braces}}.\n```{info}\n{{"score": 3, "reason": "slow"}}\n```\nDone.'
    assert read(text_answer(text), tool=None) == Accepted(Urgency(3, "slow"))


def test_json_text_when_a_tool_was_asked_for() -> None:
    """With no tool call, JSON in the text is still read."""
    assert read(text_answer('{"score": 1, "reason": "cosmetic"}')) == Accepted(
        Urgency(1, "cosmetic")
    )


def test_json_array_text() -> None:
    """An answer that is a JSON array is reported as one, not searched for an object inside."""
    text = '[{"score": 1, "reason": "a"}]'
    assert errors(text_answer(text), tool=None) == ["expected an object, got an array"]


@pytest.mark.parametrize(
    "text",
    ["I can't tell how urgent this is.", '{"score": 3, "reason": "cut', '{"score": NaN}'],
)
def test_no_json(text: str) -> None:
    """Prose, partial JSON or NaN (not JSON) is no JSON object; raw is the text."""
    answer = read(text_answer(text), tool=None)
    assert answer == Rejected(["no tool call and no JSON object in the answer"], text)


@pytest.mark.parametrize(
    "content",
    [[], None, [{"type": "text", "text": "  \n "}], [{"type": "thinking", "thinking": ""}]],
)
def test_empty_content(content: Any) -> None:
    """No content, or only blank text, is an empty answer."""
    assert errors(message(content)) == ["the answer was empty"]


def test_max_tokens() -> None:
    """An answer cut off at max_tokens is rejected with what came back."""
    answer = read(text_answer('{"score": 3, "reas', "max_tokens"), tool=None)
    cut = "the answer was cut off at max_tokens"
    assert answer == Rejected([cut], '{"score": 3, "reas', "max_tokens")


def test_context_window_exceeded() -> None:
    """An answer cut off by a full context window is rejected, even if what came back fits."""
    response = tool_answer({"score": 3, "reason": "x"})
    response["stop_reason"] = "model_context_window_exceeded"
    [error] = errors(response)
    assert error.startswith("the answer was cut off")


def test_refusal() -> None:
    """A refusal is rejected with the model's words."""
    response = text_answer("I can't help with that request.", "refusal")
    assert errors(response) == ["the model refused: I can't help with that request."]


def test_free_text() -> None:
    """Asking for str joins the text blocks, stripped; blank text is rejected."""
    response = message(
        [{"type": "text", "text": " Dear team,"}, {"type": "text", "text": "all good. "}]
    )
    assert read(response, str, None) == Accepted("Dear team,\nall good.")
    assert errors(text_answer("   "), str, None) == ["the answer was empty"]


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (None, "expected a message object, got null"),
        ("{}", "expected a message object, got a string"),
        ({"content": "hello"}, "expected content blocks, got a string"),
        ({"content": [1, None, "x"], "stop_reason": "end_turn"}, "the answer was empty"),
        ({"content": [{"type": "text", "text": 5}]}, "the answer was empty"),
    ],
)
def test_malformed_response(response: Any, error: str) -> None:
    """A response of the wrong shape is a rejection, not an exception."""
    assert errors(response) == [error]


def test_errors_bounded() -> None:
    """At most 20 errors, each one line of at most 300 characters."""
    many = errors(tool_answer({"values": ["x"] * 50}, "Scores"), Scores, "Scores")
    assert len(many) == 20
    assert many[0] == "expected an integer, got a string @ $.values[0]"
    assert many[-1] == "and 31 more errors"
    [long] = errors(tool_answer({}, "Sent\niment" * 100_000))
    assert len(long) <= 300
    assert "\n" not in long


def test_raw_bounded() -> None:
    """Raw is cut to 4,000 characters with a marker saying how long it was."""
    text = "no json here " * 100_000
    answer = read(text_answer(text), tool=None)
    assert isinstance(answer, Rejected)
    assert len(answer.raw) <= 4_000
    assert answer.raw.endswith("[cut: 1,299,999 characters]")


def test_lone_surrogates() -> None:
    """Lone surrogates, valid in JSON but not in UTF-8, are escaped in errors and raw, in bounds."""
    answer = read(tool_answer({"score": 1, "reason": "x"}, "\ud800" * 1_000))
    assert isinstance(answer, Rejected)
    [error] = answer.errors
    assert error.startswith("expected a call to the Urgency tool, got a call to \\ud800")
    assert len(error) <= 300
    answer = read(tool_answer({"score": "\udfff" * 4_000, "reason": "x"}))
    assert isinstance(answer, Rejected)
    assert len(answer.raw) <= 4_000
    assert answer.raw.encode().startswith(b'{"score": "\\udfff')


def test_pathological_text() -> None:
    """Megabytes of braces, fences or nesting are read in linear time (quadratic would hang)."""
    for text in ["{" * 1_000_000, "```" * 300_000, '{"a": ' * 200_000, '{"s": "' + "{" * 1_000_000]:
        assert errors(text_answer(text), tool=None) == [
            "no tool call and no JSON object in the answer"
        ]


# feedback


def test_feedback_after_tool_call() -> None:
    """A bad tool call is answered with a tool_result for its id, marked is_error."""
    response_input = {"score": "4", "reason": "down"}
    response = tool_answer(response_input)
    turns = feedback(
        response, Rejected(errors(response), "raw"), schema_name="Urgency", tool="Urgency"
    )
    assert turns == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Urgency", "input": response_input}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": "Your answer was not accepted:\n"
                    "- expected an integer, got a string @ $.score\n"
                    "Answer again by calling the Urgency tool, "
                    "with every field filled in correctly.",
                }
            ],
        },
    ]


def test_feedback_after_text() -> None:
    """A bad text answer is repeated without extra fields, then answered with a text block."""
    response = text_answer("I'd say urgent.")
    rejected = read(response, tool=None)
    assert isinstance(rejected, Rejected)
    turns = feedback(response, rejected, schema_name="Urgency", tool=None)
    assert turns == [
        {"role": "assistant", "content": [{"type": "text", "text": "I'd say urgent."}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Your answer was not accepted:\n"
                    "- no tool call and no JSON object in the answer\n"
                    "Answer again with one JSON object for Urgency, "
                    "with every field filled in correctly.",
                }
            ],
        },
    ]


def test_feedback_after_empty_answer() -> None:
    """An empty answer gets no assistant turn, which the API would refuse, only the user turn."""
    rejected = Rejected(["the answer was empty"], "")
    response = message([{"type": "text", "text": ""}])
    [turn] = feedback(response, rejected, schema_name="Urgency", tool="Urgency")
    assert turn["role"] == "user"
    assert turn["content"][0]["type"] == "text"
    assert "Answer again by calling the Urgency tool" in turn["content"][0]["text"]


def test_feedback_answers_every_call() -> None:
    """Every tool call in the answer gets a tool_result; the one read carries the errors."""
    response = message(
        [
            {"type": "text", "text": "Two tries:"},
            {"type": "tool_use", "id": "toolu_a", "name": "Other", "input": {}},
            {"type": "tool_use", "id": "toolu_b", "name": "Urgency", "input": {"score": 0}},
        ],
        "tool_use",
    )
    rejected = read(response)
    assert isinstance(rejected, Rejected)
    _, user = feedback(response, rejected, schema_name="Urgency", tool="Urgency")
    assert [r["tool_use_id"] for r in user["content"]] == ["toolu_a", "toolu_b"]
    assert user["content"][0]["content"].startswith("Not used")
    assert "required field missing @ $.reason" in user["content"][1]["content"]


def test_feedback_for_free_text() -> None:
    """A free-text ask is asked again in plain text, not for JSON."""
    [turn] = feedback(
        message([]), Rejected(["the answer was empty"], ""), schema_name="str", tool=None
    )
    assert turn["content"][0]["text"].endswith("Answer again, in plain text.")


# Any answer at all


# Lone surrogates ("\ud800") are valid in JSON text, though not in UTF-8.
_any_text = st.text(max_size=30) | st.text(st.characters(categories=["Cs"]), max_size=5)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _any_text
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)
_urgency_like = st.fixed_dictionaries(
    {"score": st.integers(0, 6) | _json_values, "reason": st.text(max_size=20) | _json_values},
    optional={"extra": _json_values},
)
_huge = st.tuples(st.text(min_size=1, max_size=8), st.integers(0, 130_000)).map(
    lambda t: t[0] * t[1]
)
_json_text = (_urgency_like | _json_values).map(json.dumps)


@st.composite
def _model_text(draw: st.DrawFn) -> str:
    """Text a model might write: prose, JSON whole or cut short, fenced, or huge."""
    body = draw(_json_text)
    kind = draw(st.sampled_from(["prose", "json", "partial", "fence", "around", "huge"]))
    if kind == "prose":
        return draw(st.text(max_size=200) | _any_text)
    if kind == "partial":
        return body[: draw(st.integers(0, len(body)))]
    if kind == "fence":
        return f"Here you go:\n```{draw(st.sampled_from(['json', '', 'python']))}\n{body}\n```"
    if kind == "around":
        return f"{draw(st.text(max_size=40))} {body} {draw(st.text(max_size=40))}"
    if kind == "huge":
        return draw(_huge) + body + draw(_huge)
    return body


_text_blocks = st.fixed_dictionaries({"type": st.just("text"), "text": _model_text()})
_tool_blocks = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": st.sampled_from(["toolu_1", "toolu_2"]),
        "name": st.sampled_from(["Urgency", "Urgency", "Other"]),
        "input": _urgency_like,
    }
)
_odd_blocks = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": st.just("") | _scalars,
            "name": _scalars,
            "input": _json_values | _huge,
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "image", "tool_use", "text"])}),
    st.dictionaries(st.sampled_from(["type", "text", "id", "name", "input"]), _json_values),
    _json_values,
)
_stop_reasons = st.one_of(
    st.sampled_from(["end_turn", "tool_use"]),
    st.sampled_from(
        ["max_tokens", "refusal", "stop_sequence", "pause_turn", "model_context_window_exceeded"]
    ),
    _scalars,
)
_responses = st.one_of(
    # Mostly what the API returns, with garbage in the details...
    st.builds(
        message, st.lists(_text_blocks | _tool_blocks, min_size=1, max_size=3), _stop_reasons
    ),
    st.builds(
        message, st.lists(_text_blocks | _tool_blocks | _odd_blocks, max_size=4), _stop_reasons
    ),
    # ...and sometimes not a message at all.
    st.fixed_dictionaries(
        {}, optional={"content": _json_values | _huge, "stop_reason": _stop_reasons}
    ),
    _json_values,
    _huge,
)


def _check_turns(turns: list[dict[str, Any]]) -> None:
    assert turns
    assert turns[-1]["role"] == "user"
    roles = [t["role"] for t in turns]
    assert roles in (["user"], ["assistant", "user"])
    for turn in turns:
        assert isinstance(turn["content"], list)
        assert turn["content"]
    calls: list[str] = []
    if roles[0] == "assistant":
        for block in turns[0]["content"]:
            if block["type"] == "text":
                assert set(block) == {"type", "text"}
                assert block["text"].strip()
            else:
                assert set(block) == {"type", "id", "name", "input"}
                assert block["type"] == "tool_use"
                assert isinstance(block["input"], dict)
                calls.append(block["id"])
    answers = turns[-1]["content"]
    if calls:
        assert [b["type"] for b in answers] == ["tool_result"] * len(calls)
        assert [b["tool_use_id"] for b in answers] == calls
        assert all(b["is_error"] is True and b["content"] for b in answers)
    else:
        assert [b["type"] for b in answers] == ["text"]
        assert answers[0]["text"]


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(response=_responses, tool=st.sampled_from(["Urgency", None]))
def test_any_answer(response: Any, tool: str | None) -> None:
    """Any answer is Accepted with a real Urgency or Rejected, and feedback is well formed."""
    answer = read_answer(response, Urgency, tool=tool, converter=CONVERTER)
    if isinstance(answer, Accepted):
        assert isinstance(answer.value, Urgency)
        assert answer.value.score in range(1, 6)
        assert isinstance(answer.value.reason, str)
        return
    assert isinstance(answer, Rejected)
    assert answer.errors
    assert len(answer.errors) <= 20
    for error in answer.errors:
        assert isinstance(error, str)
        assert len(error) <= 300
        assert "\n" not in error
        error.encode()
    assert isinstance(answer.raw, str)
    assert len(answer.raw) <= 4_000
    answer.raw.encode()
    _check_turns(feedback(response, answer, schema_name="Urgency", tool=tool))
