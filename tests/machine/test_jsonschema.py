"""Tests for `machine.model.jsonschema`: the schema says what `convert.answers()` accepts."""

from __future__ import annotations

import datetime
import enum
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Literal, Optional, TypeVar, Union

import attrs
import pytest
from attrs import validators as v
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runjournal.machine.convert import ConversionError, answers, make, structure
from runjournal.machine.model.jsonschema import SchemaError, input_schema, tool_for

T = TypeVar("T")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Opaque:
    """Not an attrs class, not a JSON value."""


@attrs.frozen
class Urgency:
    """How urgent a support ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    """1 (can wait) to 5 (drop everything)."""
    reason: str
    """One sentence on why."""
    tags: tuple[str, ...] = ()


@attrs.frozen
class Customer:
    """Who wrote in."""

    name: str
    email: str | None = None


@attrs.frozen
class Ticket:
    customer: Customer
    """The person, not the company."""
    opened: datetime.datetime
    due: datetime.date
    color: Color = Color.RED
    level: Level = Level.LOW
    labels: frozenset[str] = frozenset()
    scores: dict[str, float] = attrs.Factory(dict)
    span: tuple[int, str] = (0, "")
    note: str = attrs.field(default="", metadata={"description": "Free text."})
    """Shadowed by the metadata description."""


@attrs.frozen
class Triage:
    """The tickets of one morning, sorted by urgency."""

    tickets: list[Ticket]
    urgency: Urgency
    by_queue: Mapping[str, Sequence[int]] = attrs.Factory(dict)
    mode: Literal["fast", "careful"] = "fast"
    anything: Any = None
    either: int | str = 0


@attrs.frozen
class Node:
    """A tree that holds itself."""

    name: str
    children: list[Node] = attrs.Factory(list)


@attrs.frozen
class Branch:
    leaf: Leaf | None = None


@attrs.frozen
class Leaf:
    back: Branch
    weight: int = 0


@attrs.frozen
class Forest:
    first: Branch
    second: Branch


@attrs.frozen
class Box(Generic[T]):
    item: T
    more: list[T] = attrs.Factory(list)


@attrs.frozen
class Boxes:
    ints: Box[int]
    names: Box[list[str]]


@attrs.frozen
class Keys:
    _secret: int
    renamed: int = attrs.field(alias="other")
    derived: int = attrs.field(init=False, default=0)
    made: list[int] = attrs.Factory(list)


@attrs.frozen
class Base:
    first: str
    """Said in the base class."""


@attrs.frozen
class Derived(Base):
    """A subclass."""

    second: int = 0
    """Said in the subclass."""


@attrs.frozen
class Nothing:
    x: None


@attrs.define
class Plain:
    a: int
    b: str = ""


def field(tp: Any, **kwargs: Any) -> dict[str, Any]:
    """The schema of field `x` of a one-field class with type `tp`."""
    cls = attrs.make_class("One", {"x": attrs.field(type=tp, **kwargs)})
    schema: dict[str, Any] = input_schema(cls)["properties"]["x"]
    return schema


# Schemas are checked by the `jsonschema` library (Draft 2020-12), formats included: "date" is
# always checked, "date-time" only when rfc3339-validator is installed; the patterns that
# machine.model.jsonschema writes beside both make the schema exact either way.


def problems(schema: dict[str, Any], value: Any) -> list[str]:
    """Where `value` breaks `schema`, as "path: message"; empty when it fits."""
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(value)]


# Types


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (type(None), {"type": "null"}),
        (Any, {}),
    ],
)
def test_scalars_map_to_json_types(tp: Any, expected: dict[str, Any]) -> None:
    """str, int, float, bool and None become their JSON types; Any is unconstrained."""
    assert field(tp) == expected


def test_a_none_annotation_is_null() -> None:
    """`x: None`, which get_type_hints reads as NoneType, is null."""
    assert input_schema(Nothing)["properties"]["x"] == {"type": "null"}


def test_literals_are_enums_typed_when_they_share_a_type() -> None:
    """A Literal becomes an enum, with `type` only when every value has the same JSON type."""
    assert field(Literal["a", "b"]) == {"type": "string", "enum": ["a", "b"]}
    assert field(Literal[True]) == {"type": "boolean", "enum": [True]}
    assert field(Literal[1, "one", None]) == {"enum": [1, "one", None]}
    assert field(Literal[Color.BLUE]) == {"type": "string", "enum": ["blue"]}


def test_enum_classes_list_their_values() -> None:
    """An Enum subclass becomes the enum of its members' values, which the converter reads."""
    assert field(Color) == {"type": "string", "enum": ["red", "blue"]}
    assert field(Level) == {"type": "integer", "enum": [1, 2]}


