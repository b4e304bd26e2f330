"""The JSON Schema of an attrs class: the shape a model's answer must have, and what it may send.

The schema accepts exactly what `machine.convert.answers()` (the converter of a model's answers)
structures into the class, validators included, so that an answer the schema allows is never
refused (and a model asked again), and an answer it refuses never slips through. Keys are
attribute names (cattrs ignores aliases by default), fields with `init=False` are left out, keys
the class does not have are refused at every depth, and dates are RFC 3339 strings. One
difference is deliberate, and only makes the schema the stricter: it forbids repeated items in
a set, which the converter merges. (`machine.convert.make()`, which reads a pipeline's input and
its journaled state, ignores keys the class does not have instead.)

Validators from `attrs.validators` become constraints wherever JSON Schema can say exactly what
they check: in_ over a list, tuple, set, dict, range or Enum (of numbers, strings or dates),
lt/le/ge/gt with a number, min_len/max_len, matches_re, deep_iterable and deep_mapping over
arrays and objects, and optional and and_ of these; on a Literal, Enum or bool field they are
run on each value. A matches_re or in_(range) that JSON Schema could only approximate, or a set
whose items cannot be set members, is refused with a SchemaError that says what to write
instead. Anything else is left to the converter,
which still runs it, and there the schema is looser: a function of the pipeline's own, not_,
or_, instance_of, in_ of a str (a substring test), a bound that is a str or a date.

Nested classes are written inline. A class that refers to itself, directly or through others,
is written once under `$defs` and referred to with `$ref` (the root class itself as `"#"`), which
Anthropic accepts for tools without `strict`; `machine.model.constrained` cuts a schema down to
what JSON outputs and strict tools accept.
"""

from __future__ import annotations

import ast
import collections.abc as abc
import copy
import datetime
import enum
import functools
import importlib
import inspect
import math
import numbers
import re
import textwrap
import threading
import types
import typing
import unicodedata
from typing import Any, TypeAlias

import attrs
import cattrs
from attrs import validators

from runjournal.machine import convert
from runjournal.machine.errors import SchemaError

Schema: TypeAlias = dict[str, Any]

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_ARRAYS = (list, tuple, abc.Sequence, abc.MutableSequence)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
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

