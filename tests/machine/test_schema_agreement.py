"""The schema of a class accepts a JSON answer if and only if the converter structures it.

For each class of a gallery covering every type and validator `machine.model.jsonschema` describes,
answers are drawn from the derived schema (hypothesis-jsonschema) and mutated into near misses
(a wrong JSON type, 1 for true, 3.0 or 3.5 for 3, a trailing newline, another ISO 8601 date
form, one past a bound, a key or an item dropped, a key added to any object at any depth). The
`jsonschema` library, formats checked, and the converter of answers (`machine.convert.answers`)
must give each the same verdict. The schema's one deliberate strictness, repeated set items,
which the converter merges, is allowed only where it is the whole difference.
"""

from __future__ import annotations

import copy
import datetime
import enum
import importlib.util
import json
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Generic, Literal, NewType, TypeVar

import attrs
import pytest
from attrs import validators as v
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from runjournal.machine import convert
from runjournal.machine.errors import ConversionError
from runjournal.machine.model.jsonschema import input_schema

T = TypeVar("T")
UserId = NewType("UserId", int)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


class Weight(enum.Enum):
    LIGHT = 0.5
    HEAVY = 2


@attrs.frozen
class Scalars:
    s: str
    i: int
    f: float
    b: bool
    n: None
    anything: Any = None
    maybe: int | None = None
    either: int | str = 0
    number: float | int = 0.0
    user: UserId = UserId(0)
    note: Annotated[str, "a note"] = ""


@attrs.frozen
class Literals:
    word: Literal["a", "b"]
    number: Literal[1, 2, 3]
    flag: Literal[True]
    real: Literal[1.0, 2.5]
    mixed: Literal[1, "one", None, False] = None
    member: Literal[Color.BLUE] = Color.BLUE


@attrs.frozen
class Enums:
    color: Color
    level: Level
    mode: Mode
    weight: Weight = Weight.LIGHT
    colors: list[Color] = attrs.Factory(list)
    levels: frozenset[Level] = frozenset()


@attrs.frozen
class Point:
    x: int
    y: int = 0


@attrs.frozen
class Tree:
    label: str
    children: list[Tree] = attrs.Factory(list)


@attrs.frozen
class Branch:
    leaf: Leaf | None = None


@attrs.frozen
class Leaf:
    back: Branch
    weight: int = 0


@attrs.frozen
class Box(Generic[T]):
    item: T
    more: list[T] = attrs.Factory(list)


@attrs.frozen
class Shapes:
    point: Point
    tree: Tree
    branch: Branch
    box: Box[int]
    points: list[Point] = attrs.Factory(list)
    maybe: Point | None = None
    either: Point | Tree | None = None


@attrs.frozen
class Keys:
    _secret: int
    renamed: int = attrs.field(alias="other")
    derived: int = attrs.field(init=False, default=0)


@attrs.frozen
class Containers:
    ints: list[int]
    words: tuple[str, ...]
    pair: tuple[int, str]
    nothing: tuple[()]
    tags: set[str]
    numbers: frozenset[float]
    points: frozenset[Point]
    counts: dict[str, int]
    nested: Mapping[str, Sequence[float]]
    keyed: dict[Literal["a", "b"], bool]
    by_day: dict[datetime.date, int] = attrs.Factory(dict)


@attrs.frozen
class Dates:
    day: datetime.date
    moment: datetime.datetime
    maybe: datetime.date | None = None
    days: list[datetime.date] = attrs.Factory(list)
    moments: frozenset[datetime.datetime] = frozenset()


@attrs.frozen
class Bounds:
    at_least: int = attrs.field(validator=v.ge(0))
    above: float = attrs.field(validator=v.gt(0.5))
    at_most: int = attrs.field(validator=v.le(10))
    below: float = attrs.field(validator=v.lt(1))
    between: int = attrs.field(validator=[v.ge(-3), v.le(3)])
    half: int = attrs.field(validator=v.ge(2.5))
    user: UserId = attrs.field(default=UserId(1), validator=v.ge(1))


