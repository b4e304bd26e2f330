"""Between a pipeline's attrs values and the JSON the journal holds, strictly and with clear errors.

The converter is cattrs' JSON converter made strict, because the same conversion checks what the
model returns: a string where an int is due is an error, never silently converted. It reads JSON
the way JSON Schema does, so that `machine.model.jsonschema` can describe exactly what it accepts:

- numbers by value: 3.0 is an integer (the int 3) and 3.5 is not; true is never a number nor 1
  a boolean, in plain fields, Literals and Enums alike;
- a union takes the first of its members, in order, that structures the value, as anyOf does;
- a date is an RFC 3339 full-date, a datetime an RFC 3339 date-time, without the offset for a
  naive one (Python's fromisoformat alone also takes "20241129", "2024-W48-5", "2024-11-29 10:00").

`make()` ignores keys a class does not have, so that an input with more columns, or a state
journaled by an older version of its class, still loads; `ignored(raw, value)` names the keys it
left out, so that a typo in a run's input is said rather than lost. `answers(converter)` is the same
converter for a model's answers, where such a key is an error at its path, as the schema says.
"""

from __future__ import annotations

import collections.abc as abc
import datetime
import enum
import json
import math
import re
import types
import typing
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_any_set,
    is_sequence,
    list_structure_factory,
)
from cattrs.errors import AttributeValidationNote
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter

from runjournal.machine.errors import ConversionError, Ignored

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
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))?",  # RFC 3339 offsets: under 24 h
    re.ASCII,
)


def json_name(value: Any) -> str:
    """What `value` is called in JSON: "a string", "an array", ..."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON scalars are equal as JSON Schema's `enum` compares them.

    Numbers by value (1 and 1.0 are equal), but true is not 1, as it is in Python.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _strict(kind: type, accepts: tuple[type, ...]) -> Any:
    def structure(value: Any, type_: type) -> Any:
        if type_ is not kind and isinstance(type_, type) and issubclass(type_, enum.Enum):
            return _enum_member(value, type_)  # an IntEnum or a str enum, dispatched here
        if kind is int and isinstance(value, float):
            # JSON has one number type: JSON Schema's "integer" is any number without a fraction.
            if value.is_integer():
                return int(value)
            raise TypeError(f"expected an integer, got {value!r}")
        # bool is an int subclass, but JSON's true is not a number.
        if not isinstance(value, accepts) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(f"expected {_JSON_NAMES[kind]}, got {json_name(value)}")
        return float(cast(float, value)) if kind is float else value

    return structure


def _objects_only(cl: type, converter: cattrs.Converter) -> Any:
    # A factory given the converter it is called for, not one it closed over: a copy made by
    # `answers` then builds its own hooks, down to the nested classes.
    inner: Any = make_dict_structure_fn(
        cl,
        converter,
        _cattrs_forbid_extra_keys=False,  # checked below, one error per key
        _cattrs_detailed_validation=converter.detailed_validation,
    )
    forbid = getattr(converter, "forbid_extra_keys", False)
    known = _field_names(cl)
    allowed = frozenset(known)

    def structure(value: Any, type_: type) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {json_name(value)}")
        unknown = [key for key in value if key not in allowed] if forbid else []
        if not unknown:
            return inner(value, type_)
        errors = [_unknown_key(cl, key, known) for key in unknown]
        try:
            inner(value, type_)
        except cattrs.ClassValidationError as e:  # reported together with the unknown keys
            errors[:0] = e.exceptions
        except Exception as e:
            errors.insert(0, e)
        raise cattrs.ClassValidationError(f"While structuring {type_name(cl)}", errors, cl)

    return structure


def _field_names(cl: Any) -> list[str]:
    """The keys an object of attrs class `cl` may have: cattrs reads attribute names."""
    cls = typing.get_origin(cl) or cl
    return [a.name for a in attrs.fields(cls) if a.init]


def _unknown_key(cl: Any, key: str, known: list[str]) -> Exception:
    name = type_name(cl)
    has = f"the fields of {name} are {', '.join(known)}" if known else f"{name} has no fields"
    e = cattrs.ForbiddenExtraKeysError(f"unknown key {key!r}: {has}", cl, {key})
    # The note puts the key in the error's path, as for a field: $.shape.zz
    e.__notes__ = [AttributeValidationNote(f"Unknown key {key}", key, Any)]
    return e


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _enum_member(value: Any, type_: type[enum.Enum]) -> Any:
    # By JSON equality: true is not the member whose value is 1, but 2.0 is the one whose is 2.
    for member in type_:
        if same_json(value, member.value):
            return member
    raise ValueError(f"expected one of {[m.value for m in type_]}, got {value!r}")


def _literal(value: Any, type_: Any) -> Any:
    # The Literal's own value comes back (Literal[1.0] gives 1.0 for 1), an Enum member as itself.
    options = typing.get_args(type_)
    for option in options:
        if same_json(value, _plain(option)):
            return option
    raise ValueError(f"expected one of {[_plain(o) for o in options]}, got {value!r}")


def _is_literal(type_: Any) -> bool:
    return typing.get_origin(type_) is typing.Literal


def _is_union(type_: Any) -> bool:
    return typing.get_origin(type_) in (typing.Union, types.UnionType)


def _unwrap(type_: Any) -> Any:
    while True:
        if hasattr(type_, "__supertype__"):  # NewType
            type_ = type_.__supertype__
        elif typing.get_origin(type_) is typing.Annotated:
            type_ = typing.get_args(type_)[0]
        else:
            return type_


def _may_fit(type_: Any, value: Any) -> bool:
    """Whether `value`'s JSON type may structure as `type_`: True when unsure, never wrongly."""
    type_ = _unwrap(type_)
    origin = typing.get_origin(type_) or type_
    if _is_literal(type_):
        return any(same_json(value, _plain(o)) for o in typing.get_args(type_))
    if _is_union(type_):
        return any(_may_fit(member, value) for member in typing.get_args(type_))
    if not isinstance(origin, type):
        return True  # Any, a type variable: let structuring decide
    if issubclass(origin, enum.Enum):
        return any(same_json(value, m.value) for m in origin)
    if origin is bool or origin is type(None):
        return type(value) is origin
    if origin is int:
        return json_name(value) == "an integer" or (isinstance(value, float) and value.is_integer())
    if origin is float:
        return json_name(value) in ("an integer", "a number")
    if origin is str or issubclass(origin, datetime.date):
        return isinstance(value, str)
    if attrs.has(origin) or issubclass(origin, abc.Mapping):
        return isinstance(value, dict)
    if issubclass(origin, abc.Iterable):
        return isinstance(value, list | tuple)
    return True


