"""Between a pipeline's attrs values and the JSON the journal holds, strictly and with clear errors.

The converter is cattrs' JSON converter with strict scalars: a string where an int is due is an
error, never silently converted, because the same conversion checks what the model returns.
"""

from __future__ import annotations

import enum
import json
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_any_set,
    is_sequence,
    list_structure_factory,
)
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter

from machine.errors import ConversionError

T = TypeVar("T")


_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    tuple: "an array",
    dict: "an object",
    type(None): "null",
}


def json_name(value: Any) -> str:
    """What `value` is called in JSON: "a string", "an array", ..."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _strict(kind: type, accepts: tuple[type, ...]) -> Any:
    def structure(value: Any, type_: type) -> Any:
        if type_ is not kind and issubclass(type_, enum.Enum):
            return _enum_member(value, type_)  # an IntEnum or a str enum, dispatched here
        # bool is an int subclass, but JSON's true is not a number.
        if not isinstance(value, accepts) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(f"expected {_JSON_NAMES[kind]}, got {json_name(value)}")
        return float(cast(float, value)) if kind is float else value

    return structure


def _objects_only(converter: cattrs.Converter) -> Any:
    def factory(cl: type) -> Any:
        inner: Any = make_dict_structure_fn(
            cl, converter, _cattrs_detailed_validation=converter.detailed_validation
        )

        def structure(value: Any, type_: type) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {json_name(value)}")
            return inner(value, type_)

        return structure

    return factory


def _enum_member(value: Any, type_: type[enum.Enum]) -> Any:
    # By value and JSON type: true is not the member whose value is 1.
    for member in type_:
        if type(member.value) is type(value) and member.value == value:
            return member
    raise ValueError(f"expected one of {[m.value for m in type_]}, got {value!r}")


def _is_array(type_: Any) -> bool:
    return is_sequence(type_) or is_any_set(type_) or getattr(type_, "__origin__", None) is tuple


def _arrays_only(converter: cattrs.Converter) -> Any:
    def factory(type_: Any) -> Any:
        # Without this, a string would become a list (or set) of its characters.
        origin = getattr(type_, "__origin__", None)
        inner: Any
        if is_any_set(type_):
            as_list = list_structure_factory(list[type_.__args__[0]], converter)
            collect = frozenset if origin is frozenset else set
            inner = lambda value, _: collect(as_list(value, None))  # noqa: E731
        elif origin is tuple and not (len(type_.__args__) == 2 and type_.__args__[1] is ...):
            inner = converter.gen_structure_hetero_tuple(type_)
        elif origin is tuple:
            inner = homogenous_tuple_structure_factory(type_, converter)
        else:
            inner = list_structure_factory(type_, converter)

        def structure(value: Any, t: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected an array, got {json_name(value)}")
            return inner(value, t)

        return structure

    return factory


def make() -> cattrs.Converter:
    """A converter for pipeline values; each Machine builds its own."""
    converter = make_converter()
    for kind, accepts in ((str, (str,)), (int, (int,)), (float, (int, float)), (bool, (bool,))):
        converter.register_structure_hook(kind, _strict(kind, accepts))
    converter.register_structure_hook(enum.Enum, _enum_member)
    converter.register_structure_hook_factory(attrs.has, _objects_only(converter))
    converter.register_structure_hook_factory(_is_array, _arrays_only(converter))
    return converter


def type_name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or str(type_)


def structure(converter: cattrs.Converter, value: Any, type_: type[T], what: str) -> T:
    """`value` as a `type_`, or a ConversionError that lists every problem with its path."""
    try:
        return converter.structure(value, type_)
    except Exception as e:
        errors = _messages(e)
        raise ConversionError(what, type_name(type_), errors) from e


def _messages(e: BaseException) -> list[str]:
    if isinstance(e, cattrs.BaseValidationError):
        return cattrs.transform_error(e, format_exception=_describe)
    return [_describe(e, None)]


def _describe(e: BaseException, type_: Any) -> str:
    if isinstance(e, KeyError):
        return "required field missing"
    if isinstance(e, ValueError) and len(e.args) > 1 and isinstance(e.args[0], str):
        return e.args[0]  # an attrs validator: (message, attribute, expected, value)
    if isinstance(e, TypeError | ValueError | cattrs.errors.CattrsError) and str(e):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def to_json(converter: cattrs.Converter, value: Any) -> Any:
    """`value` unstructured into plain JSON values (dicts, lists, str, numbers, bools, None)."""
    return converter.unstructure(value)


def round_trips(converter: cattrs.Converter, value: Any, type_: type[Any]) -> bool:
    """Whether `value` comes back equal after a trip through the journal's JSON."""
    if not attrs.has(type(value)):
        return True
    text = json.dumps(converter.unstructure(value))
    return bool(converter.structure(json.loads(text), type_) == value)
