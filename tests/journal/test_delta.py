"""Tests for `journal.delta`: the change between two JSON states, and applying it."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runjournal.journal import BadPatch
from runjournal.journal.delta import apply, diff, same

# --- An oracle for exact JSON equality, independent of `same` --------------------------------


def tagged(value: Any) -> Any:
    """`value` with every scalar tagged by its JSON type; tuples count as lists."""
    if isinstance(value, dict):
        return {"object": {key: tagged(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return {"array": [tagged(item) for item in value]}
    if isinstance(value, float):
        return {"float": repr(value)}  # repr tells -0.0 from 0.0, and writes NaN as nan
    return {type(value).__name__: value}


def exact(value: Any) -> str:
    """A text that two values share exactly when they are the same JSON value."""
    return json.dumps(tagged(value), sort_keys=True)


def lists_only(value: Any) -> Any:
    """`value` as `json.loads` would give it back: tuples become lists."""
    if isinstance(value, dict):
        return {key: lists_only(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [lists_only(item) for item in value]
    return value


# --- Strategies ------------------------------------------------------------------------------

# Values that Python calls equal but JSON does not: they must show up often, not by luck.
look_alikes = st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 1.0, 2.0, True, False, None, "1"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.integers(-3, 3).map(float)
    | st.text(max_size=5)
    | look_alikes
)
keys = st.text(max_size=4) | st.sampled_from(["", "/", "~", "~0", "~1", "a/b", "m~n", "0", "-"])
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)
# States shaped like the journal's: lists of objects whose fields are numbers and flags.
records = st.lists(
    st.dictionaries(keys, look_alikes | st.lists(look_alikes, max_size=3), max_size=4),
    max_size=6,
)
states = json_values | records | st.dictionaries(keys, records, max_size=3)


def look_alike(value: Any) -> list[Any]:
    """The values equal to `value` under Python's `==` that are other JSON values."""
    if isinstance(value, bool):
        return [int(value), float(value)]
    if isinstance(value, int):
        return [float(value)] + ([bool(value)] if value in (0, 1) else [])
    if isinstance(value, float) and value.is_integer():
        return [int(value), -value] if value == 0 else [int(value)]
    return []


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """`value` with a few of its scalars turned into look-alikes, tuples and lists swapped."""
    if isinstance(value, dict):
        return {key: draw(mutated(item)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [draw(mutated(item)) for item in value]
        return tuple(items) if draw(st.integers(0, 4)) == 0 else items
    others = look_alike(value)
    if others and draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(others))
    if draw(st.integers(0, 9)) == 0:
        return draw(scalars)
    return value


@st.composite
def near_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    """A state and the same state after small changes of JSON type."""
    old = draw(states)
    return old, draw(mutated(old))


pairs = st.tuples(json_values, json_values) | near_pairs()


# --- Properties ------------------------------------------------------------------------------


@given(pairs)
def test_apply_of_diff_gives_exactly_the_new_value(pair: tuple[Any, Any]) -> None:
    """For any two JSON values, applying the diff to the old one gives the new one, types too."""
    old, new = pair
    ops = diff(old, new)
    assert exact(apply(copy.deepcopy(old), ops)) == exact(new)
    # As the journal does it: the ops go through JSON text and come back as lists.
    stored = json.loads(json.dumps(ops))
    assert exact(apply(lists_only(old), stored)) == exact(new)


@given(pairs)
def test_jsonpatch_applies_our_patches_the_same_way(pair: tuple[Any, Any]) -> None:
    """The `jsonpatch` library, given our patch, gives what our apply gives, types included."""
    old, new = pair
    old = lists_only(old)  # jsonpatch cannot change a tuple in place
    ops = json.loads(json.dumps(diff(old, new)))
    theirs = jsonpatch.apply_patch(copy.deepcopy(old), copy.deepcopy(ops))
    ours = apply(copy.deepcopy(old), ops)
    assert exact(theirs) == exact(ours) == exact(new)


@given(pairs)
def test_same_is_exact_json_equality(pair: tuple[Any, Any]) -> None:
    """`same` agrees with the type-tagged oracle, whichever way round it is asked."""
    old, new = pair
    assert same(old, new) == (exact(old) == exact(new)) == same(new, old)
    assert same(old, copy.deepcopy(old))


@given(states)
def test_no_change_is_no_ops(value: Any) -> None:
    """A value compared with itself, an equal copy, or its JSON round trip, has no change."""
    assert diff(value, value) == []
    assert diff(value, copy.deepcopy(value)) == []
    assert diff(value, lists_only(value)) == []


# --- diff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "ops"),
    [
        ({"s": [[1]]}, {"s": [[True]]}, [{"op": "replace", "path": "/s/0/0", "value": True}]),
        ([[1]], [[1.0]], [{"op": "replace", "path": "/0/0", "value": 1.0}]),
        (
            {"s": [{"a": 0}]},
            {"s": [{"a": False}]},
            [{"op": "replace", "path": "/s/0/a", "value": False}],
        ),
        ([2], [2.0], [{"op": "replace", "path": "/0", "value": 2.0}]),
        ([True], [1], [{"op": "replace", "path": "/0", "value": 1}]),
        ([{"a": [0.0]}], [{"a": [-0.0]}], [{"op": "replace", "path": "/0/a/0", "value": -0.0}]),
        ({"a": 1}, {"a": True}, [{"op": "replace", "path": "/a", "value": True}]),
        ({"a": 2.0}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
    ],
)
def test_a_change_of_json_type_is_recorded(old: Any, new: Any, ops: list[Any]) -> None:
    """1 to true, 2 to 2.0, 0 to false, 0.0 to -0.0: each is a change, however deep."""
    assert diff(old, new) == ops
    assert exact(apply(copy.deepcopy(old), ops)) == exact(new)


def test_tuples_and_lists_are_the_same_json_type() -> None:
    """A tuple holding what a list holds is no change; keys in another order neither."""
    assert diff({"a": (1, [2, (3,)])}, {"a": [1, (2, [3])]}) == []
    assert diff([{"x": 1, "y": 2}], [{"y": 2, "x": 1}]) == []
    assert diff([math.nan], [math.nan]) == []


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


def test_a_type_change_in_a_large_list_is_one_small_op() -> None:
    """A count that turns into a flag, among a thousand items that `==` calls equal."""
    old = {"items": [{"text": "x" * 500, "n": 1, "tags": [0, 1.0]} for _ in range(1000)]}
    new = lists_only(old)
    new["items"][417]["n"] = True
    new["items"][900]["tags"][1] = 1
    assert diff(old, new) == [
        {"op": "replace", "path": "/items/417/n", "value": True},
        {"op": "replace", "path": "/items/900/tags/1", "value": 1},
    ]


def test_appends_and_drops_at_the_end() -> None:
    """Items appended to a list are adds at `-`; items dropped from its end are removes."""
    assert diff([1, 2], [1, 2, 3]) == [{"op": "add", "path": "/-", "value": 3}]
    assert diff([1, 2, 3], [1]) == [{"op": "remove", "path": "/2"}, {"op": "remove", "path": "/1"}]


def test_keys_with_slashes_and_tildes_are_escaped() -> None:
    """Keys holding `/` or `~` are escaped as RFC 6901 says, and apply reads them back."""
    old = {"a/b": 1, "c~d": 2, "~1": 3, "~0": 4, "": 5}
    new = {"a/b": 6, "c~d": 7, "~1": 8, "~0": 9, "": 10}
    ops = diff(old, new)
    assert {op["path"] for op in ops} == {"/a~1b", "/c~0d", "/~01", "/~00", "/"}
    assert apply(old, ops) == new


# --- same ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, True, False),
        (0, False, False),
        (1, 1.0, False),
        (0.0, -0.0, False),
        (math.nan, math.nan, True),
        ([1, {"a": 2}], [1, {"a": 2.0}], False),
        ([[{"a": [True]}]], [[{"a": [1]}]], False),
        ((1, [2]), [1, (2,)], True),
        ({"a": 1, "b": [2]}, {"b": [2], "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ("1", 1, False),
        (None, None, True),
    ],
)
def test_same(a: Any, b: Any, expected: bool) -> None:
    """Exact JSON equality: type-aware and deep; tuple is list; key order does not count."""
    assert same(a, b) is expected
    assert same(b, a) is expected


# --- apply: what the journal needs -----------------------------------------------------------


def test_replace_in_a_top_level_list() -> None:
    """The patch diff makes for a list whose items are strings applies to it."""
    ops = diff(["1", "x"], ["1", "y"])
    assert ops == [{"op": "replace", "path": "/1", "value": "y"}]
    assert apply(["1", "x"], ops) == ["1", "y"]
    assert apply({"1": "x"}, ops) == {"1": "y"}


def test_apply_changes_tuples_as_lists() -> None:
    """A state holding tuples (built in Python, not read back) can still be patched."""
    assert apply({"a": (1, (2, 3))}, [{"op": "replace", "path": "/a/1/0", "value": 9}]) == {
        "a": [1, [9, 3]]
    }
    assert apply((1, 2), [{"op": "add", "path": "/-", "value": 3}]) == [1, 2, 3]


def test_a_patch_that_does_not_fit_is_an_error() -> None:
    """Applying a change to a state it does not follow raises BadPatch, naming the path."""
    with pytest.raises(BadPatch, match="/missing"):
        apply({"a": 1}, [{"op": "replace", "path": "/missing", "value": 2}])


def test_the_error_names_the_operation_that_failed() -> None:
    """Among several operations, the message gives the failing one's index, op and path."""
    ops = [
        {"op": "add", "path": "/b", "value": 1},
        {"op": "remove", "path": "/c/d"},
    ]
    with pytest.raises(BadPatch, match=r"operation 1 \('remove' at '/c/d'\): no member 'c'"):
        apply({"a": 1}, ops)


# --- apply: RFC 6901 pointers and RFC 6902 operations ----------------------------------------


@pytest.mark.parametrize(
    "token", ["-1", "01", "00", "+1", " 1", "1 ", "\uff11", "\u0661", "1e0", "0x1", ""]
)
@pytest.mark.parametrize("kind", ["add", "replace", "remove", "test"])
def test_an_array_index_is_0_or_digits_without_a_leading_zero(token: str, kind: str) -> None:
    """`-1`, `01`, `+1`, ` 1`, full-width digits and the like are no index (RFC 6901)."""
    op = {"op": kind, "path": f"/a/{token}", "value": 0}
    with pytest.raises(BadPatch, match=rf"operation 0 \('{kind}' at "):
        apply({"a": [10, 11]}, [op])
    with pytest.raises(BadPatch, match="is not an array index"):
        apply({"a": [[10], [11]]}, [{"op": kind, "path": f"/a/{token}/0", "value": 0}])


@pytest.mark.parametrize("kind", ["replace", "remove", "test"])
def test_dash_names_no_item(kind: str) -> None:
    """`-` is the end of an array, so only an add may name it, and only as the last token."""
    with pytest.raises(BadPatch, match=kind):
        apply({"a": [1]}, [{"op": kind, "path": "/a/-", "value": 0}])
    with pytest.raises(BadPatch, match="add"):
        apply({"a": [[1]]}, [{"op": "add", "path": "/a/-/0", "value": 0}])
    assert apply({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}


def test_an_index_past_the_end_is_an_error() -> None:
    """Add may name the end of an array (index == length); nothing may name beyond it."""
    assert apply([1, 2], [{"op": "add", "path": "/2", "value": 3}]) == [1, 2, 3]
    assert apply([1, 2], [{"op": "add", "path": "/0", "value": 0}]) == [0, 1, 2]
    for op in [
        {"op": "add", "path": "/3", "value": 3},
        {"op": "replace", "path": "/2", "value": 3},
        {"op": "remove", "path": "/2"},
        {"op": "test", "path": "/2", "value": 3},
        {"op": "move", "from": "/2", "path": "/0"},
        {"op": "copy", "from": "/2", "path": "/0"},
    ]:
        with pytest.raises(BadPatch, match=rf"operation 0 \('{op['op']}' at '{op['path']}'\)"):
            apply([1, 2], [op])


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"op": "add", "path": "/a", "value": 1}, "a patch is a list of operations, not dict"),
        ("add", "a patch is a list of operations, not str"),
        (None, "a patch is a list of operations, not NoneType"),
        ([5], "operation 0 is not an object: 5"),
        ([None], "operation 0 is not an object: None"),
        ([["add", "/a", 1]], "operation 0 is not an object"),
        ([{"op": "add", "value": 1}], r"operation 0 \('add' at None\): missing 'path'"),
        ([{"op": "add", "path": None, "value": 1}], r"\('add' at None\): 'path' must be a string"),
        ([{"op": "add", "path": 7, "value": 1}], r"\('add' at 7\): 'path' must be a string"),
        ([{"op": "add", "path": ["/a"], "value": 1}], r"\('add' at \['/a'\]\): 'path' must be"),
        ([{"path": "/a", "value": 1}], r"operation 0 \(None at '/a'\): missing 'op'"),
        ([{"op": None, "path": "/a"}], r"operation 0 \(None at '/a'\): missing 'op'"),
        ([{"op": "spam", "path": "/a"}], r"operation 0 \('spam' at '/a'\): unknown 'op'"),
        ([{"op": ["add"], "path": "/a"}], r"operation 0 \(\['add'\] at '/a'\): unknown 'op'"),
        ([{"op": "add", "path": "/a"}], r"\('add' at '/a'\): missing 'value'"),
        ([{"op": "replace", "path": "/a"}], r"\('replace' at '/a'\): missing 'value'"),
        ([{"op": "test", "path": "/a"}], r"\('test' at '/a'\): missing 'value'"),
        ([{"op": "move", "path": "/b"}], r"\('move' at '/b'\): missing 'from'"),
        ([{"op": "copy", "path": "/b", "from": 1}], r"\('copy' at '/b'\): 'from' must be"),
        ([{"op": "add", "path": "a", "value": 1}], r"\('add' at 'a'\): a pointer must be empty"),
        ([{"op": "add", "path": "/a~2", "value": 1}], r"'~' must be followed by 0 or 1"),
        ([{"op": "add", "path": "/a~", "value": 1}], r"'~' must be followed by 0 or 1"),
        ([{"op": "replace", "path": "/b", "value": 1}], r"\('replace' at '/b'\): no member 'b'"),
        ([{"op": "remove", "path": "/b"}], r"\('remove' at '/b'\): no member 'b'"),
        ([{"op": "add", "path": "/a/x", "value": 1}], r"\('add' at '/a/x'\): int has no members"),
        ([{"op": "add", "path": "/b/x", "value": 1}], r"\('add' at '/b/x'\): no member 'b'"),
        ([{"op": "move", "from": "/c", "path": "/c/d"}], r"cannot move '/c' into itself"),
        ([{"op": "test", "path": "/a", "value": True}], r"\('test' at '/a'\): the value is not"),
        (
            [{"op": "add", "path": "/b", "value": 1}, {"op": "spam", "path": "/b"}],
            r"operation 1 \('spam' at '/b'\): unknown 'op'",
        ),
    ],
)
def test_a_malformed_patch_is_a_bad_patch_naming_the_operation(patch: Any, message: str) -> None:
    """Whatever is wrong with a patch, the error is BadPatch and says which operation."""
    with pytest.raises(BadPatch, match=message):
        apply({"a": 1, "c": {}}, patch)


