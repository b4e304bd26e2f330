"""What the fake Messages API says: the assistant message for a request, good or damaged by an
output fault, built from plausible values for the tool's JSON schema or short sentences.

Every choice is drawn from the `random.Random` the caller passes, so an answer is a function of
the fake's seed and the request. Strictly private to the fake (`machine.testing.fake`,
`machine.testing._fake_server`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from runjournal.machine.model.constrained import CONSTRAINTS

Schema = Mapping[str, Any]

ADJECTIVES = (
    "amber", "brisk", "calm", "distant", "early", "gentle", "hidden", "late", "modest", "narrow",
    "quiet", "rapid", "steady", "tidy", "warm", "wide",
)  # fmt: skip
NOUNS = (
    "harbor", "lantern", "meadow", "orchard", "river", "ledger", "signal", "bridge", "garden",
    "report", "window", "engine", "village", "letter", "market", "station",
)  # fmt: skip
VERBS = (
    "carries", "follows", "finds", "holds", "joins", "keeps", "meets", "passes", "reaches",
    "shows", "sends", "turns",
)  # fmt: skip
NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)  # fmt: skip

# Property names that ask for a sentence rather than a couple of words.
_PROSE_NAMES = frozenset((
    "answer", "body", "comment", "content", "description", "explanation", "message", "note",
    "notes", "rationale", "reason", "reasoning", "summary", "text",
))  # fmt: skip
# Beyond this depth a recursive schema gets only its required properties and minimum items.
_MAX_DEPTH = 6


def sentence(rng: random.Random) -> str:
    """One short sentence that reads like English."""
    first, second = rng.sample(NOUNS, 2)
    return (
        f"The {rng.choice(ADJECTIVES)} {first} {rng.choice(VERBS)} "
        f"the {rng.choice(ADJECTIVES)} {second}."
    )


def value_for(
    schema: Schema, rng: random.Random, *, name: str = "", root: Schema | None = None
) -> Any:
    """A value that satisfies `schema` (JSON Schema, the subset tool input schemas use).

    `name` is the property the value is for; strings borrow words from it. `pattern` is not
    honoured: a fake cannot invert a regular expression in general.
    """
    return _value(schema, rng, name, root if root is not None else schema, 0)


def _value(schema: Schema, rng: random.Random, name: str, root: Schema, depth: int) -> Any:
    schema = _described(_resolve(schema, root))
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            branches = [b for b in schema[key] if _resolve(b, root).get("type") != "null"]
            # A branch with a format can be written; one with only a pattern cannot (see above).
            formatted = [b for b in branches if "format" in _resolve(b, root)]
            branches = formatted or branches
            return _value(rng.choice(branches), rng, name, root, depth) if branches else None
    if isinstance(schema.get("allOf"), list):
        return _value(_merge(schema, root), rng, name, root, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [t for t in kind if t != "null"]
        kind = rng.choice(kinds) if kinds else "null"
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, name, root, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, name)


def _described(schema: Schema) -> Schema:
    """`schema` with the constraints a description states (as `machine.model.constrained` moves
    them there for constrained decoding) read back in: the model reads its descriptions."""
    description = schema.get("description")
    if not isinstance(description, str) or CONSTRAINTS not in description:
        return schema
    try:
        stated = json.loads(description.rsplit(CONSTRAINTS, 1)[1])
    except ValueError:
        return schema
    if not isinstance(stated, dict):
        return schema
    merged = {**schema, **stated}
    if "prefixItems" in stated:
        merged.pop("items", None)
    return merged


def _resolve(schema: Any, root: Schema) -> Schema:
    """Follow local `$ref`s such as `#/$defs/Item` (as pydantic and attrs emitters write)."""
    seen = 0
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 20:
        target: Any = root
        for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, Mapping) and part else target
        schema, seen = target, seen + 1
    return schema if isinstance(schema, Mapping) else {}


def _merge(schema: Schema, root: Schema) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        for key, value in _resolve(part, root).items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _object(schema: Schema, rng: random.Random, root: Schema, depth: int) -> dict[str, Any]:
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    return {
        key: _value(sub, rng, key, root, depth + 1)
        for key, sub in properties.items()
        if depth < _MAX_DEPTH or key in required
    }


def _array(schema: Schema, rng: random.Random, name: str, root: Schema, depth: int) -> list[Any]:
    least = int(schema.get("minItems", 0))
    most = int(schema.get("maxItems", max(least, 3)))
    if depth >= _MAX_DEPTH or most == 0:
        count = least
    else:
        count = rng.randint(max(least, 1), max(least, 1, min(most, 3)))
    prefix: Sequence[Any] = schema.get("prefixItems") or ()
    items: Any = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
    singular = name[:-1] if name.endswith("s") else name
    values: list[Any] = []
    for tries in range(count * 10):  # uniqueItems may need a few more draws than items
        if len(values) == count:
            break
        sub = prefix[len(values)] if len(values) < len(prefix) else items
        value = _value(sub, rng, singular, root, depth + 1)
        if not schema.get("uniqueItems") or value not in values or tries >= count * 9:
            values.append(value)
    return values


def _integer(schema: Schema, rng: random.Random) -> int:
    low, high = _bounds(schema)
    lo = math.ceil(low) if low is not None else None
    hi = math.floor(high) if high is not None else None
    if _exclusive(schema, "Minimum", low):
        lo = math.floor(low) + 1 if low is not None else lo
    if _exclusive(schema, "Maximum", high):
        hi = math.ceil(high) - 1 if high is not None else hi
    lo, hi = _span(lo, hi, 100)
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:
        first, last = math.ceil(lo / step), math.floor(hi / step)
        return rng.randint(first, last) * step if first <= last else lo
    return rng.randint(lo, max(lo, hi))


def _number(schema: Schema, rng: random.Random) -> float:
    low, high = _bounds(schema)
    lo, hi = _span(low, high, 100.0)
    value = round(rng.uniform(lo, hi), 2)
    above = value > lo if _exclusive(schema, "Minimum", low) else value >= lo
    below = value < hi if _exclusive(schema, "Maximum", high) else value <= hi
    return float(value) if above and below else (lo + hi) / 2


def _bounds(schema: Schema) -> tuple[float | None, float | None]:
    """The lower and upper bound, from `minimum`/`maximum` or numeric `exclusive*` keywords."""
    low, high = schema.get("minimum"), schema.get("maximum")
    for key, bound in (("exclusiveMinimum", "low"), ("exclusiveMaximum", "high")):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if bound == "low":
                low = value if low is None else max(low, value)
            else:
                high = value if high is None else min(high, value)
    return low, high


def _exclusive(schema: Schema, which: str, bound: float | None) -> bool:
    """Whether `bound` itself is excluded: draft 2020 numbers, or draft 4 `true` flags."""
    value = schema.get(f"exclusive{which}")
    if value is True:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == bound


def _span(lo: Any, hi: Any, width: Any) -> tuple[Any, Any]:
    if lo is None and hi is None:
        return 0 * width, width
    if lo is None:
        return hi - width, hi
    if hi is None:
        return lo, lo + width
    return lo, max(lo, hi)


def _string(schema: Schema, rng: random.Random, name: str) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return (
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}:30:00Z"
        )
    if fmt == "time":
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    if fmt == "email":
        return f"{rng.choice(ADJECTIVES)}.{rng.choice(NOUNS)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(NOUNS)}"
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    words = [w for w in re.split(r"[^a-zA-Z]+|(?<=[a-z])(?=[A-Z])", name) if w]
    if words and words[-1].lower() in _PROSE_NAMES:
        text = sentence(rng)
    else:
        text = " ".join(
            [rng.choice(ADJECTIVES), rng.choice(NOUNS), *[w.lower() for w in words][-1:]]
        )
    least, most = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(text) < least:
        text += " " + rng.choice(NOUNS)
    if most is None or len(text) <= int(most):
        return text
    cut = text[: int(most) + 1].rsplit(" ", 1)[0]  # whole words where they fit
    return cut if least <= len(cut) <= int(most) and cut else text[: int(most)]


def wrong_type(value: Any) -> Any:
    """`value` as a different JSON type, the way a model gets a type wrong: 3 becomes "three"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return NUMBER_WORDS[value] if 0 <= value < len(NUMBER_WORDS) else f"about {value}"
    if isinstance(value, float):
        return f"roughly {value}"
    if isinstance(value, str):
        return len(value.split()) or 1
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items()) or "nothing"
    return "none"


