"""Tests for `machine/model/prices.json` against genai-prices, a price table others keep.

For every model of ours that genai-prices knows under its "anthropic" provider, the five
per-token amounts are compared on the days that matter (each of our `since` dates, each of its
start dates and the day before, and today) and at prompt sizes either side of every band
threshold either table has. genai-prices writes a band as `TieredPrices(base, tiers=[Tier(start,
price)])`, where a prompt over `start` pays the tier's price for all its tokens, as ours does;
a dated price as a list of `ConditionalPrice(constraint=StartDateConstraint(start_date))`, the
last one started in force; and batch and fast mode as `price_variants`, left out here: we
compare standard prices only. A difference fails unless KNOWN explains it.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from typing import Any

import pytest

from runjournal.machine.errors import UnknownModel
from runjournal.machine.model.pricing import PriceTable, Usage, cost

genai_prices = pytest.importorskip("genai_prices")
genai_data = pytest.importorskip("genai_prices.data")
genai_types = pytest.importorskip("genai_prices.types")

TODAY = datetime.date(2026, 12, 4)

THEIRS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_write_5m": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "cache_read": "cache_read_mtok",
}
"""Our name of each amount, and genai-prices' (its `cache_write_mtok` is the 5-minute write)."""

SAME_MODEL = {
    "claude-3-5-haiku-20241022": "claude-3-5-haiku-latest",
    "claude-3-haiku-20240307": "claude-3-haiku",
}
"""Our models that genai-prices lists under another id."""

_SONNET_4 = (
    "Sonnet 4's 1M-context beta billed prompts over 200K at the long-context rates "
    "(anthropic.com/news/1m-context, 2025-08-12); genai-prices prices Sonnet 4 flat"
)
_SONNET_55 = (
    "genai-prices keeps only Sonnet 5.5's current cache read (0.10), not the 0.20 it cost "
    "from its release on 2026-09-28 until the cut of 2026-10-07"
)

KNOWN = {
    ("claude-sonnet-4-0", "2026-02-17", "over 200000", "input"): _SONNET_4,
    ("claude-sonnet-4-0", "2026-02-17", "over 200000", "output"): _SONNET_4,
    ("claude-sonnet-4-0", "2026-02-17", "over 200000", "cache_write_5m"): _SONNET_4,
    ("claude-sonnet-4-0", "2026-02-17", "over 200000", "cache_write_1h"): _SONNET_4,
    ("claude-sonnet-4-0", "2026-02-17", "over 200000", "cache_read"): _SONNET_4,
    ("claude-sonnet-5-5", "2026-09-28", "base", "cache_read"): _SONNET_55,
}
"""Differences explained: (model, `since` of our entry, prompt band, amount) to the reason."""

NOT_OURS: dict[str, str] = {}
"""Current models of genai-prices' that we do not price, each with the reason."""


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def anthropic() -> Any:
    return next(p for p in genai_data.providers if p.id == "anthropic")


def their_model(anthropic: Any, model: str) -> Any:
    """genai-prices' model for ours, or None; a match under an unexpected id fails."""
    found = anthropic.find_model(model)
    if found is not None:
        assert found.id == SAME_MODEL.get(model, model), f"{model} matched {found.id}"
    return found


def conditional(theirs: Any) -> list[Any]:
    prices = theirs.prices
    return prices if isinstance(prices, list) else [genai_types.ConditionalPrice(prices=prices)]


def thresholds(table: PriceTable, model: str, theirs: Any) -> set[int]:
    ours = {band.over for price in table.entries[model] for band in price.bands}
    tiers = {
        tier.start
        for dated in conditional(theirs)
        for key in THEIRS.values()
        if isinstance(value := getattr(dated.prices, key), genai_types.TieredPrices)
        for tier in value.tiers
    }
    return ours | tiers


def days(table: PriceTable, model: str, theirs: Any) -> set[datetime.date]:
    ours = [price.since for price in table.entries[model]]
    starts = [
        dated.constraint.start_date
        for dated in conditional(theirs)
        if isinstance(dated.constraint, genai_types.StartDateConstraint)
    ]
    # The day before a change too, but not before our first entry: no call was answered then.
    before = [day - datetime.timedelta(days=1) for day in [*ours[1:], *starts]]
    return {*ours, *starts, *before, TODAY}


