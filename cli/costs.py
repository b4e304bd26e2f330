"""`journal cost`: what the model calls cost, by run, machine, code version, model or day."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from cli.main import db_option, json_option, open_journal
from cli.output import json_line, table
from journal import costs


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
@json_option
@db_option
def cost(
    by: str, since: datetime.datetime | None, machine: str | None, as_json: bool, db: Path | None
) -> None:
    """Sum calls, tokens and cost of the journal's model requests, grouped.

    Costs are exact, from the price in effect when each call was made; `possibly_billed_usd`
    is the worst case of the requests whose outcome is unknown (a timeout, a crash), apart from
    what was billed. Tokens per step catch a prompt change that multiplies them: compare
    versions with --by version. The views cost_by_run, cost_by_machine, cost_by_model and
    cost_by_day hold the same sums.

    \b
    Example:
        journal cost --by version --machine triage --since 2026-11-01
    """
    journal = open_journal(db)
    found = costs.report(journal, by, since=since.date() if since else None, machine=machine)
    if as_json:
        for row in found.rows:
            click.echo(json_line(dict(zip(found.columns, map(_plain, row), strict=True))))
        return
    shown = [[_shown(v) for v in row] for row in found.rows]
    click.echo(table(found.columns, shown))


def _plain(value: Any) -> Any:
    # Exact in JSON too: a decimal string would not sum; a float of the exact decimal prints
    # as that decimal.
    return float(value) if isinstance(value, Decimal) else value


def _shown(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"${value:f}"
    return value