@attrs.frozen
class Members:
    listed: str = attrs.field(validator=v.in_(["a", "b"]))
    tupled: int = attrs.field(validator=v.in_((1, 2, 3)))
    setted: str = attrs.field(validator=v.in_({"x", "y"}))
    ranged: int = attrs.field(validator=v.in_(range(1, 6)))
    stepped: int = attrs.field(validator=v.in_(range(0, 20, 5)))
    backwards: int = attrs.field(validator=v.in_(range(10, 0, -3)))
    float_ranged: float = attrs.field(validator=v.in_(range(1, 6)))
    big_step: int = attrs.field(validator=v.in_(range(0, 1000, 7)))
    floats: float = attrs.field(validator=v.in_([0.5, 1, 2]))
    colors: Color = attrs.field(validator=v.in_([Color.BLUE]))
    levels: Level = attrs.field(validator=v.in_(range(2, 3)))
    flags: bool = attrs.field(default=True, validator=v.in_([1]))
    nullable: int | None = attrs.field(default=None, validator=v.in_([1, None]))
    day: datetime.date = attrs.field(
        default=datetime.date(2024, 1, 1), validator=v.in_([datetime.date(2024, 1, 1)])
    )
    keys: str = attrs.field(default="k", validator=v.in_({"k": 1, "j": 2}))
    modes: Mode | str = attrs.field(default="x", validator=v.in_(["fast", "x"]))


@attrs.frozen
class Lengths:
    short: str = attrs.field(validator=v.and_(v.min_len(1), v.max_len(5)))
    few: list[int] = attrs.field(validator=v.min_len(1))
    some: dict[str, int] = attrs.field(validator=v.max_len(2))
    tags: set[str] = attrs.field(validator=v.max_len(2))
    pair: tuple[int, ...] = attrs.field(default=(0, 0), validator=[v.min_len(2), v.max_len(2)])


@attrs.frozen
class Patterns:
    full: str = attrs.field(validator=v.matches_re(r"[a-z]+"))
    prefix: str = attrs.field(validator=v.matches_re("ab", func=re.match))
    anywhere: str = attrs.field(validator=v.matches_re("[0-9]", func=re.search))
    ends: str = attrs.field(validator=v.matches_re("x$", func=re.search))
    dotted: str = attrs.field(validator=v.matches_re("a.c"))
    digits: str = attrs.field(validator=v.matches_re(r"\d+", flags=re.ASCII))
    spaces: str = attrs.field(default="", validator=v.matches_re(r"\s*"))
    lines: str = attrs.field(
        default="a", validator=v.matches_re("^a$", flags=re.MULTILINE, func=re.search)
    )
    both: str = attrs.field(
        default="ab", validator=[v.matches_re("[a-z]+"), v.matches_re(".{2,3}")]
    )
    word: str = attrs.field(default="ok", validator=v.matches_re(r"(?a)\bok\b", func=re.search))


@attrs.frozen
class Deep:
    items: list[int] = attrs.field(validator=v.deep_iterable(v.ge(0), v.max_len(3)))
    pair: tuple[int, int] = attrs.field(validator=v.deep_iterable(v.le(9)))
    names: dict[str, int] = attrs.field(validator=v.deep_mapping(v.matches_re("[a-z]+"), v.ge(0)))
    tags: frozenset[str] = attrs.field(validator=v.deep_iterable(v.min_len(1)))
    keys: dict[str, Any] = attrs.field(
        default=attrs.Factory(dict), validator=v.deep_mapping(key_validator=v.max_len(3))
    )
    grid: list[list[str]] = attrs.field(
        default=attrs.Factory(list), validator=v.deep_iterable(v.deep_iterable(v.in_(["x", "o"])))
    )


@attrs.frozen
class Optionals:
    maybe: int | None = attrs.field(validator=v.optional(v.ge(0)))
    word: str | None = attrs.field(
        default=None, validator=v.optional([v.min_len(1), v.matches_re("[a-z]+")])
    )
    choice: Literal["a", "b"] | None = attrs.field(default=None, validator=v.optional(v.in_(["a"])))
    days: list[datetime.date] | None = attrs.field(default=None, validator=v.optional(v.max_len(2)))


@attrs.frozen
class Unions:
    number: int | float = attrs.field(validator=v.ge(0))
    text: datetime.date | str = attrs.field(validator=v.matches_re("[0-9-]+"))
    either: int | str = attrs.field(validator=v.ge(0))
    choice: Literal["x"] | int = attrs.field(validator=v.in_(["x", 3]))
    shape: Point | Tree = attrs.field(default=Point(0))
    # A default that fails its own validator: leaving the key out is an error, so it is required.
    strict: int = attrs.field(default=-1, validator=v.ge(0))


@attrs.frozen
class Nests:
    """Classes wherever an unknown key can hide: in a tuple, a dict's values, a union, an
    Optional, a list in a mapping."""

    pair: tuple[Point, Box[str]]
    by_name: dict[str, Point]
    keys: Keys | None = None
    deep: Mapping[str, list[Point | None]] = attrs.Factory(dict)
    shape: int | Point | Box[int] = 0


