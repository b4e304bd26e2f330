"""Tests for `journal.delta`: the change between two JSON states, and applying it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import BadPatch
from journal.delta import apply, diff

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values, json_values)
def test_apply_of_diff_gives_the_new_value(old: Any, new: Any) -> None:
    """For any two JSON values, applying the diff to the old one gives the new one."""
    ops = diff(old, new)
    result = apply(copy.deepcopy(old), json.loads(json.dumps(ops)))
    assert json.dumps(result, sort_keys=True) == json.dumps(new, sort_keys=True)


@given(json_values)
def test_no_change_is_no_ops(value: Any) -> None:
    """A value compared with itself, or an equal copy, has no change."""
    assert diff(value, copy.deepcopy(value)) == []


def test_a_change_in_a_large_list_is_one_small_op() -> None:
    """Changing one field of one item among a thousand stores only that field."""
    old = {"items": [{"text": "x" * 500, "done": False} for _ in range(1000)], "next": 0}
    new = copy.deepcopy(old)
    new["items"][417]["done"] = True
    new["next"] = 1
    assert diff(old, new) == [
        {"op": "replace", "path": "/items/417/done", "value": True},
        {"op": "replace", "path": "/next", "value": 1},
    ]


def test_appends_and_drops_at_the_end() -> None:
    """Items appended to a list are adds at `-`; items dropped from its end are removes."""
    assert diff([1, 2], [1, 2, 3]) == [{"op": "add", "path": "/-", "value": 3}]
    assert diff([1, 2, 3], [1]) == [{"op": "remove", "path": "/2"}, {"op": "remove", "path": "/1"}]


def test_keys_with_slashes_and_tildes_are_escaped() -> None:
    """Keys holding `/` or `~` are escaped as RFC 6901 says, and apply reads them back."""
    old = {"a/b": 1, "c~d": 2}
    new = {"a/b": 3, "c~d": 4}
    ops = diff(old, new)
    assert {op["path"] for op in ops} == {"/a~1b", "/c~0d"}
    assert apply(old, ops) == new


def test_true_and_one_are_different() -> None:
    """JSON's true is not the number 1, though Python says they are equal."""
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]


def test_a_patch_that_does_not_fit_is_an_error() -> None:
    """Applying a change to a state it does not follow raises BadPatch, naming the path."""
    with pytest.raises(BadPatch, match="/missing"):
        apply({"a": 1}, [{"op": "replace", "path": "/missing", "value": 2}])
