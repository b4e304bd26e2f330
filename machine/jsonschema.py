"""The JSON Schema of an attrs class: the tool a model must answer through, and what it may send.

The schema describes what `machine.convert.make()` structures into the class, no more: keys are
attribute names (cattrs ignores aliases by default), fields with `init=False` are left out, and
dates are ISO strings as cattrs' JSON converter writes them. It is a little stricter than the
converter (no extra keys, unique set items), never looser. Validators that map cleanly become
constraints; others are left to the converter, which still runs them.

Nested classes are written inline. A class that refers to itself, directly or through others,
is written once under `$defs` and referred to with `$ref` (the root class itself as `"#"`), which
Anthropic accepts for tools without `strict`.
"""

from __future__ import annotations

import ast
import collections.abc as abc
import datetime
import enum
import inspect
import math
import re
import textwrap
import types
import typing
import unicodedata
from typing import Any, TypeAlias

import attrs

from machine.errors import SchemaError

Schema: TypeAlias = dict[str, Any]

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
# By identity: datetime is a subclass of date, and each has its own cattrs hook.
_DATES = {datetime.datetime: "date-time", datetime.date: "date"}
_ARRAYS = (list, tuple, abc.Sequence, abc.MutableSequence)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_NUMBER_KEYWORDS = {
    ">=": "minimum",
    ">": "exclusiveMinimum",
    "<=": "maximum",
    "<": "exclusiveMaximum",
}
_LENGTH_KEYWORDS = {  # attrs length validator -> keyword, by the JSON type it constrains
    "min_length": {"string": "minLength", "array": "minItems", "object": "minProperties"},
    "max_length": {"string": "maxLength", "array": "maxItems", "object": "maxProperties"},
}
_VALUE_TYPES = frozenset(("string", "integer", "number", "boolean"))
# `in_(range(...))` with a step is listed value by value up to this many values, else bounded.
_MAX_RANGE_ENUM = 64


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


@attrs.define
class _Walk:
    """The state of one `input_schema` call: which classes are open, and which recur."""

    root: Any
    open: list[Any] = attrs.Factory(list)
    refs: dict[Any, str] = attrs.Factory(dict)  # recursive class -> its "$ref"
    defs: Schema = attrs.Factory(dict)
    docs: dict[type, tuple[str | None, dict[str, str]]] = attrs.Factory(dict)  # parsed once

    def schema(self, tp: Any, path: str, env: dict[Any, Any]) -> Schema:
        tp = _substitute(tp, env, path)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return {}
        if tp in _SCALARS:  # get_type_hints has already made None NoneType
            return {"type": _SCALARS[tp]}
        if tp in _DATES:
            return {"type": "string", "format": _DATES[tp]}
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
            return {"type": "array", "prefixItems": fixed, "minItems": n, "maxItems": n}
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
            field = self.schema(Any if tp is None else tp, f"{path}.{a.name}", env)
            if a.validator is not None:
                _constrain(field, a.validator)
            description = a.metadata.get("description", field_docs.get(a.name))
            if isinstance(description, str):
                field["description"] = description
            properties[a.name] = field
            if a.default is attrs.NOTHING:
                required.append(a.name)
        schema |= {"properties": properties, "required": required, "additionalProperties": False}
        return schema


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


def _branches(schema: Schema, kinds: typing.Container[str]) -> list[Schema]:
    """The parts of `schema` (itself, or branches of its anyOf) whose type is one of `kinds`."""
    if "anyOf" in schema:
        return [b for branch in schema["anyOf"] for b in _branches(branch, kinds)]
    return [schema] if schema.get("type") in kinds else []


def _bound(schema: Schema, key: str, value: Any) -> None:
    """Set a numeric keyword, keeping the tighter of two bounds when validators repeat."""
    if key in schema:
        lower = key.startswith(("min", "exclusiveMin"))
        value = max(schema[key], value) if lower else min(schema[key], value)
    schema[key] = value


