"""`journal answer`: a person's answer to a run that waits for one (`ctx.wait_for`)."""

from __future__ import annotations

import json
from typing import Any

import click

from runjournal.cli.output import printable
from runjournal.cli.shared import Db, InputError, db_option, open_journal, who
from runjournal.machine.waiting import answer


@click.command("answer")
@click.argument("run_id", metavar="RUN")
@click.argument("name")
@click.option("--value", "value_json", metavar="JSON", required=True, help="The answer, as JSON.")
@click.option("--by", help="Who answers. Default: your user name @ this host.")
@click.option("--reason", help="Why: recorded with the answer.")
@db_option
def answer_command(
    run_id: str, name: str, value_json: str, by: str | None, reason: str | None, db: Db | None
) -> None:
    """Answer what RUN waits for (NAME), then resume it.

    The value is checked against the shape the wait declared (the JSON Schema it recorded): one
    that does not fit is refused with every reason, and nothing is recorded. The answer is an
    event naming who gave it and why; the run is then `resolved`, and `journal resume RUN` (or
    `journal resume --all`, or a worker) goes on from it. Any process, on any host, can answer.

    \b
    Example:
        journal answer 3fa2 approval --value '{"approve": true}' --reason "checked the quote"
    """
    try:
        value: Any = json.loads(value_json)
    except json.JSONDecodeError as e:
        raise InputError(f"--value is not JSON: {e.msg} at column {e.colno}") from e
    journal = open_journal(db, write=True)
    run = journal.find_run(run_id)
    person = who(by)
    answer(journal, run.run_id, name, value, by=person, reason=reason)
    click.echo(printable(f"recorded: the answer to {name!r} of run {run.run_id} (by {person})"))
    click.echo(f"next: journal resume {run.run_id}")
