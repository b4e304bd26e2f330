"""Tests for `machine.convert`: strict structuring, the same for inputs and model answers, but
for unknown keys: ignored in inputs and states, refused in answers."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any, Literal

import attrs
import pytest

from runjournal.machine import Context, Machine, Transition, convert
from runjournal.machine.errors import ConversionError


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Colour(str, enum.Enum):  # noqa: UP042 -- the older spelling must work too
    RED = "red"


@attrs.frozen
class Item:
    name: str
    level: Level = Level.LOW
    colour: Colour = Colour.RED
    tags: frozenset[str] = frozenset()
    pair: tuple[str, int] = ("a", 1)
    weight: float = 0.0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"name": 3}, "expected a string, got an integer @ $.name"),
        ({"name": "x", "level": 5}, "expected one of [1, 2], got 5 @ $.level"),
        ({"name": "x", "level": True}, "expected one of [1, 2], got True @ $.level"),
        ({"name": "x", "colour": "blue"}, "expected one of ['red'], got 'blue' @ $.colour"),
        ({"name": "x", "tags": "abc"}, "expected an array, got a string @ $.tags"),
        ({"name": "x", "pair": "ab"}, "expected an array, got a string @ $.pair"),
        ({"name": "x", "weight": "heavy"}, "expected a number, got a string @ $.weight"),
        ({"name": "x", "weight": False}, "expected a number, got a boolean @ $.weight"),
        (["x"], "expected an object, got an array"),
    ],
)
def test_a_value_that_does_not_fit_names_the_field(value: Any, says: str) -> None:
    """Nothing is converted silently: a wrong JSON type is an error at its path."""
    with pytest.raises(convert.ConversionError) as raised:
        convert.structure(convert.make(), value, Item, "the answer")
    assert says in str(raised.value)


def test_enums_sets_and_tuples_come_back_as_their_types() -> None:
    """Members by value and JSON type; sets and fixed tuples from arrays; ints as floats."""
    item = convert.structure(
        convert.make(),
        {
            "name": "x",
            "level": 2,
            "colour": "red",
            "tags": ["a", "b", "a"],
            "pair": ["b", 2],
            "weight": 3,
        },
        Item,
        "the input",
    )
    assert item == Item("x", Level.HIGH, Colour.RED, frozenset({"a", "b"}), ("b", 2), 3.0)
    assert isinstance(item.weight, float)


def one(tp: Any) -> type:
    """A class with one field, `x`, of type `tp`."""
    return attrs.make_class("One", {"x": attrs.field(type=tp)})


def convert_x(tp: Any, value: Any) -> Any:
    """What `{"x": value}` structures into for a field of type `tp` (ConversionError if none)."""
    return convert.structure(convert.make(), {"x": value}, one(tp), "the answer").x


class Colour2(enum.Enum):
    BLUE = "blue"


@pytest.mark.parametrize(
    ("tp", "value", "expected"),
    [
        (int, 3.0, 3),
        (int, -0.0, 0),
        (int, 1e300, int(1e300)),
        (Level, 2.0, Level.HIGH),
        (Literal[1, 2, 3], 2.0, 2),
        (Literal[1.0, 2.5], 1, 1.0),
        (Literal[Colour2.BLUE], "blue", Colour2.BLUE),
        (Literal[True, 1], True, True),
        (Literal[True, 1], 1, 1),
        (float, 3, 3.0),
        (int | str, 3.0, 3),
        (float | int, 3, 3.0),
        (type(None), None, None),
    ],
)
def test_numbers_are_read_by_value_as_json_schema_reads_them(
    tp: Any, value: Any, expected: Any
) -> None:
    """JSON has one number type: 3.0 is an integer (JSON Schema says so too), read as 3."""
    got = convert_x(tp, value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("tp", "value", "says"),
    [
        (int, 3.5, "expected an integer, got 3.5"),
        (int, float("inf"), "expected an integer, got inf"),
        (int, float("nan"), "expected an integer, got nan"),
        (int, True, "expected an integer, got a boolean"),
        (Literal[1, 2, 3], True, "expected one of [1, 2, 3], got True"),
        (Literal[True], 1, "expected one of [True], got 1"),
        (Literal[False], 0, "expected one of [False], got 0"),
        (Literal["a"], 1, "expected one of ['a'], got 1"),
        (Literal[1], "1", "expected one of [1], got '1'"),
        (Level, 1.5, "expected one of [1, 2], got 1.5"),
        (int | str, True, "expected an integer or a string, got a boolean"),
        (int | None, "x", "expected an integer or null, got a string"),
        (type(None), 0, "expected null, got an integer"),
    ],
)
def test_true_is_not_one_and_a_fraction_is_not_an_integer(tp: Any, value: Any, says: str) -> None:
    """Literals and Enums compare by JSON type, as JSON Schema's enum does; unions too."""
    with pytest.raises(convert.ConversionError) as raised:
        convert_x(tp, value)
    assert f"{says} @ $.x" in str(raised.value)