GALLERY = [
    Scalars,
    Literals,
    Enums,
    Shapes,
    Keys,
    Containers,
    Dates,
    Bounds,
    Members,
    Lengths,
    Patterns,
    Deep,
    Optionals,
    Unions,
    Nests,
]
CONVERTER = convert.make()  # a pipeline's input and the journal's state
ANSWERS = convert.answers(CONVERTER)
FORMATS = Draft202012Validator.FORMAT_CHECKER
SCHEMAS = {cls: input_schema(cls) for cls in GALLERY}
VALIDATORS = {cls: Draft202012Validator(s, format_checker=FORMATS) for cls, s in SCHEMAS.items()}


def unrolled(schema: Any, root: Any = None, depth: int = 3) -> Any:
    """`schema` with each `$ref` replaced by what it names, `depth` deep, then by `false`, for
    hypothesis-jsonschema, which cannot draw from recursive schemas. What it draws fits
    `schema`, which is what answers are checked against."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [unrolled(s, root, depth) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        if depth == 0:
            return False
        target = root
        for part in schema["$ref"].removeprefix("#").split("/")[1:]:
            target = target[part]
        return unrolled(target, root, depth - 1)
    out = {k: unrolled(s, root, depth) for k, s in schema.items() if k != "$defs"}
    if "prefixItems" in out:  # it reads draft 7, where a tuple is `items` as a list
        out["items"], out["additionalItems"] = out.pop("prefixItems"), False
    return out


STRATEGIES = {cls: from_schema(unrolled(s)) for cls, s in SCHEMAS.items()}
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def relaxed(schema: Any) -> Any:
    """`schema` without its deliberate strictness (never inside a `not`, where relaxing would
    make it stricter): set items free to repeat, which also lets an array be longer than the
    set it makes."""
    if isinstance(schema, list):
        return [relaxed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (s if k == "not" else relaxed(s)) for k, s in schema.items()}
    if out.pop("uniqueItems", False):
        out.pop("maxItems", None)
    return out


RELAXED = {
    cls: Draft202012Validator(relaxed(s), format_checker=FORMATS) for cls, s in SCHEMAS.items()
}


def refusal(cls: type, answer: Any, converter: Any = ANSWERS) -> list[str]:
    """Why `converter` refuses `answer` as a `cls`, one line each; [] if it takes it."""
    try:
        convert.structure(converter, answer, cls, "the answer")
    except ConversionError as e:
        return e.errors
    return []


def converter_takes(cls: type, answer: Any) -> bool:
    return not refusal(cls, answer)


def assert_agree(cls: type, answer: Any) -> bool:
    """Assert that the schema and the converter of answers agree on `answer`; return their
    verdict."""
    schema_takes = VALIDATORS[cls].is_valid(answer)
    takes = converter_takes(cls, answer)
    if schema_takes != takes:
        errors = [f"{e.json_path}: {e.message}" for e in VALIDATORS[cls].iter_errors(answer)]
        only_deliberate = takes and RELAXED[cls].is_valid(answer)
        assert only_deliberate, f"schema {schema_takes}, converter {takes}: {answer!r} {errors}"
    return takes


# Near misses: what a model gets wrong.

Path = tuple[Any, ...]
DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(.*)", re.DOTALL)


def paths(value: Any, at: Path = ()) -> Iterator[Path]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, (*at, i))


def replaced(value: Any, at: Path, new: Any) -> Any:
    if not at:
        return new
    out = copy.copy(value)
    out[at[0]] = replaced(value[at[0]], at[1:], new)
    return out


def got(value: Any, at: Path) -> Any:
    for step in at:
        value = value[step]
    return value


def date_forms(text: str) -> list[str]:
    """Other spellings of an RFC 3339 date or date-time, ISO 8601 or not."""
    match = DATE.fullmatch(text)
    if not match:
        return []
    y, m, d, rest = match.groups()
    forms = [f"{y}{m}{d}{rest}", f"{y}-W01-1{rest}", f"{y}-{m}-{d}T00:00", f"{y}-{m}-{d}T00:00:00"]
    forms += [f"{y}-{m}-{int(d) + 3:02d}{rest}", f"0000-{m}-{d}{rest}", f"{y}-{m}-{d}{rest}\n"]
    if rest:
        forms += [
            f"{y}-{m}-{d} {rest[1:]}",
            f"{y}-{m}-{d}{rest.lower()}",
            f"{y}-{m}-{d}{rest[:6]}",
            f"{y}-{m}-{d}{rest[:9]}",
            f"{y}-{m}-{d}{rest[:6]}:60{rest[9:]}",
            f"{y}-{m}-{d}{rest[:9]}+24:00",
            f"{y}-{m}-{d}{rest[:9]}+0530",
            f"{y}-{m}-{d}{rest[:9]}Z",
            f"{y}-{m}-{d}",
        ]
    return forms


def mutations(value: Any) -> list[Callable[[], Any]]:
    """Ways to get `value` a little wrong, each a function giving the new value."""
    wrong: list[Any] = [None, True, False, 0, 1, 1.5, "", "x", [], {}]
    found: list[Callable[[], Any]] = [
        lambda w=w: w
        for w in wrong
        if not convert.same_json(w, value) or type(w) is not type(value)
    ]
    if isinstance(value, bool):
        found += [lambda: not value, lambda: int(value), lambda: float(value)]
    elif isinstance(value, int | float):
        found += [
            lambda: value + 1,
            lambda: value - 1,
            lambda: value + 0.5,
            lambda: value - 0.5,
            lambda: float(value),
            lambda: int(value) if float(value).is_integer() else value * 2,
            lambda: -value,
            lambda: str(value),
        ]
    elif isinstance(value, str):
        found += [
            lambda: value + "\n",
            lambda: "\n" + value,
            lambda: value[:-1],
            lambda: value + value[-1:],
            lambda: value + "a",
            lambda: value.upper(),
            lambda: value + " ",
            lambda: "0" + value,
        ]
        found += [lambda form=form: form for form in date_forms(value)]
    elif isinstance(value, list):
        found += [lambda: value[:-1], lambda: value + value[:1], lambda: value[1:] + value[:1]]
    elif isinstance(value, dict):
        found += [lambda key=key: {k: x for k, x in value.items() if k != key} for key in value]
        found += [lambda key=key: {**value, key: 0} for key in UNKNOWN if key not in value]
    return found


# Keys a model may invent: near a field's name, an alias or a field with init=False (of Keys),
# a field of another member of a union, and what no class has.
UNKNOWN = ["zz", "", "X", "x ", "secret", "other", "derived", "label", "item", "__class__"]


@st.composite
def near_misses(draw: st.DrawFn, answer: Any) -> Any:
    at = draw(st.sampled_from(list(paths(answer))))
    mutate = draw(st.sampled_from(mutations(got(answer, at))))
    return replaced(answer, at, mutate())


@st.composite
def unknown_keys(draw: st.DrawFn, answer: Any) -> tuple[Any, str]:
    """`answer` with a key added to one of its objects, at any depth, and that key."""
    objects = [at for at in paths(answer) if isinstance(got(answer, at), dict)]
    at = draw(st.sampled_from(objects))
    inside = got(answer, at)
    key = draw(st.sampled_from([k for k in UNKNOWN if k not in inside]))
    value = draw(st.sampled_from([0, "x", None, [], {}, *inside.values()]))
    return replaced(answer, at, {**inside, key: value}), key


@pytest.mark.parametrize("cls", GALLERY, ids=lambda cls: cls.__name__)
@SETTINGS
@given(data=st.data())
def test_the_schema_and_the_converter_agree(cls: type, data: st.DataObject) -> None:
    """Every answer the schema allows structures, and comes back through the journal's JSON
    as the same value, which fits the schema too; its near misses, an unknown key anywhere
    among them, get one verdict from both."""
    answer = data.draw(STRATEGIES[cls], label="answer")
    assert VALIDATORS[cls].is_valid(answer)
    value = ANSWERS.structure(answer, cls)
    written = json.loads(json.dumps(CONVERTER.unstructure(value)))
    assert VALIDATORS[cls].is_valid(written), written
    assert CONVERTER.structure(written, cls) == value
    takes = assert_agree(cls, data.draw(near_misses(answer), label="near miss"))
    event(f"near miss: {'taken' if takes else 'refused'}")  # --hypothesis-show-statistics
    added, key = data.draw(unknown_keys(answer), label="unknown key")
    takes = assert_agree(cls, added)
    event(f"unknown key: {'taken' if takes else 'refused'}")
    if not takes and refusal(cls, added, CONVERTER) == []:
        # The key is the whole difference: the line that refuses it names it.
        assert any(f"unknown key {key!r}" in line for line in refusal(cls, added)), added


def test_every_schema_of_the_gallery_is_draft_2020_12() -> None:
    """The schemas themselves are valid JSON Schema, patterns included."""
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)


BASE: dict[type, dict[str, Any]] = {
    Scalars: {"s": "x", "i": 3, "f": 1.5, "b": True, "n": None},
    Literals: {"word": "a", "number": 1, "flag": True, "real": 2.5},
    Enums: {"color": "red", "level": 1, "mode": "fast"},
    Containers: {
        "ints": [],
        "words": [],
        "pair": [1, "a"],
        "nothing": [],
        "tags": [],
        "numbers": [],
        "points": [],
        "counts": {},
        "nested": {},
        "keyed": {},
    },
    Dates: {"day": "2026-11-29", "moment": "2026-11-29T10:00:00Z"},
    Bounds: {"at_least": 0, "above": 1, "at_most": 10, "below": 0.5, "between": 0, "half": 3},
    Members: {
        "listed": "a",
        "tupled": 1,
        "setted": "x",
        "ranged": 1,
        "stepped": 0,
        "backwards": 1,
        "float_ranged": 1,
        "big_step": 0,
        "floats": 0.5,
        "colors": "blue",
        "levels": 2,
    },
    Patterns: {
        "full": "abc",
        "prefix": "ab",
        "anywhere": "a1",
        "ends": "x",
        "dotted": "abc",
        "digits": "12",
    },
    Unions: {"number": 1, "text": "12-34", "either": 1, "choice": "x", "strict": 0},
    Keys: {"_secret": 1, "renamed": 2},
    Shapes: {"point": {"x": 1}, "tree": {"label": "t"}, "branch": {}, "box": {"item": 1}},
    Nests: {"pair": [{"x": 1}, {"item": "a"}], "by_name": {}},
    Lengths: {"short": "a", "few": [1], "some": {}, "tags": []},
}


@pytest.mark.parametrize(
    ("cls", "change", "verdict"),
    [
        (Scalars, {}, True),
        (Scalars, {"i": 3.0}, True),
        (Scalars, {"i": 1e300}, True),
        (Scalars, {"i": 3.5}, False),
        (Scalars, {"i": True}, False),
        (Scalars, {"b": 1}, False),
        (Scalars, {"f": 1}, True),
        (Scalars, {"f": False}, False),
        (Scalars, {"n": 0}, False),
        (Scalars, {"either": True}, False),
        (Scalars, {"either": 3.0}, True),
        (Scalars, {"maybe": 0.0}, True),
        (Literals, {"number": True}, False),
        (Literals, {"number": 2.0}, True),
        (Literals, {"flag": 1}, False),
        (Literals, {"real": 1}, True),
        (Literals, {"word": "a\n"}, False),
        (Literals, {"mixed": 0}, False),
        (Literals, {"mixed": False}, True),
        (Literals, {"mixed": 1.0}, True),
        (Enums, {"level": 2.0}, True),
        (Enums, {"level": True}, False),
        (Enums, {"color": "RED"}, False),
        (Enums, {"weight": 2.0}, True),
        (Enums, {"weight": 1}, False),
        (Containers, {"pair": [1.0, "a"]}, True),
        (Containers, {"pair": [1, "a", 2]}, False),
        (Containers, {"nothing": [0]}, False),
        (Containers, {"tags": "ab"}, False),
        (Containers, {"by_day": {"2024-01-01": 1}}, True),
        (Containers, {"by_day": {"20240101": 1}}, False),
        (Containers, {"keyed": {"c": True}}, False),
        (Containers, {"points": [{"x": 1}, {"x": 1, "y": 0}]}, True),  # two in JSON, one point
        (Dates, {"day": "20261129"}, False),
        (Dates, {"day": "2026-W48-7"}, False),
        (Dates, {"day": "2026-333"}, False),
        (Dates, {"day": "2026-11-29\n"}, False),
        (Dates, {"moment": "2026-11-29T10:00"}, False),
        (Dates, {"moment": "2026-11-29 10:00:00"}, False),
        (Dates, {"moment": "2026-11-29T10:00:00"}, True),
        (Dates, {"moment": "2026-11-29t10:00:00z"}, True),
        (Dates, {"moment": "2026-11-29T10:00:60Z"}, False),
        (Dates, {"moment": "2026-11-29T10:00:00.123456789+05:45"}, True),
        (Dates, {"moment": "2026-11-29T10:00:00Z\n"}, False),
        (Bounds, {"at_least": -1}, False),
        (Bounds, {"above": 0.5}, False),
        (Bounds, {"at_most": 10.0}, True),
        (Bounds, {"below": 1}, False),
        (Bounds, {"half": 2}, False),
        (Bounds, {"user": 0}, False),
        (Members, {"float_ranged": 2.0}, True),
        (Members, {"float_ranged": 2.5}, False),
        (Members, {"ranged": 0}, False),
        (Members, {"stepped": 5.0}, True),
        (Members, {"stepped": 6}, False),
        (Members, {"backwards": 4}, True),
        (Members, {"backwards": 3}, False),
        (Members, {"big_step": 994}, True),
        (Members, {"big_step": 995}, False),
        (Members, {"floats": 1.0}, True),
        (Members, {"flags": False}, False),
        (Members, {"colors": "red"}, False),
        (Members, {"levels": 1}, False),
        (Members, {"nullable": 2}, False),
        (Members, {"day": "2024-01-02"}, False),
        (Members, {"keys": "j"}, True),
        (Members, {"modes": "fast"}, True),
        (Members, {"modes": "slow"}, False),
        (Patterns, {"full": "abc\n"}, False),
        (Patterns, {"prefix": "abx"}, True),
        (Patterns, {"prefix": "xab"}, False),
        (Patterns, {"ends": "ax\n"}, True),  # re.search's "$" takes a final newline
        (Patterns, {"ends": "ax\n\n"}, False),
        (Patterns, {"dotted": "a\nc"}, False),
        (Patterns, {"dotted": "a\rc"}, True),  # Python's "." takes \r; ECMA-262's does not
        (Patterns, {"digits": "\u0663"}, False),
        (Patterns, {"spaces": "\u2028\x1c"}, True),
        (Patterns, {"spaces": "\ufeff"}, False),  # ECMA-262's \s takes it; Python's does not
        (Patterns, {"lines": "b\na"}, True),
        (Patterns, {"word": "ok\u00e9"}, True),  # an ASCII \b sees é as no letter
        (Patterns, {"word": "okay"}, False),
        (Unions, {"text": "2024-01-01"}, False),  # a date, which matches_re cannot read
        (Unions, {"text": "2024-13-01"}, True),  # not a date: a string
        (Unions, {"either": "5"}, False),
        (Unions, {"choice": 3}, True),
        (Unions, {"choice": 4}, False),
        (Unions, {"number": 2.5}, True),
        (Unions, {"number": -1}, False),
        (Unions, {"shape": {"label": "t"}}, True),
    ],
)
def test_named_near_misses(cls: type, change: dict[str, Any], verdict: bool) -> None:
    """The near misses the gallery is drawn to find, each with the verdict both must give."""
    assert assert_agree(cls, {**BASE[cls], **change}) is verdict


def test_leaving_out_a_field_whose_default_fails_its_validator_is_refused() -> None:
    """attrs runs validators on defaults too, so such a field is required in the schema."""
    assert "strict" in SCHEMAS[Unions]["required"]
    answer = {k: x for k, x in BASE[Unions].items() if k != "strict"}
    assert assert_agree(Unions, answer) is False


@pytest.mark.parametrize(
    ("cls", "change"),
    [
        (Containers, {"tags": ["a", "b", "a"]}),
        (Containers, {"numbers": [1, 1.0]}),  # equal JSON numbers
        (Lengths, {"tags": ["a", "b", "a"]}),  # three items, a set of two
    ],
)
def test_the_schema_alone_refuses_repeated_set_items(cls: type, change: dict[str, Any]) -> None:
    """The schema's deliberate strictness: the model is told not to, the converter merges."""
    answer = {**BASE[cls], **change}
    assert not VALIDATORS[cls].is_valid(answer)
    assert converter_takes(cls, answer)
    assert RELAXED[cls].is_valid(answer)


