"""Every model of the price table, three ways: a plain ask, an ask with thinking on, and asks
inside `ctx.map`, each a run against the fake Messages API holding that model to its documented
contract. Each ends done; the journal records the mechanism of every request; every journaled
request fits the installed SDK's request types; and on the models that refuse a forced tool, no
request carries one.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from sdk_types import problems as sdk_problems

from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine import Context, Machine, Options, PriceTable, Transition, runner
from runjournal.machine.errors import RequestRefused
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.offline import offline

CAPS = Capabilities.load()
NO_FORCED_TOOL = ("claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1")
MODELS = PriceTable.load().models()


@attrs.frozen
class Verdict:
    """How urgent a ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


@attrs.frozen
class Work:
    tickets: tuple[str, ...]
    scores: tuple[int, ...] = ()


def can_think(model: str) -> bool:
    return bool({"adaptive", "enabled"} & set(CAPS.of(model).thinking.types))


def thinking_on(model: str) -> Any:
    """A setting that turns thinking on for `model`: a budget where only that is taken, else
    adaptive (which a model that cannot think refuses)."""
    types = CAPS.of(model).thinking.types
    return 2048 if "enabled" in types and "adaptive" not in types else "adaptive"


def matrix(model: str, way: str) -> Machine[Work]:
    thinking = thinking_on(model) if way == "thinking" else None
    m = Machine(
        "matrix", state=Work, start="score", model=model, max_tokens=4096, thinking=thinking
    )

    def ask(ctx: Context, ticket: str) -> int:
        return ctx.ask(Verdict, system="Score urgency 1 to 5.", prompt=ticket).score

    @m.step
    def score(ctx: Context, s: Work) -> Transition:
        if way == "map":
            scores = ctx.map(ask, s.tickets, key=lambda t: t.split()[0])
        else:
            scores = [ask(ctx, t) for t in s.tickets]
        return ctx.finish(attrs.evolve(s, scores=tuple(scores)))

    return m


@pytest.mark.parametrize("way", ["plain", "thinking", "map"])
@pytest.mark.parametrize("model", MODELS)
def test_every_model_every_way(journal: Journal, model: str, way: str) -> None:
    caps = CAPS.of(model)
    tickets = ("t1 the site is down", "t2 an invoice is wrong", "t3 how do I export")
    prepared = runner.prepare(matrix(model, way), {"tickets": list(tickets)})
    options = Options(models=offline("none"), sleep=lambda s: None)
    if caps.status == "retired" or (way == "thinking" and not can_think(model)):
        # Refused before anything is sent, naming the reason: no request, no cost.
        outcome = runner.start(journal, prepared, target="t", code_hash="0", options=options)
        assert outcome.run.status == "failed"
        assert RequestRefused.__name__ in (outcome.run.error or "")
        assert list(journal.events(outcome.run.run_id, kinds=(k.MODEL_REQUESTED,))) == []
        return
    outcome = runner.start(journal, prepared, target="t", code_hash="0", options=options)
    assert outcome.run.status == "done", outcome.run.error
    assert all(1 <= s <= 5 for s in outcome.state.scores)
    requested = list(journal.events(outcome.run.run_id, kinds=(k.MODEL_REQUESTED,)))
    assert len(requested) == len(tickets)
    for event in requested:
        body = json.loads(journal.blob(event.data["request"]))
        assert sdk_problems(body) == [], body
        assert event.data["mechanism"] == caps.structured_answer
        if model in NO_FORCED_TOOL:
            assert body.get("tool_choice", {}).get("type") not in ("tool", "any")
    answered = list(journal.events(outcome.run.run_id, kinds=(k.MODEL_ANSWERED,)))
    thinks = way == "thinking" or caps.thinking.on_by_default
    for event in answered:
        kinds = [block["type"] for block in event.data["content"]]
        assert (kinds[0] == "thinking") is thinks, kinds
        if thinks:  # thinking tokens are output tokens: billed, within max_tokens
            assert event.data["usage"]["thinking_tokens"] > 0
            assert event.data["usage"]["output_tokens"] <= 4096
