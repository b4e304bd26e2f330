"""`journal verify`: the journal's file, each run's hash chain and all that is derived from
events, checked."""

from __future__ import annotations

import json

import attrs
import click

from runjournal.cli.output import plural, printable
from runjournal.cli.shared import Db, db_option, db_path, json_option, open_journal
from runjournal.journal import JournalCorrupt, Problem


@click.command("verify")
@click.argument("run_id", metavar="[RUN]", required=False)
@json_option
@db_option
def verify_command(run_id: str | None, as_json: bool, db: Db | None) -> None:
    """Check the journal: the file, each run's hash chain, and all that is derived from events.

    Each run's hash chain is computed again and the first event that does not match is named
    by run and seq (an edit, a deletion, events swapped); each blob is checked against its
    hash; the runs table and the action keys are rebuilt in memory and compared with what is
    stored; each snapshot is compared with the fold before it. With RUN, only that run. Exits
    1 when anything is wrong, listing it. --json also prints each run's last seq and hash:
    kept elsewhere, they show that a run was not rewritten since.

    \b
    Example:
        journal verify --db /var/lib/pipelines/journal.db
    """
    path = db_path(db)
    try:
        journal = open_journal(db)
        run = journal.find_run(run_id).run_id if run_id is not None else None
        problems = journal.verify(run)
        damaged = any(p.what.startswith("sqlite:") for p in problems)
        last = {} if damaged else journal.heads(run)
    except JournalCorrupt as e:
        # The command that reports damage reports it, even where the file cannot be read.
        problems, last = [Problem(None, f"sqlite: {e.__cause__ or e}")], {}
    if as_json:
        report = {
            "ok": not problems,
            "problems": [attrs.asdict(p) for p in problems],
            "runs": {r: {"last_seq": seq, "hash": h} for r, (seq, h) in last.items()},
        }
        click.echo(json.dumps(report, indent=2))
    elif not problems:
        events = sum(seq for seq, _ in last.values())
        click.echo(f"ok: {plural(len(last), 'run')}, {plural(events, 'event')}")
    else:
        for p in problems:
            click.echo(printable(f"{p.run_id or '-'}  {'-' if p.seq is None else p.seq}  {p.what}"))
    if problems:
        click.echo(printable(f"{plural(len(problems), 'problem')} in {path}"), err=True)
        click.get_current_context().exit(1)