KEYS = "the fields of Keys are _secret, renamed"
POINT = "the fields of Point are x, y"


@pytest.mark.parametrize(
    ("cls", "change", "line"),
    [
        (Keys, {"other": 3}, f"unknown key 'other': {KEYS} @ $.other"),  # an alias
        (Keys, {"secret": 3}, f"unknown key 'secret': {KEYS} @ $.secret"),  # attrs' init name
        (Keys, {"derived": 3}, f"unknown key 'derived': {KEYS} @ $.derived"),  # init=False
        (Shapes, {"point": {"x": 1, "z": 0}}, f"unknown key 'z': {POINT} @ $.point.z"),
        (
            Shapes,
            {"points": [{"x": 1}, {"x": 2, "X": 0}]},
            f"unknown key 'X': {POINT} @ $.points[1].X",
        ),
        (
            Shapes,
            {"tree": {"label": "t", "children": [{"label": "u", "kids": []}]}},
            "unknown key 'kids': the fields of Tree are label, children @ $.tree.children[0].kids",
        ),
        (
            Shapes,
            {"branch": {"leaf": {"back": {}, "heavy": True}}},
            "unknown key 'heavy': the fields of Leaf are back, weight @ $.branch.leaf.heavy",
        ),
        (Shapes, {"maybe": {"x": 1, "": 0}}, f"unknown key '': {POINT} @ $.maybe."),
        (
            Shapes,
            {"box": {"item": 1, "items": []}},
            "unknown key 'items': the fields of Box are item, more @ $.box.items",
        ),
        (
            Unions,
            {"shape": {"x": 1, "label": "t"}},
            f"unknown key 'label': {POINT} @ $.shape.label",
        ),
        (
            Nests,
            {"pair": [{"x": 1, "zz": 0}, {"item": "a"}]},
            f"unknown key 'zz': {POINT} @ $.pair[0].zz",
        ),
        (
            Nests,
            {"by_name": {"k": {"x": 1, "zz": 0}}},
            f"unknown key 'zz': {POINT} @ $.by_name['k'].zz",
        ),
        (
            Nests,
            {"deep": {"k": [None, {"x": 1, "zz": 0}]}},
            f"unknown key 'zz': {POINT} @ $.deep['k'][1].zz",
        ),
        (
            Nests,
            {"keys": {"_secret": 1, "renamed": 2, "other": 3}},
            f"unknown key 'other': {KEYS} @ $.keys.other",
        ),
        (
            Nests,  # reported for the member that knows more of the keys
            {"shape": {"item": 1, "zz": 0}},
            "unknown key 'zz': the fields of Box are item, more @ $.shape.zz",
        ),
    ],
)
def test_an_unknown_key_is_refused_at_any_depth(
    cls: type, change: dict[str, Any], line: str
) -> None:
    """In an answer, a key the class does not have is refused by the schema and by the
    converter of answers, which says where it is; the converter of inputs and states ignores
    it."""
    answer = {**BASE[cls], **change}
    assert refusal(cls, BASE[cls]) == []
    assert not VALIDATORS[cls].is_valid(answer)
    assert refusal(cls, answer) == [line]
    assert refusal(cls, answer, CONVERTER) == []


