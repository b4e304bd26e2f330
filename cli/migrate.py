"""`journal migrate`: bring an older journal's schema up to date."""

from __future__ import annotations

import click

from runjournal.cli.shared import Db, db_option, open_journal
from runjournal.journal import Journal, JournalCorrupt, schema
from runjournal.journal.verify import record


@click.command()
@db_option
def migrate(db: Db | None) -> None:
    """Bring the journal's schema up to date with this runjournal.

    Reading commands refuse a journal of an older schema rather than change it; this command,
    like any writing one (run, resume, resolve), upgrades it in one transaction. A journal
    written by a newer runjournal is refused, and so is a damaged one (exit 7): SQLite's quick
    check of the file, each run's hash chain and the blobs are checked first.

    \b
    Example:
        journal migrate --db /var/lib/pipelines/journal.db
    """
    journal = open_journal(db, write=True)
    if not isinstance(journal, Journal):
        # PostgreSQL: opening it to write migrated it, under an advisory lock.
        click.echo(f"{journal.location}: up to date")
        return
    problems = record(journal)
    if problems:
        first = problems[0]
        where = f"run {first.run_id}, " if first.run_id else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        msg = (
            f"{journal.location} is damaged: {where}{first.what}{more}; "
            f"`journal verify --db {journal.location}` names all that is wrong"
        )
        raise JournalCorrupt(msg)
    now = len(schema.MIGRATIONS)
    if journal.schema_found == now:
        click.echo(f"{journal.location}: schema {now}, up to date")
    else:
        click.echo(f"{journal.location}: schema {journal.schema_found} -> {now}")
