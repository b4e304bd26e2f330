"""Tests for what the API documents per model (machine/model/capabilities.json) and the requests
built from it (machine.model.request, machine.model.constrained): the mechanism each model gets,
the documented rules that refuse a request before it is sent, schemas cut down for constrained
decoding (accepted by the API's rules, never stricter than the class), and every request checked
against the installed SDK's own request types.
"""

from __future__ import annotations

import datetime
import enum
import json
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator
from sdk_types import problems as sdk_problems

from runjournal.machine import PriceTable
from runjournal.machine.errors import CapabilitiesFileError, RequestRefused, UnknownModel
from runjournal.machine.model.capabilities import Capabilities, markdown_table
from runjournal.machine.model.constrained import CONSTRAINTS, fit, problems
from runjournal.machine.model.jsonschema import input_schema, tool_for
from runjournal.machine.model.request import build, plan

CAPS = Capabilities.load()
NO_FORCED_TOOL = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-fable-5-1",
    "claude-mythos-5-1",
    "claude-fable-5-2",
    "claude-mythos-5-2",
)
"""Models whose docs say a forced tool_choice is a 400: written here, not read from the data, so
that removing the data fails these tests."""


@attrs.frozen
class Urgency:
    """How urgent a ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Item:
    name: str = attrs.field(validator=attrs.validators.max_len(20))
    tags: frozenset[str] = frozenset()


@attrs.frozen
class Rich:
    """Most of what a class may hold that constrained decoding can say, or say more loosely."""

    count: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.lt(100)])
    ratio: float
    when: datetime.date
    at: datetime.datetime
    color: Color
    kind: Literal["a", "b", 3]
    items: tuple[Item, ...] = attrs.field(validator=attrs.validators.min_len(2))
    pair: tuple[int, str] = (1, "x")
    note: str | None = None
    code: str = attrs.field(default="AB", validator=attrs.validators.matches_re(r"[A-Z]{2}"))


@attrs.frozen
class Node:
    """A recursive class: constrained decoding cannot say it."""

    value: int
    children: tuple[Node, ...] = ()


@attrs.frozen
class Tally:
    """A dict of any keys: constrained decoding would only allow an empty object."""

    counts: dict[str, int]


@attrs.frozen
class Wide:
    """Thirty optional fields: over the 24 constrained decoding compiles."""

    a0: int = 0
    a1: int = 0
    a2: int = 0
    a3: int = 0
    a4: int = 0
    a5: int = 0
    a6: int = 0
    a7: int = 0
    a8: int = 0
    a9: int = 0
    b0: int = 0
    b1: int = 0
    b2: int = 0
    b3: int = 0
    b4: int = 0
    b5: int = 0
    b6: int = 0
    b7: int = 0
    b8: int = 0
    b9: int = 0
    c0: int = 0
    c1: int = 0
    c2: int = 0
    c3: int = 0
    c4: int = 0
    c5: int = 0
    c6: int = 0
    c7: int = 0
    c8: int = 0
    c9: int = 0


FITTING = (Urgency, Item, Rich)
UNFIT = (Node, Tally, Wide)
TOOLS = {cls: tool_for(cls) for cls in (*FITTING, *UNFIT)}


def thinking_options(model: str) -> list[Any]:
    """Every thinking setting the model accepts, and None (its default)."""
    caps = CAPS.of(model)
    options: list[Any] = [None]
    options += [t for t in ("adaptive", "disabled", "between_tools") if t in caps.thinking.types]
    if "enabled" in caps.thinking.types:
        options.append(2048)
    return options


def current() -> list[str]:
    return sorted(name for name, caps in CAPS.models.items() if caps.status != "retired")


def test_the_readme_table_is_the_data() -> None:
    readme = (ROOT / "README.md").read_text()
    indented = "".join(f"  {line}\n" for line in markdown_table(CAPS).splitlines())
    assert indented in readme


def test_every_priced_model_has_capabilities_and_every_described_model_a_price() -> None:
    assert set(PriceTable.load().models()) == set(CAPS.models)


def test_the_data_says_what_the_docs_say_of_the_newest_models() -> None:
    """Forced tools refused; thinking always on for Opus 5.5 and Fable 5.1; Haiku 5.5 and Opus
    5.5 default to medium effort; the newer tokenizer counts 30% more than Haiku 4.5's."""
    for model in NO_FORCED_TOOL:
        assert CAPS.of(model).forced_tool_choice is False, model
    for model in ("claude-opus-5-5", "claude-fable-5-1"):
        assert CAPS.of(model).thinking.types == ("adaptive",)
    assert CAPS.of("claude-sonnet-5-5").thinking.types == ("adaptive", "between_tools")
    assert CAPS.of("claude-haiku-5-5").effort_default == "medium"
    assert CAPS.of("claude-opus-5-5").effort_default == "medium"
    assert str(CAPS.of("claude-haiku-5-5").tokenizer_ratio) == "1.3"
    assert str(CAPS.of("claude-haiku-4-5").tokenizer_ratio) == "1"
    assert CAPS.api_version.removed_parameters == ("temperature", "top_p", "top_k")


