"""`journal actions` and `journal resolve`: irreversible actions, and a person's word on them."""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from runjournal.cli.inspecting import status_of
from runjournal.cli.output import json_line, printable, table
from runjournal.cli.shared import Db, InputError, db_option, json_option, open_journal, who
from runjournal.journal.events import dumps
from runjournal.machine.actions import IN_DOUBT, resolve


@click.command()
@click.option("--run", "run_id", metavar="RUN", help="Only this run's actions.")
@click.option(
    "--in-doubt",
    is_flag=True,
    help="Only actions whose outcome is unknown: intended, with no process executing the run.",
)
@json_option
@db_option
def actions(run_id: str | None, in_doubt: bool, as_json: bool, db: Db | None) -> None:
    """List irreversible actions: run, step, name, key, status, attempts, result, times.

    \b
    Example:
        journal actions --in-doubt
    """
    journal = open_journal(db)
    run = journal.find_run(run_id).run_id if run_id else None
    found = journal.actions(run)
    if in_doubt:
        live = {
            r: status_of(journal.run(r), journal) == "running" for r in {a.run_id for a in found}
        }
        found = [a for a in found if a.status in IN_DOUBT and not live[a.run_id]]
    if as_json:
        for a in found:
            click.echo(json_line(attrs.asdict(a)))
        return
    columns = ["run", "step", "name", "key", "status", "attempts", "result", "intended", "updated"]
    rows = [
        (
            a.run_id,
            a.step,
            a.name,
            a.key,
            a.status,
            a.attempts,
            None if a.result is None else dumps(a.result),
            a.intended_at,
            a.updated_at,
        )
        for a in found
    ]
    click.echo(table(columns, rows))


@click.command("resolve")
@click.argument("run_id", metavar="RUN")
@click.argument("key")
@click.option("--done", "outcome", flag_value="done", help="The action happened.")
@click.option("--not-done", "outcome", flag_value="not_done", help="The action did not happen.")
@click.option("--result", "result_json", metavar="JSON", help="With --done: the action's result.")
@click.option(
    "--action", "name", metavar="NAME", help="The action's name, when the key is not enough."
)
@click.option("--by", help="Who answers. Default: your user name @ this host.")
@click.option("--reason", help="Why: what you checked, recorded with the answer.")
@db_option
def resolve_command(
    run_id: str,
    key: str,
    outcome: str | None,
    result_json: str | None,
    name: str | None,
    by: str | None,
    reason: str | None,
    db: Db | None,
) -> None:
    """Record what happened to RUN's action KEY, whose outcome is unknown.

    A run stops as needs_attention when an action that is not safe to repeat may or may not
    have happened. Check the outside system, then say --done (it happened; the resume skips it)
    or --not-done (the resume does it), and `journal resume RUN`.

    \b
    Example:
        journal resolve 3fa2 T-1003 --done --result '{"page_id": "P-77"}' --reason "in the pager"
    """
    if outcome is None:
        raise click.UsageError("say --done or --not-done")
    if result_json is not None and outcome != "done":
        raise click.UsageError("--result goes with --done")
    result: Any = None
    if result_json is not None:
        try:
            result = json.loads(result_json)
        except json.JSONDecodeError as e:
            raise InputError(f"--result is not JSON: {e.msg} at column {e.colno}") from e
    journal = open_journal(db, write=True)
    run = journal.find_run(run_id)
    person = who(by)
    action = resolve(
        journal,
        run.run_id,
        key,
        done=outcome == "done",
        result=result,
        name=name,
        by=person,
        reason=reason,
    )
    said = "done" if outcome == "done" else "not done"
    recorded = f"recorded: action {action.name} {key!r} of run {run.run_id} {said} (by {person})"
    click.echo(printable(recorded))
    click.echo(f"next: journal resume {run.run_id}")
