"""What the Messages API documents per model, read from `machine/model/capabilities.json`.

The client (`machine.model.request`) builds each request from these facts and refuses, before
anything is sent, a request the model's documented rules would refuse; the fake Messages API
(`machine.testing`) answers from the same facts, so that a request the fake accepts is one the
API documents as accepted. A capabilities file of the same shape can add models or replace
shipped ones, as a price file can (`Capabilities.load(override=...)`).
"""

from __future__ import annotations

import datetime
import difflib
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, cast, get_args

import attrs

from runjournal.machine.errors import CapabilitiesFileError, UnknownModel
from runjournal.machine.model import datafile

SHIPPED: Final = "capabilities.json"
"""The capabilities file shipped in the `machine.model` package."""

Mechanism: TypeAlias = Literal["json_outputs", "strict_tool", "forced_tool", "auto_tool", "text"]
"""How a request asks for its answer's shape: JSON outputs (`output_config.format`), a strict
tool with `tool_choice` auto, a tool forced by `tool_choice`, a plain tool with `tool_choice`
auto (the model may answer in text instead, and is then asked again), or free text."""
MECHANISMS: Final[tuple[Mechanism, ...]] = get_args(Mechanism)
STRUCTURED: Final = ("json_outputs", "strict_tool", "forced_tool")
"""The mechanisms a model's `structured_answer` may name."""

ThinkingType: TypeAlias = Literal["adaptive", "enabled", "disabled", "between_tools"]
THINKING_TYPES: Final[tuple[ThinkingType, ...]] = get_args(ThinkingType)
Effort: TypeAlias = Literal["low", "medium", "high", "xhigh", "max"]
EFFORTS: Final[tuple[Effort, ...]] = get_args(Effort)
"""The effort levels, lowest first."""
STATUSES: Final = ("active", "legacy", "deprecated", "retired")

_EXAMPLE: Final = (
    '{"models": {"MODEL": {"status": "active", "released": "2026-11-01", '
    '"max_output_tokens": 128000, "structured_answer": "json_outputs", '
    '"structured_outputs": true, "forced_tool_choice": false, "prefill": true, '
    '"thinking": {"types": '
    '["adaptive"], "default": "on", "display": "omitted", "off_max_effort": null}, '
    '"effort": {"levels": ["low", "medium", "high"], "default": "high"}, '
    '"tokenizer_ratio": "1", "unconfirmed": []}}}'
)


@attrs.frozen
class Thinking:
    """A model's thinking: the `thinking.type` values it accepts, whether it thinks when the
    request says nothing, what its thinking blocks show by default, and the highest effort at
    which thinking may be turned off (None: any)."""

    types: tuple[ThinkingType, ...]
    on_by_default: bool
    display: Literal["summarized", "omitted"]
    off_max_effort: Effort | None


@attrs.frozen
class ModelCapabilities:
    """What one model accepts and does, as documented."""

    model: str
    status: str
    released: datetime.date
    max_output_tokens: int
    structured_answer: Mechanism
    structured_outputs: bool
    """Whether JSON outputs and strict tools (constrained decoding) are accepted."""
    forced_tool_choice: bool
    """Whether `tool_choice` any or tool is accepted; False: it is a 400."""
    prefill: bool
    """Whether a conversation may end with an assistant turn; False: it is a 400."""
    thinking: Thinking
    effort_levels: tuple[Effort, ...]
    effort_default: Effort | None
    tokenizer_ratio: Decimal
    """Tokens the model counts where Haiku 4.5 counts one."""
    unconfirmed: tuple[str, ...]


@attrs.frozen
class Constrained:
    """The subset of JSON Schema that constrained decoding (JSON outputs, strict tools) accepts."""

    keywords: Mapping[str, frozenset[str]]
    """Keywords by JSON type; "any" lists those allowed whatever the type."""
    string_formats: frozenset[str]
    min_items: frozenset[int]
    max_optional_properties: int
    max_union_properties: int
    max_strict_tools: int
    source: str


@attrs.frozen
class ApiVersion:
    """The API version the SDK sends, and the request fields it no longer has."""

    version: str
    removed_parameters: tuple[str, ...]
    source: str


