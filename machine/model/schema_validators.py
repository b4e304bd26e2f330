"""What the attrs validators of a field add to its JSON Schema: bounds, lengths, patterns,
enums of what passes, and constraints on the items of arrays and mappings (see
`machine.model.jsonschema` for which validators are read, and what is left to the converter).
"""

from __future__ import annotations

import datetime
import enum
import functools
import math
import numbers
import typing
from typing import Any, Protocol

import attrs
import cattrs
from attrs import validators

from runjournal.machine import convert
from runjournal.machine.errors import SchemaError
from runjournal.machine.model.schema_patterns import json_pattern
from runjournal.machine.model.schema_types import Schema, kind_of, unwrap

_NUMBER_KEYWORDS = {
    ">=": "minimum",
    ">": "exclusiveMinimum",
    "<=": "maximum",
    "<": "exclusiveMaximum",
}
_LENGTH_KEYWORDS = {  # attrs length validator -> keyword, by the kind of value it constrains
    "min_length": {
        "str": "minLength", "array": "minItems", "set": "minItems", "mapping": "minProperties"
    },
    "max_length": {
        "str": "maxLength", "array": "maxItems", "set": "maxItems", "mapping": "maxProperties"
    },
}  # fmt: skip
# `in_(range(...))` with a step is listed value by value up to this many values.
_MAX_RANGE_ENUM = 64

# attrs' validator classes are private; its public factories say which they are.
_AND: type[Any] = type(validators.and_())
_OPTIONAL: type[Any] = type(validators.optional(validators.and_()))
_IN: type[Any] = type(validators.in_(()))
_BOUND: type[Any] = type(validators.ge(0))
_MIN_LEN: type[Any] = type(validators.min_len(0))
_MAX_LEN: type[Any] = type(validators.max_len(0))
_MATCHES: type[Any] = type(validators.matches_re(""))
_DEEP_ITERABLE: type[Any] = type(validators.deep_iterable(validators.and_()))
_DEEP_MAPPING: type[Any] = type(validators.deep_mapping(validators.and_()))
_LEAVES = (_IN, _BOUND, _MIN_LEN, _MAX_LEN, _MATCHES)


class Typed(Protocol):
    """The walk of a class, as the constraints read it: the type each schema describes."""

    types: dict[int, tuple[Schema, Any]]

    def type_of(self, schema: Schema) -> Any: ...


@functools.cache
def _converter() -> cattrs.Converter:
    return convert.make()


def known(v: Any) -> bool:
    """Whether `v` is made only of the attrs validators this module reads."""
    if isinstance(v, _AND):
        return all(known(each) for each in v._validators)
    if isinstance(v, _OPTIONAL):
        return known(v.validator)
    parts: tuple[Any, ...]
    if isinstance(v, _DEEP_ITERABLE):
        parts = (v.member_validator, v.iterable_validator)
    elif isinstance(v, _DEEP_MAPPING):
        parts = (v.key_validator, v.value_validator, v.mapping_validator)
    else:
        return isinstance(v, _LEAVES)
    return all(part is None or known(part) for part in parts)


def _bound(schema: Schema, key: str, value: Any) -> None:
    """Set a numeric keyword, keeping the tighter of two bounds when validators repeat."""
    if key in schema:
        lower = key.startswith(("min", "exclusiveMin"))
        value = max(schema[key], value) if lower else min(schema[key], value)
    schema[key] = value


def _narrow(schema: Schema, values: list[Any]) -> None:
    """Set `enum`, keeping only values an enum already there (from another validator) allows."""
    if "enum" in schema:
        values = [v for v in values if any(convert.same_json(v, e) for e in schema["enum"])]
    schema["enum"] = values


def _kill(schema: Schema) -> None:
    # The validator raises for every value of this type, e.g. ge(0) on a string.
    schema["enum"] = []