UTC = datetime.UTC


def tz(hours: int = 0, minutes: int = 0) -> datetime.timezone:
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T10:00:00Z", datetime.datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29t10:00:00z", datetime.datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T10:00:00-00:00", datetime.datetime(2026, 11, 29, 10, tzinfo=UTC)),
        (
            "2026-11-29T10:00:00.5+05:30",
            datetime.datetime(2026, 11, 29, 10, 0, 0, 500000, tz(5, 30)),
        ),
        ("2026-11-29T10:00:00.1234567Z", datetime.datetime(2026, 11, 29, 10, 0, 0, 123456, UTC)),
        ("2024-02-29T23:59:59-23:59", datetime.datetime(2024, 2, 29, 23, 59, 59, 0, tz(-23, -59))),
        ("2026-11-29T10:00:00", datetime.datetime(2026, 11, 29, 10)),
        ("9999-12-31T23:59:59.999999", datetime.datetime.max),
    ],
)
def test_datetimes_are_rfc_3339(text: str, expected: datetime.datetime) -> None:
    """RFC 3339 date-times (T or t, Z or z, any fraction), or without offset for naive ones."""
    got = convert_x(datetime.datetime, text)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T10:00",  # seconds are required
        "2026-11-29 10:00:00",  # a space for the T
        "2026-11-29T10:00:00+0530",  # offset without a colon
        "2026-11-29T10:00:00+24:00",
        "2026-11-29T10:00:00+05:60",
        "2026-11-29T10:00:60Z",  # a leap second: Python cannot hold it
        "2026-11-29T24:00:00Z",
        "2026-02-29T10:00:00Z",
        "0000-01-01T00:00:00Z",
        "20261129T100000Z",
        "2026-11-29T10:00:00Z\n",
        "2026-11-29T10:00:00.Z",
        "2026-11-29",
        "\uff12\uff10\uff12\uff16-11-29T10:00:00Z",  # fullwidth digits: \d would take them
    ],
)
def test_other_iso_forms_are_not_datetimes(text: str) -> None:
    """What fromisoformat also reads, and RFC 3339 does not, is refused."""
    with pytest.raises(convert.ConversionError, match="expected an RFC 3339 date-time"):
        convert_x(datetime.datetime, text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-11-29", True),
        ("2024-02-29", True),
        ("0001-01-01", True),
        ("20261129", False),
        ("2026-W48-7", False),
        ("2026-333", False),
        ("2023-02-29", False),
        ("0000-01-01", False),
        ("2026-11-29T00:00:00", False),
        ("2026-11-29\n", False),
        ("2026-1-29", False),
    ],
)
def test_dates_are_rfc_3339_full_dates(text: str, ok: bool) -> None:
    """Only YYYY-MM-DD of a real day: fromisoformat's other ISO 8601 forms are refused."""
    if ok:
        assert convert_x(datetime.date, text) == datetime.date.fromisoformat(text)
    else:
        with pytest.raises(convert.ConversionError, match="expected an RFC 3339 date"):
            convert_x(datetime.date, text)


@pytest.mark.parametrize(
    "offset",
    [
        datetime.timedelta(0),
        datetime.timedelta(hours=-23, minutes=-59),
        datetime.timedelta(hours=5, minutes=30),
        datetime.timedelta(seconds=30),
        datetime.timedelta(hours=-1, seconds=-1, microseconds=-5),
    ],
)
def test_datetimes_are_written_as_rfc_3339(offset: datetime.timedelta) -> None:
    """An offset that is not whole minutes, which RFC 3339 cannot write, is written in UTC:
    the same instant, so the value comes back equal."""
    value = datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.timezone(offset))
    text = convert.make().unstructure(value)
    assert convert_x(datetime.datetime, text) == value
    assert text.endswith("+00:00") or offset % datetime.timedelta(minutes=1) == datetime.timedelta()


@attrs.frozen
class Small:
    x: int
    a: int = 0


@attrs.frozen
class Large:
    x: int
    b: int = 0


@attrs.frozen
class Holder:
    shape: Small | Large
    maybe: Small | None = None


def test_a_union_takes_its_first_member_that_fits() -> None:
    """Members are tried in order, as anyOf does; one that knows every key goes first, so a
    Large with its `b` does not come back as a Small that dropped it."""
    c = convert.make()
    assert c.structure({"shape": {"x": 1}}, Holder).shape == Small(1)
    assert c.structure({"shape": {"x": 1, "b": 2}}, Holder).shape == Large(1, 2)
    assert convert.round_trips(c, Holder(Large(1, 2)), Holder)
    with pytest.raises(convert.ConversionError) as raised:
        convert.structure(c, {"shape": {"x": 1}, "maybe": {"x": "one"}}, Holder, "the answer")
    assert "expected an integer, got a string @ $.maybe.x" in str(raised.value)


