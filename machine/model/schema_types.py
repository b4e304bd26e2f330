"""What sort of value a type annotation structures into, as JSON Schema and the validators
see it: a scalar, a date, an enum of few values, a union, an array, a set, a mapping, an attrs
class, or any. Shared by the walk of a class (`machine.model.jsonschema`) and the constraints
of its validators (`machine.model.schema_validators`).
"""

from __future__ import annotations

import collections.abc as abc
import datetime
import enum
import types
import typing
from typing import Any, TypeAlias

import attrs

Schema: TypeAlias = dict[str, Any]

SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
ARRAYS = (list, tuple, abc.Sequence, abc.MutableSequence)
SETS = (set, frozenset, abc.Set, abc.MutableSet)
MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


def unwrap(tp: Any) -> Any:
    """The type cattrs structures for `tp`: NewType and Annotated stripped."""
    while True:
        if hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        elif typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp


def kind_of(tp: Any) -> str:
    """What sort of Python value `tp` structures into, as far as validators can tell.

    "enum" is a type with few JSON values (Literal, Enum, bool, None): validators are run on
    each of them. "any" is a type whose values cannot be told in advance.
    """
    tp = unwrap(tp)
    origin = typing.get_origin(tp) or tp
    if origin is typing.Literal or tp in (bool, type(None)):
        return "enum"
    if origin is typing.Union or origin is types.UnionType:
        return "union"
    if tp in (int, float, str):
        return str(tp.__name__)
    if tp is datetime.datetime or tp is datetime.date:
        return str(tp.__name__)
    if not isinstance(origin, type):
        return "any"
    if issubclass(origin, enum.Enum):
        return "enum"
    if attrs.has(origin):
        return "class"
    if origin in SETS:
        return "set"
    if origin in ARRAYS:
        return "array"
    if origin in MAPPINGS:
        return "mapping"
    return "any"


def hashable(tp: Any) -> bool:
    """Whether the values `tp` structures into can be members of a set."""
    tp = unwrap(tp)
    kind, origin, args = kind_of(tp), typing.get_origin(tp) or tp, typing.get_args(tp)
    if kind in ("enum", "int", "float", "str", "date", "datetime"):
        return True
    if kind == "union":
        return all(hashable(arg) for arg in args)
    if kind == "class":
        return getattr(origin, "__hash__", None) is not None
    if origin is tuple:
        return bool(args) and all(arg is Ellipsis or hashable(arg) for arg in args)
    if origin is frozenset:
        return bool(args) and hashable(args[0])
    return False


def json_types(tp: Any) -> set[str]:
    """The JSON types that may structure into `tp` ("number" for integers too)."""
    tp = unwrap(tp)
    kind = kind_of(tp)
    if kind == "union":
        return set().union(*(json_types(arg) for arg in typing.get_args(tp)))
    if kind == "enum":
        origin = typing.get_origin(tp) or tp
        values = (
            typing.get_args(tp)
            if origin is typing.Literal
            else list(origin)
            if isinstance(origin, type) and issubclass(origin, enum.Enum)
            else [True]
            if tp is bool
            else [None]
        )
        kinds = {json_type(v.value if isinstance(v, enum.Enum) else v) for v in values}
        return {"number" if k == "integer" else str(k) for k in kinds}
    by_kind = {
        "int": "number", "float": "number", "str": "string", "date": "string",
        "datetime": "string", "array": "array", "set": "array", "mapping": "object",
        "class": "object",
    }  # fmt: skip
    if kind in by_kind:
        return {by_kind[kind]}
    return {"number", "string", "boolean", "null", "array", "object"}


def overlap(earlier: Any, later: Any) -> bool:
    """Whether a JSON value may structure into both types, the two values differing to a
    validator. An int and a float from the same number are equal, and compare the same."""
    if kind_of(earlier) in ("int", "float") and kind_of(later) in ("int", "float"):
        return False
    return bool(json_types(earlier) & json_types(later))


def json_type(value: Any) -> str | None:
    return SCALARS.get(type(value))
