"""Reads a model's answer as a validated value or a rejection, and builds the turns that ask again.

The model is the untrusted boundary. `read_answer` takes a Messages API response as a plain dict
and never raises on what it holds: every outcome is `Accepted` or `Rejected`, and a rejection lists
each problem on one line, with its JSON path where there is one. A rejection for the way the answer
stopped (refused, or cut off) says so in `stop`: asking again the same way is no use for those.
Thinking blocks are never part of the typed answer. `feedback` shows the model its answer (its
thinking blocks passed back as they came, as the API requires) and what was wrong with it, as a
`tool_result` with `is_error` when it called a tool (the reask pattern of Instructor), so the next
round can put it right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Generic, Literal, TypeVar, cast

import attrs
import cattrs

from runjournal.machine import convert
from runjournal.machine.errors import ConversionError

T = TypeVar("T")

_MAX_ERRORS: Final = 20
_MAX_ERROR_CHARS: Final = 300
_MAX_RAW_CHARS: Final = 4_000
_MAX_REFUSAL_CHARS: Final = 200
# Bounds on the search for JSON in prose: a megabyte of text costs milliseconds, not minutes.
_SCAN_CHARS: Final = 200_000
_MAX_DECODE_TRIES: Final = 100
_MAX_FENCES: Final = 50
_FENCE: Final = "```"
_NOT_FOUND: Final = object()


@attrs.frozen
class Accepted(Generic[T]):
    """An answer that fits the type asked for."""

    value: T


Stop = Literal["refusal", "max_tokens", "model_context_window_exceeded"]
"""Stop reasons that leave no answer to read: the model declined, or ran out of room."""


@attrs.frozen
class Rejected:
    """An answer that does not fit: each problem on one line, the answer as text (cut), and the
    stop reason when the answer was refused or cut off rather than wrong."""

    errors: list[str]
    raw: str
    stop: Stop | None = None


def read_answer(
    response: Mapping[str, Any], schema: type[T], *, tool: str | None, converter: cattrs.Converter
) -> Accepted[T] | Rejected:
    """The answer in `response` as a `schema`, or why it is not one. Never raises on the answer.

    A structured answer is the input of the `tool` call, else a JSON object in the text (in a
    code fence, or with prose around it). `schema` str asks for free text.
    """
    message: object = response  # typed as a Mapping, but whatever came back is possible
    if not isinstance(message, Mapping):
        return _reject([f"expected a message object, got {convert.json_name(message)}"], "")
    content = message.get("content")
    if content is not None and not isinstance(content, list):
        return _reject([f"expected content blocks, got {convert.json_name(content)}"], "")
    blocks = [b for b in content or [] if isinstance(b, Mapping)]
    text = "\n".join(_texts(blocks)).strip()
    call = _pick([b for b in blocks if b.get("type") == "tool_use"], tool)
    raw = _dump(call.get("input")) if call is not None else text

    stop = message.get("stop_reason")
    if stop == "refusal":
        return _reject([_refusal(message.get("stop_details"), text)], raw, "refusal")
    if stop == "max_tokens":
        return _reject(["the answer was cut off at max_tokens"], raw, "max_tokens")
    if stop == "model_context_window_exceeded":
        said = "the answer was cut off: the context window is full; send less or ask for less"
        return _reject([said], raw, "model_context_window_exceeded")
    if call is None and not text:
        return _reject(["the answer was empty"], raw)
    if schema is str:
        return Accepted(cast(T, text)) if text else _reject(["the answer held no text"], raw)

    if call is not None:
        name = call.get("name")
        if tool is not None and name != tool:
            shown = name if isinstance(name, str) else convert.json_name(name)
            return _reject([f"expected a call to the {tool} tool, got a call to {shown}"], raw)
        candidate = call.get("input")
    else:
        candidate = _find_json(text)
        if candidate is _NOT_FOUND:
            return _reject(["no tool call and no JSON object in the answer"], raw)
    if not isinstance(candidate, dict):
        return _reject([f"expected an object, got {convert.json_name(candidate)}"], raw)
    try:
        return Accepted(convert.structure(converter, candidate, schema, "the answer"))
    except ConversionError as e:
        return _reject(e.errors, raw)
    except Exception as e:  # a validator may raise anything; BaseExceptions still propagate
        return _reject([_describe(e)], raw)


def feedback(
    response: Mapping[str, Any], rejected: Rejected, *, schema_name: str, tool: str | None
) -> list[dict[str, Any]]:
    """The two turns to append before asking again: the answer as it came, then what was wrong.

    The assistant turn keeps only what the API accepts as input (thinking blocks as they came,
    text blocks `{type, text}`, tool_use blocks `{type, id, name, input}`); an answer with no text
    or tool call left gets no assistant turn, since the API refuses an empty one. When the answer
    called a tool, the user turn answers each call with a `tool_result` marked `is_error`;
    otherwise it is a text block.
    """
    blocks = _input_blocks(response)
    calls = [b for b in blocks if b["type"] == "tool_use"]
    chosen = _pick(calls, tool)  # the call read_answer took the answer from
    how = tool or (chosen["name"] if chosen is not None else None)
    message = _message(rejected.errors, schema_name, how)
    turns: list[dict[str, Any]] = []
    # A turn of thinking alone says nothing the model can be told was wrong: left out, as an
    # empty one would be.
    if any(b["type"] in ("text", "tool_use") for b in blocks):
        turns.append({"role": "assistant", "content": blocks})
    if calls:
        # The API wants a tool_result for every tool_use of the turn before, not only the one read.
        results = [
            {
                "type": "tool_result",
                "tool_use_id": c["id"],
                "is_error": True,
                "content": message if c is chosen else f"Not used: make one call to {how} only.",
            }
            for c in calls
        ]
        turns.append({"role": "user", "content": results})
    else:
        turns.append({"role": "user", "content": [{"type": "text", "text": message}]})
    return turns


def _message(errors: Sequence[str], schema_name: str, tool: str | None) -> str:
    listed = "\n".join(f"- {e}" for e in errors)
    if tool is not None:
        how = f"Answer again by calling the {tool} tool, with every field filled in correctly."
    elif schema_name == str.__name__:
        how = "Answer again, in plain text."
    else:
        how = (
            f"Answer again with one JSON object for {schema_name}, "
            "with every field filled in correctly."
        )
    return f"Your answer was not accepted:\n{listed}\n{how}"


def _texts(blocks: Sequence[Mapping[Any, Any]]) -> list[str]:
    return [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]


def _pick(calls: Sequence[Mapping[Any, Any]], tool: str | None) -> Mapping[Any, Any] | None:
    """The call named `tool` if there is one, else the first call, else None."""
    for c in calls:
        if tool is None or c.get("name") == tool:
            return c
    return calls[0] if calls else None


def _input_blocks(response: object) -> list[dict[str, Any]]:
    """The answer's content as the API takes it back: thinking blocks exactly as they came (the
    API checks their signatures, and refuses a tool result whose call lost its thinking), text,
    and well-formed tool calls."""
    content = response.get("content") if isinstance(response, Mapping) else None
    blocks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, Mapping):
            continue
        if b.get("type") == "thinking" and isinstance(b.get("signature"), str):
            blocks.append({k: b[k] for k in ("type", "thinking", "signature") if k in b})
        elif b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": b["data"]})
        elif b.get("type") == "text":
            text = b.get("text")
            # The API refuses text blocks that are empty or only whitespace.
            if isinstance(text, str) and text.strip():
                blocks.append({"type": "text", "text": text})
        elif b.get("type") == "tool_use":
            id_, name, input_ = b.get("id"), b.get("name"), b.get("input")
            # A call the API would refuse, or a second one with the same id, cannot go back.
            well_formed = isinstance(name, str) and name and isinstance(input_, dict)
            if isinstance(id_, str) and id_ and id_ not in seen and well_formed:
                seen.add(id_)
                blocks.append({"type": "tool_use", "id": id_, "name": name, "input": input_})
    return blocks


def _find_json(text: str) -> Any:
    """The JSON value the text is, else the first object in a code fence, else in the prose."""
    text = text[:_SCAN_CHARS]
    whole = _loads(text)
    if whole is not _NOT_FOUND:
        return whole  # an array or a number is reported as such, not searched for an object
    for body in _fences(text):
        value = _loads(body)
        if value is _NOT_FOUND:
            value = _first_object(body)
        if value is not _NOT_FOUND:
            return value
    return _first_object(text)


def _fences(text: str) -> list[str]:
    """The bodies of the ``` or ```json code fences in `text`, in order."""
    bodies: list[str] = []
    start = text.find(_FENCE)
    while start != -1 and len(bodies) < _MAX_FENCES:
        end = text.find(_FENCE, start + len(_FENCE))
        if end == -1:
            break
        body = text[start + len(_FENCE) : end]
        info, newline, rest = body.partition("\n")
        if not newline:
            bodies.append(body)
        elif info.strip().lower() in ("", "json"):
            bodies.append(rest)
        start = text.find(_FENCE, end + len(_FENCE))
    return bodies


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and the journal could not store them.
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return _NOT_FOUND


def _first_object(text: str) -> Any:
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    start = text.find("{")
    for _ in range(_MAX_DECODE_TRIES):
        if start == -1:
            break
        try:
            return decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
    return _NOT_FOUND


def _refusal(details: Any, text: str) -> str:
    """One line: that the model refused, in which policy category, and what it said."""
    details = details if isinstance(details, Mapping) else {}
    category, explanation = details.get("category"), details.get("explanation")
    line = "the model refused"
    if isinstance(category, str) and category:
        line += f" (category {category})"
    said = explanation if isinstance(explanation, str) and explanation else text
    return f"{line}: {_cut(said, _MAX_REFUSAL_CHARS, '…')}" if said else line


def _reject(errors: Sequence[str], raw: str, stop: Stop | None = None) -> Rejected:
    lines = [_line(str(e)) for e in errors] or ["the answer was not accepted"]
    if len(lines) > _MAX_ERRORS:
        more = len(lines) - _MAX_ERRORS + 1
        lines = [*lines[: _MAX_ERRORS - 1], f"and {more} more errors"]
    cut = _cut(raw, _MAX_RAW_CHARS, f" … [cut: {len(raw):,} characters]")
    return Rejected(lines, cut, stop)


def _line(text: str) -> str:
    # Cut before joining, so a huge message costs no more than a short one.
    one = " ".join(part.strip() for part in text[: _MAX_ERROR_CHARS * 2].splitlines())
    return _cut(one, _MAX_ERROR_CHARS, "…")


def _cut(text: str, limit: int, marker: str) -> str:
    """At most `limit` characters of `text`, ending with `marker` if cut, and storable as UTF-8."""
    # JSON may hold lone surrogates ("\ud800"), which no UTF-8 journal can store; escaped, they
    # grow sixfold, hence the second look at the length.
    safe = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit and len(safe) <= limit:
        return safe
    return safe[: limit - len(marker)] + marker


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:  # circular, or too deep: say what it was, not what it held
        return f"<{convert.json_name(value)}>"


def _describe(e: Exception) -> str:
    try:
        said = str(e)
    except Exception:  # even its message may fail
        said = ""
    return f"{type(e).__name__}: {said}" if said else type(e).__name__
