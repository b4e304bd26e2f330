"""A state's JSON and its change from one step to the next, at the cost of what changed.

A step returns a new state; the journal records the JSON Patch from the old state's JSON to the
new one's. Unstructuring and diffing the whole state at every step would make a step cost the
size of the state: a run over 100,000 items would walk them all at each of its 200,000 steps.
A step built with `attrs.evolve` keeps every field it does not set as the very same object, so
a field whose type cannot change in place (str, numbers, tuples and frozen attrs classes of
those, ...) is compared by identity first:

- the same object as before: unchanged, and its JSON is the old JSON, with no walk at all;
- a tuple that only grew at its end (`s.results + (r,)`, its old items the same objects): only
  the new items are unstructured, and the change is an `add` of each at the end;
- anything else, and every field of a type that can change in place (a list, a dict, `Any`):
  that field alone is unstructured and diffed (`journal.delta.diff`), exactly.

Field by field is only how the converter unstructures the class when no hook of the user's own
renames or reshapes it: `layout` checks that once, on a run's first state, and says None when
not, and then the whole state is unstructured and diffed at each step, as before.
"""

from __future__ import annotations

import datetime
import enum
import types
import typing
from operator import is_
from typing import Any

import attrs
import cattrs

from runjournal.journal import delta

Layout = tuple[tuple[str, Any, Any], ...]
"""Each field's name, its type, and, if a value of that type cannot change in place, the type
of its items when it is a `tuple[X, ...]` (else `Any`); None for a type that can change in
place. In the order the converter writes the fields."""


def layout(converter: cattrs.Converter, state: Any, state_json: Any) -> Layout | None:
    """How `state` unstructures field by field, if that gives `state_json` (what unstructuring
    it whole gave); None if it does not, or if the state is no attrs instance."""
    cls = type(state)
    if not attrs.has(cls) or not isinstance(state_json, dict):
        return None
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that names what is not importable here
        return None
    fields = [(f.name, hints.get(f.name, Any)) for f in attrs.fields(cls)]
    if [name for name, _ in fields] != list(state_json):
        return None
    for name, type_ in fields:
        if not _unstructures_to(converter, getattr(state, name), type_, state_json[name]):
            return None
    return tuple(
        (name, type_, (item_type(type_) or Any) if _immutable(type_, set()) else None)
        for name, type_ in fields
    )


def change(
    converter: cattrs.Converter, fields: Layout | None, old: Any, old_json: Any, new: Any
) -> tuple[Any, list[delta.Op]]:
    """The JSON of `new` and the operations that turn `old_json` (the JSON of `old`) into it."""
    if fields is None or type(new) is not type(old):
        whole = converter.unstructure(new)
        return whole, delta.diff(old_json, whole)
    new_json: dict[str, Any] = {}
    ops: list[delta.Op] = []
    for name, type_, items in fields:
        value, before = getattr(new, name), getattr(old, name)
        if items is not None and value is before:
            new_json[name] = old_json[name]
            continue
        path = f"/{delta.escape(name)}"
        if items is not None and items is not Any and _grown(before, value):
            tail = [converter.unstructure(v, unstructure_as=items) for v in value[len(before) :]]
            new_json[name] = [*old_json[name], *tail]
            ops += ({"op": "add", "path": f"{path}/-", "value": item} for item in tail)
            continue
        new_json[name] = converter.unstructure(value, unstructure_as=type_)
        ops += delta.diff(old_json[name], new_json[name], path)
    return new_json, ops


def _unstructures_to(converter: cattrs.Converter, value: Any, type_: Any, json: Any) -> bool:
    """Whether `value`, a `type_`, unstructures to `json`: a tuple item by item, so that a field
    of 100,000 items is not unstructured whole a second time to learn it."""
    items = item_type(type_)
    if items is None or type(value) is not tuple or type(json) is not list:
        return delta.same(converter.unstructure(value, unstructure_as=type_), json)
    return len(value) == len(json) and all(
        delta.same(converter.unstructure(item, unstructure_as=items), held)
        for item, held in zip(value, json, strict=True)
    )


def item_type(type_: Any) -> Any:
    """The type of each item of a field typed `tuple[X, ...]`, or None for any other type."""
    args = typing.get_args(type_)
    if typing.get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _grown(before: Any, value: Any) -> bool:
    """Whether tuple `value` is tuple `before` with items added at its end: the old items the
    very same objects (one C-level pass), so their JSON is the old JSON."""
    return (
        type(value) is tuple
        and type(before) is tuple
        and len(value) > len(before)
        and all(map(is_, before, value))
    )


_IMMUTABLE = (str, int, float, bool, bytes, type(None), enum.Enum, datetime.date, datetime.time)


def _immutable(type_: Any, seen: set[Any]) -> bool:
    """Whether no value of `type_` can change in place, all the way down: then a field that is
    the same object as before holds the same value as before."""
    if type_ in seen:
        return True  # a recursive type: whether it is immutable is settled by its other parts
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    if origin is typing.Literal:
        return True
    if origin in (tuple, frozenset, typing.Union, types.UnionType):
        return bool(args) and all(a is Ellipsis or _immutable(a, seen) for a in args)
    if not isinstance(type_, type):
        return False  # Any, a type variable, list[X], dict[K, V], ...
    if issubclass(type_, _IMMUTABLE):
        return True
    if attrs.has(type_) and _frozen(type_):
        seen.add(type_)
        try:
            hints = typing.get_type_hints(type_)
        except (NameError, TypeError):
            return False
        return all(_immutable(hints.get(f.name, Any), seen) for f in attrs.fields(type_))
    return False


def _frozen(cls: type) -> bool:
    """Whether instances of the attrs class `cls` refuse to have their fields set."""
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"