# RFC 3339, with the calendar spelled out so that the schema needs no format checker to refuse
# 2023-02-29, and without year 0000, which Python's dates cannot hold. Leap seconds (":60")
# are left out for the same reason.
_FULL_DATE = (
    "(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_PARTIAL_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# The end of the string, spelled the same in Python and ECMA-262: `$` would also match before
# a final newline in Python's `re`, which the `jsonschema` library uses for `pattern`.
_END = "(?![\\s\\S])"
_DATE_SCHEMA: Schema = {"type": "string", "format": "date", "pattern": f"^{_FULL_DATE}{_END}"}
# A naive datetime is written without an offset, which RFC 3339's date-time requires: it is
# described beside it, so that every datetime the converter writes fits the schema.
_DATETIME_SCHEMA: Schema = {
    "type": "string",
    "anyOf": [
        {"format": "date-time", "pattern": f"^{_FULL_DATE}[Tt]{_PARTIAL_TIME}{_OFFSET}{_END}"},
        {"pattern": f"^{_FULL_DATE}[Tt]{_PARTIAL_TIME}{_END}"},
    ],
}


def input_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of the JSON objects that structure into attrs class `cls`."""
    if not attrs.has(cls):
        msg = f"{cls!r} is not an attrs class; input_schema() describes attrs classes only"
        raise SchemaError(msg)
    walk = _Walk(root=cls)
    schema = walk.schema(cls, _name(cls), {})
    if walk.defs:
        schema["$defs"] = walk.defs
    return schema


def tool_for(cls: type, *, name: str | None = None) -> dict[str, Any]:
    """{"name": ..., "description": ..., "input_schema": input_schema(cls)} for the Messages API.

    `name` defaults to the class name, cleaned to fit the API's `^[a-zA-Z0-9_-]{1,64}$`; a name
    given explicitly must fit already, since answers are matched to the tool by it.
    """
    schema = input_schema(cls)
    if name is None:
        name = _tool_name(_name(cls))
    elif not _TOOL_NAME.fullmatch(name):
        msg = f"tool name {name!r} must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'"
        raise ValueError(msg)
    description = _docs(cls)[0] or f"Answer by filling in the fields of {_name(cls)}."
    return {"name": name, "description": description, "input_schema": schema}


def _tool_name(name: str) -> str:
    # NFKD splits "é" into "e" plus a combining accent, which is then dropped.
    decomposed = unicodedata.normalize("NFKD", name)
    kept = [
        c if _TOOL_NAME.fullmatch(c) else "_" for c in decomposed if not unicodedata.combining(c)
    ]
    return "".join(kept)[:64] or "answer"


def _name(tp: Any) -> str:
    return str(getattr(typing.get_origin(tp) or tp, "__name__", tp))


def _unwrap(tp: Any) -> Any:
    """The type cattrs structures for `tp`: NewType and Annotated stripped."""
    while True:
        if hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        elif typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp


def _kind(tp: Any) -> str:
    """What sort of Python value `tp` structures into, as far as validators can tell.

    "enum" is a type with few JSON values (Literal, Enum, bool, None): validators are run on
    each of them. "any" is a type whose values cannot be told in advance.
    """
    tp = _unwrap(tp)
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
    if origin in _SETS:
        return "set"
    if origin in _ARRAYS:
        return "array"
    if origin in _MAPPINGS:
        return "mapping"
    return "any"


def _hashable(tp: Any) -> bool:
    """Whether the values `tp` structures into can be members of a set."""
    tp = _unwrap(tp)
    kind, origin, args = _kind(tp), typing.get_origin(tp) or tp, typing.get_args(tp)
    if kind in ("enum", "int", "float", "str", "date", "datetime"):
        return True
    if kind == "union":
        return all(_hashable(arg) for arg in args)
    if kind == "class":
        return getattr(origin, "__hash__", None) is not None
    if origin is tuple:
        return bool(args) and all(arg is Ellipsis or _hashable(arg) for arg in args)
    if origin is frozenset:
        return bool(args) and _hashable(args[0])
    return False


@attrs.define
class _Walk:
    """The state of one `input_schema` call: which classes are open, and which recur."""

    root: Any
    open: list[Any] = attrs.Factory(list)
    refs: dict[Any, str] = attrs.Factory(dict)  # recursive class -> its "$ref"
    defs: Schema = attrs.Factory(dict)
    docs: dict[type, tuple[str | None, dict[str, str]]] = attrs.Factory(dict)  # parsed once
    # id(schema) -> (schema, the type it describes), for validators, which depend on the type.
    # Holding the schema keeps its id from being reused.
    types: dict[int, tuple[Schema, Any]] = attrs.Factory(dict)

    def schema(self, tp: Any, path: str, env: dict[Any, Any]) -> Schema:
        tp = _substitute(tp, env, path)
        schema = self.describe(tp, path, env)
        self.types.setdefault(id(schema), (schema, tp))  # the innermost type: int for a NewType
        return schema

    def type_of(self, schema: Schema) -> Any:
        return self.types.get(id(schema), (None, Any))[1]

    def describe(self, tp: Any, path: str, env: dict[Any, Any]) -> Schema:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return {}
        if tp in _SCALARS:  # get_type_hints has already made None NoneType
            return {"type": _SCALARS[tp]}
        if tp is datetime.datetime:  # by identity: datetime is a subclass of date
            return copy.deepcopy(_DATETIME_SCHEMA)
        if tp is datetime.date:
            return dict(_DATE_SCHEMA)
        if hasattr(tp, "__supertype__"):  # NewType: cattrs structures the underlying type
            return self.schema(tp.__supertype__, path, env)
        if origin is typing.Annotated:
            return self.schema(args[0], path, env)
        if origin is typing.Literal:
            return _enum(args, path, tp)
        if origin is typing.Union or origin is types.UnionType:
            return {"anyOf": [self.schema(arg, path, env) for arg in args]}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum([member.value for member in tp], path, tp)
        if attrs.has(tp):
            return self.recursive_or_inline(tp, path)
        container = origin or tp
        if container is tuple and origin and not (len(args) == 2 and args[1] is Ellipsis):
            fixed = [self.schema(arg, f"{path}[{i}]", env) for i, arg in enumerate(args)]
            n = len(fixed)
            if not fixed:  # tuple[()]: an empty prefixItems is not valid JSON Schema
                return {"type": "array", "maxItems": 0}
            return {"type": "array", "prefixItems": fixed, "minItems": n, "maxItems": n}
        if container in _SETS and not _hashable(args[0] if args else Any):
            item = args[0] if args else Any
            msg = f"{path}: cannot describe {tp!r} as JSON Schema: {item!r} values cannot be"
            msg += " members of a set; use list[...], or a frozen attrs class as the item"
            raise SchemaError(msg)
        if container in _ARRAYS or container in _SETS:
            items = self.schema(args[0], f"{path}[]", env) if args else {}
            unique = {"uniqueItems": True} if container in _SETS else {}
            return {"type": "array", "items": items, **unique}
        if container in _MAPPINGS:
            return self.mapping(tp, args, path, env)
        raise SchemaError(f"{path}: cannot describe {tp!r} as JSON Schema{_hint(tp)}")

    def mapping(self, tp: Any, args: tuple[Any, ...], path: str, env: dict[Any, Any]) -> Schema:
        if not args:
            return {"type": "object"}
        keys = self.schema(args[0], f"{path}{{}}", env)
        if keys.get("type") != "string":
            msg = f"{path}: cannot describe {tp!r} as JSON Schema: JSON object keys are strings"
            raise SchemaError(msg)
        names = {} if keys == {"type": "string"} else {"propertyNames": keys}
        values = self.schema(args[1], f"{path}{{}}", env)
        return {"type": "object", **names, "additionalProperties": values}

    def recursive_or_inline(self, tp: Any, path: str) -> Schema:
        if tp in self.refs:
            return {"$ref": self.refs[tp]}
        if tp in self.open:  # a cycle: from now on this class is a $ref
            self.refs[tp] = "#" if tp == self.root else f"#/$defs/{self.def_name(tp)}"
            return {"$ref": self.refs[tp]}
        self.open.append(tp)
        schema = self.object(tp, path)
        self.open.pop()
        if tp in self.refs and tp != self.root:
            self.defs[self.refs[tp].removeprefix("#/$defs/")] = schema
            return {"$ref": self.refs[tp]}
        return schema

    def def_name(self, tp: Any) -> str:
        base = _tool_name(_name(tp))
        taken = {ref.removeprefix("#/$defs/") for ref in self.refs.values()}
        n = 1
        while (name := base if n == 1 else f"{base}_{n}") in taken:
            n += 1
        return name

    def object(self, tp: Any, path: str) -> Schema:
        cls = typing.get_origin(tp) or tp
        env = dict(zip(getattr(cls, "__parameters__", ()), typing.get_args(tp), strict=False))
        try:
            hints = typing.get_type_hints(cls)
        except Exception as e:  # any error evaluating a string annotation
            msg = f"{path}: cannot resolve the annotations of {cls.__qualname__}: {e}"
            raise SchemaError(msg) from e
        if cls not in self.docs:
            self.docs[cls] = _docs(cls)
        doc, field_docs = self.docs[cls]
        schema: Schema = {"type": "object"}
        if doc:
            schema["description"] = doc
        properties: Schema = {}
        required: list[str] = []
        for a in attrs.fields(cls):
            if not a.init:  # cattrs neither reads nor needs these
                continue
            tp = hints.get(a.name, a.type)  # a.type: attributes made without annotations
            field_path = f"{path}.{a.name}"
            field = self.schema(Any if tp is None else tp, field_path, env)
            if a.validator is not None:
                structural = copy.deepcopy(field)
                _Constrain(self, a, field_path).constrain(field, a.validator)
                self.exclude(structural, field)
                _prune(field)
            description = a.metadata.get("description", field_docs.get(a.name))
            if isinstance(description, str):
                field["description"] = description
            properties[a.name] = field
            if a.default is attrs.NOTHING or not _default_passes(a):
                required.append(a.name)
        schema |= {"properties": properties, "required": required, "additionalProperties": False}
        return schema

    def exclude(self, structural: Schema, constrained: Schema) -> None:
        """Make each member of a constrained union refuse what earlier members structure.

        The converter gives a union's value to the first member that structures it, and only
        then runs the field's validators; a later member that would pass them does not get the
        chance. Without validators, members are tried the same way by anyOf.
        """
        tp = self.type_of(constrained)
        kind = _kind(tp)
        if kind == "union":
            before, after = structural["anyOf"], constrained["anyOf"]
            if before != after:
                for i, member in enumerate(after):
                    mine = self.type_of(member)
                    earlier = [
                        before[j] for j in range(i) if _overlap(self.type_of(after[j]), mine)
                    ]
                    if earlier:
                        member["not"] = earlier[0] if len(earlier) == 1 else {"anyOf": earlier}
            for old, new in zip(before, after, strict=True):
                self.exclude(old, new)
        elif kind in ("array", "set", "mapping"):
            for key in ("items", "additionalProperties", "propertyNames"):
                if isinstance(constrained.get(key), dict) and key in structural:
                    self.exclude(structural[key], constrained[key])
            for old, new in zip(
                structural.get("prefixItems", []), constrained.get("prefixItems", []), strict=True
            ):
                self.exclude(old, new)


def _default_passes(a: Any) -> bool:
    """Whether attribute `a` may be left out: attrs runs its validators on the default too."""
    if a.validator is None or not _known(a.validator):
        return True
    default = a.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return True
        default = default.factory()
    try:
        a.validator(None, a, default)
    except Exception:
        return False
    return True


def _json_types(tp: Any) -> set[str]:
    """The JSON types that may structure into `tp` ("number" for integers too)."""
    tp = _unwrap(tp)
    kind = _kind(tp)
    if kind == "union":
        return set().union(*(_json_types(arg) for arg in typing.get_args(tp)))
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
        kinds = {_json_type(v.value if isinstance(v, enum.Enum) else v) for v in values}
        return {"number" if k == "integer" else str(k) for k in kinds}
    by_kind = {
        "int": "number", "float": "number", "str": "string", "date": "string",
        "datetime": "string", "array": "array", "set": "array", "mapping": "object",
        "class": "object",
    }  # fmt: skip
    if kind in by_kind:
        return {by_kind[kind]}
    return {"number", "string", "boolean", "null", "array", "object"}


def _overlap(earlier: Any, later: Any) -> bool:
    """Whether a JSON value may structure into both types, the two values differing to a
    validator. An int and a float from the same number are equal, and compare the same."""
    if _kind(earlier) in ("int", "float") and _kind(later) in ("int", "float"):
        return False
    return bool(_json_types(earlier) & _json_types(later))


def _prune(schema: Schema) -> None:
    """Drop the members of a union that validators left with no value (an empty enum)."""
    if "anyOf" in schema:
        for member in schema["anyOf"]:
            _prune(member)
        alive = [member for member in schema["anyOf"] if member.get("enum") != []]
        if not alive and set(schema) == {"anyOf"}:
            schema.clear()
            schema["enum"] = []
        elif len(alive) == 1 and set(schema) == {"anyOf"}:
            only = alive[0]
            schema.clear()
            schema.update(only)
        elif alive:
            schema["anyOf"] = alive
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(key), dict):
            _prune(schema[key])
    for item in schema.get("prefixItems", []):
        _prune(item)


def _substitute(tp: Any, env: dict[Any, Any], path: str) -> Any:
    """`tp` with the type variables of a generic class replaced by the class's arguments."""
    if isinstance(tp, typing.TypeVar):
        if tp not in env:
            msg = f"{path}: cannot describe type variable {tp!r}; parametrize the class: Box[int]"
            raise SchemaError(msg)
        return env[tp]
    params = getattr(tp, "__parameters__", ()) if typing.get_origin(tp) else ()
    return tp[tuple(_substitute(p, env, path) for p in params)] if params else tp


def _hint(tp: Any) -> str:
    if tp in (bytes, bytearray):
        return "; JSON has no bytes, use str (for example base64 text)"
    if isinstance(tp, type) and issubclass(tp, datetime.time | datetime.timedelta):
        return "; use str, or datetime.datetime / datetime.date"
    return ""


def _json_type(value: Any) -> str | None:
    return _SCALARS.get(type(value))


def _enum(values: typing.Iterable[Any], path: str, tp: Any) -> Schema:
    plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
    kinds = {_json_type(v) for v in plain}
    if None in kinds:
        bad = next(v for v in plain if _json_type(v) is None)
        msg = f"{path}: cannot describe {tp!r} as JSON Schema: {bad!r} is not a JSON scalar"
        raise SchemaError(msg)
    return {"type": kinds.pop(), "enum": plain} if len(kinds) == 1 else {"enum": plain}


@functools.cache
def _converter() -> cattrs.Converter:
    return convert.make()


def _known(v: Any) -> bool:
    """Whether `v` is made only of the attrs validators this module reads."""
    if isinstance(v, _AND):
        return all(_known(each) for each in v._validators)
    if isinstance(v, _OPTIONAL):
        return _known(v.validator)
    parts: tuple[Any, ...]
    if isinstance(v, _DEEP_ITERABLE):
        parts = (v.member_validator, v.iterable_validator)
    elif isinstance(v, _DEEP_MAPPING):
        parts = (v.key_validator, v.value_validator, v.mapping_validator)
    else:
        return isinstance(v, _LEAVES)
    return all(part is None or _known(part) for part in parts)


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
class _Constrain:
    """Adds what the validators of one field check to the field's schema."""

    walk: _Walk
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
            if _kind(tp) == "enum":
                if _known(v):
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
        if _kind(self.walk.type_of(schema)) == "union":
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
        values = leaf.get("enum", [False, True] if _unwrap(tp) is bool else [None])
        kept = [x for x in values if (none_ok and x is None) or self.passes(v, x, tp)]
        if kept != values or "enum" in leaf:
            leaf["enum"] = kept

    def compare(self, leaf: Schema, v: Any) -> None:
        kind, bound = _kind(self.walk.type_of(leaf)), v.bound
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
        kind = _kind(self.walk.type_of(leaf))
        attribute = "min_length" if isinstance(v, _MIN_LEN) else "max_length"
        if kind in _LENGTH_KEYWORDS[attribute]:
            _bound(leaf, _LENGTH_KEYWORDS[attribute][kind], getattr(v, attribute))
        elif kind in ("int", "float", "date", "datetime"):
            _kill(leaf)

    def pattern(self, leaf: Schema, v: Any) -> None:
        kind = _kind(self.walk.type_of(leaf))
        if kind == "str":
            pattern = _pattern(v.pattern, getattr(v.match_func, "__name__", ""), self.path)
            if "pattern" in leaf:  # one pattern per schema: the rest go in allOf
                leaf.setdefault("allOf", []).append({"pattern": pattern})
            else:
                leaf["pattern"] = pattern
        elif kind not in ("any", "class"):
            _kill(leaf)

    def member_of(self, leaf: Schema, tp: Any, v: Any) -> None:
        kind, options = _kind(tp), v.options
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
        kind = _kind(self.walk.type_of(leaf))
        if kind in ("array", "set"):
            if v.iterable_validator is not None:
                self.constrain(leaf, v.iterable_validator)
            for items in [leaf.get("items"), *leaf.get("prefixItems", [])]:
                if isinstance(items, dict):
                    self.constrain(items, v.member_validator)
        elif kind in ("int", "float", "date", "datetime"):
            _kill(leaf)  # not iterable; a str (its characters) or a dict (its keys) is left

    def deep_mapping(self, leaf: Schema, tp: Any, v: Any) -> None:
        if _kind(tp) != "mapping" or "additionalProperties" not in leaf:
            return
        if v.mapping_validator is not None:
            self.constrain(leaf, v.mapping_validator)
        if v.value_validator is not None:
            self.constrain(leaf["additionalProperties"], v.value_validator)
        if v.key_validator is not None:
            if "propertyNames" not in leaf:
                names: Schema = {"type": "string"}
                self.walk.types[id(names)] = (names, typing.get_args(_unwrap(tp))[0])
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


# Patterns. The `jsonschema` library reads `pattern` with Python's `re.search`; JSON Schema
# says ECMA-262 with the "u" flag (code points, not UTF-16 units). A validator's regex is
# rewritten from Python's own parse of it into a spelling that both read the same way, and
# refused where there is none. Python's parser is private but the only exact reader of its
# syntax.
_parser: Any = importlib.import_module("re._parser")
_MAXREPEAT: int = importlib.import_module("re._constants").MAXREPEAT
_MAX_CHAR = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
Ranges: TypeAlias = list[tuple[int, int]]
# What Python's `\s` matches: str.isspace(). ECMA-262's differs (it has U+FEFF, not U+001C-1F).
_SPACE: Ranges = [
    (0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
    (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
]  # fmt: skip
_ASCII_SPACE: Ranges = [(0x09, 0x0D), (0x20, 0x20)]
_ASCII_DIGIT: Ranges = [(0x30, 0x39)]
_ASCII_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SYNTAX = frozenset("^$\\.*+?()[]{}|")  # escaped outside a class (the "u" flag requires it)
_CLASS_SYNTAX = frozenset("\\]^-[")


def _pattern(compiled: re.Pattern[str], how: str, path: str) -> str:
    """The JSON Schema pattern (unanchored, as re.search) for `matches_re(compiled, func=how)`."""
    return _Regex(compiled, path).translate(how)


@attrs.define
class _Regex:
    compiled: re.Pattern[str]
    path: str

    def refusal(self, why: str) -> SchemaError:
        msg = f"{self.path}: matches_re({self.compiled.pattern!r}) cannot be said in JSON Schema"
        return SchemaError(f"{msg}: {why}")

    def translate(self, how: str) -> str:
        if not isinstance(self.compiled.pattern, str):
            raise self.refusal("the pattern is bytes, and JSON strings are text")
        parsed = _parser.parse(self.compiled.pattern, self.compiled.flags)
        body = self.sequence(parsed, parsed.state.flags)
        if how not in ("fullmatch", "match"):
            return body
        grouped = len(parsed) == 1 and str(parsed[0][0]) in ("BRANCH", "SUBPATTERN")
        anchored = "^" + (body if grouped else f"(?:{body})")
        return anchored + _END if how == "fullmatch" else anchored

    def sequence(self, items: Any, flags: int) -> str:
        if flags & (re.IGNORECASE | re.LOCALE):
            raise self.refusal(
                "JSON Schema patterns have no flags, and Python's case folding has no short"
                " spelling; write both cases, e.g. [Yy][Ee][Ss]"
            )
        return "".join(self.item(str(op), av, flags) for op, av in items)

    def item(self, op: str, av: Any, flags: int) -> str:
        if op == "LITERAL":
            if _is_surrogate(av):
                raise self.refusal("it has a lone surrogate, which ECMA-262 reads otherwise")
            return _char(av, _SYNTAX)
        if op == "NOT_LITERAL":
            return self.charset(_complement([(av, av)]))
        if op == "ANY":  # Python's "." is anything but "\n"; ECMA-262's is not "\r" either
            return self.charset([(0, _MAX_CHAR)] if flags & re.DOTALL else _complement([(10, 10)]))
        if op == "IN":
            return self.charset(self.ranges(av, flags))
        if op == "CATEGORY":
            return self.charset(self.category(str(av), flags))
        if op == "BRANCH":
            return "(?:" + "|".join(self.sequence(branch, flags) for branch in av[1]) + ")"
        if op == "SUBPATTERN":  # capturing or not, named or not: only backreferences would care
            _, add, remove, sub = av
            return "(?:" + self.sequence(sub, (flags | add) & ~remove) + ")"
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = av
            lazy = "?" if op == "MIN_REPEAT" else ""
            return self.atom(sub, flags) + _quantifier(low, high) + lazy
        if op in ("ASSERT", "ASSERT_NOT"):
            direction, sub = av
            behind = "<" if direction < 0 else ""
            return f"(?{behind}{'=' if op == 'ASSERT' else '!'}{self.sequence(sub, flags)})"
        if op == "AT":
            return self.at(str(av), flags)
        if op in ("POSSESSIVE_REPEAT", "ATOMIC_GROUP"):
            raise self.refusal(
                "ECMA-262 has no possessive quantifiers or atomic groups; drop the '+'"
            )
        if op in ("GROUPREF", "GROUPREF_EXISTS"):
            raise self.refusal(
                "backreferences and conditionals match differently in ECMA-262 (a group that"
                " took no part matches the empty string there); check it in a validator of"
                " your own"
            )
        raise self.refusal(f"{op} has no ECMA-262 spelling")

    def atom(self, items: Any, flags: int) -> str:
        """`items` as one thing a quantifier can follow."""
        text = self.sequence(items, flags)
        sole = len(items) == 1 and str(items[0][0]) in ("LITERAL", "NOT_LITERAL", "ANY", "IN")
        return text if sole and not text.startswith("(") else f"(?:{text})"

    def at(self, where: str, flags: int) -> str:
        multiline = bool(flags & re.MULTILINE)
        if where == "AT_BEGINNING":
            return "(?:^|(?<=\\n))" if multiline else "^"
        if where == "AT_BEGINNING_STRING":
            return "^"
        if where == "AT_END":  # Python's "$" also matches before a final "\n"
            return "(?=\\n|(?![\\s\\S]))" if multiline else "(?=\\n?(?![\\s\\S]))"
        if where == "AT_END_STRING":
            return _END
        if flags & re.ASCII:  # spelled out: a bare \b in the schema is Unicode-aware in Python
            w = "[0-9A-Z_a-z]"
            if where == "AT_BOUNDARY":
                return f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))"
            return f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))"
        raise self.refusal(
            "\\b and \\B see Unicode letters in Python but only A-Za-z0-9_ in ECMA-262;"
            " pass flags=re.ASCII, or use lookarounds on the characters you mean"
        )

    def ranges(self, items: Any, flags: int) -> Ranges:
        ranges: Ranges = []
        negate = False
        for op, av in items:
            name = str(op)
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL":
                ranges.append((av, av))
            elif name == "RANGE":
                ranges.append((av[0], av[1]))
            elif name == "CATEGORY":
                ranges += self.category(str(av), flags)
            else:
                raise self.refusal(f"{name} in a character class has no ECMA-262 spelling")
        ranges = _union(ranges)
        return _complement(ranges) if negate else ranges

    def category(self, name: str, flags: int) -> Ranges:
        ascii_only = bool(flags & re.ASCII)
        base = name.removeprefix("CATEGORY_").removeprefix("NOT_")
        if base == "SPACE":
            ranges = _ASCII_SPACE if ascii_only else _SPACE
        elif base == "DIGIT" and ascii_only:
            ranges = _ASCII_DIGIT
        elif base == "WORD" and ascii_only:
            ranges = _ASCII_WORD
        elif base == "DIGIT":
            raise self.refusal(
                "\\d matches every Unicode digit in Python (٣ too) but only 0-9 in ECMA-262;"
                " write [0-9], or pass flags=re.ASCII"
            )
        elif base == "WORD":
            raise self.refusal(
                "\\w matches every Unicode letter in Python but only A-Za-z0-9_ in ECMA-262;"
                " write the class you mean, such as [A-Za-z0-9_], or pass flags=re.ASCII"
            )
        else:
            raise self.refusal(f"{name} has no ECMA-262 spelling")
        return _complement(ranges) if "_NOT_" in name else list(ranges)

    def charset(self, ranges: Ranges) -> str:
        """A class matching exactly the code points in `ranges`, in both dialects."""
        if not ranges:
            return "(?!)"
        if ranges == [(0, _MAX_CHAR)]:
            return "[\\s\\S]"
        spellings = [
            prefix + "".join(_class_range(low, high) for low, high in spelled)
            for prefix, spelled in (("", ranges), ("^", _complement(ranges)))
            # A surrogate spelled out would pair with its neighbour under the "u" flag.
            if not any(_is_surrogate(low) or _is_surrogate(high) for low, high in spelled)
        ]
        if not spellings:
            raise self.refusal(
                "its character class names lone surrogates, which ECMA-262 reads otherwise"
            )
        return f"[{min(spellings, key=len)}]"