@pytest.mark.parametrize("value", ["", "ab", None, {}, [1]])
def test_an_empty_tuple_takes_only_an_empty_array(value: object) -> None:
    """`tuple[()]` is an array with nothing in it; a string is not one (hypothesis found ''
    accepted once: cattrs' own tuple hook took it)."""
    converter = convert.make()
    assert convert.structure(converter, [], tuple[()], "x") == ()
    with pytest.raises(ConversionError):
        convert.structure(converter, value, tuple[()], "x")


def test_a_union_of_answers_takes_only_a_member_with_every_key() -> None:
    """With unknown keys refused, a Large with its `b` is a Large, as for inputs, and a key
    neither member has is refused: no member takes the value, as no branch of anyOf does."""
    answers = convert.answers(convert.make())
    assert answers.structure({"shape": {"x": 1}}, Holder).shape == Small(1)
    assert answers.structure({"shape": {"x": 1, "b": 2}}, Holder).shape == Large(1, 2)
    with pytest.raises(ConversionError) as raised:
        convert.structure(answers, {"shape": {"x": 1, "zz": 3}}, Holder, "the answer")
    assert raised.value.errors == ["unknown key 'zz': the fields of Small are x, a @ $.shape.zz"]


def test_a_union_reports_the_member_that_knows_more_of_the_keys() -> None:
    """{"x", "b", "zz"} was meant for a Large: its problem is the one reported, and the
    converter of inputs takes it as a Large, not as a Small that dropped `b`."""
    value = {"shape": {"x": 1, "b": 2, "zz": 3}}
    assert convert.make().structure(value, Holder).shape == Large(1, 2)
    with pytest.raises(ConversionError) as raised:
        convert.structure(convert.answers(convert.make()), value, Holder, "the answer")
    assert raised.value.errors == ["unknown key 'zz': the fields of Large are x, b @ $.shape.zz"]


@attrs.frozen
class Ticket:
    id: str
    words: int = 0


@attrs.frozen
class Batch:
    tickets: tuple[Ticket, ...] = ()
    done: int = 0


def test_an_input_with_more_columns_still_loads() -> None:
    """A JSON Lines input may carry columns the state does not use: they are ignored."""
    m = Machine("batch", state=Batch, start="count", input="tickets")
    rows = [json.loads('{"id": "T-1", "words": 3, "from": "web"}')]
    assert m.initial_state(rows) == Batch((Ticket("T-1", 3),))
    plain = Machine("plain", state=Ticket, start="count")
    assert plain.initial_state({"id": "T-2", "priority": "high"}) == Ticket("T-2")


def test_a_state_journaled_by_an_older_class_still_loads() -> None:
    """A field the state class has since lost, at the top or nested, is ignored on reading
    the journal back, so a run started before the change can be resumed."""
    m = Machine("batch", state=Batch, start="count", input="tickets")
    old = {"tickets": [{"id": "T-1", "words": 3, "lang": "en"}], "done": 1, "skipped": 0}
    assert convert.structure(m.converter, old, Batch, "the state") == Batch((Ticket("T-1", 3),), 1)


def test_answers_refuse_unknown_keys_with_their_paths() -> None:
    """An older state's keys in a model's answer: one line per key the class does not have,
    at its path, beside the other problems."""
    m = Machine("batch", state=Batch, start="count", input="tickets")
    answers = convert.answers(m.converter)
    old = {"tickets": [{"id": "T-1", "words": "3", "lang": "en"}], "done": 1, "skipped": 0}
    with pytest.raises(ConversionError) as raised:
        convert.structure(answers, old, Batch, "the answer")
    assert raised.value.errors == [
        "expected an integer, got a string @ $.tickets[0].words",
        "unknown key 'lang': the fields of Ticket are id, words @ $.tickets[0].lang",
        "unknown key 'skipped': the fields of Batch are tickets, done @ $.skipped",
    ]


class Cents(int):
    """A type of the pipeline's own, structured by a hook it registered."""


@attrs.frozen
class Price:
    amount: Cents


def test_answers_share_the_hooks_registered_before() -> None:
    """`answers` copies the converter: a hook registered on it before is used at any depth,
    and unknown keys are refused inside a class the copy built itself."""
    converter = convert.make()
    converter.register_structure_hook(Cents, lambda value, _: Cents(round(value * 100)))
    answers = convert.answers(converter)
    assert answers.structure([{"amount": 1.5}], list[Price]) == [Price(Cents(150))]
    with pytest.raises(ConversionError, match=r"unknown key 'usd'.* @ \$\[0\]\.usd"):
        convert.structure(answers, [{"amount": 1, "usd": 1}], list[Price], "the answer")
    assert converter.structure([{"amount": 1, "usd": 1}], list[Price]) == [Price(Cents(100))]


