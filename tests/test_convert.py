"""Tests for `machine.convert`: strict structuring, the same for inputs and model answers."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import pytest

from machine import convert


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