@attrs.frozen
class Capabilities:
    """The capabilities of every model a file describes, and what is true of all of them."""

    models: Mapping[str, ModelCapabilities]
    constrained: Constrained
    api_version: ApiVersion
    checked: datetime.date

    @classmethod
    def load(cls, override: Path | None = None) -> Capabilities:
        """The shipped file, with the models of `override` (same format) added or replacing
        shipped ones. `constrained_decoding` and `api_version` come from the shipped file."""
        text, origin = datafile.shipped(SHIPPED, "capabilities", CapabilitiesFileError)
        doc = _document(text, origin)
        models = _models(doc, origin)
        for key in ("constrained_decoding", "api_version", "checked"):
            if key not in doc:
                raise CapabilitiesFileError(f"{origin}: missing {key!r}")
        if override is not None:
            more = datafile.given(override, "capabilities file", CapabilitiesFileError)
            models |= _models(_document(more, str(override)), str(override))
        return cls(
            models=MappingProxyType(models),
            constrained=_constrained(doc["constrained_decoding"], origin),
            api_version=_api_version(doc["api_version"], origin),
            checked=_date(doc["checked"], f"{origin}: 'checked'"),
        )

    def of(self, model: str) -> ModelCapabilities:
        """The capabilities of `model` (a name the price table resolved), or UnknownModel."""
        found = self.models.get(model)
        if found is not None:
            return found
        close = difflib.get_close_matches(model, list(self.models), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        msg = (
            f"no capabilities for model {model!r}: runjournal does not know how the API answers "
            f"it.{hint} To use it, write a capabilities file in the format of machine/{SHIPPED}, "
            f"e.g. {_EXAMPLE.replace('MODEL', model)}, from the model's documentation, and load "
            "it with --capabilities FILE, or Capabilities.load(override=Path(...))."
        )
        raise UnknownModel(msg)


def _document(text: str, origin: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CapabilitiesFileError(f"{origin}: not valid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        msg = f'{origin}: must be a JSON object with a "models" object, e.g. {_EXAMPLE}'
        raise CapabilitiesFileError(msg)
    return doc


_FIELDS: Final = frozenset((
    "status", "released", "max_output_tokens", "structured_answer", "structured_outputs",
    "forced_tool_choice", "prefill", "thinking", "effort", "tokenizer_ratio", "unconfirmed",
))  # fmt: skip


def _models(doc: dict[str, Any], origin: str) -> dict[str, ModelCapabilities]:
    return {
        name: _model(name, row, f"{origin}: model {name!r}") for name, row in doc["models"].items()
    }


def _model(name: str, row: Any, where: str) -> ModelCapabilities:
    row = datafile.fields(row, _FIELDS, where, CapabilitiesFileError)
    status = _one_of(row["status"], STATUSES, f"{where}, 'status'")
    answer = cast(
        Mechanism, _one_of(row["structured_answer"], STRUCTURED, f"{where}, 'structured_answer'")
    )
    structured = _bool(row["structured_outputs"], f"{where}, 'structured_outputs'")
    forced = _bool(row["forced_tool_choice"], f"{where}, 'forced_tool_choice'")
    if answer != "forced_tool" and not structured:
        msg = f"{where}: structured_answer {answer!r} needs structured_outputs true"
        raise CapabilitiesFileError(msg)
    if answer == "forced_tool" and not forced:
        raise CapabilitiesFileError(
            f"{where}: structured_answer 'forced_tool' needs forced_tool_choice true"
        )
    effort = row["effort"]
    if not isinstance(effort, dict) or set(effort) != {"levels", "default"}:
        raise CapabilitiesFileError(
            f'{where}: "effort" must be {{"levels": [...], "default": ...}}'
        )
    levels = tuple(
        _one_of(e, EFFORTS, f"{where}, effort level")
        for e in _list(effort["levels"], f"{where}, effort levels")
    )
    default = effort["default"]
    if (default is None) != (not levels) or (default is not None and default not in levels):
        msg = f"{where}: effort default must be one of its levels, or null when it has none"
        raise CapabilitiesFileError(msg)
    max_output = row["max_output_tokens"]
    if not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 1:
        raise CapabilitiesFileError(f"{where}: 'max_output_tokens' must be a positive integer")
    try:
        ratio = Decimal(row["tokenizer_ratio"]) if isinstance(row["tokenizer_ratio"], str) else None
    except InvalidOperation:
        ratio = None
    if ratio is None or not ratio.is_finite() or ratio <= 0:
        raise CapabilitiesFileError(
            f"{where}: 'tokenizer_ratio' must be a positive number written as a string, "
            'like "1.3"'
        )
    unconfirmed = _list(row["unconfirmed"], f"{where}, 'unconfirmed'")
    if not all(isinstance(u, str) for u in unconfirmed):
        raise CapabilitiesFileError(f"{where}: 'unconfirmed' must list strings")
    return ModelCapabilities(
        model=name,
        status=status,
        released=_date(row["released"], f"{where}, 'released'"),
        max_output_tokens=max_output,
        structured_answer=answer,
        structured_outputs=structured,
        forced_tool_choice=forced,
        prefill=_bool(row["prefill"], f"{where}, 'prefill'"),
        thinking=_thinking(row["thinking"], f"{where}, 'thinking'"),
        effort_levels=cast(tuple[Effort, ...], levels),
        effort_default=cast(Effort | None, default),
        tokenizer_ratio=ratio,
        unconfirmed=tuple(unconfirmed),
    )


def _thinking(value: Any, where: str) -> Thinking:
    keys = {"types", "default", "display", "off_max_effort"}
    if not isinstance(value, dict) or set(value) != keys:
        raise CapabilitiesFileError(f"{where}: must be an object with {', '.join(sorted(keys))}")
    types = tuple(
        _one_of(t, THINKING_TYPES, f"{where}, type")
        for t in _list(value["types"], f"{where}, types")
    )
    if not types:
        raise CapabilitiesFileError(
            f"{where}: types must not be empty (a model without thinking accepts 'disabled')"
        )
    default = _one_of(value["default"], ("on", "off"), f"{where}, default")
    display = _one_of(value["display"], ("summarized", "omitted"), f"{where}, display")
    off = value["off_max_effort"]
    if off is not None:
        off = _one_of(off, EFFORTS, f"{where}, off_max_effort")
    return Thinking(
        types=cast(tuple[ThinkingType, ...], types),
        on_by_default=default == "on",
        display=cast(Literal["summarized", "omitted"], display),
        off_max_effort=cast(Effort | None, off),
    )


def _constrained(value: Any, where: str) -> Constrained:
    try:
        keywords = {kind: frozenset(words) for kind, words in value["keywords"].items()}
        return Constrained(
            keywords=MappingProxyType(keywords),
            string_formats=frozenset(value["string_formats"]),
            min_items=frozenset(value["min_items"]),
            max_optional_properties=int(value["max_optional_properties"]),
            max_union_properties=int(value["max_union_properties"]),
            max_strict_tools=int(value["max_strict_tools"]),
            source=str(value["source"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CapabilitiesFileError(f"{where}: 'constrained_decoding' is malformed: {e!r}") from e


def _api_version(value: Any, where: str) -> ApiVersion:
    try:
        return ApiVersion(
            version=str(value["version"]),
            removed_parameters=tuple(str(p) for p in value["removed_parameters"]),
            source=str(value["source"]),
        )
    except (KeyError, TypeError) as e:
        raise CapabilitiesFileError(f"{where}: 'api_version' is malformed: {e!r}") from e


def _one_of(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise CapabilitiesFileError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return cast(str, value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CapabilitiesFileError(f"{where}: must be true or false, not {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CapabilitiesFileError(f"{where}: must be an array, not {value!r}")
    return value


def _date(value: Any, where: str) -> datetime.date:
    try:
        if isinstance(value, str):
            return datetime.date.fromisoformat(value)
    except ValueError:
        pass
    raise CapabilitiesFileError(f'{where}: must be an ISO date like "2026-11-01", not {value!r}')


def markdown_table(capabilities: Capabilities) -> str:
    """The README's table of the models, one row each, as the data says (a test compares): what
    `ctx.ask(thinking=..., effort=...)` each takes, and how it answers."""
    rows = [
        "| model | status | answers through | forced tool | thinks unless told | `thinking=` "
        "| `effort=` (its default) | most output tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for caps in capabilities.models.values():
        ceiling = caps.thinking.off_max_effort
        taken = []
        for kind in caps.thinking.types:
            said = "N (a budget)" if kind == "enabled" else f'"{kind}"'
            if kind in ("disabled", "between_tools") and ceiling:
                said += f" up to effort {ceiling}"
            taken.append(said)
        effort = ", ".join(caps.effort_levels) or "none"
        if caps.effort_default:
            effort += f" ({caps.effort_default})"
        rows.append(
            f"| `{caps.model}` | {caps.status} | {caps.structured_answer.replace('_', ' ')} | "
            f"{'taken' if caps.forced_tool_choice else 'refused'} | "
            f"{'yes' if caps.thinking.on_by_default else 'no'} | {', '.join(taken)} | "
            f"{effort} | {caps.max_output_tokens:,} |"
        )
    return "\n".join(rows) + "\n"
