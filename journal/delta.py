"""The change between two JSON states, as RFC 6902 JSON Patch operations, and applying it.

A transition stores the change to the state rather than the whole state, so the journal grows
with what changes. Values are JSON values as `json.loads` returns them (dict, list, str, int,
float, bool, None); tuples are treated as lists because that is what they become in the journal.

This module owns three things:
- `same`: whether two values are the same JSON value. Types count: true is not 1, 1 is not 1.0,
  -0.0 is not 0.0 (each is written differently), NaN is NaN; tuple and list are one type, and
  the order of an object's keys does not count.
- `diff`: the `add`, `remove` and `replace` operations that turn one state into another, exact
  in that sense, so a fold replays the very state that was recorded.
- `apply`: all six RFC 6902 operations, so any conforming patch can be applied (the public
  json-patch-tests suite runs against it). Pointers follow RFC 6901: an array index is `0` or
  digits without a leading zero, `-` names the end of an array only as the last token of an
  `add`, and `~` is followed by `0` or `1`. `add` or `replace` at "" replaces the document;
  `remove` at "" leaves null, as that suite expects (RFC 6902 does not forbid it; the
  `jsonpatch` library refuses it). `test` compares as RFC 6902 says: numbers by value, so 1
  passes a test for 1.0, but true does not pass one for 1.
Anything else is a `BadPatch` that names the operation by its index, `op` and `path`.
"""

from __future__ import annotations

import copy
import re
from itertools import repeat
from math import copysign
from operator import is_
from typing import Any

from runjournal.journal.errors import BadPatch

Op = dict[str, Any]

_SEQUENCES = (list, tuple)
# Equal values of these types are the same value: `==` never mixes them with other types.
_PLAIN = frozenset({str, int, bool, type(None)})
_NUMBERS = (int, float)


def same(a: Any, b: Any) -> bool:
    """Whether `a` and `b` are the same JSON value, types included (see the module doc)."""
    if a == b:
        return _alike(a, b)
    return _equal(a, b, numeric=False)  # `==` misses NaN, and a tuple against a list


def _alike(x: Any, y: Any) -> bool:
    """Given `x == y`, whether they also agree in JSON type all the way down.

    `==` has settled everything but the type of numbers (true == 1 == 1.0) and the sign of
    zero. Under `==` a tuple never meets a list and NaN only meets itself.
    """
    # Unchanged leaves are often the very same objects (`is` settles them), and are mostly of
    # the plain types, settled by their type alone: only floats and containers need a call.
    if isinstance(x, dict):
        for key, value in x.items():
            other = y[key]
            if value is not other and not (
                ((kind := type(value)) is type(other) and kind in _PLAIN) or _alike(value, other)
            ):
                return False
        return True
    if isinstance(x, _SEQUENCES):
        if all(map(is_, x, y)):
            return True
        for value, other in zip(x, y, strict=True):
            if value is not other and not (
                ((kind := type(value)) is type(other) and kind in _PLAIN) or _alike(value, other)
            ):
                return False
        return True
    if type(x) is float:
        return type(y) is float and copysign(1.0, x) == copysign(1.0, y)
    return type(x) is type(y)


