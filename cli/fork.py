"""`journal fork`: a new run from an old run's state at a seq, under the code as it is now."""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from runjournal.cli.executing import Given, execution_options, report
from runjournal.cli.shared import InputError
from runjournal.journal import Run
from runjournal.machine import loader, runner
from runjournal.machine.errors import TargetNotFound


def _changes(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in given:
        field, eq, text = item.partition("=")
        if not eq or not field:
            raise click.BadParameter(f"{item!r} is not FIELD=JSON", ctx, param)
        try:
            changes[field] = json.loads(text)
        except ValueError as e:
            raise click.BadParameter(f"{field}: not JSON ({e})", ctx, param) from e
    return changes


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--at", "at_seq", type=click.IntRange(min=1), required=True, help="The seq to fork at."
)
@click.option(
    "--set",
    "changes",
    metavar="FIELD=JSON",
    multiple=True,
    callback=_changes,
    help="Set a field of the state before the new run starts (repeatable).",
)
@click.option("--target", help="The machine's code, if not where RUN's was.")
@execution_options(live_view=False)
def fork(
    run_id: str, at_seq: int, changes: dict[str, Any], target: str | None, given: Given
) -> None:
    """Start a new run from RUN's state after seq --at, and execute it to its end.

    The new run goes on with the step RUN was to take after that seq, under the machine's code
    as it is now (to retry a step with a fixed prompt, say), linked to RUN by `forked_from` and
    `forked_at` in the runs table. RUN is left as it is. `journal replay RUN` shows the seqs.

    \b
    Example:
        journal fork 3fa2 --at 40 --set threshold=3
    """
    options = given.options()
    journal = given.journal()
    old = journal.find_run(run_id)
    try:
        loaded = loader.load(target or old.target)
    except TargetNotFound as e:
        raise InputError(
            f"run {old.run_id}'s code was at {old.target}, which is gone: pass --target"
        ) from e

    def announce(run: Run) -> None:
        click.echo(f"run {run.run_id} forked from {old.run_id} at seq {at_seq}", err=True)

    outcome = runner.fork(
        journal,
        old.run_id,
        loaded.machine,
        at=at_seq,
        changes=changes,
        target=loaded.location,
        code_hash=loaded.code_hash,
        options=attrs.evolve(options, on_start=announce),
    )
    report(outcome)