def _unknown_keys(type_: Any, value: Any) -> int:
    """How many keys of `value` an object of `type_` does not have (0 if not a class)."""
    cls = typing.get_origin(_unwrap(type_)) or _unwrap(type_)
    if not (isinstance(value, dict) and attrs.has(cls)):
        return 0
    return len(set(value) - set(_field_names(cls)))


def _either(members: tuple[Any, ...]) -> str:
    names = []
    for member in members:
        member = _unwrap(member)
        origin = typing.get_origin(member) or member
        if _is_literal(member) or (isinstance(origin, type) and issubclass(origin, enum.Enum)):
            values = typing.get_args(member) if _is_literal(member) else list(origin)
            names.append(f"one of {[_plain(v) for v in values]}")
        elif origin in _JSON_NAMES:
            names.append(_JSON_NAMES[origin])
        elif origin in (datetime.date, datetime.datetime):
            names.append("a date-time" if origin is datetime.datetime else "a date")
        elif isinstance(origin, type) and (attrs.has(origin) or issubclass(origin, abc.Mapping)):
            names.append("an object")
        elif isinstance(origin, type) and issubclass(origin, abc.Iterable):
            names.append("an array")
        else:
            names.append(type_name(member))
    return " or ".join(dict.fromkeys(names))


def _union(type_: Any, converter: cattrs.Converter) -> Any:
    members = typing.get_args(type_)

    def structure(value: Any, _: Any) -> Any:
        fitting = [member for member in members if _may_fit(member, value)]
        if not fitting:
            raise TypeError(f"expected {_either(members)}, got {json_name(value)}")
        # Members that know more of the keys go first, in order otherwise. Where unknown keys
        # are ignored, in A | B a B written as {"x": 1, "b": 2} would else come back as an A,
        # which has no `b`. Where they are errors, only a member that knows every key can
        # take the value, as the schema says, and the member the value was most likely meant
        # for is the one whose problems are reported.
        fitting.sort(key=lambda member: _unknown_keys(member, value))
        failure: Exception | None = None
        for member in fitting:
            try:
                return converter.structure(value, member)
            except Exception as e:  # the first member's problem is the one reported
                failure = failure or e
        raise cast(Exception, failure)

    return structure


def _null(value: Any, _: Any) -> None:
    if value is not None:
        raise TypeError(f"expected null, got {json_name(value)}")


def _date(value: Any, _: Any) -> datetime.date:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            return datetime.date(*map(int, match.groups()))
        except ValueError:  # a day the month does not have, or year 0
            pass
    raise ValueError(f"expected an RFC 3339 date such as 2024-05-06, got {value!r}")


def _datetime(value: Any, _: Any) -> datetime.datetime:
    match = _DATETIME.fullmatch(value) if isinstance(value, str) else None
    if match:
        year, month, day, hour, minute, second, fraction, zulu, sign, hours, minutes = (
            match.groups()
        )
        tz: datetime.tzinfo | None = datetime.UTC if zulu else None
        if sign:  # "-00:00" is UTC too
            offset = datetime.timedelta(hours=int(hours), minutes=int(minutes))
            tz = datetime.timezone(-offset if sign == "-" else offset)
        # Beyond microseconds a fraction cannot be held: the rest is dropped.
        micro = int((fraction or "").ljust(6, "0")[:6])
        date, time = (int(year), int(month), int(day)), (int(hour), int(minute), int(second))
        try:
            return datetime.datetime(*date, *time, micro, tzinfo=tz)
        except ValueError:  # a day the month does not have, hour 24, a leap second, year 0
            pass
    msg = "expected an RFC 3339 date-time such as 2024-05-06T07:08:09Z (the offset left out"
    raise ValueError(f"{msg} for a naive datetime), got {value!r}")


