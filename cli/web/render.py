"""How the page says things: the Jinja environment, its filters, a state as a tree with the
last change marked, and bar charts as SVG.

Every value from a journal is text to the page, never markup: Jinja escapes HTML everywhere
(autoescape), and `text` first makes terminal controls and bidi overrides visible as escapes
(`printable`, as the CLI does), so a prompt holding `<script>` or `ESC[2J` shows as just that.
The only markup built here is from escaped pieces (`Markup.format`, `escape`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from runjournal.cli.costs import dollars
from runjournal.cli.output import printable, short
from runjournal.journal.delta import escape as escape_token
from runjournal.journal.kinds import to_step

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> jinja2.Environment:
    """The page's templates, HTML escaped everywhere."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        # Events written before a field existed lack it: a missing field reads as nothing.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["text"] = text
    env.filters["brief"] = brief
    env.filters["pretty"] = pretty
    env.filters["dollars"] = money
    env.filters["tokens"] = tokens
    env.filters["seconds"] = seconds
    env.globals["state_tree"] = state_tree
    env.globals["bars"] = bars
    env.globals["to_step"] = to_step
    return env


def text(value: Any) -> str:
    """A value as the page shows it: controls made visible (then HTML-escaped by Jinja)."""
    if value is None or isinstance(value, jinja2.Undefined):
        return "-"
    return printable(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def brief(value: Any) -> str:
    """A value on one line, cut to 300 characters: what a line of the timeline shows of it."""
    return "-" if value is None or isinstance(value, jinja2.Undefined) else short(value, 300)


def pretty(value: Any) -> str:
    """A JSON value indented, or a text as it is, with controls made visible."""
    if isinstance(value, str):
        return printable(value, multiline=True)
    return printable(json.dumps(value, indent=2, ensure_ascii=False), multiline=True)


def money(value: Decimal | float | int | None) -> str:
    if value is None:
        return "-"
    return dollars(value if isinstance(value, Decimal) else Decimal(str(value)))


def tokens(value: int | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


MEMBERS_SHOWN = 2000
"""The state tree shows this many members at most: a state of a million items is a page of
them and a line saying how many more, not megabytes of HTML."""


def state_tree(state: Any, changed: set[str], limit: int = MEMBERS_SHOWN) -> Markup:
    """The state as nested lists of its members, each written by the last transition marked
    (`class="changed"`, `data-path` its JSON Pointer), so a reader sees the delta in place."""
    return _node(state, "", changed, [limit])


def _node(value: Any, path: str, changed: set[str], left: list[int]) -> Markup:
    mark = path in changed
    if isinstance(value, dict | list) and value:
        keys = list(value) if isinstance(value, dict) else range(len(value))
        lines: list[Markup] = []
        for key in keys:
            if left[0] <= 0:
                more = len(keys) - len(lines)
                lines.append(Markup('<li class="more">… {} more</li>').format(f"{more:,}"))
                break
            left[0] -= 1
            inner = _node(value[key], f"{path}/{escape_token(key)}", changed, left)
            if isinstance(value, dict):
                label = Markup('<span class="key">{}</span>: ').format(text(key))
            else:
                label = Markup('<span class="index">{}</span> ').format(key)
            lines.append(Markup("<li>{}{}</li>").format(label, inner))
        tag = "ul" if isinstance(value, dict) else "ol"
        kind = "obj" if isinstance(value, dict) else "arr"
        body = Markup('<{0} class="{1}">{2}</{0}>').format(
            Markup(tag), Markup(kind), Markup("").join(lines)
        )
        return _wrap(body, path, mark)
    shown = json.dumps(value, ensure_ascii=False)
    return _wrap(Markup('<code class="val">{}</code>').format(printable(shown)), path, mark)


def _wrap(inner: Markup, path: str, mark: bool) -> Markup:
    if not mark:
        return inner
    return Markup('<span class="changed" data-path="{}">{}</span>').format(path or "/", inner)


def bars(
    labels: Sequence[str], values: Sequence[Decimal], *, title: str, width: int = 720
) -> Markup:
    """A bar chart in SVG: one bar per label, its value in dollars as its tooltip and label."""
    height, top, bottom, left = 180, 16, 40, 8
    n = max(len(values), 1)
    peak = max([v for v in values if v is not None] + [Decimal(0)]) or Decimal(1)
    slot = (width - left * 2) / n
    parts = [
        Markup(
            '<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
        ).format(w=width, h=height, t=title)
    ]
    plot = height - top - bottom
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = float(value / peak) * plot if value else 0.0
        x = left + i * slot
        parts.append(
            Markup(
                '<g><title>{label}: {amount}</title><rect class="bar" x="{x:.1f}" y="{y:.1f}" '
                'width="{bw:.1f}" height="{h:.1f}"/>'
                '<text class="tick" x="{cx:.1f}" y="{ty}" text-anchor="end" '
                'transform="rotate(-45 {cx:.1f} {ty})">{short}</text></g>'
            ).format(
                label=label,
                amount=money(value),
                x=x + slot * 0.1,
                y=top + plot - h,
                bw=slot * 0.8,
                h=h,
                cx=x + slot / 2,
                ty=height - bottom + 12,
                short=label[-5:],
            )
        )
    parts.append(
        Markup('<text class="peak" x="{x}" y="12">{amount} max</text></svg>').format(
            x=left, amount=money(peak)
        )
    )
    return Markup("").join(parts)