def test_a_union_member_takes_an_answer_only_with_every_key_it_has() -> None:
    """Point | Tree: a Tree with a key of Point is neither; an exact Tree is a Tree."""
    tree = {"label": "t", "children": []}
    assert assert_agree(Unions, {**BASE[Unions], "shape": tree}) is True
    assert assert_agree(Unions, {**BASE[Unions], "shape": {**tree, "y": 0}}) is False
    assert ANSWERS.structure({**BASE[Unions], "shape": tree}, Unions).shape == Tree("t")


@attrs.frozen
class When:
    day: datetime.date | None = None
    moment: datetime.datetime | None = None


WHEN = Draft202012Validator(input_schema(When), format_checker=FORMATS)
AWARE = input_schema(When)["properties"]["moment"]["anyOf"][0]["anyOf"][0]["pattern"]
DAY = input_schema(When)["properties"]["day"]["anyOf"][0]["pattern"]


@st.composite
def date_texts(draw: st.DrawFn) -> str:
    """Strings near RFC 3339 dates and date-times, right and wrong in every part."""
    pick: Callable[[list[str]], str] = lambda options: draw(st.sampled_from(options))  # noqa: E731
    year = pick(
        [
            "0000",
            "0001",
            "1900",
            "2000",
            "2023",
            "2024",
            "9999",
            "02024",
            "999",
            "\uff12\uff10\uff12\uff14",
        ]
    )
    date = f"{year}-{pick(['00', '01', '02', '04', '12', '13', '1'])}-"
    date += pick(["00", "01", "28", "29", "30", "31", "32", "1"])
    if draw(st.booleans()):
        return date + pick(["", "", "\n", " ", "T"])
    text = date + pick(["T", "T", "t", " ", "_", ""]) + pick(["00", "23", "24", "7"])
    text += ":" + pick(["00", "59", "60"]) + pick([":00", ":00", ":59", ":60", ":5", ""])
    text += pick(["", "", ".5", ".123456789", ".", ".x"])
    return text + pick(
        ["", "Z", "z", "+00:00", "-00:00", "+05:30", "+23:59", "+24:00", "+05:60", "+0530", "Z\n"]
    )


