"""`journal cost`: what the model calls cost, by run, machine, model or day."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import db_option, db_path, json_option, open_journal
from cli.output import json_line, table
from journal import query

_BY = ("run", "machine", "model", "day")


@click.command()
@click.option(
    "--by",
    type=click.Choice(_BY),
    default="run",
    show_default=True,
    help="How to group the model calls.",
)
@json_option
@db_option
def cost(by: str, as_json: bool, db: Path | None) -> None:
    """Sum tokens and cost of the journal's model calls, grouped.

    Costs come from the price table in effect when each call was made; the same figures are
    in the views cost_by_run, cost_by_machine, cost_by_model and cost_by_day.

    \b
    Example:
        journal cost --by day
    """
    open_journal(db)  # refuses what is not a journal, or a newer one
    result = query(db_path(db), f"SELECT * FROM cost_by_{by}")  # `by` is one of _BY
    rows = list(result.rows)
    if as_json:
        for row in rows:
            click.echo(json_line(dict(zip(result.columns, row, strict=True))))
        return
    shown = [(*row[:-1], f"${row[-1]:.6f}") for row in rows]
    click.echo(table(result.columns, shown))
