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

This module walks the class's types. What sort of value each type is lives in `schema_types`,
the validators' constraints in `schema_validators`, a regex as a `pattern` in `schema_patterns`,
and the descriptions read from docstrings in `schema_docs`.
"""

from __future__ import annotations

import copy
import datetime
import enum
import re
import types
import typing
import unicodedata
from typing import Any

import attrs

from runjournal.machine.errors import SchemaError
from runjournal.machine.model.schema_docs import docstrings
from runjournal.machine.model.schema_patterns import END
from runjournal.machine.model.schema_types import (
    ARRAYS,
    MAPPINGS,
    SCALARS,
    SETS,
    Schema,
    hashable,
    json_type,
    kind_of,
    overlap,
)
from runjournal.machine.model.schema_validators import Constrain, known

__all__ = ["Schema", "SchemaError", "input_schema", "tool_for"]

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

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
_DATE_SCHEMA: Schema = {"type": "string", "format": "date", "pattern": f"^{_FULL_DATE}{END}"}
# A naive datetime is written without an offset, which RFC 3339's date-time requires: it is
# described beside it, so that every datetime the converter writes fits the schema.
_DATETIME_SCHEMA: Schema = {
    "type": "string",
    "anyOf": [
        {"format": "date-time", "pattern": f"^{_FULL_DATE}[Tt]{_PARTIAL_TIME}{_OFFSET}{END}"},
        {"pattern": f"^{_FULL_DATE}[Tt]{_PARTIAL_TIME}{END}"},
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
    description = docstrings(cls)[0] or f"Answer by filling in the fields of {_name(cls)}."
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
        if tp in SCALARS:  # get_type_hints has already made None NoneType
            return {"type": SCALARS[tp]}
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
        if container in SETS and not hashable(args[0] if args else Any):
            item = args[0] if args else Any
            msg = f"{path}: cannot describe {tp!r} as JSON Schema: {item!r} values cannot be"
            msg += " members of a set; use list[...], or a frozen attrs class as the item"
            raise SchemaError(msg)
        if container in ARRAYS or container in SETS:
            items = self.schema(args[0], f"{path}[]", env) if args else {}
            unique = {"uniqueItems": True} if container in SETS else {}
            return {"type": "array", "items": items, **unique}
        if container in MAPPINGS:
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
            self.docs[cls] = docstrings(cls)
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
                Constrain(self, a, field_path).constrain(field, a.validator)
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
        kind = kind_of(tp)
        if kind == "union":
            before, after = structural["anyOf"], constrained["anyOf"]
            if before != after:
                for i, member in enumerate(after):
                    mine = self.type_of(member)
                    earlier = [before[j] for j in range(i) if overlap(self.type_of(after[j]), mine)]
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
    if a.validator is None or not known(a.validator):
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


def _enum(values: typing.Iterable[Any], path: str, tp: Any) -> Schema:
    plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
    kinds = {json_type(v) for v in plain}
    if None in kinds:
        bad = next(v for v in plain if json_type(v) is None)
        msg = f"{path}: cannot describe {tp!r} as JSON Schema: {bad!r} is not a JSON scalar"
        raise SchemaError(msg)
    return {"type": kinds.pop(), "enum": plain} if len(kinds) == 1 else {"enum": plain}
