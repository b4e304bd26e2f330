"""The JSON Schema that constrained decoding accepts: cutting a schema down to it, and checking one.

JSON outputs and strict tools make the model's tokens follow a schema, but only a subset of JSON
Schema (`Capabilities.constrained`, from the structured outputs docs' JSON Schema limitations);
a schema beyond it is a 400. `fit` cuts the schema of an attrs class down to that subset without
ever making it stricter: a constraint the subset lacks (a bound, a length, a pattern, unique
items) is moved into the description, where the model reads it, and is still checked by
runjournal's own validator after the answer, which feeds a violation back like any rejection.
What cannot be said in the subset without refusing answers the class accepts (a recursive class,
a dict of arbitrary keys, a value of any type) makes the schema unfit: the ask then uses a
mechanism without constrained decoding. `problems` is the API's side: the first thing in a
schema it would refuse, worded as its 400 says it; the fake Messages API answers with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from runjournal.machine.model.capabilities import Constrained

CONSTRAINTS: Final = "Checked after the answer, as JSON Schema: "
"""What precedes, in a description, the constraints `fit` moved there (a JSON object)."""

_PRIMITIVES = (str, int, float, bool, type(None))


@attrs.frozen
class Fitted:
    """A schema cut down for constrained decoding, or why it cannot be."""

    schema: dict[str, Any] | None
    why_not: str | None = None


class _Unfit(Exception):
    pass


def fit(schema: Mapping[str, Any], rules: Constrained) -> Fitted:
    """`schema` within `rules`, never stricter than it; or None and the reason it cannot be."""
    try:
        fitted = _fit(schema, rules)
    except _Unfit as e:
        return Fitted(None, str(e))
    optional, unions = _counts(fitted)
    if optional > rules.max_optional_properties:
        why = f"{optional} optional properties, over the limit of {rules.max_optional_properties}"
        return Fitted(None, why)
    if unions > rules.max_union_properties:
        why = (
            f"{unions} properties with a union type, over the limit of {rules.max_union_properties}"
        )
        return Fitted(None, why)
    return Fitted(fitted)


def _fit(node: Any, rules: Constrained) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise _Unfit(f"a schema that is not an object: {node!r}")
    rest = dict(node)
    if "$ref" in rest:
        # The class emitter writes $ref only for a class that refers to itself.
        raise _Unfit("a recursive type")
    out: dict[str, Any] = {}
    kind = rest.pop("type", None)
    if isinstance(kind, list):
        raise _Unfit(f"a value of several JSON types ({', '.join(map(str, kind))})")
    for key in ("enum", "const"):
        if key in rest:
            values = rest[key] if key == "enum" else [rest[key]]
            if isinstance(values, list) and all(isinstance(v, _PRIMITIVES) for v in values):
                out[key] = rest.pop(key)
    if "anyOf" in rest or "oneOf" in rest:
        branches = rest.pop("anyOf", None) or rest.pop("oneOf")
        # A branch without a type of its own takes the parent's: the subset wants each typed.
        typed = [{"type": kind, **b} if kind and "type" not in b else b for b in branches]
        out["anyOf"] = [_fit(b, rules) for b in typed]
        kind = None
    if "allOf" in rest:
        out["allOf"] = [_fit(b, rules) for b in rest.pop("allOf")]
    if kind is None and not out:
        raise _Unfit("a value of any type")
    if kind is not None:
        out["type"] = kind
    for key in ("description", "title"):
        if key in rest:
            out[key] = rest.pop(key)
    if kind == "object":
        if rest.pop("additionalProperties", None) is not False:
            raise _Unfit("an object with keys of its own choosing (a dict)")
        out["properties"] = {k: _fit(v, rules) for k, v in rest.pop("properties", {}).items()}
        out["required"] = list(rest.pop("required", []))
        out["additionalProperties"] = False
    elif kind == "array":
        prefix = rest.pop("prefixItems", None)
        items = rest.pop("items", None)
        if prefix:
            # Each position may take any of the tuple's types: looser than prefixItems, and
            # the order is checked after the answer.
            rest["prefixItems"] = prefix
            kinds = [_fit(p, rules) for p in prefix]
            distinct = [k for i, k in enumerate(kinds) if k not in kinds[:i]]
            out["items"] = distinct[0] if len(distinct) == 1 else {"anyOf": distinct}
        elif items is not None:
            out["items"] = _fit(items, rules)
        least = rest.pop("minItems", None)
        if least is not None:
            if least in rules.min_items:
                out["minItems"] = least
            else:
                rest["minItems"] = least
                out["minItems"] = max(m for m in rules.min_items if m <= least)
    elif kind == "string":
        form = rest.get("format")
        if form in rules.string_formats:
            out["format"] = rest.pop("format")
    if rest:
        said = f"{CONSTRAINTS}{json.dumps(rest, ensure_ascii=False, sort_keys=True)}"
        out["description"] = f"{out['description']}\n\n{said}" if "description" in out else said
    return out


def _counts(schema: Mapping[str, Any]) -> tuple[int, int]:
    """Optional properties, and properties whose value is a union, in the whole schema."""
    optional = unions = 0
    for node in _nodes(schema):
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            optional += len(set(properties) - set(node.get("required") or ()))
            unions += sum(1 for p in properties.values() if isinstance(p, Mapping) and "anyOf" in p)
    return optional, unions


def _nodes(schema: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(schema, Mapping):
        return
    yield schema
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        for branch in schema.get(key) or ():
            yield from _nodes(branch)
    for key in ("items", "additionalProperties", "not"):
        yield from _nodes(schema.get(key))
    for group in ("properties", "$defs", "definitions"):
        for sub in (schema.get(group) or {}).values():
            yield from _nodes(sub)


def problems(schema: Any, rules: Constrained, where: str) -> str | None:
    """The first part of `schema` constrained decoding refuses, as the API's 400 words it
    (prefixed with `where`, e.g. "output_config.format.schema"); None if it accepts it all."""
    if not isinstance(schema, Mapping):
        return f"{where}: must be an object"
    defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    for node in _nodes(schema):
        said = _problem(node, rules, defs)
        if said is not None:
            return f"{where}: {said}"
    optional, unions = _counts(schema)
    if optional > rules.max_optional_properties:
        return (
            f"Schemas contains too many optional parameters ({optional}), which would make "
            "grammar compilation inefficient. Reduce the number of optional parameters in your "
            f"tool schemas (limit: {rules.max_optional_properties})."
        )
    if unions > rules.max_union_properties:
        return (
            f"Schemas contains too many parameters with union types ({unions}), which would make "
            "grammar compilation inefficient. Reduce the number of parameters with union types "
            f"(limit: {rules.max_union_properties})."
        )
    return None


def _problem(node: Mapping[str, Any], rules: Constrained, defs: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = None  # a list of types: each is checked as far as the keywords go
    ref = node.get("$ref")
    if isinstance(ref, str) and _recursive(ref, defs):
        return "Recursive schemas are not supported"
    allowed = rules.keywords.get("any", frozenset())
    if isinstance(kind, str):
        allowed = allowed | rules.keywords.get(kind, frozenset())
    for key in node:
        if key not in allowed:
            shown = f"'{kind}' type" if isinstance(kind, str) else "a schema without a type"
            return f"For {shown}, property '{key}' is not supported"
    if kind == "object" and node.get("additionalProperties") is not False:
        return "For 'object' type, 'additionalProperties' must be explicitly set to false"
    if kind == "array" and "minItems" in node and node["minItems"] not in rules.min_items:
        return "For 'array' type, 'minItems' values other than 0 or 1 are not supported"
    if kind == "string" and "format" in node and node["format"] not in rules.string_formats:
        return f"For 'string' type, format '{node['format']}' is not supported"
    has_shape = kind is not None or any(
        k in node for k in ("anyOf", "allOf", "enum", "const", "$ref")
    )
    if not has_shape:
        return "Schema must have a 'type', 'anyOf', 'allOf', '$ref', 'const' or 'enum'"
    return None


def _recursive(ref: str, defs: Mapping[str, Any]) -> bool:
    """Whether following `ref` comes back to it (the root, "#", always does)."""
    if ref == "#":
        return True
    seen: set[str] = set()
    todo = [ref]
    while todo:
        current = todo.pop()
        name = current.rsplit("/", 1)[-1]
        if current in seen:
            continue
        seen.add(current)
        for node in _nodes(defs.get(name)):
            inner = node.get("$ref")
            if inner == ref or inner == "#":
                return True
            if isinstance(inner, str) and inner not in seen:
                todo.append(inner)
    return False
