"""A machine whose one effect blocks: a test signals the process while it is inside it.

    {"marker": "path", "out": "path"}

The effect writes `marker`, then waits for an hour; a test that saw the marker knows the run
is inside a step's own code, away from any safe point. The second step appends to `out`.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Waiting:
    marker: str
    out: str
    waited: bool = False


blocking = Machine("blocking", state=Waiting, start="wait")


@blocking.step
def wait(ctx: Context, s: Waiting) -> Transition:
    ctx.effect("wait", lambda: block(s.marker))
    return ctx.goto("write", attrs.evolve(s, waited=True))


@blocking.step
def write(ctx: Context, s: Waiting) -> Transition:
    ctx.effect("write", lambda: append(s.out))
    return ctx.finish(s)


def block(marker: str) -> bool:
    if Path(marker).exists():
        return True  # a resume: the test has seen the marker already
    Path(marker).write_text("in the effect")
    time.sleep(3600)
    return True


def append(out: str) -> str:
    with open(out, "a") as f:
        f.write("written\n")
    return "written"
