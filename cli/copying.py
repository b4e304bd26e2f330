"""`journal copy`: runs moved between journals, SQLite and PostgreSQL, hashes and all."""

from __future__ import annotations

import click

from runjournal.cli.output import plural, printable
from runjournal.cli.shared import Db, open_journal, parse_location
from runjournal.journal.copying import copy


@click.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("--run", "run_ids", multiple=True, metavar="RUN", help="Only this run (repeatable).")
def copy_command(source: str, destination: str, run_ids: tuple[str, ...]) -> None:
    """Copy the runs of the journal SRC into the journal DST (made if it does not exist):
    each a SQLite file or a PostgreSQL URL, either way round.

    Every event is copied as stored, byte for byte, with the blobs it refers to, so each run's
    hash chain is the same at both ends: `journal verify --json` prints the same heads on both.
    A run DST has already is left as it is there. SRC is only read. Copy runs that are not
    executing: one copied while it executes is copied as far as it had gone.

    \b
    Example:
        journal copy journal.db postgresql://pipelines@db.internal/journal
    """
    src: Db = parse_location(source)
    dst: Db = parse_location(destination)
    if str(src) == str(dst):
        raise click.UsageError("SRC and DST are the same journal")
    reading = open_journal(src)
    writing = open_journal(dst, write=True, create=True)
    wanted = [reading.find_run(r).run_id for r in run_ids] if run_ids else None
    done = copy(reading, writing, run_ids=wanted)
    for run_id in done.skipped:
        click.echo(
            printable(f"run {run_id} is in {writing.location} already: left as it is"), err=True
        )
    click.echo(
        printable(
            f"copied {plural(done.runs, 'run')}, {plural(done.events, 'event')} "
            f"from {reading.location} to {writing.location}"
        )
    )