def _equal(a: Any, b: Any, numeric: bool) -> bool:
    """Exact JSON equality, or with `numeric` the equality RFC 6902 `test` asks for."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        return all(k in b and _equal(v, b[k], numeric) for k, v in a.items())
    if isinstance(a, _SEQUENCES):
        if not isinstance(b, _SEQUENCES) or len(a) != len(b):
            return False
        return all(map(_equal, a, b, repeat(numeric)))
    ta, tb = type(a), type(b)
    if numeric and ta in _NUMBERS and tb in _NUMBERS:
        return bool(a == b)
    if ta is not tb:
        return False
    if ta is float:
        return (a == b and copysign(1.0, a) == copysign(1.0, b)) or (a != a and b != b)
    return bool(a == b)


def diff(old: Any, new: Any, path: str = "") -> list[Op]:
    """The `add`, `remove` and `replace` operations that turn `old` into `new`, if any; with
    `path`, the values are the members at that pointer of two larger documents."""
    ops: list[Op] = []
    _diff(old, new, path, ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    if old is new:
        return
    # Objects are walked key by key, so a field that turns from 1 into true is seen.
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
                continue
            other = new[key]
            if value is other:
                continue
            # Most fields are scalars: settle them here, and build a path only for a change.
            kind = type(value)
            if kind is type(other) and kind in _PLAIN:
                if value != other:
                    ops.append({"op": "replace", "path": f"{path}/{escape(key)}", "value": other})
                continue
            _diff(value, other, f"{path}/{escape(key)}", ops)
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
        return
    if isinstance(old, _SEQUENCES) and isinstance(new, _SEQUENCES):
        _diff_sequence(old, new, path, ops)
        return
    if not same(old, new):
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_sequence(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    n_old, n_new = len(old), len(new)
    common = min(n_old, n_new)
    # `==` is one C-level comparison per item; the items it calls equal are then walked for a
    # true that became 1 or a 2 that became 2.0, and `_equal` rules on those it calls unequal
    # (NaN, or a tuple against a list, may still be the same).
    changed = [
        i
        for i, (x, y) in enumerate(zip(old, new, strict=False))
        if not (x is y or (_alike(x, y) if x == y else _equal(x, y, numeric=False)))
    ]
    # The usual shapes are an item changed in place, items appended, or items dropped from the
    # end; anything else (an insertion in the middle) is one replace of the whole list, which is
    # never larger than the list itself.
    if len(changed) > max(8, common // 2):
        ops.append({"op": "replace", "path": path, "value": list(new)})
        return
    for i in changed:
        _diff(old[i], new[i], f"{path}/{i}", ops)
    for i in range(common, n_new):
        ops.append({"op": "add", "path": f"{path}/-", "value": new[i]})
    for i in range(n_old - 1, common - 1, -1):
        ops.append({"op": "remove", "path": f"{path}/{i}"})


def escape(key: Any) -> str:
    """`key` as a token of a JSON Pointer (RFC 6901: `~` as `~0`, `/` as `~1`)."""
    return str(key).replace("~", "~0").replace("/", "~1")


def apply(doc: Any, ops: list[Op]) -> Any:
    """Apply `ops` to `doc` in place where possible and return the result.

    The caller owns `doc`: a fold keeps one state and changes it event after event, which is
    what makes replaying a long run cheap. Values are placed as given, not copied; on BadPatch
    the operations before the failing one have been applied.
    """
    if not isinstance(ops, _SEQUENCES):
        raise BadPatch(f"a patch is a list of operations, not {type(ops).__name__}")
    for index, op in enumerate(ops):
        # The common case, a field of the top object set: no pointer to walk. Anything unusual
        # falls through to the checked path, which says what is wrong.
        try:
            path = op["path"]
            if (
                op["op"] == "replace"
                and path.rfind("/") == 0  # one "/", at the start
                and "~" not in path
                and type(doc) is dict
                and (key := path[1:]) in doc
            ):
                doc[key] = op["value"]
                continue
        except (KeyError, TypeError, AttributeError, IndexError):
            pass
        doc = _apply_checked(doc, op, index)
    return doc


class _Refused(Exception):
    """Why an operation cannot apply; `_apply_checked` adds which operation it was."""


_BAD_TILDE = re.compile(r"~(?![01])")


def _apply_checked(doc: Any, op: Any, index: int) -> Any:
    if not isinstance(op, dict):
        raise BadPatch(f"operation {index} is not an object: {op!r:.100}")
    kind, path = op.get("op"), op.get("path")
    try:
        if not isinstance(path, str):
            raise _Refused("'path' must be a string" if "path" in op else "missing 'path'")
        if kind == "remove":
            doc, node, key = _locate(doc, path)
            if node is None:
                return None
            del node[key]
            return doc
        if kind in ("add", "replace", "test"):
            if "value" not in op:
                raise _Refused("missing 'value'")
            value = op["value"]
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise _Refused("'from' must be a string" if "from" in op else "missing 'from'")
            try:
                value = _get(doc, source)
            except _Refused as e:
                raise _Refused(f"from {source!r:.200}: {e}") from None
            if kind == "copy":
                value = copy.deepcopy(value)
            else:
                inner, outer = _tokens(path), _tokens(source)
                if len(inner) > len(outer) and inner[: len(outer)] == outer:
                    raise _Refused(f"cannot move {source!r:.100} into itself")
                doc = _apply_checked(doc, {"op": "remove", "path": source}, index)
        else:
            raise _Refused("missing 'op'" if kind is None else "unknown 'op'")
        if kind == "test":
            if not _equal(_get(doc, path), value, numeric=True):
                raise _Refused(f"the value is not {value!r:.100}")
            return doc
        # RFC 6902: replace needs the target to exist; add makes it, or replaces a member.
        doc, node, key = _locate(doc, path, adding=kind != "replace")
        if node is None:
            return value
        if kind != "replace" and isinstance(node, list):
            node.insert(key, value)
        else:
            node[key] = value
        return doc
    except _Refused as e:
        name = f"operation {index} ({kind!r:.40} at {path!r:.200})"
        raise BadPatch(f"cannot apply {name}: {e}") from None


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if path[0] != "/":
        raise _Refused("a pointer must be empty or start with '/'")
    if "~" not in path:
        return path[1:].split("/")
    if _BAD_TILDE.search(path):
        raise _Refused("'~' must be followed by 0 or 1")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


# Most indices are small: one lookup both checks and converts them.
_SMALL_INDICES = {str(i): i for i in range(1000)}


def _index(token: str, length: int, end_ok: bool = False) -> int:
    """The index `token` names in an array of `length`; only an add may name its end."""
    i = _SMALL_INDICES.get(token)
    if i is None:
        # RFC 6901: 0, or ASCII digits without a leading zero; no sign, space or other digits.
        if not (token.isdigit() and token.isascii() and token[0] != "0"):
            raise _Refused(f"{token!r:.40} is not an array index")
        i = int(token)
    if i > length or (i == length and not end_ok):
        raise _Refused(f"index {i} is past the end of an array of {length}")
    return i


def _locate(doc: Any, path: str, adding: bool = False) -> tuple[Any, Any, Any]:
    """The document, the container `path` ends in (None at the root), and the key or index.

    The target must exist unless `adding`: then a new member, or an index up to the end of an
    array, `-` included. A tuple on the way is made a list, so it can be changed like the rest.
    """
    tokens = _tokens(path)
    if isinstance(doc, tuple):
        doc = list(doc)
    if not tokens:
        return doc, None, None
    node = doc
    for token in tokens[:-1]:
        key: Any
        if isinstance(node, dict):
            if token not in node:
                raise _Refused(f"no member {token!r:.100}")
            key = token
        elif isinstance(node, list):
            key = _index(token, len(node))
        else:
            raise _Refused(f"{type(node).__name__} has no members")
        child = node[key]
        if type(child) is tuple:
            child = node[key] = list(child)
        node = child
    last = tokens[-1]
    if isinstance(node, dict):
        if not adding and last not in node:
            raise _Refused(f"no member {last!r:.100}")
        return doc, node, last
    if isinstance(node, list):
        if adding and last == "-":
            return doc, node, len(node)
        return doc, node, _index(last, len(node), end_ok=adding)
    raise _Refused(f"{type(node).__name__} has no members")


def _get(doc: Any, path: str) -> Any:
    doc, node, key = _locate(doc, path)
    return doc if node is None else node[key]
