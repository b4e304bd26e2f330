"""A run's input: read from a file, a JSON document or JSON Lines, and checked for what the
journal cannot take. `journal run --input` and `machine.run` go by these same rules.

Refused, as an `InputUnreadable` naming the line (of a file) and the field: what is not strict
JSON (NaN, Infinity), what Python cannot hold (an integer of more than 4,300 digits, a number
beyond a float), nesting deeper than 200 (converting input, folding it and writing it as JSON
all recurse, and Python's stack holds about a thousand frames) and what the journal cannot
store (a lone surrogate, `"\\ud800"`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runjournal.machine.errors import InputUnreadable

_LINES_SUFFIXES = (".jsonl", ".ndjson")
_MAX_DEPTH = 200
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A JSON string, or a bracket: to find where input nests too deeply, without recursion.
_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def read(path: Path | None) -> Any:
    """The run's input: a JSON document, or JSON Lines as a list; `-` reads standard input.

    JSON Lines (a `.jsonl` or `.ndjson` file) are read a line at a time, so that a big input is
    held once, as its values, and never also as its text. A UTF-8 byte order mark at the start
    is skipped (Windows editors write one).
    """
    if path is None:
        return {}
    name = str(path)
    try:
        if name == "-":
            return _read(sys.stdin.buffer, name)
        with path.open("rb") as stream:
            return _read(stream, name)
    except FileNotFoundError as e:
        raise InputUnreadable(f"no input file {name}") from e
    except OSError as e:
        raise InputUnreadable(f"cannot read {name}: {e.strerror}") from e


def _read(stream: BinaryIO, name: str) -> Any:
    if name.endswith(_LINES_SUFFIXES):
        values = _lines(name, enumerate(stream, 1), bom=True)
    else:
        data = stream.read()
        text = _decoded(data.removeprefix(_BOM), name, 1)
        del data  # a big document is held as its text and then its values, not also as bytes
        if not text.strip():
            raise InputUnreadable(f"{name} is empty: give a JSON document or JSON Lines")
        try:
            return _parse(text, f"{name}: ", lines=False)
        except _ExtraData:
            pass  # more than one document: JSON Lines
        # Only "\n" ends a line: str.splitlines() would also split at a U+2028 inside a string.
        values = _lines(name, enumerate(text.split("\n"), 1), bom=False)
    if not values:
        raise InputUnreadable(f"{name} is empty: give a JSON document or JSON Lines")
    return values


_BOM = b"\xef\xbb\xbf"


def _lines(name: str, lines: Iterable[tuple[int, bytes | str]], *, bom: bool) -> list[Any]:
    """The values of the JSON Lines `lines` (numbered), blank lines skipped."""
    values = []
    for n, line in lines:
        if isinstance(line, bytes):
            line = _decoded(line.removeprefix(_BOM) if bom and n == 1 else line, name, n)
        if line.strip():
            values.append(_parse(line, f"{name}: line {n}: ", lines=True))
    return values


def _decoded(data: bytes, name: str, first_line: int) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        msg = f"{name} is not UTF-8 text: byte {data[e.start]:#04x} on line {line}"
        raise InputUnreadable(msg) from e


class _ExtraData(Exception):
    """A JSON document followed by more: the file may be JSON Lines."""


class _Refused:
    """What json read but the journal must not take, left in place for `_check` to name."""

    def __init__(self, what: str) -> None:
        self.what = what


def _constant(literal: str) -> _Refused:
    return _Refused(f"{literal} is not JSON")


def _integer(digits: str) -> int | _Refused:
    try:
        return int(digits)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        n, limit = len(digits.lstrip("-")), sys.get_int_max_str_digits()
        return _Refused(f"an integer of {n:,} digits is too long (at most {limit:,})")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_constant)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Only int() raises this: read again, keeping the long integer in place to name it.
        return json.loads(text, parse_constant=_constant, parse_int=_integer)


def _parse(text: str, where: str, *, lines: bool) -> Any:
    """One JSON value, or an InputUnreadable that starts with `where`."""
    try:
        value = _loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and not lines:
            raise _ExtraData from e
        at = f"column {e.colno}" if lines else f"line {e.lineno} column {e.colno}"
        raise InputUnreadable(f"{where}not JSON: {e.msg} at {at}") from e
    except RecursionError as e:
        raise InputUnreadable(where + _too_deep(text, lines=lines)) from e
    problem = _check(value, text, lines=lines)
    if problem is not None:
        raise InputUnreadable(where + problem)
    return value


# A place in the input: the place of its container and its key there; None is the top.
_Crumb = tuple["_Crumb", "str | int"] | None


def _check(value: Any, text: str | None, *, lines: bool) -> str | None:
    """The first thing in `value`, read from `text` (None: given as values), that the journal
    cannot take, and where.

    Walked depth first with a stack of its own (input may nest deeper than Python's stack) that
    holds one iterator per open container, so that a list of a million items is not copied to
    be walked.
    """
    if (flaw := _flaw(value)) is not None:
        return f"{flaw} @ $"
    stack: list[tuple[Iterator[tuple[str | int, Any]], _Crumb, int]] = []
    if isinstance(value, dict | list):
        stack.append((_entries(value), None, 1))
    while stack:
        entries, crumb, depth = stack[-1]
        for key, child in entries:
            if isinstance(key, str) and (found := _SURROGATE.search(key)) is not None:
                return f"{_surrogate(found, 'a key')} @ {_path((crumb, key))}"
            if (flaw := _flaw(child)) is not None:
                return f"{flaw} @ {_path((crumb, key))}"
            if isinstance(child, dict | list):
                if depth == _MAX_DEPTH:
                    if text is None:  # values given, not read: where is a path, not a line
                        return f"nested deeper than {_MAX_DEPTH} levels @ {_path((crumb, key))}"
                    return _too_deep(text, lines=lines)
                stack.append((_entries(child), (crumb, key), depth + 1))
                break
        else:
            stack.pop()
    return None


def _entries(container: dict[str, Any] | list[Any]) -> Iterator[tuple[str | int, Any]]:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _flaw(item: Any) -> str | None:
    """What is wrong with `item` itself, not counting what it holds."""
    if isinstance(item, str):
        found = _SURROGATE.search(item)
        return None if found is None else _surrogate(found, "a string")
    if isinstance(item, float) and not math.isfinite(item):
        return "NaN is not JSON" if math.isnan(item) else "a number too large for a float"
    if isinstance(item, _Refused):
        return item.what
    return None


def _surrogate(found: re.Match[str], where: str) -> str:
    return f"{where} holds a lone surrogate (\\u{ord(found.group()):04x}), which is not text"


def _path(crumb: _Crumb) -> str:
    keys: list[str | int] = []
    while crumb is not None:
        crumb, key = crumb
        keys.append(key)
    parts = ["$"]
    for key in reversed(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key)}]")  # ASCII, escapes and all: safe to print
    return "".join(parts)


def _too_deep(text: str, *, lines: bool) -> str:
    said = f"nested deeper than {_MAX_DEPTH} levels"
    depth = 0
    for token in _BRACKETS.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > _MAX_DEPTH:
                at = token.start()
                column = at - text.rfind("\n", 0, at)
                if lines:
                    return f"{said} at column {column}"
                line = text.count("\n", 0, at) + 1
                return f"{said} at line {line} column {column}"
        elif bracket in ("]", "}"):
            depth -= 1
    return said


def check(value: Any) -> None:
    """Refuse JSON values (what `machine.run` was given, unstructured) that the journal cannot
    take, as a file holding them would be refused, naming the field."""
    problem = _check(value, None, lines=False)
    if problem is not None:
        raise InputUnreadable(f"input: {problem}")
