"""How the command line prints: aligned tables, one logfmt line per event, JSON.

An event line is logfmt, every field of the event as `key=value` under its own name, the name
its SQL view column has: `at=… run_id=3fa2… seq=12 step=score kind=decision item=T-17
outcome=skip`, so `journal logs RUN | grep outcome=skip` works and a logfmt parser reads it.
The same line is what `journal logs` prints and what a run prints live with `--log all`
(cli/live.py). By default a run prints a brief line instead (`brief_line`): the same logfmt, the
fields a person reads, long values cut shorter and floats rounded; the journal and `--json`
keep the exact values.

Everything printed from the journal went through `printable`, `json_line` or `event_line`
first: model answers, run input and whatever a pipeline wrote are not ours, and a string that
holds terminal controls must not reach the terminal as controls.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import IO, Any

from runjournal.journal import Event

_MAX_VALUE = 80

# What a hostile string uses to take over or deceive a terminal: C0 controls but tab and
# newline, DEL and C1 controls (ESC and CSI start escape sequences); Unicode's bidi controls,
# which reorder what is shown ("Trojan Source"); the line and paragraph separators; and lone
# surrogates, which cannot even be written as UTF-8. Tab and newline are added where a record
# must stay on one line.
_C0 = r"\x00-\x08\x0b-\x1f"
_OTHERS = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(rf"[\t\n{_C0}{_OTHERS}]")
_UNSAFE_MULTILINE = re.compile(rf"[{_C0}{_OTHERS}]")
# json.dumps escapes C0 itself: a raw C0 character in its output is an indent's newline.
_UNSAFE_IN_JSON = re.compile(rf"[{_OTHERS}]")
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _SHORT.get(c) or f"\\u{ord(c):04x}"


def _escape_in_json(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    r"""`text` with every character that could steer or deceive a terminal escaped, visibly.

    Escaped: C0 controls (tab and newline too, unless `multiline`), DEL, C1 controls, the
    Unicode bidi controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069: they
    reorder what the reader sees), the line and paragraph separators (U+2028, U+2029) and lone
    surrogates. Each becomes JSON's escape for it: `\n`, `\t`, `\r`, `\b`, `\f`, else `\u001b`,
    `\u009b`, `\u202e`, so that the journal's JSON columns (compact, one line) printed in a
    table or CSV stay valid JSON, with the same value.

    A backslash is left as it is: doubling it would garble the JSON that journal columns hold
    (`events.data`), so a literal `\u001b` in the text reads like an escaped ESC. That can make
    a string look more hostile than it is, never hide a control; `--json` gives exact values.
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    return pattern.sub(_escape, text)


def json_line(value: Any, **kw: Any) -> str:
    """`value` as JSON text (`json.dumps` keywords apply) that is safe to print, same value.

    Non-ASCII text stays readable, but DEL, C1 controls, bidi controls, the line and paragraph
    separators and lone surrogates are written as `\\uXXXX` escapes, as C0 controls always are.
    """
    return _UNSAFE_IN_JSON.sub(_escape_in_json, json.dumps(value, ensure_ascii=False, **kw))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as text columns, padded to the widest cell of each; each cell on one line.

    Numbers are printed exactly, never rounded: an integer as an integer, a float as Python's
    shortest repr that reads back as the same float (`1796400000.123`, `0.30000000000000004`),
    a Decimal as its exact decimal, not in exponent form (`0.000000001`). A reader audits with
    it: `1.7964e+09` for a lease's expiry is that time give or take hours.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    header = [printable(c) for c in columns]
    widths = [len(c) for c in header]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [header, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    # The base types' own methods: an int or float subclass may print itself otherwise.
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, Decimal):
        return f"{value:f}"
    return printable(str(value))


