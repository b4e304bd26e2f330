"""`journal migrate`: bring an older journal's schema up to date."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import db_option, open_journal
from journal import schema


@click.command()
@db_option
def migrate(db: Path | None) -> None:
    """Bring the journal's schema up to date with this runjournal.

    Reading commands refuse a journal of an older schema rather than change it; this command,
    like any writing one (run, resume, resolve), upgrades it in one transaction. A journal
    written by a newer runjournal is refused.

    \b
    Example:
        journal migrate --db /var/lib/pipelines/journal.db
    """
    journal = open_journal(db, write=True)
    now = len(schema.MIGRATIONS)
    if journal.schema_found == now:
        click.echo(f"{journal.path}: schema {now}, up to date")
    else:
        click.echo(f"{journal.path}: schema {journal.schema_found} -> {now}")
