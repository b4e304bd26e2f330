"""Tests for `machine.model.pricing`: usage from the API, exact cost, prompt-size bands, price
tables and files, and the worst case `machine.kill_switch` bounds a request with."""

from __future__ import annotations

import datetime
import itertools
import json
import typing
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic.types
import attrs
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from runjournal.machine.errors import PriceFileError, UnknownModel
from runjournal.machine.model.pricing import (
    AMOUNTS,
    Band,
    Price,
    PriceTable,
    Usage,
    cost,
    worst_case,
)

SHIPPED = ROOT / "machine" / "model" / "prices.json"

SONNET_45 = {
    "input": "3",
    "output": "15",
    "cache_write_5m": "3.75",
    "cache_write_1h": "6",
    "cache_read": "0.30",
}

# Rows whose ratios to the input price are not the standard ones (5m write 1.25x, 1h write 2x,
# cache hit 0.1x), each with where the odd ratio comes from.
NONSTANDARD = {
    ("claude-3-haiku-20240307", "cache_write_5m"): "research (llm-anchors.md §3.7): 0.30 on 0.25",
    ("claude-3-haiku-20240307", "cache_read"): "research (llm-anchors.md §3.7): 0.03 on 0.25",
    ("claude-fable-5-1", "cache_read"): "research (llm-anchors.md §3.7): 0.25, 0.025x of 10",
    ("claude-mythos-5-1", "cache_read"): "the same as Fable 5.1",
    ("claude-fable-5-2", "cache_read"): "third parties and genai-prices: 0.20, 0.025x of 8",
    ("claude-mythos-5-2", "cache_read"): "the same as Fable 5.2",
    ("claude-opus-5-5", "cache_read"): "its overview page: 0.20, 0.05x of 4",
    ("claude-sonnet-5-5", "cache_read"): "cut to 0.10, 0.05x of 2, on 2026-10-07 (0.1x before)",
}

STANDARD = {
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal(2),
    "cache_read": Decimal("0.1"),
}


def entry(since: str, **amounts: Any) -> dict[str, Any]:
    return {"since": since, **SONNET_45, "source": "https://example.test/prices", **amounts}


def band(over: Any, **amounts: str) -> dict[str, Any]:
    """A band over `over` prompt tokens at twice Sonnet 4.5's amounts, or `amounts`."""
    doubled = {name: str(Decimal(value) * 2) for name, value in SONNET_45.items()}
    return {"over": over, **doubled, **amounts}


def rates_of(price: Price) -> tuple[Price | Band, ...]:
    """An entry's amounts, then each of its bands'."""
    return (price, *price.bands)


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


def test_from_api_thinking_tokens() -> None:
    """Thinking tokens come from `output_tokens_details`, and a null or missing one is 0."""
    dumped = anthropic.types.Usage(
        input_tokens=5,
        output_tokens=700,
        output_tokens_details=anthropic.types.OutputTokensDetails(thinking_tokens=650),
    ).model_dump()
    assert Usage.from_api(dumped) == Usage(5, 700, thinking_tokens=650)
    assert Usage.from_api({**dumped, "output_tokens_details": None}).thinking_tokens == 0
    assert Usage.from_api({"input_tokens": 5, "output_tokens": 7}).thinking_tokens == 0
    details = {"output_tokens_details": {"thinking_tokens": None}}
    assert Usage.from_api({"input_tokens": 5, "output_tokens": 7, **details}).thinking_tokens == 0


@pytest.mark.parametrize(
    ("details", "says"),
    [
        ({"thinking_tokens": 8}, r"thinking_tokens \(8\) is more than output_tokens \(7\)"),
        ({"thinking_tokens": -1}, "'thinking_tokens'"),
        ([8], "'output_tokens_details' must be an object"),
    ],
)
def test_from_api_rejects_impossible_thinking(details: Any, says: str) -> None:
    """Thinking tokens are part of output_tokens: more of them than that is not a usage."""
    usage = {"input_tokens": 1, "output_tokens": 7, "output_tokens_details": details}
    with pytest.raises(ValueError, match=says):
        Usage.from_api(usage)


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