@SETTINGS
@given(text=date_texts())
def test_dates_read_alike(text: str) -> None:
    """A date or datetime string is accepted by the schema if and only if by the converter."""
    for key in ("day", "moment"):
        takes = converter_takes(When, {key: text})
        assert WHEN.is_valid({key: text}) is takes, (key, text)


@settings(deadline=None, max_examples=150)
@given(
    moment=st.datetimes(
        min_value=datetime.datetime(1, 1, 2),
        max_value=datetime.datetime(9999, 12, 30),
        timezones=st.none()
        | st.builds(
            datetime.timezone,
            st.timedeltas(
                min_value=-datetime.timedelta(hours=23, minutes=59),
                max_value=datetime.timedelta(hours=23, minutes=59),
            ),
        ),
    )
)
def test_every_datetime_round_trips_through_the_schema(moment: datetime.datetime) -> None:
    """Naive or aware, with any offset Python allows, a datetime is written in a form the
    schema accepts and comes back equal."""
    value = When(moment.date(), moment)
    data = json.loads(json.dumps(CONVERTER.unstructure(value)))
    assert WHEN.is_valid(data), data
    back = CONVERTER.structure(data, When)
    assert back == value
    assert back.moment is not None
    assert (back.moment.tzinfo is None) == (moment.tzinfo is None)