def _datetime_text(value: datetime.datetime) -> str:
    offset = value.utcoffset()
    if offset is not None and offset % datetime.timedelta(minutes=1):
        # RFC 3339 offsets are whole minutes; the same instant in UTC compares equal.
        value = value.astimezone(datetime.UTC)
    return value.isoformat()


def _is_array(type_: Any) -> bool:
    # Tuples first: cattrs' is_sequence raises on `tuple[()]`, which then escaped this hook.
    if getattr(type_, "__origin__", None) is tuple:
        return True
    return is_sequence(type_) or is_any_set(type_)


def _arrays_only(type_: Any, converter: cattrs.Converter) -> Any:
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


def make() -> cattrs.Converter:
    """A converter for pipeline values, keys a class lacks ignored; each Machine builds its own.

    The hooks of classes, unions and arrays are factories given the converter they structure
    for, so that a copy (`answers`) follows its own settings at every depth.
    """
    converter = make_converter()
    for kind, accepts in ((str, (str,)), (int, (int,)), (float, (int, float)), (bool, (bool,))):
        converter.register_structure_hook(kind, _strict(kind, accepts))
    converter.register_structure_hook(enum.Enum, _enum_member)
    converter.register_structure_hook(type(None), _null)  # for a field annotated `None`
    converter.register_structure_hook(datetime.date, _date)
    converter.register_structure_hook(datetime.datetime, _datetime)
    converter.register_unstructure_hook(datetime.datetime, _datetime_text)
    converter.register_structure_hook_func(_is_literal, _literal)
    converter.register_structure_hook_factory(_is_union, _union)
    converter.register_structure_hook_factory(attrs.has, _objects_only)
    converter.register_structure_hook_factory(_is_array, _arrays_only)
    return converter


def answers(converter: cattrs.Converter) -> cattrs.Converter:
    """`converter` for a model's answers: the same hooks, and a key the class lacks an error.

    The schema a model answers by (`machine.model.jsonschema`) forbids such keys, at every
    depth; each is reported on its own, at its path ("unknown key 'zz': ... @ $.shape.zz").
    A copy: hooks registered on `converter` afterwards are not in it.
    """
    return converter.copy(forbid_extra_keys=True)


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
    unstructured = converter.unstructure(value)
    if not is_plain(
        unstructured, finite=True
    ):  # what JSON would change (a tuple, a key that is no str)
        unstructured = json.loads(json.dumps(unstructured))
    # Plain JSON values come back from JSON as they are: a big state is not written out and
    # read back to learn that.
    return bool(converter.structure(unstructured, type_) == value)


_PLAIN_ATOMS = frozenset({str, int, float, bool, type(None)})


def is_plain(value: Any, *, finite: bool = False) -> bool:
    """Whether `value` is made of dicts with str keys, lists, str, int, float, bool and None
    alone (each but the dicts of exactly that type): what a trip through the journal's JSON
    gives back as it is. With `finite`, a float must be finite too (JSON has no NaN)."""
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is list:
            todo += item
        elif isinstance(item, dict):
            if not all(type(key) is str for key in item):
                return False
            todo += item.values()
        elif kind not in _PLAIN_ATOMS or (finite and kind is float and not math.isfinite(item)):
            return False
    return True


def ignored(raw: Any, value: Any) -> tuple[Ignored, ...]:
    """The keys of the JSON `raw` that structuring it into `value` left out, as `make()` does.

    Walks `raw` beside the value made of it, so each object's class is the one structuring
    chose (in a union too). A set has lost the order that pairs its items: not looked into.
    """
    found: dict[str, Ignored] = {}
    _ignored(raw, value, "$", "$", found)
    return tuple(found.values())


def _ignored(raw: Any, value: Any, path: str, pattern: str, found: dict[str, Ignored]) -> None:
    if attrs.has(type(value)):
        if not isinstance(raw, dict):
            return
        names = _field_names(type(value))
        for key, item in raw.items():
            if key in names:
                _ignored(item, getattr(value, key), f"{path}.{key}", f"{pattern}.{key}", found)
                continue
            at = f"{pattern}.{key}"
            seen = found.get(at)
            if seen is None:
                owner = type_name(type(value))
                found[at] = Ignored(at, f"{path}.{key}", 1, key, owner, tuple(names))
            else:
                found[at] = attrs.evolve(seen, count=seen.count + 1)
    elif isinstance(value, list | tuple) and isinstance(raw, list) and len(raw) == len(value):
        for i, (item, made) in enumerate(zip(raw, value, strict=True)):
            _ignored(item, made, f"{path}[{i}]", f"{pattern}[*]", found)
    elif isinstance(value, dict) and isinstance(raw, dict) and len(raw) == len(value):
        # Keys may have been converted (to int, to an Enum): paired by order, which is kept.
        for (key, item), made in zip(raw.items(), value.values(), strict=True):
            _ignored(
                item, made, f"{path}[{json.dumps(key, ensure_ascii=False)}]", f"{pattern}[*]", found
            )
