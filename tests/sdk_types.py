"""Checks a request body against the installed anthropic SDK's own request types, strictly.

`MessageCreateParams` is a TypedDict that the SDK itself never checks at run time (an unknown
nested key goes to the API as it is). This walks the body and the type together: every key must
be one the SDK's type declares, every required key present, every literal one it lists. A field
the SDK does not know then fails a test, not a user.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from typing_extensions import is_typeddict


def problems(body: Any) -> list[str]:
    """What in `body` the SDK's `MessageCreateParamsNonStreaming` does not allow; [] if none."""
    return _check(body, MessageCreateParamsNonStreaming, "request")


def _check(value: Any, tp: Any, path: str) -> list[str]:
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return []
    if origin is typing.Annotated:
        return _check(value, get_args(tp)[0], path)
    if origin in (Union, types.UnionType):
        found = [_check(value, member, path) for member in get_args(tp)]
        if any(not f for f in found):
            return []
        # The member the value is shaped like says most: one that failed deeper, not at once.
        return min(found, key=lambda said: (any(p.startswith(f"{path}:") for p in said), len(said)))
    if origin is Literal:
        return [] if value in get_args(tp) else [f"{path}: {value!r} is not one of {get_args(tp)}"]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        hints = _hints(tp)
        said = [
            f"{path}.{k}: the SDK's {tp.__name__} has no such field"
            for k in value
            if k not in hints
        ]
        said += [f"{path}.{k}: required" for k in tp.__required_keys__ if k not in value]
        for key, item in value.items():
            if key in hints:
                said += _check(item, _required(hints[key]), f"{path}.{key}")
        return said
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp in (str, int, float, bool):
        fits = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
        fits = fits or (tp is float and isinstance(value, int) and not isinstance(value, bool))
        return [] if fits else [f"{path}: expected {tp.__name__}, got {type(value).__name__}"]
    container = origin or tp
    if container in (dict, abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        args = get_args(tp)
        if len(args) == 2:
            return [p for k, v in value.items() for p in _check(v, args[1], f"{path}.{k}")]
        return []
    if (isinstance(container, type) and issubclass(container, abc.Iterable)) or _sequence(tp):
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {type(value).__name__}"]
        args = get_args(tp)
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in _check(v, item, f"{path}[{i}]")]
    return []


@functools.cache
def _hints(tp: Any) -> dict[str, Any]:
    """A TypedDict's fields and their types; resolving them is slow, and they never change."""
    return get_type_hints(tp, include_extras=True)


def _required(tp: Any) -> Any:
    """The type inside Required[...] / NotRequired[...]."""
    name = getattr(get_origin(tp), "_name", None) or str(get_origin(tp))
    if any(marker in name for marker in ("Required", "NotRequired")):
        return get_args(tp)[0]
    return tp


def _sequence(tp: Any) -> bool:
    return "SequenceNotStr" in str(getattr(tp, "__origin__", tp))
