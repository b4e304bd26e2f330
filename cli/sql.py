"""`journal sql`: one read-only SQL statement over the journal, printed as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from cli.main import db_option, db_path, open_journal
from cli.output import table
from journal import query


@click.command()
@click.argument("statement")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
@db_option
def sql(statement: str, as_json: bool, as_csv: bool, db: Path | None) -> None:
    """Run one read-only SQL STATEMENT against the journal.

    Tables: runs, events, leases, blobs; views: decisions, effects, transitions. Any statement
    that would write, attach a file or change a setting is refused.

    \b
    Example:
        journal sql "select item, outcome, reason from decisions where run_id like '3fa2%'"
    """
    if as_json and as_csv:
        raise click.UsageError("use one of --json and --csv")
    open_journal(db)  # a journal from a newer runjournal, or not a journal, is refused here
    result = query(db_path(db), statement)
    if as_json:
        for row in result.rows:
            click.echo(json.dumps(dict(zip(result.columns, row, strict=True)), ensure_ascii=False))
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        click.echo(table(result.columns, result.rows))