@pytest.mark.parametrize("model", current())
def test_no_request_forces_a_tool_where_the_model_refuses_one_or_thinks(model: str) -> None:
    """Over every schema and thinking setting: a forced tool only where the model takes one and
    does not think; on the newest models, never."""
    caps = CAPS.of(model)
    for cls in (*FITTING, *UNFIT):
        for thinking in thinking_options(model):
            p = plan(CAPS, caps, tool=TOOLS[cls], thinking=thinking, effort=None, max_tokens=4096)
            if p.mechanism == "forced_tool":
                assert model not in NO_FORCED_TOOL
                assert caps.forced_tool_choice and not p.thinking_on
            body = build(model, p, system=None, messages=[], max_tokens=4096, cache_system=False)
            choice = body.get("tool_choice", {}).get("type")
            assert choice in (None, "auto", "tool")
            if model in NO_FORCED_TOOL:
                assert choice != "tool"


@pytest.mark.parametrize(
    ("model", "cls", "thinking", "mechanism"),
    [
        ("claude-opus-5-5", Urgency, None, "json_outputs"),
        ("claude-haiku-5-5", Rich, None, "json_outputs"),
        ("claude-opus-5-5", Node, None, "auto_tool"),
        ("claude-opus-5-5", Tally, None, "auto_tool"),
        ("claude-haiku-4-5", Node, None, "forced_tool"),
        ("claude-haiku-4-5", Node, 2048, "auto_tool"),
        ("claude-haiku-4-5", Wide, None, "forced_tool"),
        ("claude-3-haiku-20240307", Urgency, None, "forced_tool"),
        ("claude-haiku-5-5", Node, "disabled", "auto_tool"),
        ("claude-opus-5", Node, "disabled", "forced_tool"),
        ("claude-opus-5", Node, None, "auto_tool"),
    ],
)
def test_the_mechanism_each_model_and_schema_get(
    model: str, cls: type, thinking: Any, mechanism: str
) -> None:
    p = plan(CAPS, CAPS.of(model), tool=TOOLS[cls], thinking=thinking, effort=None, max_tokens=4096)
    assert p.mechanism == mechanism


def test_a_strict_tool_where_the_data_prefers_one(tmp_path: Path) -> None:
    """A model whose data names strict_tool gets the cut-down schema with strict: true, and
    tool_choice auto."""
    override = tmp_path / "caps.json"
    row = json.loads((ROOT / "machine/model/capabilities.json").read_text())
    entry = {**row["models"]["claude-opus-5-5"], "structured_answer": "strict_tool"}
    override.write_text(json.dumps({"models": {"claude-opus-5-5": entry}}))
    caps = Capabilities.load(override)
    p = plan(
        caps,
        caps.of("claude-opus-5-5"),
        tool=tool_for(Urgency),
        thinking=None,
        effort=None,
        max_tokens=100,
    )
    body = build("claude-opus-5-5", p, system=None, messages=[], max_tokens=100, cache_system=False)
    assert p.mechanism == "strict_tool"
    assert body["tools"][0]["strict"] is True
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert problems(body["tools"][0]["input_schema"], caps.constrained, "tools.0") is None