def _is_surrogate(code: int) -> bool:
    return _SURROGATES[0] <= code <= _SURROGATES[1]


def _union(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: Ranges) -> Ranges:
    gaps: Ranges = []
    start = 0
    for low, high in _union(ranges):
        if low > start:
            gaps.append((start, low - 1))
        start = high + 1
    if start <= _MAX_CHAR:
        gaps.append((start, _MAX_CHAR))
    return gaps


def _char(code: int, special: frozenset[str]) -> str:
    """One code point, spelled alike in Python and ECMA-262 ("u" flag)."""
    c = chr(code)
    if c in "\t\n\v\f\r":
        return {"\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r"}[c]
    if c in special:
        return "\\" + c
    if c.isprintable():
        return c
    return f"\\u{code:04X}" if code <= 0xFFFF else c  # astral: raw, a code point in both


def _class_range(low: int, high: int) -> str:
    first = _char(low, _CLASS_SYNTAX)
    if low == high:
        return first
    return first + ("" if high == low + 1 else "-") + _char(high, _CLASS_SYNTAX)


def _quantifier(low: int, high: int) -> str:
    if high == _MAXREPEAT:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if (low, high) == (0, 1):
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def _docs(cls: type) -> tuple[str | None, dict[str, str]]:
    """The class's own docstring and its fields' attribute docstrings, bases included.

    Read from the source, so only what a person wrote counts; without source (a class made by
    exec or make_class) the class falls back to `__doc__` and its fields have none.
    """
    doc = cls.__dict__.get("__doc__")
    doc = inspect.cleandoc(doc) if isinstance(doc, str) else None
    fields: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # nearer classes override their bases
        node = _class_node(klass) if attrs.has(klass) else None
        if node is None:
            continue
        if klass is cls:
            doc = ast.get_docstring(node)
        for before, after in zip(node.body, node.body[1:], strict=False):
            name, text = _assigned_name(before), _string_statement(after)
            if name and text is not None:
                fields[name] = inspect.cleandoc(text)
    return doc, fields


# CPython 3.11 can fail ("AST constructor recursion depth mismatch") when two threads parse
# at once, as the items of a parallel step do when each asks for its schema.
_PARSING = threading.Lock()


def _class_node(klass: type) -> ast.ClassDef | None:
    try:
        with _PARSING:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):
        return None  # no source: described without docstrings, never an error
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.ClassDef) else None


def _assigned_name(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
        return statement.targets[0].id
    return None


def _string_statement(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        value = statement.value.value
        return value if isinstance(value, str) else None
    return None
