"""Items scored in one Message Batch (`ctx.ask_batch`), each decided: the batch crash tests' run.

Input: {"items": {"KEY": "text", ...}, "poll": seconds before looking at a running batch again}.
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
class Work:
    items: dict[str, str]
    poll: float = 30.0
    scores: dict[str, int] = attrs.Factory(dict)


batched = Machine("batched", state=Work, start="score")


@batched.step
def score(ctx: Context, s: Work) -> Transition:
    verdicts = ctx.ask_batch(
        Verdict,
        s.items,
        system="Score how urgent each item is.",
        model="claude-haiku-5-5",
        max_tokens=200,
        thinking="disabled",
        poll=s.poll,
    )
    for key, verdict in verdicts.items():
        ctx.decide(item=key, outcome=str(verdict.score), reason=verdict.reason)
    return ctx.finish(attrs.evolve(s, scores={k: v.score for k, v in verdicts.items()}))