def _constrain(schema: Schema, v: Any) -> None:
    """Add what validator `v` checks to `schema`, where JSON Schema can say it."""
    # Duck typing on attrs' validator objects: their classes are private.
    if hasattr(v, "_validators"):  # and_(...), or a list of validators
        for each in v._validators:
            _constrain(schema, each)
    elif hasattr(v, "validator") and not hasattr(v, "exc_types"):  # optional(...), not not_(...)
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") != "null":
                _constrain(branch, v.validator)
    elif hasattr(v, "member_validator"):  # deep_iterable(...)
        if v.iterable_validator is not None:
            _constrain(schema, v.iterable_validator)
        for array in _branches(schema, ("array",)):
            for items in [array.get("items"), *array.get("prefixItems", [])]:
                if items is not None:
                    _constrain(items, v.member_validator)
    elif hasattr(v, "key_validator") and hasattr(v, "value_validator"):  # deep_mapping(...)
        if v.mapping_validator is not None:
            _constrain(schema, v.mapping_validator)
        for mapping in _branches(schema, ("object",)):
            if "additionalProperties" in mapping and v.value_validator is not None:
                _constrain(mapping["additionalProperties"], v.value_validator)
            if "additionalProperties" in mapping and v.key_validator is not None:
                mapping.setdefault("propertyNames", {"type": "string"})
                _constrain(mapping["propertyNames"], v.key_validator)
    elif hasattr(v, "compare_op") and hasattr(v, "bound"):  # lt, le, ge, gt
        bound = v.bound
        if isinstance(bound, int | float) and not isinstance(bound, bool) and math.isfinite(bound):
            for number in _branches(schema, ("integer", "number")):
                _bound(number, _NUMBER_KEYWORDS[v.compare_op], bound)
    elif hasattr(v, "min_length") or hasattr(v, "max_length"):
        attribute = "min_length" if hasattr(v, "min_length") else "max_length"
        for branch in _branches(schema, ("string", "array", "object")):
            _bound(branch, _LENGTH_KEYWORDS[attribute][branch["type"]], getattr(v, attribute))
    elif hasattr(v, "pattern") and hasattr(v, "match_func"):  # matches_re
        pattern = _pattern(v.pattern, v.match_func)
        for string in _branches(schema, ("string",)) if pattern else ():
            if "pattern" in string:  # one pattern per schema: the rest go in allOf
                string.setdefault("allOf", []).append({"pattern": pattern})
            else:
                string["pattern"] = pattern
    elif hasattr(v, "options"):  # in_
        _constrain_in(schema, v.options, getattr(v, "_original_options", v.options))


def _pattern(compiled: re.Pattern[str], match: Any) -> str | None:
    """The JSON Schema pattern (unanchored, like re.search) that `match` checks, if any."""
    if compiled.flags & ~re.UNICODE:  # IGNORECASE and the like have no JSON Schema spelling
        return None
    how = getattr(match, "__name__", "")
    return {"fullmatch": f"^(?:{compiled.pattern})$", "match": f"^(?:{compiled.pattern})"}.get(
        how, compiled.pattern if how == "search" else None
    )


def _constrain_in(schema: Schema, options: Any, original: Any) -> None:
    if isinstance(options, range) and (abs(options.step) == 1 or len(options) > _MAX_RANGE_ENUM):
        for number in _branches(schema, ("integer", "number")):
            if len(options):
                _bound(number, "minimum", min(options))
                _bound(number, "maximum", max(options))
            else:
                number["enum"] = []
        return
    if isinstance(options, type) and issubclass(options, enum.Enum):
        options = list(options)
    if not isinstance(options, tuple | list | range | set | frozenset | dict):
        return  # a str (substring test) or a custom container: not an enumeration
    values = [o.value if isinstance(o, enum.Enum) else o for o in options]
    if any(_json_type(o) is None for o in values):
        return
    if isinstance(original, set | frozenset):  # set order varies between runs (hash seeds)
        values.sort(key=lambda o: (type(o).__name__, o))
    for branch in _branches(schema, _VALUE_TYPES):
        if "enum" in branch:  # narrow an Enum or Literal field's own values
            values = [o for o in values if any(_same(o, e) for e in branch["enum"])]
        branch["enum"] = list(values)  # each branch its own list


def _same(a: Any, b: Any) -> bool:
    # In Python True == 1; in JSON they differ.
    return type(a) is type(b) and bool(a == b)


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


def _class_node(klass: type) -> ast.ClassDef | None:
    try:
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
