"""A machine that takes its input as its state and is done: for the tests of input rules
(tests/machine/test_input.py), from Python and through `journal run`."""

from __future__ import annotations

from typing import Any

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Holder:
    items: tuple[str, ...] = ()
    data: Any = None


holding = Machine("holding", state=Holder, start="end")


@holding.step
def end(ctx: Context, s: Holder) -> Transition:
    return ctx.finish(s)
