"""Model prices and the exact cost of a call: the effective-dated price table and `cost`.

The table is data, `machine/model/prices.json`, shipped in the package; a price file of the same
shape can add models or replace shipped ones. Amounts are USD per million tokens, read as
`Decimal` and multiplied exactly. A model the table does not know is an error, never $0.

An entry may price long prompts apart, in `bands`: `"bands": [{"over": 200000, "input": "6",
"output": "22.50", "cache_write_5m": "7.50", "cache_write_1h": "12", "cache_read": "0.60"}]`
says that a request whose prompt is over 200,000 tokens pays those amounts for every one of
its tokens, output included; a prompt of exactly 200,000 pays the entry's own. The prompt is
input, cache writes and cache reads together (`Usage.prompt_tokens`). Bands are listed in
increasing `over`, each a positive whole number of tokens, and a band states all five amounts.
"""

from __future__ import annotations

import datetime
import decimal
import difflib
import itertools
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import attrs

from runjournal.machine.errors import PriceFileError, UnknownModel
from runjournal.machine.model import datafile

SHIPPED: Final = "prices.json"
"""The price table shipped in the `machine` package."""

AMOUNTS: Final = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
"""The priced token types of an entry, USD per million tokens."""

_FIELDS: Final = frozenset((*AMOUNTS, "since", "source"))
_OPTIONAL: Final = frozenset(("bands",))
_BAND_FIELDS: Final = frozenset((*AMOUNTS, "over"))
_PER: Final = Decimal(1_000_000)
_EXAMPLE: Final = (
    '{"models": {"MODEL": [{"since": "2026-11-01", "input": "3", "output": "15", '
    '"cache_write_5m": "3.75", "cache_write_1h": "6", "cache_read": "0.30", '
    '"source": "https://..."}]}}'
)


@attrs.frozen
class Band:
    """What every token of a request whose prompt is over `over` tokens costs, in USD per
    million tokens of each type."""

    over: int
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@attrs.frozen
class Price:
    """What one model costs from `since` on, in USD per million tokens of each type: these
    amounts, or for a longer prompt those of its band."""

    model: str
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    since: datetime.date
    source: str
    bands: tuple[Band, ...] = ()
    """The amounts for longer prompts, in increasing `over`; none for a flat price."""

    def for_prompt(self, prompt_tokens: int) -> Price:
        """This entry as it prices a request whose prompt is `prompt_tokens`: with the amounts
        of the last band the prompt is over, for every token of the request; else unchanged."""
        over = [band for band in self.bands if prompt_tokens > band.over]
        if not over:
            return self
        return attrs.evolve(self, bands=(), **{name: getattr(over[-1], name) for name in AMOUNTS})

    def dearest(self, prompt_tokens: int) -> Price:
        """The most each type of token can cost in a request whose prompt is at most
        `prompt_tokens`, whichever band that prompt falls in: an upper bound, for a worst case."""
        # Each amount on its own: should a file give a longer prompt a cheaper rate of some
        # type, the bound still holds.
        could: list[Price | Band] = [self, *(b for b in self.bands if b.over < prompt_tokens)]
        most = {name: max(getattr(rates, name) for rates in could) for name in AMOUNTS}
        return attrs.evolve(self, bands=(), **most)

    def batched(self, share: Decimal) -> Price:
        """This entry as a Message Batch prices it: `share` of every amount, bands included."""
        amounts = {name: getattr(self, name) * share for name in AMOUNTS}
        bands = tuple(
            attrs.evolve(b, **{name: getattr(b, name) * share for name in AMOUNTS})
            for b in self.bands
        )
        return attrs.evolve(self, bands=bands, **amounts)


def _is_count(value: object) -> bool:
    # bool is an int subclass, but `true` is not a token count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: Any, name: str) -> int:
    """A count from the API's usage object, where null means none."""
    if value is None:
        return 0
    if not _is_count(value):
        msg = f"usage field {name!r} must be a non-negative integer or null, not {value!r}"
        raise ValueError(msg)
    return int(value)


def _non_negative(instance: Usage, attribute: attrs.Attribute[int], value: int) -> None:
    if not _is_count(value):
        msg = f"Usage.{attribute.name} must be a non-negative integer, not {value!r}"
        raise ValueError(msg)


def _within_output(instance: Usage, attribute: attrs.Attribute[int], value: int) -> None:
    _non_negative(instance, attribute, value)
    if value > instance.output_tokens:
        msg = (
            f"Usage.thinking_tokens ({value}) is more than output_tokens "
            f"({instance.output_tokens}), which count them: not a usage the API reports"
        )
        raise ValueError(msg)


