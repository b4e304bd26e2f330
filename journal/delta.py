"""The change between two JSON states, as RFC 6902 JSON Patch operations, and applying it.

A transition stores the change to the state rather than the whole state, so the journal grows
with what changes. Only `add`, `remove` and `replace` are produced; `apply` accepts the same.
Values are JSON values as `json.loads` returns them (dict, list, str, int, float, bool, None);
tuples are treated as lists because that is what they become in the journal.
"""

from __future__ import annotations

from typing import Any

from journal.errors import BadPatch

Op = dict[str, Any]


def diff(old: Any, new: Any) -> list[Op]:
    """The operations that turn `old` into `new`; empty when they are equal."""
    ops: list[Op] = []
    _diff(old, new, "", ops)
    return ops


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _same_kind(a: Any, b: Any) -> bool:
    # bool is an int in Python but not in JSON: True == 1 must still be a change.
    ta, tb = type(a), type(b)
    if ta is tb:
        return True
    sequences = (list, tuple)
    return ta in sequences and tb in sequences


def _diff(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    if old is new:
        return
    # Objects are walked key by key, so a field that turns from 1 into true is seen.
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
                continue
            other = new[key]
            # Most fields do not change: settle equal scalars before building their path.
            if value is other or (
                type(value) is type(other) and type(value) in _SCALARS and value == other
            ):
                continue
            _diff(value, other, f"{path}/{_escape(key)}", ops)
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
        return
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        _diff_sequence(old, new, path, ops)
        return
    if not _equal(old, new):
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_sequence(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    n_old, n_new = len(old), len(new)
    common = min(n_old, n_new)
    # The usual shapes are an item changed in place, items appended, or items dropped from the
    # end; anything else (an insertion in the middle) is one replace of the whole list, which is
    # never larger than the list itself.
    changed = [i for i in range(common) if not _equal(old[i], new[i])]
    if len(changed) > max(8, common // 2):
        ops.append({"op": "replace", "path": path, "value": list(new)})
        return
    for i in changed:
        _diff(old[i], new[i], f"{path}/{i}", ops)
    for i in range(common, n_new):
        ops.append({"op": "add", "path": f"{path}/-", "value": new[i]})
    for i in range(n_old - 1, common - 1, -1):
        ops.append({"op": "remove", "path": f"{path}/{i}"})


def _equal(a: Any, b: Any) -> bool:
    # For the items of a list, deep equality is one fast C-level comparison. Inside an item
    # it cannot see 1 turn into true; cattrs never does that to a field typed int or bool.
    return a is b or (_same_kind(a, b) and a == b)


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply(doc: Any, ops: list[Op]) -> Any:
    """Apply `ops` to `doc` in place where possible and return the result.

    The caller owns `doc`: a fold keeps one state and changes it event after event, which is
    what makes replaying a long run cheap.
    """
    for op in ops:
        try:
            path = op["path"]
            # The common case, a field of the top object set: no pointer to walk.
            if (
                op["op"] == "replace"
                and path.count("/") == 1
                and "~" not in path
                and path[1:] in doc
            ):
                doc[path[1:]] = op["value"]
            else:
                doc = _apply_one(doc, op)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            msg = f"cannot apply {op.get('op')!r} at {op.get('path')!r}: {e!r}"
            raise BadPatch(msg) from e
    return doc


def _apply_one(doc: Any, op: Op) -> Any:
    kind, path = op["op"], op["path"]
    if path == "":
        if kind == "remove":
            raise ValueError("cannot remove the whole document")
        return op["value"]
    tokens = path.split("/")
    if tokens[0] != "":
        raise ValueError("a path must start with '/'")
    parent = doc
    for token in tokens[1:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[_unescape(token)]
    last = tokens[-1]
    if isinstance(parent, list):
        if kind == "add":
            if last == "-":
                parent.append(op["value"])
            else:
                parent.insert(int(last), op["value"])
        elif kind == "replace":
            parent[int(last)] = op["value"]
        elif kind == "remove":
            del parent[int(last)]
        else:
            raise ValueError(f"unknown operation {kind!r}")
        return doc
    key = _unescape(last)
    if kind in ("add", "replace"):
        if kind == "replace" and key not in parent:
            raise KeyError(key)
        parent[key] = op["value"]
    elif kind == "remove":
        del parent[key]
    else:
        raise ValueError(f"unknown operation {kind!r}")
    return doc
