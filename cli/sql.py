"""`journal sql`: one read-only SQL statement over the journal, printed as a table, JSON or CSV.

Every format prints a number exactly as SQLite gave it: an integer as an integer, a float as
the shortest decimal that reads back as the same float (`1796400000.123`, never `1.7964e+09`).

A statement can run away (a recursive CTE with no end): Ctrl-C stops it, and so does a time
limit, which applies by default when no one is watching.
"""

from __future__ import annotations

import csv
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from types import FrameType
from typing import Any

import click

from runjournal.cli.output import json_line, printable, table
from runjournal.cli.shared import Db, db_option, open_journal
from runjournal.journal import QueryStopped
from runjournal.journal.query import Rows

UNWATCHED_TIMEOUT = 60.0


def default_timeout(terminal: bool) -> float | None:
    """The time limit without --timeout: none on a terminal, where someone can press Ctrl-C;
    60 s when standard output is not one (cron, CI, a pipe), where no one may be watching."""
    return None if terminal else UNWATCHED_TIMEOUT


@contextmanager
def _ctrl_c() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C raises a flag instead of KeyboardInterrupt; yields the flag.

    Python runs a signal handler between bytecodes: while SQLite works, that is inside the
    query's progress handler, which then sees the flag and stops the statement.
    """
    raised: list[int] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        raised.append(signum)

    before = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: bool(raised)
    finally:
        # Once Ctrl-C stopped the query the command only says so and exits: a second Ctrl-C,
        # pressed while it does, must not turn that into a traceback or a death by signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN if raised else before)


@click.command()
@click.argument("statement")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row (BLOBs as hex).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Stop the statement after SECONDS; 0 for no limit. Default: no limit when standard "
    f"output is a terminal (Ctrl-C stops it), {UNWATCHED_TIMEOUT:g} when it is not (cron, CI, "
    "a pipe).",
)
@db_option
def sql(statement: str, as_json: bool, as_csv: bool, timeout: float | None, db: Db | None) -> None:
    """Run one read-only SQL STATEMENT against the journal.

    Tables: runs, events, leases, blobs; views: decisions, effects, transitions. Any statement
    that would write, attach a file or change a setting is refused. Control characters in
    text are escaped (`\\u001b`), except in --json, which is exact. Numbers are exact in every
    format: integers as integers, floats as the shortest decimal that reads back as the same
    float (1796400000.123, 0.30000000000000004). A statement that is stopped (Ctrl-C,
    --timeout) exits 1.

    \b
    Example:
        journal sql "select item, outcome, reason from decisions where run_id like '3fa2%'"
    """
    if as_json and as_csv:
        raise click.UsageError("use one of --json and --csv")
    limit = default_timeout(sys.stdout.isatty()) if timeout is None else timeout or None
    with _ctrl_c() as interrupted:
        # A journal from a newer runjournal, or not a journal, is refused here.
        journal = open_journal(db)
        try:
            result = journal.query(statement, timeout=limit, interrupted=interrupted)
            _print(result, as_json=as_json, as_csv=as_csv)
        except QueryStopped as e:
            raise click.ClickException(_stopped(e, given=timeout is not None)) from e


def _print(result: Rows, *, as_json: bool, as_csv: bool) -> None:
    if as_json:
        for row in result.rows:
            click.echo(json_line(dict(zip(result.columns, row, strict=True)), default=_hex))
    elif as_csv:
        # CSV quotes a newline or a tab in a field; every other control is escaped.
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([printable(c, multiline=True) for c in result.columns])
        for row in result.rows:
            writer.writerow([_csv_field(v) for v in row])
    else:
        click.echo(table(result.columns, result.rows))


def _hex(value: Any) -> str | int | float:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):  # PostgreSQL's numeric: exact when whole
        return int(value) if value == value.to_integral_value() else float(value)
    msg = f"Object of type {type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


def _csv_field(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value, multiline=True)
    if isinstance(value, float):
        return float.__repr__(value)  # what the csv module writes too; said, not assumed
    return value


def _stopped(e: QueryStopped, *, given: bool) -> str:
    if e.timeout is None:
        return "query interrupted"
    if given:
        return f"query stopped after {e.timeout:g} s (--timeout)"
    return (
        f"query stopped after {e.timeout:g} s (--timeout: the default when output is not a "
        "terminal; --timeout 0 for no limit)"
    )
