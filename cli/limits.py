"""`journal kill` and `journal budget`: stopping runs, and capping what a machine spends."""

from __future__ import annotations

import getpass
import socket
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from runjournal.cli.costs import dollars, plain, spent_json
from runjournal.cli.output import json_line, printable, table
from runjournal.cli.shared import InputError, db_option, json_option, open_journal
from runjournal.journal import Run, Store
from runjournal.journal.costs import Spent, spent_today
from runjournal.journal.spending import NUSD
from runjournal.machine.stopping import KILLABLE
from runjournal.machine.stopping import kill as kill_run

_NONE_YET = Spent(0, 0)


def who(by: str | None) -> str:
    """The person a command acts for: --by, else user@host."""
    return by or f"{getpass.getuser()}@{socket.gethostname()}"


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--all", "every", is_flag=True, help="Every run that has not ended (or --machine's).")
@click.option("--machine", help="With --all: only this machine's runs.")
@click.option("--reason", help="Why: recorded with the kill.")
@click.option("--by", help="Who kills. Default: your user name @ this host.")
@db_option
def kill(
    run_id: str | None,
    every: bool,
    machine: str | None,
    reason: str | None,
    by: str | None,
    db: Path | None,
) -> None:
    """Stop RUN (or --all runs) now: it ends `killed`, and `journal resume` can go on later.

    The process executing the run sees the request within a second wherever it waits (between
    effects, in a backoff, in a model request, which it abandons); a run no process executes is
    marked killed at once. The kill is recorded with who asked and why.

    \b
    Example:
        journal kill 3fa2 --reason "looping on ticket T-17"
    """
    if (run_id is None) == (not every):
        raise click.UsageError("give a RUN, or --all")
    if machine is not None and not every:
        raise click.UsageError("--machine goes with --all")
    journal = open_journal(db, write=True)
    if every:
        targets = journal.runs(machine=machine, statuses=KILLABLE)
    else:
        targets = [journal.find_run(str(run_id))]
    person = who(by)
    requested = []
    for run in targets:
        if kill_run(journal, run.run_id, by=person, reason=reason) == "killed":
            click.echo(f"killed run {run.run_id}: no process was executing it")
        else:
            requested.append(run)
    for run in _wait_stopped(journal, requested):
        click.echo(f"killed run {run.run_id}: its process stopped it")
    if not targets:
        click.echo("no run to kill")


def _wait_stopped(journal: Store, runs: list[Run]) -> list[Run]:
    """The runs, once their processes have stopped them (a few seconds at most)."""
    deadline = time.monotonic() + 10
    waiting = {r.run_id for r in runs}
    stopped = []
    while waiting and time.monotonic() < deadline:
        for run_id in sorted(waiting):
            run = journal.run(run_id)
            if run.status != "running":
                waiting.discard(run_id)
                stopped.append(run)
        time.sleep(0.1)
    for run_id in sorted(waiting):
        click.echo(f"kill requested: run {run_id} stops at its next wait", err=True)
    return stopped


def _usd(value: str | None, name: str) -> int | None:
    if value is None or value == "none":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount <= 0:
        raise InputError(f"{name} must be an amount of dollars above 0 (or none), not {value!r}")
    return int(amount * NUSD)


@click.group(invoke_without_command=True)
@json_option
@db_option
@click.pass_context
def budget(ctx: click.Context, as_json: bool, db: Path | None) -> None:
    """List the machines' budgets, with what each spent today (UTC): billed, possibly billed
    (requests whose outcome is unknown, at their worst case) and the total of the two, which
    is what the budget counts.

    A budget caps what all the runs of a machine spend per day, checked before each model
    request in the same transaction as its intent, so processes sharing the journal cannot
    together pass it; and gives runs a default cost cap. Today's amounts are by the day each
    request was sent, as `journal cost --by day` sums them.

    \b
    Example:
        journal budget set triage --per-day 5 --per-run 0.50
        journal budget
    """
    if ctx.invoked_subcommand is not None:
        return
    journal = open_journal(db)
    found = journal.budgets()
    today = spent_today(journal)
    if as_json:
        for b in found:
            spent = today.get(b.machine, _NONE_YET)
            click.echo(
                json_line(
                    {
                        "machine": b.machine,
                        "per_day_usd": _dollars(b.per_day_nusd),
                        "per_run_usd": _dollars(b.per_run_nusd),
                        "today": spent_json(spent),
                        "updated_at": b.updated_at,
                        "updated_by": b.updated_by,
                    }
                )
            )
        return
    rows = []
    for b in found:
        spent = today.get(b.machine, _NONE_YET)
        rows.append(
            (
                b.machine,
                _shown(b.per_day_nusd),
                _shown(b.per_run_nusd),
                dollars(spent.billed),
                dollars(spent.possibly_billed),
                dollars(spent.total),
                b.updated_at,
                b.updated_by,
            )
        )
    columns = [
        "machine",
        "per day",
        "per run",
        "billed today",
        "possibly billed today",
        "total today",
        "set at",
        "set by",
    ]
    click.echo(table(columns, rows))


def _dollars(nusd: int | None) -> float | None:
    return None if nusd is None else plain(Decimal(nusd) / NUSD)


def _shown(nusd: int | None) -> str:
    return "-" if nusd is None else dollars(Decimal(nusd) / NUSD)


@budget.command("set")
@click.argument("machine_name", metavar="MACHINE")
@click.option("--per-day", metavar="USD", help="What all its runs may spend per day (UTC).")
@click.option("--per-run", metavar="USD", help="The cost cap of a run that sets none itself.")
@click.option("--by", help="Who sets it. Default: your user name @ this host.")
@db_option
def set_budget(
    machine_name: str, per_day: str | None, per_run: str | None, by: str | None, db: Path | None
) -> None:
    """Set MACHINE's budget; `none` removes a part of it.

    A MACHINE with no run in the journal yet is set too (before its first run, say), with a
    warning on stderr, since a misspelt name would cap nothing.

    \b
    Example:
        journal budget set triage --per-day 5 --per-run 0.50
    """
    if per_day is None and per_run is None:
        raise click.UsageError("give --per-day, --per-run or both")
    journal = open_journal(db, write=True)
    current = {b.machine: b for b in journal.budgets(machine_name)}.get(machine_name)
    day = _usd(per_day, "--per-day") if per_day is not None else (current and current.per_day_nusd)
    run = _usd(per_run, "--per-run") if per_run is not None else (current and current.per_run_nusd)
    day, run = day or None, run or None
    journal.set_budget(machine_name, per_day_nusd=day, per_run_nusd=run, by=who(by))
    said = f"budget of {machine_name}: per day {_shown(day)}, per run {_shown(run)}"
    click.echo(printable(said))
    if not journal.runs(machine=machine_name, limit=1):
        # Set before the machine's first run is fine; a misspelt name would cap nothing.
        warning = (
            f"warning: no run of machine {machine_name!r} in {journal.path} yet: the budget "
            "holds once one starts (check the name with `journal runs`)"
        )
        click.echo(printable(warning), err=True)
