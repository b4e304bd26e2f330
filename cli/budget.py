"""`journal budget`: what the runs of a machine may spend, per day and per run."""

from __future__ import annotations

from decimal import Decimal

import click

from runjournal.cli.costs import dollars, plain, spent_json
from runjournal.cli.output import json_line, printable, table
from runjournal.cli.shared import (
    DOLLARS,
    Db,
    InputError,
    db_option,
    dollars_above_zero,
    json_option,
    open_journal,
    who,
)
from runjournal.journal.costs import Spent, spent_today
from runjournal.journal.spending import NUSD

_NONE_YET = Spent(0, 0)


def _usd(value: str | None, name: str) -> int | None:
    if value is None or value == "none":
        return None
    amount = dollars_above_zero(value)
    if amount is None:
        raise InputError(f"{name} must be {DOLLARS} (or none), not {value!r}")
    return int(amount * NUSD)


@click.group(invoke_without_command=True)
@json_option
@db_option
@click.pass_context
def budget(ctx: click.Context, as_json: bool, db: Db | None) -> None:
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
    machine_name: str, per_day: str | None, per_run: str | None, by: str | None, db: Db | None
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
            f"warning: no run of machine {machine_name!r} in {journal.location} yet: the budget "
            "holds once one starts (check the name with `journal runs`)"
        )
        click.echo(printable(warning), err=True)