def test_thinking_is_priced_as_output(table: PriceTable) -> None:
    """Thinking tokens are some of output_tokens, priced with them and never again on top."""
    price = table.price("claude-opus-5-5", on=datetime.date(2026, 12, 4))
    thinking = Usage(input_tokens=1_000, output_tokens=5_000, thinking_tokens=4_000)
    # Opus 5.5: in 4, out 20. 1,000 x 4 + 5,000 x 20 = 104,000 per million tokens.
    assert cost(price, thinking) == Decimal("0.104")
    assert cost(price, thinking) == cost(price, Usage(input_tokens=1_000, output_tokens=5_000))


# --- prompt-size bands ------------------------------------------------------------------------


def test_haiku_55_long_prompt_priced_in_upper_band(table: PriceTable) -> None:
    """A prompt over 100,000 tokens, most of it cache reads, pays the upper band for every
    token, output included."""
    price = table.price("claude-haiku-5-5", on=datetime.date(2026, 12, 4))
    usage = Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=130_000)
    assert usage.prompt_tokens == 150_000
    # Over 100,000: in 0.50, hit 0.05, out 2.50.
    #   input       20,000 x 0.50 = 10,000
    #   cache reads 130,000 x 0.05 =  6,500
    #   output       1,000 x 2.50 =  2,500
    #                        total = 19,000 per million tokens = $0.019
    assert cost(price, usage) == Decimal("0.019")


def test_haiku_55_prompt_of_100000_is_in_lower_band(table: PriceTable) -> None:
    """Exactly 100,000 prompt tokens, of every kind, pay the lower band; one more, the upper."""
    price = table.price("claude-haiku-5-5", on=datetime.date(2026, 12, 4))
    at = Usage(
        input_tokens=30_000,
        output_tokens=2_000,
        cache_write_5m_tokens=5_000,
        cache_write_1h_tokens=5_000,
        cache_read_tokens=60_000,
    )
    assert at.prompt_tokens == 100_000
    # Up to 100,000: in 0.10, 5m write 0.125, 1h write 0.20, hit 0.01, out 0.50.
    #   30,000 x 0.10 + 5,000 x 0.125 + 5,000 x 0.20 + 60,000 x 0.01 + 2,000 x 0.50
    #   = 3,000 + 625 + 1,000 + 600 + 1,000 = 6,225 per million tokens
    assert cost(price, at) == Decimal("0.006225")
    over = attrs.evolve(at, input_tokens=30_001)
    # Over: 30,001 x 0.50 + 5,000 x 0.625 + 5,000 x 1 + 60,000 x 0.05 + 2,000 x 2.50
    #   = 15,000.5 + 3,125 + 5,000 + 3,000 + 5,000 = 31,125.5 per million tokens
    assert cost(price, over) == Decimal("0.0311255")


def test_sonnet_55_cache_read_cut_on_2026_10_07(table: PriceTable) -> None:
    """A Sonnet 5.5 cache read costs 0.20 per million tokens answered before the cut, 0.10 after."""
    reads = Usage(input_tokens=0, output_tokens=0, cache_read_tokens=1_000_000)
    before = table.price("claude-sonnet-5-5", on=datetime.date(2026, 10, 6))
    after = table.price("claude-sonnet-5-5", on=datetime.date(2026, 10, 8))
    assert (before.cache_read, after.cache_read) == (Decimal("0.20"), Decimal("0.10"))
    assert cost(before, reads) == Decimal("0.20")
    assert cost(after, reads) == Decimal("0.10")


def test_long_context_band_ended_on_2026_03_13(table: PriceTable) -> None:
    """Opus 4.6 charged a 250,000-token prompt its long-context band before 2026-03-13, and its
    standard amounts from then on."""
    usage = Usage(input_tokens=250_000, output_tokens=1_000)
    before = table.price("claude-opus-4-6", on=datetime.date(2026, 3, 12))
    after = table.price("claude-opus-4-6", on=datetime.date(2026, 3, 13))
    # 250,000 x 10 + 1,000 x 37.50 = 2,537,500; then 250,000 x 5 + 1,000 x 25 = 1,275,000.
    assert cost(before, usage) == Decimal("2.5375")
    assert cost(after, usage) == Decimal("1.275")


