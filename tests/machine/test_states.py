"""Tests for `machine.states`: a state's JSON and its change, at the cost of what changed.

The oracle is the whole-state path: unstructure the new state whole and apply the recorded
operations to the old JSON; both must give exactly the same JSON value (types included).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from runjournal.journal.delta import apply, same
from runjournal.machine import convert, states


@attrs.frozen
class Ticket:
    id: str
    score: int | float


@attrs.frozen
class Batch:
    items: tuple[str, ...]
    results: tuple[Ticket, ...] = ()
    scores: tuple[int | float, ...] = ()
    notes: list[str] = attrs.field(factory=list)
    extra: Any = None
    next: int = 0


CONVERTER = convert.make()


def step(old: Any, new: Any) -> tuple[Any, list[dict[str, Any]]]:
    """`states.change` from `old` to `new`, checked against the whole-state oracle."""
    old_json = CONVERTER.unstructure(old)
    fields = states.layout(CONVERTER, old, old_json)
    new_json, ops = states.change(CONVERTER, fields, old, old_json, new)
    whole = CONVERTER.unstructure(new)
    assert same(new_json, whole)
    assert same(apply(copy.deepcopy(old_json), ops), whole)
    return new_json, ops


def test_an_unchanged_field_is_its_old_json_and_no_operation() -> None:
    old = Batch(items=tuple(f"t{i}" for i in range(1000)))
    old_json = CONVERTER.unstructure(old)
    fields = states.layout(CONVERTER, old, old_json)
    new_json, ops = states.change(CONVERTER, fields, old, old_json, attrs.evolve(old, next=1))
    assert new_json["items"] is old_json["items"]
    assert ops == [{"op": "replace", "path": "/next", "value": 1}]


def test_a_tuple_grown_at_its_end_is_an_add_of_each_new_item() -> None:
    old = Batch(items=("a",), results=(Ticket("T-1", 3),))
    new = attrs.evolve(old, results=(*old.results, Ticket("T-2", 4.5), Ticket("T-3", 1)))
    _, ops = step(old, new)
    assert ops == [
        {"op": "add", "path": "/results/-", "value": {"id": "T-2", "score": 4.5}},
        {"op": "add", "path": "/results/-", "value": {"id": "T-3", "score": 1}},
    ]


def test_an_equal_item_of_another_json_type_in_a_grown_tuple_is_seen() -> None:
    """1 and 1.0 are equal in Python but not the same JSON: a prefix rebuilt from equal values
    is not taken for the old one."""
    old = Batch(items=(), scores=(1, 2))
    new = attrs.evolve(old, scores=(1.0, 2, 3))
    _, ops = step(old, new)
    assert {"op": "replace", "path": "/scores/0", "value": 1.0} in ops


def test_a_list_changed_in_place_is_seen() -> None:
    """A frozen class still holds a mutable list: the same object may hold another value."""
    old = Batch(items=(), notes=["a"])
    old_json = CONVERTER.unstructure(old)
    fields = states.layout(CONVERTER, old, old_json)
    old.notes.append("b")
    new_json, ops = states.change(CONVERTER, fields, old, old_json, attrs.evolve(old))
    assert new_json["notes"] == ["a", "b"]
    assert ops == [{"op": "add", "path": "/notes/-", "value": "b"}]


def test_a_dict_under_any_changed_in_place_is_seen() -> None:
    old = Batch(items=(), extra={"k": 1})
    old_json = CONVERTER.unstructure(old)
    fields = states.layout(CONVERTER, old, old_json)
    old.extra["k"] = True
    _, ops = states.change(CONVERTER, fields, old, old_json, attrs.evolve(old))
    assert ops == [{"op": "replace", "path": "/extra/k", "value": True}]


def test_a_class_unstructured_its_own_way_is_diffed_whole() -> None:
    converter = convert.make()
    converter.register_unstructure_hook(Ticket, lambda t: {"ticket": t.id, "s": t.score})
    old = Ticket("T-1", 3)
    old_json = converter.unstructure(old)
    assert states.layout(converter, old, old_json) is None
    new_json, ops = states.change(converter, None, old, old_json, Ticket("T-1", 4))
    assert new_json == {"ticket": "T-1", "s": 4}
    assert ops == [{"op": "replace", "path": "/s", "value": 4}]


def test_which_types_cannot_change_in_place() -> None:
    @attrs.define
    class Mutable:
        x: int

    @attrs.frozen
    class HoldsAList:
        x: list[int]

    immutable = {int, str, float, int | None, tuple[int, ...], tuple[Ticket, ...], Ticket}
    mutable = {list[int], dict[str, int], Any, tuple, Mutable, HoldsAList, tuple[list[int], ...]}
    for type_ in immutable:
        assert states._immutable(type_, set()), type_
    for type_ in mutable:
        assert not states._immutable(type_, set()), type_


scalars = st.one_of(
    st.integers(-3, 3), st.floats(allow_nan=False), st.booleans(), st.text(max_size=3)
)
tickets = st.builds(Ticket, id=st.text(max_size=3), score=st.one_of(st.integers(0, 5), st.floats()))
batches = st.builds(
    Batch,
    items=st.lists(st.text(max_size=3), max_size=4).map(tuple),
    results=st.lists(tickets, max_size=3).map(tuple),
    scores=st.lists(st.one_of(st.integers(0, 3), st.floats(allow_nan=False)), max_size=3).map(
        tuple
    ),
    notes=st.lists(st.text(max_size=2), max_size=3),
    extra=st.one_of(st.none(), scalars, st.dictionaries(st.text(max_size=2), scalars, max_size=3)),
    next=st.integers(0, 9),
)


@st.composite
def evolutions(draw: st.DrawFn) -> tuple[Batch, Batch]:
    """A state, and the next one as a step would make it: fields kept, set, or grown."""
    old = draw(batches)
    changes: dict[str, Any] = {}
    for field in attrs.fields(Batch):
        how = draw(st.sampled_from(["keep", "set", "grow"]))
        value = getattr(old, field.name)
        if how == "set":
            changes[field.name] = getattr(draw(batches), field.name)
        elif how == "grow" and isinstance(value, tuple):
            more = getattr(draw(batches), field.name)
            changes[field.name] = (*value, *more)
    return old, attrs.evolve(old, **changes)


@given(evolutions())
def test_the_change_is_exactly_the_whole_states_change(pair: tuple[Batch, Batch]) -> None:
    step(*pair)


def test_a_step_costs_the_same_whatever_the_size_of_the_fields_it_keeps() -> None:
    """A ratio measured in the same test: a step over a state of 100,000 items it does not
    touch costs about what one over 10 items costs (walking them would cost 10,000 times as
    much)."""

    def per_step(n: int) -> float:
        old = Batch(items=tuple(f"item-{i}" for i in range(n)))
        old_json = CONVERTER.unstructure(old)
        fields = states.layout(CONVERTER, old, old_json)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            state, state_json = old, old_json
            for i in range(200):
                new = attrs.evolve(state, next=i + 1)
                state_json, _ = states.change(CONVERTER, fields, state, state_json, new)
                state = new
            best = min(best, time.perf_counter() - start)
        return best

    small, large = per_step(10), per_step(100_000)
    assert large < 5 * small, (small, large)