class ResponderFailed(Exception):
    """The test's responder raised, or gave a tool input that is not a dict or text not a str."""


def _ask(responder: Callable[[dict[str, Any]], Any], body: dict[str, Any], kind: type) -> Any:
    try:
        value = responder(body)
    except Exception as e:
        raise ResponderFailed(f"fake responder raised {type(e).__name__}: {e}") from e
    if not isinstance(value, kind):
        request = "structured" if kind is dict else "free-text"
        msg = f"fake responder gave {type(value).__name__}; a {request} request needs a "
        msg += kind.__name__
        raise ResponderFailed(msg)
    return value


def tool_named(body: Mapping[str, Any], name: Any) -> Mapping[str, Any] | None:
    """The tool of the request called `name`, if there is one."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and tool.get("name") == name:
            return tool
    return None


def _asked_tool(body: Mapping[str, Any], rng: random.Random) -> Mapping[str, Any] | None:
    """The tool the model answers through: the one `tool_choice` names, one drawn for `any`,
    and for `auto` (or no choice) the first tool: told to answer through it, the fake does."""
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if choice.get("type") == "tool":
        return tool_named(body, choice.get("name"))
    if choice.get("type") == "none":
        return None
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
    if choice.get("type") == "any" and tools:
        return rng.choice(tools)
    return tools[0] if tools else None


@attrs.frozen
class Thought:
    """The thinking the fake does before it answers: its text as shown, and its length."""

    shown: str
    tokens: int


def answer(
    body: dict[str, Any],
    rng: random.Random,
    fault: str | None,
    responder: Callable[[dict[str, Any]], Any] | None,
    thought: Thought | None = None,
    signature: str = "",
) -> tuple[str | None, dict[str, Any]]:
    """The assistant message (less id and usage) for a valid request, and the fault it carries.

    With `output_config.format` the answer is a text block holding JSON; with a tool, a call to
    it; else text. Thinking, when `thought` is given, comes first, as a thinking block with
    `signature`. Output faults that have nothing to act on (see `machine.testing.fake.FakeModel`),
    or that constrained decoding rules out (a strict tool's input or JSON outputs cannot have the
    wrong shape), give a good answer, and the fault returned is then None. A responder that
    raises, or returns the wrong type, raises ResponderFailed.
    """
    output = body.get("output_config")
    answer_format = output.get("format") if isinstance(output, dict) else None
    tool = None if answer_format is not None else _asked_tool(body, rng)
    constrained = answer_format is not None or bool(tool and tool.get("strict"))
    head = {"type": "message", "role": "assistant", "model": body["model"], "stop_sequence": None}
    thinking = []
    if thought is not None:
        thinking = [{"type": "thinking", "thinking": thought.shown, "signature": signature}]

    def said(text: str, stop: str = "end_turn") -> dict[str, Any]:
        content = [*thinking, {"type": "text", "text": text}]
        return {**head, "content": content, "stop_reason": stop, "stop_details": None}

    if fault == "refusal":
        refusal = {
            "type": "refusal",
            "category": "general_harms",
            "explanation": "The request was declined by a safety classifier (fake).",
        }
        return fault, {
            **said("I can't help with that request.", "refusal"),
            "stop_details": refusal,
        }
    if constrained and fault in ("prose", "fence", "wrong_types", "missing"):
        fault = None
    if fault == "empty":
        return fault, {**said(""), "content": thinking}
    if answer_format is None and tool is None:
        text = _ask(responder, body, str) if responder else f"{sentence(rng)} {sentence(rng)}"
        if fault == "truncated":
            return fault, said(text[: max(1, len(text) // 2)], "max_tokens")
        return None, said(text)
    schema = (answer_format or {}).get("schema") if tool is None else tool.get("input_schema")
    schema = schema if isinstance(schema, dict) else {}
    good = _ask(responder, body, dict) if responder else value_for(schema, rng)
    encoded = json.dumps(good, ensure_ascii=False)
    if fault == "truncated":
        return fault, said(encoded[: max(1, len(encoded) // 2)], "max_tokens")
    if tool is None:
        return None, said(encoded)
    if fault == "prose":
        return fault, said(f"Sure! Here is the input for {tool['name']}: {encoded}. Anything else?")
    if fault == "fence":
        return fault, said(f"```json\n{json.dumps(good, indent=2, ensure_ascii=False)}\n```")
    given, required = sorted(good), sorted(set(schema.get("required") or ()) & set(good))
    if fault == "wrong_types" and given:
        damaged = rng.choice(given)
        good = {**good, damaged: wrong_type(good[damaged])}
    elif fault == "missing" and required:
        dropped = rng.choice(required)
        good = {k: v for k, v in good.items() if k != dropped}
    else:
        fault = None
    tool_id = f"toolu_fake_{rng.getrandbits(96):024x}"  # from the request: unique per conversation
    use = {"type": "tool_use", "id": tool_id, "name": tool["name"], "input": good}
    content = [*thinking, use]
    return fault, {**head, "content": content, "stop_reason": "tool_use", "stop_details": None}


def digest(*parts: object) -> str:
    """The sha256 of `parts` (never Python's salted `hash()`): what the fake keys choices by."""
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def canonical(value: Any) -> str:
    """The canonical JSON of `value`: sorted keys, no spaces; what the fake hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tokens(chars: int, ratio: Decimal = Decimal(1)) -> int:
    """The fake's token count for `chars` characters: a quarter, times the model's tokenizer
    ratio (`ModelCapabilities.tokenizer_ratio`), at least 1."""
    return max(1, math.ceil(Decimal(chars) / 4 * ratio))


def output_chars(content: Sequence[Mapping[str, Any]]) -> int:
    """The size of an answer's visible content: its texts and its tool inputs as JSON."""
    sizes = {"tool_use": lambda b: len(canonical(b["input"])), "text": lambda b: len(b["text"])}
    return sum(sizes[b["type"]](b) for b in content if b["type"] in sizes)


def prompt_pieces(body: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any] | None]]:
    """The prompt in the API's cache order (tools, system, messages), each piece with its
    `cache_control` or None; a piece is what the prefix is counted and hashed by."""
    pieces: list[tuple[Any, Mapping[str, Any] | None]] = []

    def blocks(content: Any) -> None:
        for block in content if isinstance(content, list) else [content]:
            if isinstance(block, dict):
                trimmed = {k: v for k, v in block.items() if k != "cache_control"}
                pieces.append((trimmed.get("text", trimmed), block.get("cache_control")))
            else:
                pieces.append((block, None))

    blocks(body.get("tools") or [])
    output = body.get("output_config")
    if isinstance(output, dict) and output.get("format") is not None:
        pieces.append((output["format"], None))  # the schema of JSON outputs is prompt too
    if body.get("system") is not None:
        blocks(body["system"])
    for turn in body["messages"]:
        blocks(turn.get("content", "") if isinstance(turn, dict) else turn)
    return pieces
