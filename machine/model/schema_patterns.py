"""A validator's regular expression as a JSON Schema `pattern`: rewritten from Python's `re`
into a spelling that Python and ECMA-262 (with the "u" flag) read the same way, or refused with
a SchemaError that says what to write instead.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, TypeAlias

import attrs

from runjournal.machine.errors import SchemaError

# The end of the string, spelled the same in Python and ECMA-262: `$` would also match before
# a final newline in Python's `re`, which the `jsonschema` library uses for `pattern`.
END = "(?![\\s\\S])"

# The `jsonschema` library reads `pattern` with Python's `re.search`; JSON Schema
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


def json_pattern(compiled: re.Pattern[str], how: str, path: str) -> str:
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
        return anchored + END if how == "fullmatch" else anchored

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
            return END
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