@attrs.define
class Constrain:
    """Adds what the validators of one field check to the field's schema."""

    walk: Typed
    attribute: Any  # the attrs.Attribute, which validators name in their errors
    path: str

    def constrain(self, schema: Schema, v: Any, none_ok: bool = False) -> None:
        if isinstance(v, _AND):
            for each in v._validators:
                self.constrain(schema, each, none_ok)
            return
        if isinstance(v, _OPTIONAL):
            self.constrain(schema, v.validator, none_ok=True)
            return
        for leaf in self.leaves(schema):
            tp = self.walk.type_of(leaf)
            if kind_of(tp) == "enum":
                if known(v):
                    self.enumerate(leaf, tp, v, none_ok)
            elif isinstance(v, _BOUND):
                self.compare(leaf, v)
            elif isinstance(v, _MIN_LEN | _MAX_LEN):
                self.length(leaf, v)
            elif isinstance(v, _MATCHES):
                self.pattern(leaf, v)
            elif isinstance(v, _IN):
                self.member_of(leaf, tp, v)
            elif isinstance(v, _DEEP_ITERABLE):
                self.deep_iterable(leaf, v)
            elif isinstance(v, _DEEP_MAPPING):
                self.deep_mapping(leaf, tp, v)

    def leaves(self, schema: Schema) -> list[Schema]:
        """`schema` itself, or the members of the union it describes, all the way down."""
        if kind_of(self.walk.type_of(schema)) == "union":
            return [leaf for member in schema["anyOf"] for leaf in self.leaves(member)]
        return [schema]

    def passes(self, v: Any, value: Any, tp: Any) -> bool:
        """Whether JSON `value`, structured as `tp`, passes validator `v`, as in the converter."""
        try:
            v(None, self.attribute, _converter().structure(value, tp))
        except Exception:
            return False
        return True

    def enumerate(self, leaf: Schema, tp: Any, v: Any, none_ok: bool) -> None:
        # Few values: run the validator on each, which says exactly what it accepts.
        values = leaf.get("enum", [False, True] if unwrap(tp) is bool else [None])
        kept = [x for x in values if (none_ok and x is None) or self.passes(v, x, tp)]
        if kept != values or "enum" in leaf:
            leaf["enum"] = kept

    def compare(self, leaf: Schema, v: Any) -> None:
        kind, bound = kind_of(self.walk.type_of(leaf)), v.bound
        if not isinstance(bound, int | float):
            return  # a str, date or Decimal bound: left to the converter
        if kind in ("int", "float"):
            if math.isfinite(bound):
                number = int(bound) if isinstance(bound, bool) else bound  # True compares as 1
                _bound(leaf, _NUMBER_KEYWORDS[v.compare_op], number)
            elif not v.compare_func(0, bound):  # ge(inf), lt(-inf) or a nan: nothing passes
                _kill(leaf)
        elif kind in ("str", "date", "datetime", "array", "set", "mapping"):
            _kill(leaf)

    def length(self, leaf: Schema, v: Any) -> None:
        kind = kind_of(self.walk.type_of(leaf))
        attribute = "min_length" if isinstance(v, _MIN_LEN) else "max_length"
        if kind in _LENGTH_KEYWORDS[attribute]:
            _bound(leaf, _LENGTH_KEYWORDS[attribute][kind], getattr(v, attribute))
        elif kind in ("int", "float", "date", "datetime"):
            _kill(leaf)

    def pattern(self, leaf: Schema, v: Any) -> None:
        kind = kind_of(self.walk.type_of(leaf))
        if kind == "str":
            pattern = json_pattern(v.pattern, getattr(v.match_func, "__name__", ""), self.path)
            if "pattern" in leaf:  # one pattern per schema: the rest go in allOf
                leaf.setdefault("allOf", []).append({"pattern": pattern})
            else:
                leaf["pattern"] = pattern
        elif kind not in ("any", "class"):
            _kill(leaf)

    def member_of(self, leaf: Schema, tp: Any, v: Any) -> None:
        kind, options = kind_of(tp), v.options
        if isinstance(options, range) and kind in ("int", "float"):
            self.range(leaf, kind, options)
            return
        enum_class = isinstance(options, type) and issubclass(options, enum.Enum)
        if kind not in ("int", "float", "str", "date") or not (
            enum_class or isinstance(options, tuple | frozenset | range)
        ):
            return  # a substring test, a custom container, arrays, objects: left to the converter
        values: list[Any] = []
        for option in typing.cast(typing.Iterable[Any], options):
            value = _as_json(option.value if isinstance(option, enum.Enum) else option, kind)
            seen = any(convert.same_json(value, x) for x in values)
            if value is not None and not seen and self.passes(v, value, tp):
                values.append(value)
        if isinstance(v._original_options, set | frozenset):  # set order varies between runs
            values.sort()
        _narrow(leaf, values)

    def range(self, leaf: Schema, kind: str, options: range) -> None:
        if not options:
            _kill(leaf)
            return
        if kind == "float":
            leaf["type"] = "integer"  # 2.0 in range(5) but not 2.5; JSON Schema's integer is 2.0
        step, low, high = abs(options.step), min(options), max(options)
        if step == 1:
            _bound(leaf, "minimum", low)
            _bound(leaf, "maximum", high)
        elif len(options) <= _MAX_RANGE_ENUM:
            _narrow(leaf, sorted(options))
        elif low % step == 0:
            _bound(leaf, "minimum", low)
            _bound(leaf, "maximum", high)
            leaf["multipleOf"] = math.lcm(leaf.get("multipleOf", 1), step)
        else:
            msg = f"{self.path}: in_({options!r}) cannot be said in JSON Schema: its"
            msg += f" {len(options)} values are too many to list unasked, and not multiples of"
            msg += f" {step} as multipleOf would say; use a range that starts at a multiple of"
            msg += f" {step}, or list them: in_(list({options!r}))"
            raise SchemaError(msg)

    def deep_iterable(self, leaf: Schema, v: Any) -> None:
        kind = kind_of(self.walk.type_of(leaf))
        if kind in ("array", "set"):
            if v.iterable_validator is not None:
                self.constrain(leaf, v.iterable_validator)
            for items in [leaf.get("items"), *leaf.get("prefixItems", [])]:
                if isinstance(items, dict):
                    self.constrain(items, v.member_validator)
        elif kind in ("int", "float", "date", "datetime"):
            _kill(leaf)  # not iterable; a str (its characters) or a dict (its keys) is left

    def deep_mapping(self, leaf: Schema, tp: Any, v: Any) -> None:
        if kind_of(tp) != "mapping" or "additionalProperties" not in leaf:
            return
        if v.mapping_validator is not None:
            self.constrain(leaf, v.mapping_validator)
        if v.value_validator is not None:
            self.constrain(leaf["additionalProperties"], v.value_validator)
        if v.key_validator is not None:
            if "propertyNames" not in leaf:
                names: Schema = {"type": "string"}
                self.walk.types[id(names)] = (names, typing.get_args(unwrap(tp))[0])
                leaf["propertyNames"] = names
            self.constrain(leaf["propertyNames"], v.key_validator)


def _as_json(value: Any, kind: str) -> Any:
    """The JSON value that may structure into an `in_` option `value` of a `kind` field."""
    if kind in ("int", "float") and isinstance(value, numbers.Number):
        number: Any = value  # True, 2, 2.0, Fraction(4, 2), Decimal("2"): all `in` as 2
        try:
            if int(number) == number:
                return int(number)
            return float(number) if kind == "float" else None
        except (TypeError, ValueError, OverflowError):
            return None
    if kind == "str" and isinstance(value, str):
        return str.__str__(value)
    if kind == "date" and type(value) is datetime.date:
        return value.isoformat()
    return None
