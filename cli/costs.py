"""`journal cost`: what the model calls cost, by run, machine, code version, model or day; and how
every command says an amount of money (billed, possibly billed, total)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, Final

import click

from runjournal.cli.output import json_line, table
from runjournal.cli.shared import Db, db_option, json_option, open_journal
from runjournal.journal import costs
from runjournal.journal.costs import Spent

# A report's column as a table heads it: money in the vocabulary's words, tokens in short.
HEADERS: Final = {
    "code_hash": "code",
    "first_seen": "first seen",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "cache_write_tokens": "cache write",
    "cache_read_tokens": "cache read",
    "cost_usd": "billed",
    "possibly_billed_usd": "possibly billed",
    "total_usd": "total",
    "input_tokens_per_step": "in/step",
    "output_tokens_per_step": "out/step",
    "tokens_per_decision": "tokens/decision",
}
MONEY: Final = ("cost_usd", "possibly_billed_usd", "total_usd")
# The columns a table shows without --wide, so that a line fits 100 columns: the group, then
# what catches a regression (tokens per step where steps are known, else tokens), then money.
NARROW: Final = {
    "run": ("run", "machine", "calls", "input_tokens_per_step", "output_tokens_per_step"),
    "machine": ("machine", "calls", "input_tokens_per_step", "output_tokens_per_step"),
    "version": (
        "machine",
        "code_hash",
        "first_seen",
        "input_tokens_per_step",
        "output_tokens_per_step",
    ),
    "model": ("model", "calls", "input_tokens", "output_tokens"),
    "day": ("day", "calls", "input_tokens", "output_tokens"),
}


def dollars(amount: Decimal) -> str:
    """An amount as every command prints it: exact, `$0.00793725`, never rounded."""
    return f"${amount:f}"


def spent_words(spent: Spent) -> str:
    """`$0.0029325 billed, $0.00793725 possibly billed, $0.01086975 total`."""
    return (
        f"{dollars(spent.billed)} billed, {dollars(spent.possibly_billed)} possibly billed, "
        f"{dollars(spent.total)} total"
    )


def spent_json(spent: Spent) -> dict[str, float]:
    """The amounts under their JSON names (`cost_usd` is billed, as in the journal's tables),
    as numbers that print as the exact decimals."""
    return {
        "cost_usd": plain(spent.billed),
        "possibly_billed_usd": plain(spent.possibly_billed),
        "total_usd": plain(spent.total),
    }


def plain(amount: Decimal) -> float:
    """An amount for JSON: a decimal string would not sum, and the float of a decimal of nine
    places or fewer prints back as that decimal."""
    return float(amount)


@click.command()
@click.option(
    "--by",
    type=click.Choice(costs.BY),
    default="run",
    show_default=True,
    help="How to group the model calls: version is a machine's code hash, first seen when.",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only runs started (by model and day: requests sent) on or after this day (UTC).",
)
@click.option("--machine", help="Only this machine's runs.")
@click.option(
    "--wide",
    is_flag=True,
    help="Every column (requests, each kind of tokens, tokens per decision), however wide.",
)
@json_option
@db_option
def cost(
    by: str,
    since: datetime.datetime | None,
    machine: str | None,
    wide: bool,
    as_json: bool,
    db: Db | None,
) -> None:
    """Sum calls, tokens and cost of the journal's model requests, grouped.

    Money is exact, from the price in effect when each call was made, in three columns:
    billed (what the API charged; `cost_usd` in JSON and SQL), possibly billed (the worst case
    of the requests whose outcome is unknown: a timeout, a dropped connection, a crash) and
    total (the two together: what caps and budgets count). in/step and out/step are input
    tokens (of every kind) and output tokens per step: a prompt change that multiplies them
    shows when versions are compared with --by version. Lines fit 100 columns; --wide shows
    every column, and --json every figure. The views cost_by_run, cost_by_machine,
    cost_by_model and cost_by_day hold the same sums.

    \b
    Example:
        journal cost --by version --machine triage --since 2026-11-01
    """
    journal = open_journal(db)
    found = costs.report(journal, by, since=since.date() if since else None, machine=machine)
    if as_json:
        for row in found.rows:
            click.echo(json_line(dict(zip(found.columns, map(_json_value, row), strict=True))))
        return
    shown = list(found.columns) if wide else [*NARROW[by], *MONEY]
    at = [found.columns.index(c) for c in shown]
    rows = [
        [_shown(name, row[i], wide) for name, i in zip(shown, at, strict=True)]
        for row in found.rows
    ]
    click.echo(table([HEADERS.get(c, c) for c in shown], rows))


def _json_value(value: Any) -> Any:
    return plain(value) if isinstance(value, Decimal) else value


def _shown(column: str, value: Any, wide: bool) -> Any:
    if isinstance(value, Decimal):
        return dollars(value)
    if column == "first_seen" and not wide and isinstance(value, str):
        return value[:10]  # the day; --wide and --json give the time
    return value
