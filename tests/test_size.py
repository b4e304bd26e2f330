"""The journal grows with what changes, not with the size of the state times the steps."""

from __future__ import annotations

from pathlib import Path

import attrs

from journal import Journal, state_at
from machine import Context, Machine, Transition, runner


@attrs.frozen
class Item:
    text: str
    done: bool = False


@attrs.frozen
class Items:
    items: tuple[Item, ...]
    next: int = 0


work = Machine("work", state=Items, start="mark")


@work.step
def mark(ctx: Context, s: Items) -> Transition:
    if s.next == len(s.items):
        return ctx.finish(s)
    items = list(s.items)
    items[s.next] = attrs.evolve(items[s.next], done=True)
    return ctx.goto("mark", Items(tuple(items), s.next + 1))


def test_a_thousand_steps_over_a_500_kb_state_write_under_2_mb(db: Path) -> None:
    state = {"items": [{"text": f"{i:04d}" + "x" * 496} for i in range(1000)]}
    with Journal.open(db, create=True) as journal:
        outcome = runner.start(
            journal, runner.prepare(work, state), target="test:work", code_hash="0"
        )
        assert outcome.run.steps == 1001
        final = state_at(journal, outcome.run.run_id).state
        assert all(item["done"] for item in final["items"])
        journal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    # The first state alone is 0.5 MB (and the input, stored once, as much again); a copy of
    # the state per step would be 500 MB.
    assert size < 2_000_000, f"{size} bytes"