def test_bands_in_a_price_file(tmp_path: Path) -> None:
    """Of several bands, a prompt pays those of the last one it is over."""
    bands = [band(1_000, input="10"), band(5_000, input="20")]
    table = PriceTable.load(
        price_file(tmp_path, {"models": {"m": [entry("2026-01-01", bands=bands)]}})
    )
    price = table.price("m")
    picked = {n: cost(price, Usage(n, 0)) * 10**6 / n for n in (1_000, 1_001, 5_000, 5_001)}
    assert picked == {1_000: 3, 1_001: 10, 5_000: 10, 5_001: 20}
    # Output is priced in the prompt's band too: twice Sonnet 4.5's 15 in both bands.
    assert cost(price, Usage(1_001, 1_000)) - cost(price, Usage(1_001, 0)) == Decimal("0.030")


# --- the worst case of a request ----------------------------------------------------------


def request_of(text: str, max_tokens: int, ttl: str | None = None) -> dict[str, Any]:
    """A request whose one message is `text`, marked for caching with `ttl` ("5m", "1h")."""
    block: dict[str, Any] = {"type": "text", "text": text}
    if ttl is not None:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return {
        "model": "claude-haiku-5-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [block]}],
    }


def test_worst_case_band_from_size_bound(table: PriceTable) -> None:
    """A request whose size bound is over 100,000 tokens is bounded at the upper band, input and
    output; one at exactly 100,000, or well under, at the lower band."""
    price = table.price("claude-haiku-5-5", on=datetime.date(2026, 12, 4))
    empty, _ = worst_case(request_of("", 1_000), price)
    fill = 100_000 - (empty - 1_000)  # ASCII text: one byte, so one token of bound, each
    per = Decimal(1_000_000)
    for text, band_input, band_output in [
        ("x" * 500, Decimal("0.10"), Decimal("0.50")),
        ("x" * fill, Decimal("0.10"), Decimal("0.50")),
        ("x" * (fill + 1), Decimal("0.50"), Decimal("2.50")),
        ("x" * 150_000, Decimal("0.50"), Decimal("2.50")),
    ]:
        tokens, usd = worst_case(request_of(text, 1_000), price)
        input_bound = tokens - 1_000
        assert input_bound == len(text) + (empty - 1_000)
        assert usd == (input_bound * band_input + 1_000 * band_output) / per, len(text)


@attrs.frozen
class Billed:
    """A request of `size` bytes of text, and a usage it could be billed for."""

    price: Price
    size: int
    max_tokens: int
    ttl: str | None
    usage: Usage

    def request(self) -> dict[str, Any]:
        return request_of("x" * self.size, self.max_tokens, self.ttl)


@st.composite
def billed(draw: st.DrawFn) -> Billed:
    """A banded price, a request of any size or one near a threshold, and a usage that request
    could be billed for: a prompt no bigger than its bound, output up to `max_tokens`."""
    model, on = draw(
        st.sampled_from(
            [
                ("claude-haiku-5-5", datetime.date(2026, 12, 4)),
                ("claude-sonnet-4-5", datetime.date(2026, 12, 4)),
                ("claude-opus-4-6", datetime.date(2026, 2, 10)),
            ]
        )
    )
    price = PriceTable.load().price(model, on=on)
    # Any size, or one just either side of a threshold, where a wrong band shows.
    near = st.sampled_from([b.over for b in price.bands]).flatmap(
        lambda over: st.integers(over - 3_000, over + 3_000)
    )
    size = draw(st.integers(0, 260_000) | near)
    ttl = draw(st.sampled_from([None, "5m", "1h"]))
    max_tokens = draw(st.integers(1, 64_000))
    tokens, _ = worst_case(request_of("x" * size, max_tokens, ttl), price)
    room = tokens - max_tokens
    counts = {"input_tokens": draw(st.integers(0, room))}
    # Without a cache mark nothing is cached; a 5-minute mark writes no 1-hour entries.
    for name in ("cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"):
        marked = ttl == "1h" or (ttl == "5m" and name != "cache_write_1h_tokens")
        counts[name] = draw(st.integers(0, room - sum(counts.values()))) if marked else 0
    output = draw(st.integers(0, max_tokens))
    usage = Usage(output_tokens=output, thinking_tokens=draw(st.integers(0, output)), **counts)
    return Billed(price, size, max_tokens, ttl, usage)


