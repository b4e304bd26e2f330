"""The `journal` command group: shared options, and our errors turned into one-line messages.

Exit codes: 0 the run is done (or the command did what it was asked), 1 the run failed or
stopped, or another process holds it; 2 a usage or input error. Errors are translated here,
in one place, and never show a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from journal import ConcurrentAppend, Durability, Journal, JournalError, LeaseHeld, LeaseLost
from machine import MachineError

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """A bad command line, input file or journal: exit 2, with one line, not the usage text."""

    exit_code = 2


class Refused(click.ClickException):
    """Another process holds the run: exit 1."""

    exit_code = 1


class JournalGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LeaseHeld, LeaseLost, ConcurrentAppend) as e:
            raise Refused(str(e)) from e
        except (JournalError, MachineError) as e:
            raise InputError(str(e)) from e


def db_option(fn: F) -> F:
    """`--db PATH`, with `JOURNAL_DB` and then ./journal.db as the defaults."""
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The journal file. Default: $JOURNAL_DB, else ./journal.db.",
    )(fn)


def db_path(db: Path | None) -> Path:
    return db or Path(os.environ.get("JOURNAL_DB") or "journal.db")


def open_journal(
    db: Path | None, *, create: bool = False, durability: Durability = "normal"
) -> Journal:
    """Open the journal for this command; it is closed when the command ends."""
    journal = Journal.open(db_path(db), create=create, durability=durability)
    click.get_current_context().call_on_close(journal.close)
    return journal


def durability_option(fn: F) -> F:
    return click.option(
        "--durability",
        type=click.Choice(["normal", "full"]),
        default="normal",
        show_default=True,
        help="normal: every commit survives a crash of the process; full: every commit is "
        "synced to disk (survives a power loss), at about twice the cost per step.",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)
