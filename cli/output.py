"""How the command line prints: aligned tables, one grep-able line per event, JSON.

An event line is `at run seq step kind summary`, with the summary in `key=value` form where
the event has fields worth reading, so `journal logs RUN | grep outcome=page` works.

Everything printed from the journal went through `printable` or `json_line` first: model
answers, run input and whatever a pipeline wrote are not ours, and a string that holds
terminal controls must not reach the terminal as controls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from journal import Event
from journal import events as k

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
    """Rows as text columns, padded to the widest cell of each; each cell on one line."""
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
    if isinstance(value, float):
        return f"{value:.6g}"
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


def pairs(**fields: Any) -> str:
    """`key=value` pairs, quoting values with spaces; None values are left out.

    A quoted value is a JSON string, whose escapes also carry any control it holds: the line
    stays one line, and each value reads back exactly (up to the cut at 80 characters).
    """
    out = []
    for key, value in fields.items():
        if value is None:
            continue
        text = _one_line(value, _MAX_VALUE)
        # A string with spaces, quotes or controls is quoted; JSON values (objects, lists) stand
        # as they are, already escaped.
        if not text or (
            isinstance(value, str)
            and (any(c.isspace() or c == '"' for c in text) or _UNSAFE.search(text))
        ):
            text = json_line(text)
        out.append(f"{key}={text}")
    return " ".join(out)


def _started(d: dict[str, Any]) -> str:
    return pairs(machine=d["machine"], target=d["target"], key=d.get("run_key"), step=d["step"])


def _resumed(d: dict[str, Any]) -> str:
    code = d.get("code_hash")
    before = d.get("code_hash_before")
    return pairs(
        from_seq=d.get("from_seq"),
        was=d.get("status_before"),
        code=code if code == before else f"{before}->{code}",
        taken_over_from=d.get("taken_over_from"),
    )


def _transition(d: dict[str, Any]) -> str:
    return pairs(to=d["to"] or "(end)", changes=len(d["delta"]))


def _effect(d: dict[str, Any]) -> str:
    return pairs(name=d["name"], call=d["call"], result=d["result"])


def _decision(d: dict[str, Any]) -> str:
    return pairs(
        item=d["item"], outcome=d["outcome"], reason=d.get("reason"), **d.get("inputs", {})
    )


def _failed(d: dict[str, Any]) -> str:
    return pairs(error=d["error"])


def _asked(d: dict[str, Any]) -> str:
    return pairs(call=d["call"], round=d["round"], attempt=d["attempt"], model=d["model"])


def _model_failed(d: dict[str, Any]) -> str:
    return pairs(
        call=d["call"],
        round=d["round"],
        attempt=d["attempt"],
        status=d["status"],
        error=d["error_type"],
        retry_in=d["delay_s"] if d["delay_s"] is None else round(d["delay_s"], 3),
        request_id=d["request_id"],
    )


def _answered(d: dict[str, Any]) -> str:
    u = d["usage"]
    return pairs(
        call=d["call"],
        round=d["round"],
        model=d["model"],
        stop=d["stop_reason"],
        tokens_in=u["input_tokens"],
        tokens_out=u["output_tokens"],
        cache_write=u["cache_write_5m_tokens"] + u["cache_write_1h_tokens"] or None,
        cache_read=u["cache_read_tokens"] or None,
        cost_usd=f"{d['cost_usd']:.6f}",
        ms=d["latency_ms"],
        request_id=d["request_id"],
    )


def _rejected(d: dict[str, Any]) -> str:
    return pairs(call=d["call"], round=d["round"], schema=d["name"], errors="; ".join(d["errors"]))


def _action(d: dict[str, Any]) -> str:
    return pairs(
        action=d["name"],
        key=d["key"],
        attempt=d.get("attempt"),
        result=d.get("result"),
        done_in_run=d.get("done_in_run"),
        outcome=d.get("outcome"),
        by=d.get("by"),
    )


def _action_failed(d: dict[str, Any]) -> str:
    return pairs(
        action=d["name"],
        key=d["key"],
        attempt=d["attempt"],
        status=d["status"],
        error=d["error_type"],
        in_doubt=d["in_doubt"] or None,
        retry_in=d["delay_s"],
        message=d["message"],
    )


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    k.RUN_STARTED: _started,
    k.RUN_RESUMED: _resumed,
    k.TRANSITION: _transition,
    k.SNAPSHOT: lambda d: pairs(step=d["step"], transitions=d["transitions"]),
    k.EFFECT_DONE: _effect,
    k.DECISION: _decision,
    k.RUN_FAILED: _failed,
    k.RUN_DONE: lambda d: pairs(steps=d.get("steps")),
    k.MODEL_REQUESTED: _asked,
    k.MODEL_FAILED: _model_failed,
    k.MODEL_ANSWERED: _answered,
    k.OUTPUT_REJECTED: _rejected,
    k.ACTION_INTENDED: _action,
    k.ACTION_DONE: _action,
    k.ACTION_SKIPPED: _action,
    k.ACTION_RESOLVED: _action,
    k.ACTION_FAILED: _action_failed,
    k.RUN_NEEDS_ATTENTION: lambda d: pairs(action=d["name"], key=d["key"], message=d["message"]),
}


def event_line(e: Event) -> str:
    summary = SUMMARIES.get(e.kind)
    text = summary(e.data) if summary is not None else short(e.data, 160)
    # The summary is safe already; the fields before it come from the journal too.
    return printable(f"{e.at} {e.run_id} {e.seq:>5} {e.step or '-'} {e.kind} {text}".rstrip())


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