@pytest.mark.parametrize(
    ("model", "settings", "says"),
    [
        ("claude-opus-5-5", {"thinking": "disabled"}, "does not accept thinking 'disabled'"),
        ("claude-opus-5-5", {"thinking": 4096}, "does not take a thinking budget"),
        ("claude-fable-5-1", {"thinking": "between_tools"}, "cannot be turned off"),
        ("claude-sonnet-5-5", {"thinking": "disabled"}, 'thinking="between_tools" is its lowest'),
        (
            "claude-sonnet-5-5",
            {"thinking": "between_tools", "effort": "max"},
            "only at effort high",
        ),
        ("claude-haiku-5-5", {"thinking": "disabled", "effort": "xhigh"}, "only at effort high"),
        ("claude-haiku-5-5", {"temperature": 0.2}, "removed from the Messages API"),
        ("claude-haiku-4-5", {"temperature": 1.0}, "version 2026-10-21"),
        ("claude-haiku-4-5", {"effort": "high"}, "takes no effort level"),
        ("claude-opus-4-6", {"effort": "xhigh"}, "takes effort low, medium, high, max"),
        ("claude-haiku-4-5", {"thinking": "adaptive"}, "accepts 'enabled' or 'disabled'"),
        ("claude-haiku-4-5", {"thinking": 512}, "at least 1,024"),
        ("claude-haiku-4-5", {"thinking": 8192}, "below max_tokens (4,096)"),
        ("claude-haiku-4-5", {"max_tokens": 64_001}, "limit of 64,000 output tokens"),
        ("claude-opus-4-1", {}, "retired"),
        ("claude-haiku-4-5", {"thinking": "lots"}, "thinking must be"),
    ],
)
def test_documented_rules_refuse_before_anything_is_sent(
    model: str, settings: dict[str, Any], says: str
) -> None:
    kwargs: dict[str, Any] = {"thinking": None, "effort": None, "max_tokens": 4096, **settings}
    with pytest.raises(RequestRefused, match=None) as raised:
        plan(CAPS, CAPS.of(model), tool=tool_for(Urgency), **kwargs)
    message = str(raised.value)
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("model", current())
def test_every_request_fits_the_sdks_request_types(model: str) -> None:
    """Each model, each schema, each thinking setting it takes, with effort and caching: the
    body has no field the installed SDK does not know."""
    caps = CAPS.of(model)
    efforts = [None, *caps.effort_levels[:1]]
    for cls in (*FITTING, *UNFIT, str):
        tool = None if cls is str else TOOLS[cls]
        for thinking in thinking_options(model):
            for effort in efforts:
                try:
                    p = plan(
                        CAPS, caps, tool=tool, thinking=thinking, effort=effort, max_tokens=4096
                    )
                except RequestRefused:
                    continue  # e.g. thinking off at an effort that does not allow it
                messages = [{"role": "user", "content": "Score it."}]
                body = build(
                    model,
                    p,
                    system="Be brief.",
                    messages=messages,
                    max_tokens=4096,
                    cache_system=True,
                )
                assert sdk_problems(body) == [], (model, cls, thinking, effort)


@pytest.mark.parametrize("cls", FITTING)
def test_a_fitted_schema_is_one_the_api_accepts(cls: type) -> None:
    fitted = fit(input_schema(cls), CAPS.constrained)
    assert fitted.schema is not None, fitted.why_not
    assert problems(fitted.schema, CAPS.constrained, "output_config.format.schema") is None


@pytest.mark.parametrize(
    ("cls", "why"),
    [(Node, "recursive"), (Tally, "dict"), (Wide, "30 optional properties")],
)
def test_a_schema_constrained_decoding_cannot_say_is_not_fitted(cls: type, why: str) -> None:
    fitted = fit(input_schema(cls), CAPS.constrained)
    assert fitted.schema is None
    assert why in (fitted.why_not or "")
    # ... and the API, sent it whole, refuses it.
    assert problems(input_schema(cls), CAPS.constrained, "output_config.format.schema") is not None


def test_what_the_subset_lacks_is_moved_to_the_description() -> None:
    schema = fit(input_schema(Rich), CAPS.constrained).schema
    assert schema is not None
    count = schema["properties"]["count"]
    assert "minimum" not in count and "exclusiveMaximum" not in count
    stated = json.loads(count["description"].split(CONSTRAINTS, 1)[1])
    assert stated == {"minimum": 0, "exclusiveMaximum": 100}
    items = schema["properties"]["items"]
    assert items["minItems"] == 1  # the most the subset says of "at least 2"
    assert json.loads(items["description"].split(CONSTRAINTS, 1)[1]) == {"minItems": 2}


