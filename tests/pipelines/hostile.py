"""A machine whose input, prompt, answer, decision and effect all hold markup and terminal
escapes: for the audit page's hostile-input test (tests/end_to_end/test_page.py).

The answer's one field is a Literal of hostile strings, so that the fake model, which answers
within the schema, can only answer with one of them.
"""

from __future__ import annotations

from typing import Literal

import attrs

from runjournal import Context, Machine, Transition

SCRIPT = "<script>window.__pwned = 1</script>"
IMAGE = '<img src=x onerror="window.__pwned = 2">'
TERMINAL = "\x1b[2J\x1b[31mred\x1b[0m\u202eevil"


@attrs.frozen
class Verdict:
    label: Literal["<script>window.__pwned = 3</script>", '<b onmouseover="window.__pwned=4">b</b>']


@attrs.frozen
class Poison:
    text: str
    html: str
    terminal: str
    label: str | None = None


hostile = Machine("hostile", state=Poison, start="judge")


@hostile.step
def judge(ctx: Context, s: Poison) -> Transition:
    prompt = f"Judge {s.text} and {s.html} and {s.terminal}"
    verdict = ctx.ask(Verdict, prompt=prompt, model="claude-haiku-5-5", max_tokens=200)
    ctx.decide(item=s.html, outcome=verdict.label, reason=s.terminal, text=s.text)
    ctx.effect("echo", lambda: {"said": s.text, "terminal": s.terminal})
    return ctx.finish(attrs.evolve(s, label=verdict.label))