def test_add_on_an_existing_member_replaces_it() -> None:
    """RFC 6902 4.1: add to an object member that exists replaces its value."""
    assert apply({"a": 1}, [{"op": "add", "path": "/a", "value": 2}]) == {"a": 2}


def test_the_whole_document() -> None:
    """Add or replace at "" swap the document; remove at "" leaves null (documented)."""
    assert apply({"a": 1}, [{"op": "add", "path": "", "value": [1]}]) == [1]
    assert apply({"a": 1}, [{"op": "replace", "path": "", "value": "x"}]) == "x"
    assert apply("foo", [{"op": "replace", "path": "", "value": "bar"}]) == "bar"
    assert apply({"a": 1}, [{"op": "remove", "path": ""}]) is None
    assert apply({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1}}]) == {"a": 1}


def test_move_copy_and_test() -> None:
    """The operations diff never makes are there too, as RFC 6902 defines them."""
    doc = {"a": {"b": [1, 2]}, "c": 3}
    assert apply(copy.deepcopy(doc), [{"op": "move", "from": "/a/b/0", "path": "/a/b/-"}]) == {
        "a": {"b": [2, 1]},
        "c": 3,
    }
    assert apply(copy.deepcopy(doc), [{"op": "move", "from": "/c", "path": "/a/c"}]) == {
        "a": {"b": [1, 2], "c": 3}
    }
    copied = apply(copy.deepcopy(doc), [{"op": "copy", "from": "/a", "path": "/d"}])
    assert copied["d"] == copied["a"] and copied["d"] is not copied["a"]
    assert apply([1], [{"op": "test", "path": "/0", "value": 1.0}]) == [1]  # numbers by value
    with pytest.raises(BadPatch, match="the value is not True"):
        apply([1], [{"op": "test", "path": "/0", "value": True}])
    with pytest.raises(BadPatch, match="the value is not"):
        apply([[1]], [{"op": "test", "path": "/0", "value": [1, 2]}])