def their_amount(theirs: Any, day: datetime.date, prompt: int, key: str) -> Decimal | None:
    noon = datetime.datetime.combine(day, datetime.time(12), tzinfo=datetime.UTC)
    value = getattr(theirs.get_prices(noon), key)
    if value is None:
        return None
    # Their own tier rule: count 1 token of a prompt of `prompt` tokens, per 1 token.
    return Decimal(genai_types.calc_unit_price(value, 1, prompt, 1))


def differences(table: PriceTable, anthropic: Any) -> dict[tuple[str, str, str, str], list[str]]:
    """Each (model, our entry's `since`, band, amount) where the tables differ, with where."""
    found: dict[tuple[str, str, str, str], list[str]] = {}
    for model in table.models():
        theirs = their_model(anthropic, model)
        if theirs is None:
            continue
        limits = sorted(thresholds(table, model, theirs))
        prompts = sorted({1, *limits, *(t + 1 for t in limits)})
        for day in sorted(days(table, model, theirs)):
            entry = table.price(model, on=day)
            for prompt in prompts:
                over = [t for t in limits if prompt > t]
                band = f"over {over[-1]}" if over else "base"
                ours = entry.for_prompt(prompt)
                for name, key in THEIRS.items():
                    mine, other = getattr(ours, name), their_amount(theirs, day, prompt, key)
                    if other is None or mine != other:
                        key4 = (model, entry.since.isoformat(), band, name)
                        found.setdefault(key4, []).append(
                            f"{model} on {day} ({band}, a prompt of {prompt:,}): "
                            f"{name} ours {mine}, theirs {other}"
                        )
    return found


def test_prices_agree_with_genai_prices(table: PriceTable, anthropic: Any) -> None:
    """Every amount of every model both tables price is the same, or explained in KNOWN."""
    found = differences(table, anthropic)
    unexplained = [line for key, lines in found.items() if key not in KNOWN for line in lines]
    assert not unexplained, "prices.json and genai-prices differ:\n" + "\n".join(unexplained)
    stale = sorted(set(KNOWN) - set(found))
    assert not stale, f"KNOWN explains differences there no longer are; remove: {stale}"


def generation(model_id: str) -> tuple[int, int]:
    """(major, minor) of a model id: `claude-opus-4-5` is (4, 5), `claude-3-5-haiku-latest`
    (3, 5)."""
    new = re.fullmatch(r"claude-[a-z]+-(\d+)(?:-(\d+))?", model_id)
    old = re.fullmatch(r"claude-v?(\d+)(?:-(\d))?(?:-[a-z].*)?", model_id)
    matched = new or old
    assert matched, f"cannot tell the generation of genai-prices' {model_id!r}; teach generation()"
    return int(matched[1]), int(matched[2] or 0)


def test_current_models_are_priced(table: PriceTable, anthropic: Any) -> None:
    """Every model genai-prices knows from the 4.5 generation on is in our table, or NOT_OURS."""
    assert generation("claude-opus-4-5") == (4, 5)
    assert generation("claude-3-5-haiku-latest") == (3, 5)
    current = sorted(m.id for m in anthropic.models if generation(m.id) >= (4, 5))
    assert "claude-haiku-5-5" in current
    missing = []
    for model_id in current:
        try:
            table.price(model_id)
        except UnknownModel:
            if model_id not in NOT_OURS:
                missing.append(model_id)
    assert not missing, f"genai-prices prices models we do not: {missing}"


@pytest.mark.parametrize("prompt", [100_000, 100_001])
def test_cost_agrees_around_a_band(table: PriceTable, prompt: int) -> None:
    """A Haiku 5.5 call costs the same by both, its usage read by each from the same API body:
    so both take the prompt to be input, cache writes and cache reads, and price thinking once."""
    body: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "usage": {
            "input_tokens": prompt - 70_000,
            "cache_creation_input_tokens": 30_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 10_000,
                "ephemeral_1h_input_tokens": 20_000,
            },
            "cache_read_input_tokens": 40_000,
            "output_tokens": 3_000,
            "output_tokens_details": {"thinking_tokens": 2_500},
        },
    }
    at = datetime.datetime.combine(TODAY, datetime.time(12), tzinfo=datetime.UTC)
    extracted = genai_prices.extract_usage(body, provider_id="anthropic")
    theirs = extracted.calc_price(genai_request_timestamp=at).total_price
    ours = cost(table.price("claude-haiku-5-5", on=TODAY), Usage.from_api(body["usage"]))
    assert ours == theirs