@settings(deadline=None)
@given(billed())
def test_worst_case_bounds_cost(case: Billed) -> None:
    """Whatever band a usage within the request's bound falls in, it costs no more than the
    worst case."""
    tokens, usd = worst_case(case.request(), case.price)
    assert case.usage.prompt_tokens + case.usage.output_tokens <= tokens
    assert cost(case.price, case.usage) <= usd


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
    # A research preview by invitation, with no published price.
    unverified = {"claude-mythos-preview"}
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
    assert "(claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5," in message  # the file's first
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


@pytest.mark.parametrize(
    ("bands", "says"),
    [
        ({}, "field 'bands' must be a non-empty array of bands"),
        ([], "field 'bands' must be a non-empty array of bands"),
        (["over 200000"], "band 1: must be an object"),
        ([{**band(200_000), "cache_read": None}], "band 1, field 'cache_read'"),
        (
            [{k: v for k, v in band(200_000).items() if k != "output"}],
            "band 1: missing field 'output'",
        ),
        ([{**band(200_000), "threshold": 200_000}], "band 1: unknown field 'threshold'"),
        ([band(0)], "band 1: field 'over' must be a positive whole number.*not 0"),
        ([band(-5)], "band 1: field 'over' must be a positive whole number"),
        ([band("200000")], "band 1: field 'over' must be a positive whole number.*'200000'"),
        ([band(200_000.0)], "band 1: field 'over' must be a positive whole number"),
        ([band(True)], "band 1: field 'over' must be a positive whole number"),
        ([band(100_000), band(100_000)], "two bands over 100000 tokens"),
        ([band(200_000), band(100_000)], "band 2: over 100000 comes after over 200000"),
    ],
)
def test_malformed_bands(tmp_path: Path, bands: Any, says: str) -> None:
    """Bands that cannot be used are a one-line PriceFileError naming the file, entry and band."""
    doc = {"models": {"m": [entry("2026-01-01"), entry("2026-06-01", bands=bands)]}}
    path = price_file(tmp_path, doc, name="bad-prices.json")
    with pytest.raises(PriceFileError, match=says) as info:
        PriceTable.load(path)
    assert str(info.value).startswith(f"{path}: model 'm', entry 2")
    assert "\n" not in str(info.value)


def test_missing_price_file(tmp_path: Path) -> None:
    """A price file that is not there is a PriceFileError naming it."""
    path = tmp_path / "nope.json"
    with pytest.raises(PriceFileError, match=r"nope\.json"):
        PriceTable.load(path)


# --- the shipped data -------------------------------------------------------------------------


def test_shipped_entries_are_sound(table: PriceTable) -> None:
    """Every shipped entry has positive amounts, a source URL and a date not in the future."""
    assert len(table.models()) >= 23
    for model in table.models():
        for price in table.entries[model]:
            assert all(getattr(price, name) > 0 for name in AMOUNTS), price
            assert price.source.startswith("https://"), price
            assert datetime.date(2024, 1, 1) <= price.since <= datetime.date.today(), price
            # A longer prompt never costs less, of any type.
            for lower, upper in itertools.pairwise(rates_of(price)):
                assert all(getattr(upper, name) >= getattr(lower, name) for name in AMOUNTS)


def test_shipped_amounts_are_strings() -> None:
    """The shipped file writes every amount as a string, so Decimal reads it exactly."""
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert doc["note"]
    for rows in doc["models"].values():
        for row in rows:
            for rates in (row, *row.get("bands", ())):
                assert all(isinstance(rates[name], str) for name in AMOUNTS), row


def test_shipped_multipliers(table: PriceTable) -> None:
    """Cache prices are the standard multiples of input, in every band, except in NONSTANDARD."""
    off = {
        (model, name)
        for model in table.models()
        for price in table.entries[model]
        for rates in rates_of(price)
        for name, factor in STANDARD.items()
        if getattr(rates, name) != rates.input * factor
    }
    assert off == set(NONSTANDARD)