@attrs.frozen
class Usage:
    """The tokens one call was billed for, by type; cache counts are not part of input_tokens."""

    input_tokens: int = attrs.field(validator=_non_negative)
    output_tokens: int = attrs.field(validator=_non_negative)
    cache_write_5m_tokens: int = attrs.field(default=0, validator=_non_negative)
    cache_write_1h_tokens: int = attrs.field(default=0, validator=_non_negative)
    cache_read_tokens: int = attrs.field(default=0, validator=_non_negative)
    thinking_tokens: int = attrs.field(default=0, validator=_within_output)
    """Of output_tokens, those the model spent thinking: billed as output, never on top."""

    @classmethod
    def from_api(cls, usage: Mapping[str, Any]) -> Usage:
        """From the Messages API `usage` object as a dict (SDK `message.usage.model_dump()`).

        Cache counts are in addition to input_tokens. When `cache_creation` gives the 5m/1h
        breakdown use it; else all of `cache_creation_input_tokens` are 5-minute writes.
        None counts are 0. Should the breakdown add up to less than
        `cache_creation_input_tokens`, the rest are 5-minute writes, so that no written token
        goes unpriced. Thinking tokens come from `output_tokens_details`, and are part of
        output_tokens.
        """
        for required in ("input_tokens", "output_tokens"):
            if required not in usage:
                msg = (
                    f"not a Messages API usage object: no {required!r} "
                    f"(keys: {', '.join(sorted(usage)) or 'none'})"
                )
                raise ValueError(msg)
        written = _count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            w5 = _count(split.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens")
            w1 = _count(split.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
            # Proxies have been seen to send an all-zero breakdown beside a real total; pricing
            # the difference at the cheaper, default TTL beats pricing it at nothing.
            w5 += max(0, written - w5 - w1)
        elif split is None:
            w5, w1 = written, 0
        else:
            msg = f"usage field 'cache_creation' must be an object or null, not {split!r}"
            raise ValueError(msg)
        details = usage.get("output_tokens_details")
        if details is not None and not isinstance(details, Mapping):
            msg = f"usage field 'output_tokens_details' must be an object or null, not {details!r}"
            raise ValueError(msg)
        thinking = _count((details or {}).get("thinking_tokens"), "thinking_tokens")
        return cls(
            input_tokens=_count(usage["input_tokens"], "input_tokens"),
            output_tokens=_count(usage["output_tokens"], "output_tokens"),
            cache_write_5m_tokens=w5,
            cache_write_1h_tokens=w1,
            cache_read_tokens=_count(
                usage.get("cache_read_input_tokens"), "cache_read_input_tokens"
            ),
            thinking_tokens=thinking,
        )

    @property
    def cache_write_tokens(self) -> int:
        """Tokens written to the cache, both TTLs."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """The prompt's size, which picks a price's band: input, cache writes and cache reads."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


def cost(price: Price, usage: Usage) -> Decimal:
    """input x in + 5m writes x w5 + 1h writes x w1 + cache reads x read + output x out,
    per 1e6 tokens, exactly, at the amounts of the band the usage's prompt falls in."""
    price = price.for_prompt(usage.prompt_tokens)
    with decimal.localcontext() as ctx:
        # Enough digits for any real bill; should one ever not fit, rounding raises instead
        # of going unnoticed.
        ctx.prec = 60
        ctx.traps[decimal.Inexact] = True
        total = (
            usage.input_tokens * price.input
            + usage.cache_write_5m_tokens * price.cache_write_5m
            + usage.cache_write_1h_tokens * price.cache_write_1h
            + usage.cache_read_tokens * price.cache_read
            + usage.output_tokens * price.output
        )
        return total / _PER


@attrs.frozen
class PriceTable:
    """Prices by model, each model's entries oldest first, and other names for the models."""

    entries: Mapping[str, tuple[Price, ...]]
    aliases: Mapping[str, str]
    batch: Decimal = Decimal("0.5")
    """What a Message Batch charges of each amount (the file's `batch`)."""

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The shipped table (read with importlib.resources from `machine.model`), with the
        models of `override` (same format) added or replacing shipped ones."""
        text, origin = datafile.shipped(SHIPPED, "price table", PriceFileError)
        entries, aliases = _parse(text, origin)
        batch = _batch_share(text, origin)
        alias_origin = dict.fromkeys(aliases, origin)
        if override is not None:
            text = datafile.given(override, "price file", PriceFileError)
            more, more_aliases = _parse(text, str(override))
            batch = _batch_share(text, str(override), batch)
            # A model in the override replaces the shipped one whole: its dated entries are
            # the override's to state, not merged with ours.
            entries |= more
            for name in more:  # a model of the override outranks a shipped alias of that name
                aliases.pop(name, None)
                alias_origin.pop(name, None)
            aliases |= more_aliases
            alias_origin |= dict.fromkeys(more_aliases, str(override))
        for alias, target in aliases.items():
            if target not in entries:
                msg = (
                    f"{alias_origin[alias]}: alias {alias!r} points to {target!r}, which is not a "
                    'model of the table; point it at a key of "models"'
                )
                raise PriceFileError(msg)
        return cls(
            entries=MappingProxyType(entries), aliases=MappingProxyType(aliases), batch=batch
        )

    def price(self, model: str, on: datetime.date | None = None) -> Price:
        """The entry in effect on `on` (default today): the newest whose `since` <= on; when the
        table knows only later prices, the earliest. Aliases resolve first. UnknownModel else."""
        name = model if model in self.entries else self.aliases.get(model)
        if name is None:
            raise UnknownModel(self._unknown(model))
        # Journal timestamps are UTC, so "today" is the UTC day too.
        day = on if on is not None else datetime.datetime.now(datetime.UTC)
        if isinstance(day, datetime.datetime):  # a date compared with a datetime raises
            day = (day.astimezone(datetime.UTC) if day.tzinfo else day).date()
        found = self.entries[name]
        in_effect = [p for p in found if p.since <= day]
        return in_effect[-1] if in_effect else found[0]

    def models(self) -> list[str]:
        """The models the table prices, sorted; aliases are not listed."""
        return sorted(self.entries)

    def _unknown(self, model: str) -> str:
        known = self.models()
        close = difflib.get_close_matches(model, [*known, *self.aliases], n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        # In the order of the files, which list current models first: the likeliest to be meant.
        listed = list(self.entries)
        some = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
        return (
            f"no price for model {model!r}: the price table knows {len(known)} models "
            f"({some}).{hint} To price it, write a price file in the format of "
            f"machine/{SHIPPED}, e.g. {_EXAMPLE.replace('MODEL', model)}, and load it with "
            "PriceTable.load(override=Path(...))."
        )


def _parse(text: str, origin: str) -> tuple[dict[str, tuple[Price, ...]], dict[str, str]]:
    """The models and aliases of one price file's text; PriceFileError names `origin`."""
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        msg = f"{origin}: not valid JSON: {e}"
        raise PriceFileError(msg) from e
    except _DuplicateKey as e:
        msg = f"{origin}: key {e.args[0]!r} appears twice in one object"
        raise PriceFileError(msg) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        msg = f'{origin}: must be a JSON object with a "models" object, e.g. {_EXAMPLE}'
        raise PriceFileError(msg)
    entries = {model: _entries(model, rows, origin) for model, rows in doc["models"].items()}
    aliases = doc.get("aliases", {})
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        msg = f'{origin}: "aliases" must be an object of model name to model name'
        raise PriceFileError(msg)
    for alias in aliases:
        if alias in entries:
            msg = f"{origin}: {alias!r} is both a model and an alias; keep one"
            raise PriceFileError(msg)
    return entries, dict(aliases)


def _batch_share(text: str, origin: str, default: Decimal = Decimal("0.5")) -> Decimal:
    """The file's `batch` (a string, read exactly), or `default` when it gives none."""
    given = json.loads(text).get("batch")
    if given is None:
        return default
    share = _amount(given, f"{origin}: batch")
    if not 0 < share <= 1:
        raise PriceFileError(f'{origin}: "batch" is {given!r}; give a share above 0, at most 1')
    return share


def _entries(model: str, rows: Any, origin: str) -> tuple[Price, ...]:
    where = f"{origin}: model {model!r}"
    if not isinstance(rows, list) or not rows:
        msg = f"{where}: must be a non-empty array of dated price entries"
        raise PriceFileError(msg)
    found = (_entry(model, row, f"{where}, entry {i}") for i, row in enumerate(rows, 1))
    prices = sorted(found, key=lambda p: p.since)
    for earlier, later in itertools.pairwise(prices):
        if earlier.since == later.since:
            msg = f"{where}: two entries since {later.since}; one date, one price"
            raise PriceFileError(msg)
    return tuple(prices)


def _entry(model: str, row: Any, where: str) -> Price:
    row = datafile.fields(row, _FIELDS, where, PriceFileError, optional=_OPTIONAL)
    since = row["since"]
    try:
        day = datetime.date.fromisoformat(since) if isinstance(since, str) else None
    except ValueError:
        day = None
    if day is None:
        msg = f"{where}: field 'since' must be an ISO date like \"2026-11-01\", not {since!r}"
        raise PriceFileError(msg)
    source = row["source"]
    if not isinstance(source, str) or not source.strip():
        msg = f"{where}: field 'source' must say where the price comes from (a URL)"
        raise PriceFileError(msg)
    amounts = {name: _amount(row[name], f"{where}, field {name!r}") for name in AMOUNTS}
    bands = _bands(row["bands"], where) if "bands" in row else ()
    return Price(model=model, since=day, source=source, bands=bands, **amounts)


def _bands(rows: Any, where: str) -> tuple[Band, ...]:
    if not isinstance(rows, list) or not rows:
        msg = (
            f"{where}: field 'bands' must be a non-empty array of bands like "
            '{"over": 200000, "input": "6", ...} (leave it out for a flat price)'
        )
        raise PriceFileError(msg)
    bands = tuple(_band(row, f"{where}, band {i}") for i, row in enumerate(rows, 1))
    # Refused rather than sorted: bands out of order are likelier a mistyped threshold than a
    # list meant to be read either way.
    for i, (earlier, later) in enumerate(itertools.pairwise(bands), 2):
        if later.over == earlier.over:
            msg = f"{where}: two bands over {later.over} tokens; one threshold, one band"
            raise PriceFileError(msg)
        if later.over < earlier.over:
            msg = (
                f"{where}, band {i}: over {later.over} comes after over {earlier.over}; "
                "list bands in increasing 'over'"
            )
            raise PriceFileError(msg)
    return bands


def _band(row: Any, where: str) -> Band:
    row = datafile.fields(row, _BAND_FIELDS, where, PriceFileError)
    over = row["over"]
    if not _is_count(over) or over == 0:
        msg = (
            f"{where}: field 'over' must be a positive whole number of prompt tokens, "
            f"like 200000, not {over!r}"
        )
        raise PriceFileError(msg)
    amounts = {name: _amount(row[name], f"{where}, field {name!r}") for name in AMOUNTS}
    return Band(over=over, **amounts)


def _amount(value: Any, where: str) -> Decimal:
    # Strings only: a JSON number has been through a float by the time json hands it over.
    if isinstance(value, str):
        try:
            amount = Decimal(value)
        except decimal.InvalidOperation:
            amount = None
        if amount is not None and amount.is_finite() and amount >= 0:
            return amount
    msg = (
        f'{where}: must be a non-negative amount written as a string, like "1.25" '
        f"(USD per million tokens), not {value!r}"
    )
    raise PriceFileError(msg)


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys; in a price table that silently drops a model.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


TOOL_OVERHEAD_TOKENS = 500
"""Tokens the API adds to a request with tools (its tool-use system prompt: 313 to 346 tokens
for current models, by Anthropic's pricing page), with a margin: added in the worst case."""
TOKENS_PER_MESSAGE = 10
"""Tokens the API may add per turn (its role markers), in the worst case."""


def worst_case(request: dict[str, Any], price: Price) -> tuple[int, Decimal]:
    """An upper bound on the tokens a request can be billed for, and on what it can cost.

    Every token stands for at least one byte of the text it encodes, so the request's size in
    UTF-8 bytes (its JSON, which holds more than the text) bounds its input tokens, with the
    tool-use overhead on top. All input is priced at the dearest rate that could apply to it
    (a cache write, when the request marks a prefix for caching), and `max_tokens` of output
    at the output rate, both in the dearest band a prompt of that bound could fall in.
    """
    text = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
    messages = len(request.get("messages", ()))
    input_bound = len(text.encode()) + TOKENS_PER_MESSAGE * messages
    output = request.get("output_config") or {}
    if request.get("tools") or output.get("format"):
        # JSON outputs constrain the answer as a tool does; the same margin covers what the
        # API adds for them.
        input_bound += TOOL_OVERHEAD_TOKENS
    output_bound = int(request["max_tokens"])
    # The prompt (input, cache writes and reads) is at most input_bound, and the band it falls
    # in prices the output too: so both are priced at the dearest band up to that size.
    price = price.dearest(input_bound)
    # A prefix marked for caching may be written to the cache, at its TTL's rate.
    rate = price.input
    if '"cache_control"' in text:
        rate = max(rate, price.cache_write_1h if '"1h"' in text else price.cache_write_5m)
    usd = (input_bound * rate + output_bound * price.output) / Decimal(1_000_000)
    return input_bound + output_bound, usd