def plural(n: int, word: str) -> str:
    """`1 decision`, `2 decisions`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def short(value: Any, limit: int = _MAX_VALUE) -> str:
    """A value on one line, cut to `limit` characters, safe to print (see `printable`)."""
    return printable(_one_line(value, limit))


def _one_line(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json_line(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_VALUE = 300
"""Characters of a value a log line keeps; the rest is cut, with `…[+N chars]` saying so."""

# The fields of every event, first on its line, in this order. A field of the event's data
# with one of these names is written as `data.NAME` (run.started and snapshot have a `step`).
_FIXED = ("at", "run_id", "seq", "step", "kind")
# A value with any of these is quoted; a key has them escaped, since logfmt cannot quote keys.
# Whitespace of every kind is among them, so that splitting a line at spaces finds its pairs.
_NEEDS_QUOTES = re.compile(rf'[\s="\\{_C0}{_OTHERS}]')
# Escaped inside quotes: what go-logfmt escapes, and what a terminal must not be given.
_IN_QUOTES = re.compile(rf'[\\"\t\n\r{_C0}{_OTHERS}]')
_QUOTED = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_quoted(m: re.Match[str]) -> str:
    c = m.group()
    return _QUOTED.get(c) or f"\\u{ord(c):04x}"


def _escape_key(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def _key(key: Any) -> str:
    """A key of the event's data as a logfmt key: JSON's name for it, unsafe characters as
    `\\uXXXX` (a backslash too, so that the escape is unambiguous); `\\` for the empty key."""
    if isinstance(key, str):
        name = str.__str__(key)
    elif key is None or isinstance(key, bool):
        name = json.dumps(key)
    elif isinstance(key, int):
        name = int.__repr__(key)
    else:
        name = float.__repr__(key)
    return _NEEDS_QUOTES.sub(_escape_key, name) if name else "\\"


def _flatten(name: str, value: Any, out: list[tuple[str, Any]]) -> None:
    # An empty object stays a value (`inputs={}`): flattened, its key would vanish.
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{name}.{_key(key)}", inner, out)
    else:
        out.append((name, value))


def flat(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    """`fields` with nested objects flattened into dotted keys, in their order."""
    out: list[tuple[str, Any]] = []
    for key, value in fields.items():
        _flatten(_key(key), value, out)
    return out


def _text(value: Any, *, rounded: bool = False) -> str:
    # As the value's JSON reads (the journal holds JSON): so the line a run tells live, from
    # the values its code gave, is the line `journal logs` prints from the journal.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return rounded_float(value) if rounded else float.__repr__(value)
    return json_line(value, separators=(",", ":"))


def rounded_float(value: float) -> str:
    """`value` for reading: two decimals from 1 up (`latency_ms=19.24`), two significant digits
    below (`delay_s=0.028`, `cost_usd=0.00017`), no trailing zeros; an exponent only below
    10^-9 or from 10^15 up, where writing out the zeros would hide the number."""
    if not math.isfinite(value):
        return float.__repr__(value)
    if value == 0:
        return "0"
    if not 1e-9 <= abs(value) < 1e15:
        text = f"{value:.2g}"
        return text if math.isfinite(float(text)) else float.__repr__(value)  # near float's max
    # Digits after the point: 2 from 1 up; below, enough to keep two significant ones.
    places = max(2, 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


BRIEF_VALUE = 60
"""Characters of a value a brief line keeps; the rest is cut, with `…(N more)` saying so."""


def logfmt_value(value: Any, *, brief: bool = False) -> str:
    """One value as logfmt: bare if it can be, else quoted with escapes; None is empty.

    A quoted value is also a JSON string; objects and lists are compact JSON. A value longer
    than `MAX_VALUE` is cut and ends in `…[+N chars]`. `brief`: cut at `BRIEF_VALUE`, ending
    in `…(N more)`, and a float rounded (`rounded_float`).
    """
    if value is None:
        return ""
    text = _text(value, rounded=brief)
    if brief and len(text) > BRIEF_VALUE:
        text = f"{text[:BRIEF_VALUE]}…({len(text) - BRIEF_VALUE} more)"
    elif len(text) > MAX_VALUE:
        text = f"{text[:MAX_VALUE]}…[+{len(text) - MAX_VALUE} chars]"
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return f'"{_IN_QUOTES.sub(_escape_quoted, text)}"'


def logfmt(fields: Iterable[tuple[str, Any]], *, brief: bool = False) -> str:
    """`key=value` pairs (keys already logfmt keys), separated by spaces: one safe line."""
    return " ".join(f"{key}={logfmt_value(value, brief=brief)}" for key, value in fields)


def pairs(**fields: Any) -> str:
    """`fields` as one logfmt line, nested objects flattened (see `event_line`)."""
    return logfmt(flat(fields))


def event_fields(e: Event) -> list[tuple[str, Any]]:
    """The event's fields as its log line names them, in order: the fixed ones, then its data,
    flattened."""
    fields: list[tuple[str, Any]] = [
        ("at", e.at),
        ("run_id", e.run_id),
        ("seq", e.seq),
        ("step", e.step),
        ("kind", e.kind),
    ]
    for key, value in e.data.items():
        name = _key(key)
        _flatten(f"data.{name}" if name in _FIXED else name, value, fields)
    return fields


def event_line(e: Event) -> str:
    r"""The event as one logfmt line: `at run_id seq step kind`, then every field of its data.

    Each key is the field's own name (the name of its SQL view column too); nested objects are
    flattened with dotted keys (`usage.input_tokens=12`), lists are compact JSON, None is an
    empty value (`to=`) and the empty string `""`. A value with whitespace, `=`, `"`, `\` or a
    control is quoted, with `\"`, `\\`, `\n`, `\t`, `\r` and `\uXXXX` escapes (C0 and C1
    controls, DEL, bidi controls, separators): whatever a model wrote, an event is one line
    that a terminal shows as text and a logfmt parser reads back.
    """
    return logfmt(event_fields(e))


# Left out of a brief line: what a machine or an audit needs, not a person watching a run
# (ids, hashes, worst cases, the limits it started under, a traceback). Top-level data fields;
# `--log all`, `journal logs` and `--json` show them.
_BOOKKEEPING = frozenset(
    {
        "requested_at",
        "worst_case_usd",
        "worst_case_tokens",
        "request_id",
        "request_hash",
        "request",
        "mechanism",
        "code_hash",
        "code_hash_before",
        "input",
        "limits",
        "limit_overrides",
        "intent",
        "traceback",
        "baseline_code_hashes",
    }
)


def brief_fields(e: Event) -> list[tuple[str, Any]]:
    """The fields of the event's brief line: those of `event_fields` but the bookkeeping ones,
    the fields with no value (null), and token counts of 0 (most calls use no cache)."""
    fields = event_fields(e)
    fixed, data = fields[: len(_FIXED)], fields[len(_FIXED) :]
    return fixed + [
        (key, value)
        for key, value in data
        if key.split(".", 1)[0] not in _BOOKKEEPING
        and value is not None
        and not (key.startswith("usage.") and value == 0)
    ]


def brief_line(e: Event) -> str:
    """The event as a person reads it while the run executes: logfmt like `event_line`, the
    same keys, fewer of them (`brief_fields`), values cut at `BRIEF_VALUE` characters with
    `…(N more)`, floats rounded."""
    return logfmt(brief_fields(e), brief=True)


def event_json(e: Event) -> str:
    return json_line(
        {
            "run_id": e.run_id,
            "seq": e.seq,
            "at": e.at,
            "kind": e.kind,
            "step": e.step,
            "data": e.data,
        }
    )


def write_flushed(stream: IO[str], text: str) -> bool:
    """Write and flush; False if the stream cannot take it (a full disk, a closed pipe)."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        return False
    return True
