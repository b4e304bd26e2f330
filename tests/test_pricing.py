"""Tests for `machine.model.pricing`: usage from the API, exact cost, price tables and files."""

from __future__ import annotations

import datetime
import json
import typing
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic.types
import pytest

from machine.model.pricing import (
    AMOUNTS,
    Price,
    PriceFileError,
    PriceTable,
    UnknownModel,
    Usage,
    cost,
)

SHIPPED = Path(__file__).resolve().parent.parent / "machine" / "model" / "prices.json"

SONNET_45 = {
    "input": "3",
    "output": "15",
    "cache_write_5m": "3.75",
    "cache_write_1h": "6",
    "cache_read": "0.30",
}

# Rows whose ratios to the input price are not the standard ones (5m write 1.25x, 1h write 2x,
# cache hit 0.1x). The research (llm-anchors.md §3.7) gives them so: Haiku 3 writes at 0.30 and
# reads at 0.03 on a 0.25 input; Fable and Mythos 5.1 read at 0.25, 0.025x of 10.
NONSTANDARD = {
    ("claude-3-haiku-20240307", "cache_write_5m"),
    ("claude-3-haiku-20240307", "cache_read"),
    ("claude-fable-5-1", "cache_read"),
    ("claude-mythos-5-1", "cache_read"),
}

STANDARD = {
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal(2),
    "cache_read": Decimal("0.1"),
}


def entry(since: str, **amounts: str) -> dict[str, str]:
    return {"since": since, **SONNET_45, "source": "https://example.test/prices", **amounts}


def price_file(tmp_path: Path, doc: Any, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


# --- Usage.from_api -------------------------------------------------------------------------


def recorded_usage() -> dict[str, Any]:
    """A `message.usage.model_dump()` with both cache writes and a cache read."""
    return anthropic.types.Usage(
        input_tokens=1_234,
        output_tokens=987,
        cache_creation_input_tokens=7_000,
        cache_read_input_tokens=48_210,
        cache_creation=anthropic.types.CacheCreation(
            ephemeral_5m_input_tokens=2_500, ephemeral_1h_input_tokens=4_500
        ),
        service_tier="standard",
    ).model_dump()


def test_from_api_with_breakdown() -> None:
    """The 5m/1h split comes from `cache_creation`; the other fields pass through."""
    usage = Usage.from_api(recorded_usage())
    assert usage == Usage(
        input_tokens=1_234,
        output_tokens=987,
        cache_write_5m_tokens=2_500,
        cache_write_1h_tokens=4_500,
        cache_read_tokens=48_210,
    )
    assert usage.cache_write_tokens == 7_000


def test_from_api_without_breakdown() -> None:
    """With no `cache_creation`, every written token is a 5-minute write."""
    usage = Usage.from_api(
        {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 40,
        }
    )
    assert usage == Usage(10, 20, cache_write_5m_tokens=300, cache_read_tokens=40)


def test_from_api_none_counts_are_zero() -> None:
    """Null counts, as the SDK dumps them for a call without caching, are 0."""
    dumped = anthropic.types.Usage(input_tokens=5, output_tokens=7).model_dump()
    assert dumped["cache_creation_input_tokens"] is None
    assert Usage.from_api(dumped) == Usage(5, 7)
    split = {"ephemeral_5m_input_tokens": None, "ephemeral_1h_input_tokens": 8}
    nulls = {"input_tokens": None, "output_tokens": 3, "cache_creation": split}
    assert Usage.from_api(nulls) == Usage(0, 3, cache_write_1h_tokens=8)


def test_from_api_breakdown_short_of_total() -> None:
    """Written tokens the breakdown does not account for are priced as 5-minute writes."""
    usage = Usage.from_api(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 60},
        }
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (40, 60)