@pytest.mark.skipif(
    importlib.util.find_spec("rfc3339_validator") is None,
    reason="without rfc3339-validator, jsonschema does not check date-time",
)
@SETTINGS
@given(text=date_texts())
def test_the_date_time_format_takes_what_its_pattern_takes(text: str) -> None:
    """The aware branch has both `format: date-time` and a pattern: a validator that checks
    formats must not refuse what the pattern (and the converter) take."""
    if re.search(AWARE, text):
        assert FORMATS.conforms(text, "date-time")
    assert bool(re.search(DAY, text)) is FORMATS.conforms(text, "date")


# ECMA-262: what JSON Schema says a pattern means, and what Anthropic's side reads.

EXTRA_PATTERNS = [
    (r"(?m)^a$\n^b", "search"),
    (r"(?s)a.b", "fullmatch"),
    (r"\Aab\Z", "search"),
    (r"[]a]+", "fullmatch"),
    (r"a{,3}", "fullmatch"),
    (r"(?P<n>ab)+", "match"),
    (r"(?<=a)b(?!c)", "search"),
    (r"[\u00e9-\u00ff😀-😂]+", "fullmatch"),
    (r"😀+", "fullmatch"),
    (r"[^\s]*?x", "match"),
    (r"\{\}\.\*\+\?\|\(\)\[\]\^\$\\", "search"),
    (r"(?x) a b  c # a comment", "fullmatch"),
    (r"[\x00-\x1f\-]", "search"),
    (r"(?a)[\w-]+\B", "search"),
]