def test_nested_classes_are_inline_objects() -> None:
    """A nested attrs class is an inline object; a field's docstring overrides the class's."""
    customer = input_schema(Ticket)["properties"]["customer"]
    assert customer == {
        "type": "object",
        "description": "The person, not the company.",
        "properties": {
            "name": {"type": "string"},
            "email": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    assert input_schema(Customer)["description"] == "Who wrote in."


def test_a_class_holding_itself_refers_to_the_root() -> None:
    """A self-referring root class is described once, its recursion as {"$ref": "#"}."""
    schema = input_schema(Node)
    assert schema["properties"]["children"] == {"type": "array", "items": {"$ref": "#"}}
    assert "$defs" not in schema


def test_mutually_recursive_classes_go_to_defs() -> None:
    """Classes in a cycle below the root are written once in $defs and referred to by $ref."""
    schema = input_schema(Forest)
    branch = {"$ref": "#/$defs/Branch"}
    assert schema["properties"] == {"first": branch, "second": branch}
    assert list(schema["$defs"]) == ["Branch"]
    leaf = schema["$defs"]["Branch"]["properties"]["leaf"]["anyOf"][0]
    assert leaf["properties"]["back"] == branch


def test_recursive_classes_with_the_same_name_get_distinct_defs() -> None:
    """Two recursive classes both called Node do not overwrite each other in $defs."""
    other = attrs.make_class("Node", {"kids": attrs.field(type=list, factory=list)})
    other.__annotations__["kids"] = list[other]
    both = attrs.make_class("Both", {"a": attrs.field(type=Node), "b": attrs.field(type=other)})
    schema = input_schema(both)
    assert list(schema["$defs"]) == ["Node", "Node_2"]
    assert schema["properties"]["b"] == {"$ref": "#/$defs/Node_2"}
    assert schema["$defs"]["Node_2"]["properties"]["kids"]["items"] == {"$ref": "#/$defs/Node_2"}


@pytest.mark.parametrize("tp", [list[int], tuple[int, ...], Sequence[int]])
def test_sequences_are_arrays(tp: Any) -> None:
    """list[X], tuple[X, ...] and Sequence[X] are arrays of X."""
    assert field(tp) == {"type": "array", "items": {"type": "integer"}}


@pytest.mark.parametrize("tp", [set[str], frozenset[str]])
def test_sets_are_arrays_of_unique_items(tp: Any) -> None:
    """set[X] and frozenset[X] are arrays whose items do not repeat."""
    assert field(tp) == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}


def test_fixed_tuples_have_prefix_items_and_a_length() -> None:
    """tuple[X, Y] lists each position's schema and fixes the length."""
    assert field(tuple[int, str]) == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert field(tuple[()]) == {"type": "array", "maxItems": 0}


def test_dicts_with_string_keys_are_objects() -> None:
    """dict[str, X] constrains the values; string-valued key types also constrain the names."""
    assert field(dict[str, int]) == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert field(Mapping[Literal["a", "b"], Any]) == {
        "type": "object",
        "propertyNames": {"type": "string", "enum": ["a", "b"]},
        "additionalProperties": {},
    }


@pytest.mark.parametrize("tp", [Optional[int], Union[int, None], int | None])  # noqa: UP007, UP045
def test_optionals_are_any_of_with_null(tp: Any) -> None:
    """Optional[X] and X | None are anyOf X or null."""
    assert field(tp) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_other_unions_are_any_of() -> None:
    """Every branch of a union appears in order in anyOf."""
    assert field(int | str | list[bool]) == {
        "anyOf": [
            {"type": "integer"},
            {"type": "string"},
            {"type": "array", "items": {"type": "boolean"}},
        ]
    }


def test_dates_are_rfc_3339_strings_the_converter_reads_and_writes() -> None:
    """A date is an RFC 3339 full-date; a datetime an RFC 3339 date-time, or the same without
    an offset, as the converter writes a naive one. Patterns repeat what the formats say, so
    the schema is exact for validators that take `format` as a mere annotation."""
    date, moment = field(datetime.date), field(datetime.datetime)
    assert date["type"] == "string"
    assert date["format"] == "date"
    assert moment["type"] == "string"
    assert [branch.get("format") for branch in moment["anyOf"]] == ["date-time", None]
    aware = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    naive = datetime.datetime(2024, 5, 6, 7, 8, 9)
    assert make().unstructure(aware) == "2024-05-06T07:08:09+00:00"
    assert make().unstructure(naive) == "2024-05-06T07:08:09"
    assert make().unstructure(aware.date()) == "2024-05-06"
    for value, schema in ((aware, moment), (naive, moment), (aware.date(), date)):
        assert problems(schema, make().unstructure(value)) == []
    assert problems(moment, "2024-05-06T07:08:09+00:00\n") != []  # Python's `$` lets this by
    assert problems(moment, "2024-02-30T07:08:09Z") != []
    assert problems(date, "2023-02-29") != []
    assert problems(date, "2024-02-29") == []


def test_generic_classes_use_their_arguments() -> None:
    """Box[int] describes its T fields as integers, Box[list[str]] as arrays of strings."""
    properties = input_schema(Boxes)["properties"]
    assert properties["ints"]["properties"]["item"] == {"type": "integer"}
    assert properties["names"]["properties"]["more"]["items"] == {
        "type": "array",
        "items": {"type": "string"},
    }


def test_keys_are_attribute_names_as_the_converter_reads_them() -> None:
    """Properties use attribute names, not aliases, skip init=False fields, and only fields
    without a default are required; the converter structures exactly those keys."""
    schema = input_schema(Keys)
    assert list(schema["properties"]) == ["_secret", "renamed", "made"]
    assert schema["required"] == ["_secret", "renamed"]
    assert schema["additionalProperties"] is False
    assert make().structure({"_secret": 1, "renamed": 2}, Keys) == Keys(1, other=2)


# Descriptions


def test_attribute_docstrings_describe_fields() -> None:
    """A string right after a field describes it; the class docstring describes the object."""
    assert input_schema(Urgency) == {
        "type": "object",
        "description": "How urgent a support ticket is.",
        "properties": {
            "score": {
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "description": "1 (can wait) to 5 (drop everything).",
            },
            "reason": {"type": "string", "description": "One sentence on why."},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }


def test_metadata_description_wins_over_a_docstring() -> None:
    """attrs.field(metadata={"description": ...}) is used before an attribute docstring."""
    assert input_schema(Ticket)["properties"]["note"]["description"] == "Free text."


def test_undocumented_classes_and_fields_have_no_description() -> None:
    """Nothing is invented: no class docstring, no field docstring, no description."""
    schema = input_schema(Plain)
    assert "description" not in schema
    assert all("description" not in p for p in schema["properties"].values())


def test_inherited_fields_keep_their_docstrings() -> None:
    """A field declared in a base class is described by the base class's docstring for it."""
    properties = input_schema(Derived)["properties"]
    assert properties["first"]["description"] == "Said in the base class."
    assert properties["second"]["description"] == "Said in the subclass."


def test_classes_without_source_are_described_without_docstrings() -> None:
    """When the source cannot be read, fields go undescribed and nothing fails."""
    namespace: dict[str, Any] = {}
    exec(
        "import attrs\n@attrs.frozen\nclass Made:\n    'Made by exec.'\n    x: int\n    'An x.'\n",
        namespace,
    )
    schema = input_schema(namespace["Made"])
    assert schema["description"] == "Made by exec."
    assert schema["properties"] == {"x": {"type": "integer"}}


# Validators


@pytest.mark.parametrize(
    ("tp", "validator", "expected"),
    [
        (int, v.in_(range(1, 6)), {"type": "integer", "minimum": 1, "maximum": 5}),
        (int, v.in_(range(0, 10, 2)), {"type": "integer", "enum": [0, 2, 4, 6, 8]}),
        (str, v.in_(["b", "a"]), {"type": "string", "enum": ["b", "a"]}),
        (str, v.in_({"b", "c", "a"}), {"type": "string", "enum": ["a", "b", "c"]}),
        (Color, v.in_([Color.BLUE]), {"type": "string", "enum": ["blue"]}),
        (int, v.ge(0), {"type": "integer", "minimum": 0}),
        (float, v.gt(0), {"type": "number", "exclusiveMinimum": 0}),
        (float, v.le(1.5), {"type": "number", "maximum": 1.5}),
        (int, v.lt(10), {"type": "integer", "exclusiveMaximum": 10}),
        (int, [v.ge(0), v.ge(5), v.le(9)], {"type": "integer", "minimum": 5, "maximum": 9}),
        (
            str,
            v.and_(v.min_len(1), v.max_len(9)),
            {"type": "string", "minLength": 1, "maxLength": 9},
        ),
        (list[int], v.min_len(1), {"type": "array", "items": {"type": "integer"}, "minItems": 1}),
        (str, v.matches_re(r"[a-z]+"), {"type": "string", "pattern": r"^(?:[a-z]+)(?![\s\S])"}),
        (str, v.matches_re(r"ab|cd", func=re.match), {"type": "string", "pattern": "^(?:ab|cd)"}),
        (str, v.matches_re(r"[0-9]", func=re.search), {"type": "string", "pattern": "[0-9]"}),
        (
            str,
            v.matches_re(r"x$", func=re.search),
            {"type": "string", "pattern": r"x(?=\n?(?![\s\S]))"},
        ),
        (str, v.matches_re(r"a.c"), {"type": "string", "pattern": r"^(?:a[^\n]c)(?![\s\S])"}),
        (
            str,
            v.matches_re(r"\d+", flags=re.ASCII),
            {"type": "string", "pattern": r"^(?:[0-9]+)(?![\s\S])"},
        ),
        (
            str,
            v.matches_re(r"(?P<n>a{,2})"),
            {"type": "string", "pattern": r"^(?:a{0,2})(?![\s\S])"},
        ),
        (float, v.in_(range(1, 6)), {"type": "integer", "minimum": 1, "maximum": 5}),
        (int, v.in_(range(9, 0, -4)), {"type": "integer", "enum": [1, 5, 9]}),
        (int, v.in_(range(0)), {"type": "integer", "enum": []}),
        (
            int,
            v.in_(range(0, 1000, 10)),
            {"type": "integer", "minimum": 0, "maximum": 990, "multipleOf": 10},
        ),
        (float, v.in_([1, 2.5, True]), {"type": "number", "enum": [1, 2.5]}),
        (bool, v.in_([1]), {"type": "boolean", "enum": [True]}),
        (Literal[1, 2, 3], v.ge(2), {"type": "integer", "enum": [2, 3]}),
        (Level, v.in_(range(2, 9)), {"type": "integer", "enum": [2]}),
        (int | None, v.in_([1]), {"type": "integer", "enum": [1]}),
        (int | str, v.ge(0), {"type": "integer", "minimum": 0}),
        (
            int | float,
            v.ge(0),
            {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "number", "minimum": 0}]},
        ),
        (
            int | None,
            v.optional(v.ge(0)),
            {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        ),
        (
            str | None,
            v.optional(v.in_(["x"])),
            {"anyOf": [{"type": "string", "enum": ["x"]}, {"type": "null"}]},
        ),
        (
            list[str],
            v.deep_iterable(member_validator=v.min_len(1), iterable_validator=v.max_len(3)),
            {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
        ),
        (
            dict[str, int],
            v.deep_mapping(key_validator=v.matches_re("[a-z]+"), value_validator=v.ge(0)),
            {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "propertyNames": {"type": "string", "pattern": r"^(?:[a-z]+)(?![\s\S])"},
            },
        ),
        (int, v.instance_of(int), {"type": "integer"}),
        (int, v.not_(v.in_([3])), {"type": "integer"}),
        (int, lambda *_: None, {"type": "integer"}),
    ],
)
def test_validators_become_constraints(tp: Any, validator: Any, expected: Any) -> None:
    """Validators that map cleanly add their keywords; others are left to the converter."""
    assert field(tp, validator=validator) == expected


CODE_POINTS = [
    *map(chr, range(0x3100)),  # every space Python knows is below U+3100
    *map(chr, range(0x3100, 0x110000, 509)),
    "\ufeff",  # a space to ECMA-262, not to Python
    "\U0010ffff",
    "\U0001f600",
]


@pytest.mark.parametrize(
    ("regex", "flags"),
    [
        (r"\s", 0),
        (r"\S", 0),
        (".", 0),
        (".", re.DOTALL),
        (r"[^a-c\s]", 0),
        (r"\d", re.ASCII),
        (r"\w", re.ASCII),
        (r"[\W\s]", re.ASCII),
        (r"\s", re.ASCII),
    ],
)
def test_classes_are_spelled_as_the_code_points_python_matches(regex: str, flags: int) -> None:
    """ECMA-262 reads \\s and "." otherwise (U+FEFF is a space there, "\\r" no "." match), so
    they are written out as the code points Python's `re` matches."""
    pattern = field(str, validator=v.matches_re(regex, flags=flags))["pattern"]
    compiled = re.compile(regex, flags)
    differ = [c for c in CODE_POINTS if bool(re.search(pattern, c)) != bool(compiled.fullmatch(c))]
    assert differ == []


# Tools, names, determinism


def test_tool_for_wraps_the_schema_for_the_messages_api() -> None:
    """A tool is the class name, the class docstring and the input schema."""
    assert tool_for(Urgency) == {
        "name": "Urgency",
        "description": "How urgent a support ticket is.",
        "input_schema": input_schema(Urgency),
    }


def test_a_class_without_a_docstring_still_gets_a_tool_description() -> None:
    """The Messages API wants a description; one is made from the class name."""
    assert tool_for(Plain)["description"] == "Answer by filling in the fields of Plain."


@pytest.mark.parametrize(
    ("class_name", "tool_name"),
    [("Réponse finale", "Reponse_finale"), ("x" * 70, "x" * 64), ("答え", "__")],
)
def test_default_tool_names_are_cleaned_to_fit(class_name: str, tool_name: str) -> None:
    """The class name loses accents, other characters become "_", and it stops at 64."""
    cls = attrs.make_class(class_name, {"a": attrs.field(type=int)})
    assert tool_for(cls)["name"] == tool_name
    assert tool_for(cls, name="answer")["name"] == "answer"


@pytest.mark.parametrize("name", ["", "has space", "x" * 65])
def test_an_explicit_tool_name_must_already_fit(name: str) -> None:
    """A given name is never changed behind the caller's back; a bad one is a ValueError."""
    with pytest.raises(ValueError, match="tool name"):
        tool_for(Urgency, name=name)


def test_the_same_class_gives_the_same_schema() -> None:
    """Output is stable, key order included, so a request hash does not drift."""
    first, second = input_schema(Triage), input_schema(Triage)
    assert json.dumps(first) == json.dumps(second)


SET_OPTIONS = """
import json, attrs
from runjournal.machine.model.jsonschema import input_schema
fruit = attrs.validators.in_({"pear", "fig", "apple", "kiwi", "plum"})
C = attrs.make_class("C", {"x": attrs.field(type=str, validator=fruit)})
print(json.dumps(input_schema(C)))
"""


def test_the_schema_does_not_depend_on_the_hash_seed() -> None:
    """in_() over a set is listed sorted, so runs with different hash seeds agree."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", SET_OPTIONS],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert '"enum": ["apple", "fig", "kiwi", "pear", "plum"]' in outputs.pop()


# Errors


@attrs.frozen
class When:
    when: Opaque


@attrs.frozen
class BadTriage:
    tickets: list[When]


class Shapes(enum.Enum):
    SQUARE = (1, 1)


@attrs.frozen
class Unresolvable:
    x: Nowhere  # noqa: F821


@attrs.frozen
class HoldsUnresolvable:
    inner: Unresolvable


def one(tp: Any) -> type:
    """A class named Bad with one field, `x`, of type `tp`."""
    return attrs.make_class("Bad", {"x": attrs.field(type=tp)})


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (BadTriage, "BadTriage.tickets[].when: cannot describe <class '"),
        (one(bytes | None), "Bad.x: cannot describe <class 'bytes'> as JSON Schema; JSON has no"),
        (one(dict[int, str]), "Bad.x: cannot describe dict[int, str] as JSON Schema: JSON object"),
        (one(tuple[int, Opaque]), "Bad.x[1]: cannot describe <class '"),
        (one(dict[str, list[bytes]]), "Bad.x{}[]: cannot describe <class 'bytes'>"),
        (one(datetime.time), "Bad.x: cannot describe <class 'datetime.time'>"),
        (one(Box), "Bad.x.item: cannot describe type variable ~T; parametrize"),
        (one(Shapes), "Bad.x: cannot describe <enum 'Shapes'> as JSON Schema: (1, 1) is not"),
        (HoldsUnresolvable, "HoldsUnresolvable.inner: cannot resolve the annotations of"),
    ],
)
def test_errors_name_the_field_path(cls: type, message: str) -> None:
    """Every SchemaError starts with the path to the field ([] an item, {} a dict value)."""
    with pytest.raises(SchemaError) as caught:
        input_schema(cls)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    ("tp", "validator", "says"),
    [
        (str, v.matches_re(r"\d{4}"), "\\d matches every Unicode digit in Python (٣ too)"),
        (str, v.matches_re(r"\w+"), "write the class you mean, such as [A-Za-z0-9_]"),
        (str, v.matches_re(r"\bno\b"), "pass flags=re.ASCII"),
        (str, v.matches_re(r"[^\W]"), "\\w matches every Unicode letter"),
        (str, v.matches_re("yes", flags=re.IGNORECASE), "write both cases, e.g. [Yy][Ee][Ss]"),
        (str | None, v.optional(v.matches_re("(?i:yes)")), "JSON Schema patterns have no flags"),
        (str, v.matches_re(r"(a)\1"), "backreferences and conditionals match differently"),
        (str, v.matches_re(r"a*+"), "no possessive quantifiers or atomic groups"),
        (list[str], v.deep_iterable(v.matches_re(r"\d")), "Bad.x: matches_re("),
        (int, v.in_(range(1, 1000, 7)), "or list them: in_(list(range(1, 1000, 7)))"),
        (set[list[int]], None, "list[int] values cannot be members of a set; use list[...]"),
        (frozenset[Any], None, "typing.Any values cannot be members of a set"),
        (set[Plain], None, "or a frozen attrs class as the item"),
    ],
)
def test_what_json_schema_cannot_say_is_refused(tp: Any, validator: Any, says: str) -> None:
    """A validator or type the schema could only state approximately is a SchemaError that
    names the field and says what to write instead; an approximate schema would have the
    model answer what the converter then refuses, or the reverse."""
    cls = attrs.make_class("Bad", {"x": attrs.field(type=tp, validator=validator)})
    with pytest.raises(SchemaError) as caught:
        input_schema(cls)
    assert str(caught.value).startswith("Bad.x"), str(caught.value)
    assert says in str(caught.value), str(caught.value)


def test_only_attrs_classes_have_an_input_schema() -> None:
    """input_schema(dict) is a SchemaError naming what was given."""
    with pytest.raises(SchemaError, match="is not an attrs class"):
        input_schema(dict)


# Round trips: what the converter writes fits the schema, and comes back.

EXAMPLES = [
    Urgency(score=5, reason="The site is down.", tags=("outage", "web")),
    Triage(
        tickets=[
            Ticket(
                customer=Customer("Ada", email="ada@example.com"),
                opened=datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
                due=datetime.date(2024, 5, 7),
                color=Color.BLUE,
                level=Level.HIGH,
                labels=frozenset({"billing", "vip"}),
                scores={"anger": 0.5, "value": 3.0},
                span=(3, "days"),
            ),
            Ticket(Customer("Bo"), datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1)),
        ],
        urgency=Urgency(1, "It can wait."),
        by_queue={"billing": [1, 2], "web": []},
        mode="careful",
        anything={"free": ["form", 1, None]},
        either="two",
    ),
    Node("root", [Node("a", [Node("a1")]), Node("b")]),
    Forest(Branch(Leaf(Branch(None), weight=3)), Branch()),
    Boxes(Box(1, [2, 3]), Box(["x"], [["y", "z"], []])),
    Keys(7, other=8, made=[1]),
    Derived("one", 2),
]


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda x: type(x).__name__)
def test_unstructured_values_fit_the_schema_and_come_back(value: Any) -> None:
    """make().unstructure(value), through JSON, fits the schema and structures back equal."""
    converter = make()
    data = json.loads(json.dumps(converter.unstructure(value)))
    assert problems(input_schema(type(value)), data) == []
    assert converter.structure(data, type(value)) == value


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Urgency, {"score": 0, "reason": "Too low."}),
        (Urgency, {"score": "3", "reason": "A string."}),
        (Urgency, {"score": True, "reason": "A boolean."}),
        (Urgency, {"score": 3}),
        (Urgency, {"score": 3, "reason": "x", "tags": "not an array"}),
        (Urgency, {"score": 3, "reason": "x", "tags": [1]}),
        (Node, {"name": "root", "children": [{"name": "a", "children": [{"name": 1}]}]}),
        (Forest, {"first": {"leaf": {"back": {"leaf": {}}}}, "second": {}}),
        (Ticket, {"customer": {"name": "Ada"}, "opened": "soon", "due": "2024-01-01"}),
        (Ticket, {"customer": {"name": "Ada"}, "opened": "2024-01-01", "due": "2024-01-01T00:00"}),
        (Triage, {"tickets": [], "urgency": {"score": 1, "reason": "x"}, "mode": "lazy"}),
        (Urgency, {"score": 3, "reason": "x", "invented": True}),
        (Node, {"name": "root", "children": [{"name": "a", "kids": []}]}),
        (Triage, {"tickets": [], "urgency": {"score": 1, "reason": "x", "why": "y"}}),
    ],
)
def test_what_the_schema_rejects_the_converter_rejects(cls: type, data: dict[str, Any]) -> None:
    """For these answers a model might give, the schema and the converter agree: no."""
    assert problems(input_schema(cls), data) != []
    with pytest.raises(ConversionError):
        structure(answers(make()), data, cls, "the answer")


@given(
    st.builds(
        Urgency,
        score=st.integers(1, 5),
        reason=st.text(),
        tags=st.lists(st.text(), max_size=3).map(tuple),
    )
)
def test_any_urgency_round_trips_through_its_schema(value: Urgency) -> None:
    """Whatever the strings, an unstructured Urgency fits the schema and comes back."""
    data = json.loads(json.dumps(make().unstructure(value)))
    assert problems(input_schema(Urgency), data) == []
    assert make().structure(data, Urgency) == value


def test_the_schema_and_the_converter_of_answers_refuse_extra_keys() -> None:
    """An answer with a key the class lacks is refused by both, at the same path; the
    converter of inputs and states ignores it."""
    data = {"score": 3, "reason": "x", "invented": True}
    assert problems(input_schema(Urgency), data) == [
        "$: Additional properties are not allowed ('invented' was unexpected)"
    ]
    with pytest.raises(ConversionError) as raised:
        structure(answers(make()), data, Urgency, "the answer")
    assert raised.value.errors == [
        "unknown key 'invented': the fields of Urgency are score, reason, tags @ $.invented"
    ]
    assert make().structure(data, Urgency) == Urgency(3, "x")
