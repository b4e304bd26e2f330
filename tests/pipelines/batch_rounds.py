"""Rounds of items, each round scored in one Message Batch (`ctx.ask_batch`) and each item
decided: the batch crash tests' run, one batch per step visit.

Input: {"rounds": R, "per": N, "poll": seconds before looking at a running batch again}.
"""

from __future__ import annotations

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Verdict:
    """How urgent an item is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    """1 (whenever) to 5 (now)."""
    reason: str = attrs.field(validator=attrs.validators.min_len(1))


@attrs.frozen
class Rounds:
    rounds: int
    per: int
    poll: float = 30.0
    done: int = 0


batch_rounds = Machine("batch_rounds", state=Rounds, start="score")


@batch_rounds.step(to=("score",))
def score(ctx: Context, s: Rounds) -> Transition:
    if s.done == s.rounds:
        return ctx.finish(s)
    items = {
        f"r{s.done}-{i}": f"Item {i} of round {s.done}: the report is late." for i in range(s.per)
    }
    verdicts = ctx.ask_batch(
        Verdict,
        items,
        system="Score how urgent each item is.",
        model="claude-haiku-5-5",
        max_tokens=200,
        thinking="disabled",
        poll=s.poll,
    )
    for key, verdict in verdicts.items():
        ctx.decide(item=key, outcome=str(verdict.score), reason=verdict.reason)
    return ctx.goto("score", attrs.evolve(s, done=s.done + 1))
