"""A machine over a big input, run by tests/machine/test_size.py through `journal run`: its
state holds the input's items, and a 10 KB note changed at each of its 40 steps makes
snapshots come every dozen steps or so."""

from __future__ import annotations

import time

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Lines:
    items: tuple[str, ...]
    next: int = 0
    note: str = ""
    pause: float = 0.0  # seconds a step takes, so that a test can kill it midway


lines = Machine("lines", state=Lines, start="step", snapshot_every=5)


@lines.step
def step(ctx: Context, s: Lines) -> Transition:
    if s.next == 40:
        return ctx.finish(s)
    time.sleep(s.pause)
    # 10 KB of note a step: snapshots come every dozen or so steps.
    return ctx.goto("step", attrs.evolve(s, next=s.next + 1, note=f"{s.next:04d}" * 2500))
