"""A parallel step: every ticket scored by the model at once, up to 16 in flight (`ctx.map`).

    journal run tests/pipelines/parallel.py --input tickets.json

The input is {"tickets": ["T-1", ...]}; the final state holds one score per ticket, in order.
"""

from __future__ import annotations

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Urgency:
    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


@attrs.frozen
class Scored:
    ticket: str
    score: int


@attrs.frozen
class Batch:
    tickets: tuple[str, ...]
    scored: tuple[Scored, ...] = ()


scoring = Machine("scoring", state=Batch, start="score", model="claude-haiku-4-5", max_tokens=64)


def one(ctx: Context, ticket: str) -> Scored:
    urgency = ctx.ask(Urgency, prompt=f"How urgent is ticket {ticket}?")
    outcome = "page" if urgency.score >= 4 else "skip"
    ctx.decide(item=ticket, outcome=outcome, reason=urgency.reason, score=urgency.score)
    return Scored(ticket, urgency.score)


@scoring.step(to=())
def score(ctx: Context, s: Batch) -> Transition:
    scored = ctx.map(one, s.tickets, key=lambda t: t, concurrency=16)
    return ctx.finish(attrs.evolve(s, scored=tuple(scored)))