@pytest.mark.parametrize("cls", FITTING)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_fitted_schema_is_never_stricter_than_the_class(cls: type, data: st.DataObject) -> None:
    """Whatever the full schema accepts, the cut-down one does: constrained decoding never rules
    out an answer the class would take."""
    full = input_schema(cls)
    fitted = fit(full, CAPS.constrained).schema
    assert fitted is not None
    value = data.draw(from_schema(full))
    # hypothesis-jsonschema reads older drafts: prefixItems (2020-12) is lost on it.
    assume(Draft202012Validator(full).is_valid(value))
    assert Draft202012Validator(fitted).is_valid(value), value


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ("not json", "not valid JSON"),
        ({"models": []}, 'must be a JSON object with a "models" object'),
        ({"models": {"m": {"status": "gone"}}}, "missing field"),
        ({"models": {"m": {}}}, "missing field"),
    ],
)
def test_a_malformed_capabilities_file_says_what_is_wrong(
    tmp_path: Path, doc: Any, says: str
) -> None:
    path = tmp_path / "caps.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(CapabilitiesFileError) as raised:
        Capabilities.load(path)
    assert says in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("structured_answer", "forced_tool", "needs forced_tool_choice true"),
        ("status", "gone", "'gone' is not one of"),
        ("max_output_tokens", 0, "positive integer"),
        ("tokenizer_ratio", 1.3, "written as a string"),
        ("effort", {"levels": ["low"], "default": "high"}, "one of its levels"),
        ("thinking", {"types": []}, "must be an object with"),
    ],
)
def test_a_malformed_model_entry_names_the_field(
    tmp_path: Path, field: str, value: Any, says: str
) -> None:
    row = json.loads((ROOT / "machine/model/capabilities.json").read_text())
    entry = {**row["models"]["claude-opus-5-5"], field: value}
    path = tmp_path / "caps.json"
    path.write_text(json.dumps({"models": {"claude-x": entry}}))
    with pytest.raises(CapabilitiesFileError) as raised:
        Capabilities.load(path)
    assert "claude-x" in str(raised.value) and says in str(raised.value)


def test_a_model_without_capabilities_is_an_error_that_says_how_to_add_it() -> None:
    with pytest.raises(UnknownModel) as raised:
        CAPS.of("claude-opus-5-6")
    said = str(raised.value)
    assert "claude-opus-5-5" in said  # the close match
    assert "Capabilities.load(override=" in said


PIPELINE = """
import attrs
from runjournal.machine import Context, Machine, Transition


@attrs.frozen
class Answer:
    score: int


@attrs.frozen
class State:
    score: int = 0


new = Machine("new", state=State, start="ask", model="claude-opus-6")


@new.step
def ask(ctx: Context, s: State) -> Transition:
    return ctx.finish(State(ctx.ask(Answer, prompt="Score it.").score))
"""


def test_a_new_model_is_added_from_the_command_line(tmp_path: Path) -> None:
    """A model the shipped files do not know: priced with --prices, described with
    --capabilities, it runs; priced alone it fails before any request, saying how to add it."""
    from conftest import cli

    (tmp_path / "new.py").write_text(PIPELINE)
    prices = tmp_path / "prices.json"
    price = {"since": "2026-12-01", "input": "3", "output": "15", "cache_write_5m": "3.75"}
    price |= {"cache_write_1h": "6", "cache_read": "0.30", "source": "https://example.com"}
    prices.write_text(json.dumps({"models": {"claude-opus-6": [price]}}))
    shipped = json.loads((ROOT / "machine/model/capabilities.json").read_text())
    described = tmp_path / "caps.json"
    described.write_text(
        json.dumps({"models": {"claude-opus-6": shipped["models"]["claude-opus-5-5"]}})
    )
    db = tmp_path / "journal.db"
    base = ("run", str(tmp_path / "new.py"), "--fake-model", "none", "--prices", str(prices))
    unknown = cli(*base, db=db, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no capabilities for model 'claude-opus-6'" in unknown.stderr
    assert "--capabilities FILE" in unknown.stderr
    done = cli(*base, "--capabilities", str(described), db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert " done: " in done.stdout
    (tmp_path / "bad.json").write_text('{"models": {"claude-opus-6": {"status": "new"}}}')
    bad = cli(*base, "--capabilities", str(tmp_path / "bad.json"), db=db, cwd=tmp_path)
    assert bad.returncode == 2
    assert (
        bad.stderr.count("\n") == 1 and "bad.json" in bad.stderr and "missing field" in bad.stderr
    )