def patterns_in(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for key, sub in schema.items():
            if key != "properties":
                yield from patterns_in(sub)
        for sub in schema.get("properties", {}).values():
            yield from patterns_in(sub)
    elif isinstance(schema, list):
        for sub in schema:
            yield from patterns_in(sub)


NODE = """
const {patterns, texts} = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(patterns.map((p) => {
  const re = new RegExp(p, "u");
  return texts.map((t) => re.test(t));
})));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for ECMA-262 regexes")
def test_patterns_read_the_same_in_python_and_ecma_262() -> None:
    """Each pattern the schemas hold matches the same strings under Python's `re.search` (the
    `jsonschema` library) and JavaScript's RegExp with the "u" flag that JSON Schema asks for."""
    patterns = {
        p for schema in [*SCHEMAS.values(), input_schema(When)] for p in patterns_in(schema)
    }
    for text, how in EXTRA_PATTERNS:
        cls = attrs.make_class(
            "P", {"x": attrs.field(type=str, validator=v.matches_re(text, func=getattr(re, how)))}
        )
        patterns |= set(patterns_in(input_schema(cls)))
    rng = random.Random(7)
    alphabet = [
        *"abcxyo0129-_:.T tZz+\n\r\t{}[]()^$\\",
        "\u2028", "\u0085", "\ufeff", "\x1c", "\u00e9", "😀", "😁", "\u0663", "\u00a0", "\ud800",
    ]  # fmt: skip
    texts = ["", "\n", "2024-02-29", "2023-02-29", "2026-11-29T10:00:00Z", "2026-11-29T10:00:00"]
    texts += [t for text in texts for t in date_forms(text)]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 8))) for _ in range(600)]
    ordered = sorted(patterns)
    payload = json.dumps({"patterns": ordered, "texts": texts})
    run = subprocess.run(
        ["node", "-e", NODE], input=payload, capture_output=True, text=True, check=True
    )
    for pattern, ecma in zip(ordered, json.loads(run.stdout), strict=True):
        python = [re.search(pattern, text) is not None for text in texts]
        differ = [text for text, a, b in zip(texts, python, ecma, strict=True) if a != b]
        assert not differ, (pattern, differ[:5])