@attrs.frozen
class Note:
    text: str = ""


@attrs.frozen
class Card:
    id: str
    subject: str = ""
    notes: tuple[Note, ...] = ()


@attrs.frozen
class Board:
    cards: tuple[Card, ...] = ()
    by_owner: dict[str, Card] = attrs.Factory(dict)
    pinned: Card | Note | None = None


def test_ignored_names_each_unknown_key_once_per_place_alike() -> None:
    """Keys no class took, at any depth (lists, dicts, a union's chosen member), one entry per
    path with list indices and dict keys as `[*]`, counted, with the first place it was."""
    converter = convert.make()
    raw = {
        "cards": [{"id": f"C-{i}", "subjet": "typo", "notes": [{"txt": "x"}]} for i in range(60)],
        "by_owner": {"ann": {"id": "C-1", "colour": "red"}},
        "pinned": {"text": "hi", "when": "now"},
        "colour": "blue",
    }
    board = converter.structure(raw, Board)
    found = {each.pattern: each for each in convert.ignored(raw, board)}
    assert list(found) == [
        "$.cards[*].subjet",
        "$.cards[*].notes[*].txt",
        "$.by_owner[*].colour",
        "$.pinned.when",
        "$.colour",
    ]
    subjet = found["$.cards[*].subjet"]
    assert (subjet.count, subjet.first, subjet.owner) == (60, "$.cards[0].subjet", "Card")
    assert subjet.describe() == (
        "$.cards[*].subjet (60 times): Card has no field 'subjet', it has id, subject, notes"
    )
    assert found["$.by_owner[*].colour"].first == '$.by_owner["ann"].colour'
    assert found["$.pinned.when"].describe() == (
        "$.pinned.when: Note has no field 'when', it has text"
    )
    assert convert.ignored({"cards": [{"id": "C-1"}]}, Board((Card("C-1"),))) == ()


def _cards(**options: Any) -> Machine[Board]:
    m: Machine[Board] = Machine("cards", state=Board, start="go", input="cards", **options)

    @m.step
    def go(ctx: Context, s: Board) -> Transition:
        return ctx.finish(s)

    return m


TYPOS = [{"id": f"C-{i}", "subjet": "typo"} for i in range(60)]


def test_prepare_warns_once_of_ignored_input_fields() -> None:
    """`runner.prepare` (what `machine.run` calls) gives one IgnoredInput warning naming the
    field's path however many items have it, and keeps what it found on the prepared run."""
    from runjournal.machine import IgnoredInput, runner

    with pytest.warns(IgnoredInput) as caught:
        prepared = runner.prepare(_cards(), TYPOS)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "input fields left out, the state has no place for them: $.cards[*].subjet (60 times): "
        "Card has no field 'subjet', it has id, subject, notes"
    )
    assert [each.pattern for each in prepared.ignored] == ["$.cards[*].subjet"]
    assert prepared.state == Board(tuple(Card(f"C-{i}") for i in range(60)))


def test_prepare_is_silent_about_input_that_fits() -> None:
    """No warning, nothing ignored, when every key has a field."""
    import warnings

    from runjournal.machine import runner

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = runner.prepare(_cards(), [{"id": "C-1", "subject": "ok"}])
    assert prepared.ignored == ()


def test_strict_input_refuses_unknown_fields_with_the_fields_the_class_has() -> None:
    """`strict_input=True`: the input is refused, naming the path and the fields of the class."""
    from runjournal.machine import UnknownInputField

    with pytest.raises(UnknownInputField) as raised:
        _cards(strict_input=True).initial_state(TYPOS)
    assert str(raised.value) == (
        "machine 'cards' takes strict input, and the input has fields its state does not: "
        "$.cards[*].subjet (60 times): Card has no field 'subjet', it has id, subject, notes; "
        "correct them, or make the machine without strict_input"
    )
    assert _cards(strict_input=True).initial_state([{"id": "C-1"}]) == Board((Card("C-1"),))


def test_ignored_input_through_an_input_function() -> None:
    """With `@m.input`, the input's keys are checked against the type the function takes."""
    from runjournal.machine import UnknownInputField

    m: Machine[Board] = Machine("fn", state=Board, start="go", strict_input=True)

    @m.input
    def from_cards(cards: list[Card]) -> Board:
        return Board(tuple(cards))

    with pytest.raises(UnknownInputField, match=r"\$\[1\]\.subjet: Card has no field 'subjet'"):
        m.initial_state([{"id": "C-0"}, {"id": "C-1", "subjet": "typo"}])