@pytest.mark.parametrize(
    ("usage", "says"),
    [
        ({}, "no 'input_tokens'"),
        ({"input_tokens": 1}, "no 'output_tokens'"),
        ({"input_tokens": -1, "output_tokens": 1}, "'input_tokens'"),
        ({"input_tokens": 1, "output_tokens": "2"}, "'output_tokens'"),
        ({"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 1.5}, "cache_read"),
        ({"input_tokens": 1, "output_tokens": 1, "cache_creation": 5}, "'cache_creation'"),
    ],
)
def test_from_api_rejects_what_is_not_usage(usage: dict[str, Any], says: str) -> None:
    """Missing, negative or non-integer counts are an error naming the field, not a guess."""
    with pytest.raises(ValueError, match=says):
        Usage.from_api(usage)


def test_usage_rejects_negative_counts() -> None:
    """A Usage cannot hold a negative count."""
    with pytest.raises(ValueError, match="cache_read_tokens"):
        Usage(1, 1, cache_read_tokens=-5)


# --- cost -----------------------------------------------------------------------------------


def test_cost_by_hand(table: PriceTable) -> None:
    """A recorded call with 5m and 1h writes and a cache read costs what the arithmetic says."""
    price = table.price("claude-sonnet-4-5-20250929")
    # Sonnet 4.5, USD per million tokens: in 3, 5m write 3.75, 1h write 6, hit 0.30, out 15.
    #   input        1,234 x 3    =  3,702
    #   5m writes    2,500 x 3.75 =  9,375
    #   1h writes    4,500 x 6    = 27,000
    #   cache reads 48,210 x 0.30 = 14,463
    #   output         987 x 15   = 14,805
    #                       total = 69,345 per million tokens = $0.069345
    got = cost(price, Usage.from_api(recorded_usage()))
    # Half up, as money is rounded; round() would go half-even, to 0.06934.
    assert got.quantize(Decimal("0.00001"), rounding=ROUND_HALF_UP) == Decimal("0.06935")
    assert got == Decimal("0.069345")


def test_cost_is_exact_at_scale() -> None:
    """Huge counts and many decimals lose nothing: Decimal, never float."""
    price = Price("m", *(Decimal("0.000001"),) * 5, datetime.date(2026, 1, 1), "https://x.test")
    usage = Usage(10**15 + 1, 3, 7, 11, 13)
    assert cost(price, usage) == Decimal(10**15 + 1 + 3 + 7 + 11 + 13) / 10**12
    assert cost(price, Usage(0, 0)) == 0


# --- the table: aliases, dates, override files ----------------------------------------------


def test_alias_resolves_to_the_model(table: PriceTable) -> None:
    """A dated id prices as its model, and the price names the model."""
    assert table.price("claude-haiku-4-5-20251001") == table.price("claude-haiku-4-5")
    assert table.price("claude-haiku-4-5-20251001").model == "claude-haiku-4-5"
    assert table.price("claude-sonnet-4-20250514").model == "claude-sonnet-4-0"
    assert "claude-haiku-4-5-20251001" not in table.models()


def test_sdk_ids_priced_and_unverified_left_out(table: PriceTable) -> None:
    """Every sourced model the SDK names is priced; the unverified ones are unknown."""
    sdk = {a for arg in typing.get_args(anthropic.types.Model) for a in typing.get_args(arg)}
    unverified = {
        "claude-fable-5-2",
        "claude-mythos-5-2",
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-mythos-preview",
    }
    assert unverified <= sdk
    for model in sorted(sdk - unverified):
        assert table.price(model).input > 0
    for model in sorted(unverified):
        with pytest.raises(UnknownModel):
            table.price(model)


def test_effective_dates(tmp_path: Path) -> None:
    """With two entries, a date picks the newest in effect; before both, the earliest."""
    doc = {"models": {"m": [entry("2026-10-07", cache_read="0.10"), entry("2026-01-01")]}}
    table = PriceTable.load(price_file(tmp_path, doc))
    picked = {
        on: table.price("m", on=datetime.date.fromisoformat(on)).cache_read
        for on in ("2025-06-01", "2026-01-01", "2026-10-06", "2026-10-07", "2030-01-01")
    }
    assert picked == {
        "2025-06-01": Decimal("0.30"),  # only later prices known: the earliest
        "2026-01-01": Decimal("0.30"),
        "2026-10-06": Decimal("0.30"),
        "2026-10-07": Decimal("0.10"),
        "2030-01-01": Decimal("0.10"),
    }
    assert table.price("m").since == datetime.date(2026, 10, 7)  # today is after both
    late = datetime.datetime(
        2026, 10, 6, 23, 30, tzinfo=datetime.timezone(-datetime.timedelta(hours=2))
    )
    assert table.price("m", on=late).since == datetime.date(2026, 10, 7)  # 01:30 UTC on the 7th


def test_override_adds_and_replaces(tmp_path: Path, table: PriceTable) -> None:
    """An override adds its models and aliases and replaces a shipped model whole."""
    doc = {
        "aliases": {"acme-large-latest": "acme-large"},
        "models": {
            "acme-large": [entry("2026-11-01", input="7")],
            "claude-haiku-4-5": [entry("2027-01-01", input="0.90")],
        },
    }
    merged = PriceTable.load(price_file(tmp_path, doc))
    assert merged.price("acme-large-latest").input == Decimal(7)
    # Replaced, not merged: the shipped 2026 entry is gone, so the 2027 one is the earliest.
    assert merged.price("claude-haiku-4-5-20251001", on=datetime.date(2026, 3, 1)).input == Decimal(
        "0.90"
    )
    assert merged.price("claude-opus-4-6") == table.price("claude-opus-4-6")
    assert set(merged.models()) == {*table.models(), "acme-large"}


def test_override_model_outranks_shipped_alias(tmp_path: Path) -> None:
    """A model an override prices under a shipped alias's name is priced as itself."""
    doc = {"models": {"claude-haiku-4-5-20251001": [entry("2026-01-01", input="0.95")]}}
    merged = PriceTable.load(price_file(tmp_path, doc))
    assert merged.price("claude-haiku-4-5-20251001").input == Decimal("0.95")
    assert merged.price("claude-haiku-4-5").input == Decimal(1)


def test_unknown_model_message(table: PriceTable) -> None:
    """An unknown model is an error (never $0) that names it, some models, and the fix."""
    with pytest.raises(UnknownModel) as info:
        table.price("claude-sonet-4-5")
    message = str(info.value)
    assert isinstance(info.value, LookupError)
    assert "'claude-sonet-4-5'" in message
    assert "Did you mean 'claude-sonnet-4-5'" in message
    assert "(claude-opus-5, claude-sonnet-5, claude-haiku-4-5," in message  # the file's first
    assert "PriceTable.load(override=" in message
    assert '"claude-sonet-4-5": [{"since"' in message


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ('{"models": {"m": [', "not valid JSON"),
        ([], 'a "models" object'),
        ({"models": {"m": []}}, "model 'm': must be a non-empty array"),
        ({"models": {"m": [{"since": "2026-01-01"}]}}, "model 'm', entry 1: missing field"),
        ({"models": {"m": [entry("2026-01-01", output="-1")]}}, "entry 1, field 'output'"),
        ({"models": {"m": [entry("2026-01-01", input="cheap")]}}, "field 'input'.*'cheap'"),
        ({"models": {"m": [entry("2026-01-01", input="NaN")]}}, "field 'input'"),
        ({"models": {"m": [{**entry("2026-01-01"), "input": 1.25}]}}, "written as a string"),
        ({"models": {"m": [entry("2026-02-30")]}}, "entry 1: field 'since'.*2026-02-30"),
        ({"models": {"m": [{**entry("2026-01-01"), "source": ""}]}}, "field 'source'"),
        ({"models": {"m": [{**entry("2026-01-01"), "cache_write_1hr": "6"}]}}, "unknown field"),
        ({"models": {"m": [entry("2026-01-01"), entry("2026-01-01")]}}, "two entries since"),
        ('{"models": {"m": [], "m": []}}', "key 'm' appears twice"),
        ({"aliases": {"a": "nowhere"}, "models": {"m": [entry("2026-01-01")]}}, "alias 'a'"),
        ({"aliases": {"m": "m"}, "models": {"m": [entry("2026-01-01")]}}, "both a model and"),
    ],
)
def test_malformed_price_file(tmp_path: Path, doc: Any, says: str) -> None:
    """A price file that cannot be used is a PriceFileError naming the file and the place."""
    path = price_file(tmp_path, doc, name="bad-prices.json")
    with pytest.raises(PriceFileError, match=says) as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_price_file(tmp_path: Path) -> None:
    """A price file that is not there is a PriceFileError naming it."""
    path = tmp_path / "nope.json"
    with pytest.raises(PriceFileError, match=r"nope\.json"):
        PriceTable.load(path)


# --- the shipped data -------------------------------------------------------------------------


def test_shipped_entries_are_sound(table: PriceTable) -> None:
    """Every shipped entry has positive amounts, a source URL and a date not in the future."""
    assert len(table.models()) >= 18
    for model in table.models():
        for price in table.entries[model]:
            assert all(getattr(price, name) > 0 for name in AMOUNTS), price
            assert price.source.startswith("https://"), price
            assert datetime.date(2024, 1, 1) <= price.since <= datetime.date.today(), price


def test_shipped_amounts_are_strings() -> None:
    """The shipped file writes every amount as a string, so Decimal reads it exactly."""
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert doc["note"]
    for rows in doc["models"].values():
        for row in rows:
            assert all(isinstance(row[name], str) for name in AMOUNTS), row


def test_shipped_multipliers(table: PriceTable) -> None:
    """Cache prices are the standard multiples of input, except the rows the research gives."""
    off = {
        (model, name)
        for model in table.models()
        for price in table.entries[model]
        for name, factor in STANDARD.items()
        if getattr(price, name) != price.input * factor
    }
    assert off == NONSTANDARD
