"""What the commands share: the options naming a journal and opening it, and errors turned into
one-line messages with an exit code.

Exit codes (the README lists them):

    0  the run is done, or the command did what it was asked
    1  the run failed or stopped, or another process holds it
    2  a usage or input error, or a file that is not a journal (nothing was written)
    4  the journal is busy: another process held its write lock past the busy timeout
    5  the journal cannot be written (a read-only file, folder or medium)
    6  the disk is full, or failed (nothing was lost: resume once it is mended)
    7  the journal file is damaged (`journal verify` says where)

Errors are translated here, in one place, and never show a traceback; every message is one
line, with secrets redacted and control characters escaped.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click

from runjournal.cli.output import printable
from runjournal.journal import (
    MIN_SECRET,
    REDACTED,
    ConcurrentAppend,
    DiskFailed,
    DiskFull,
    Durability,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    LeaseHeld,
    LeaseLost,
    ReadOnlyJournal,
    Store,
)
from runjournal.journal.stores import is_url, open_store
from runjournal.machine import MachineError

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """A bad command line, input file or journal: exit 2, with one line, not the usage text."""

    exit_code = 2


class Refused(click.ClickException):
    """Another process holds the run: exit 1."""

    exit_code = 1


class Busy(click.ClickException):
    exit_code = 4


class CannotWrite(click.ClickException):
    exit_code = 5


class NoRoom(click.ClickException):
    exit_code = 6


class Damaged(click.ClickException):
    exit_code = 7


_EXITS: tuple[tuple[tuple[type[Exception], ...], type[click.ClickException]], ...] = (
    ((LeaseHeld, LeaseLost, ConcurrentAppend), Refused),
    ((JournalBusy,), Busy),
    ((ReadOnlyJournal,), CannotWrite),
    ((DiskFull, DiskFailed), NoRoom),
    ((JournalCorrupt,), Damaged),
    ((JournalError, MachineError), InputError),
)


def one_line(text: str) -> str:
    """A message as it may be printed: secrets redacted, controls escaped, on one line."""
    return printable(redact(text))


class JournalGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (JournalError, MachineError) as e:
            raise _exit_for(e)(one_line(str(e))) from e
        except click.UsageError as e:
            raise click.UsageError(one_line(e.format_message()), ctx=e.ctx) from e
        except click.ClickException as e:
            if type(e) not in (InputError, Refused, click.ClickException):
                raise  # click's own (a file it cannot open): its message is click's to word
            raise type(e)(one_line(e.format_message())) from e


def _exit_for(error: Exception) -> type[click.ClickException]:
    for kinds, exit_class in _EXITS:
        if isinstance(error, kinds):
            return exit_class
    return InputError


_SECRETS = "runjournal.secrets"
_DB = "runjournal.db"


def secrets() -> list[str]:
    """What this command must never write or print: the API key, and each --redact-env value."""
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    ctx = click.get_current_context(silent=True)
    named = ctx.meta.get(_SECRETS, []) if ctx is not None else []
    return [s for s in (key, *named) if len(s) >= MIN_SECRET]


def redact(text: str) -> str:
    for secret in secrets():
        text = text.replace(secret, REDACTED)
    return text


def _redact_env(ctx: click.Context, param: click.Parameter, names: tuple[str, ...]) -> None:
    values = []
    for name in names:
        value = os.environ.get(name)
        if value is None:
            raise click.BadParameter(f"{name} is not set in the environment", ctx, param)
        if len(value) < MIN_SECRET:
            raise click.BadParameter(
                f"the value of {name} is shorter than {MIN_SECRET} characters: redacting it "
                "would garble the journal",
                ctx,
                param,
            )
        values.append(value)
    ctx.meta[_SECRETS] = values


def redact_env_option(fn: F) -> F:
    """`--redact-env NAME`, repeatable: the value of each such variable is never written."""
    return click.option(
        "--redact-env",
        metavar="NAME",
        multiple=True,
        expose_value=False,
        callback=_redact_env,
        help="The value of environment variable NAME is replaced by [redacted] in everything "
        "written to the journal and printed (repeatable). ANTHROPIC_API_KEY always is.",
    )(fn)


FEWEST_USD = Decimal("0.000000001")
MOST_USD = Decimal(10**9)
"""The range of a cap or a budget: the journal keeps money as integers of nano-dollars, which
SQLite holds up to about 9.2e9 dollars."""
DOLLARS = f"an amount of dollars from {FEWEST_USD:f} to {MOST_USD}"


def dollars_above_zero(value: str) -> Decimal | None:
    """`value` as an amount of dollars (a cap, a budget) from a nano-dollar to a billion, or
    None if it is not one."""
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and FEWEST_USD <= amount <= MOST_USD else None


def who(by: str | None) -> str:
    """The person a command acts for (a kill, a budget, a resolved action): --by, else
    user@host."""
    return by or f"{getpass.getuser()}@{socket.gethostname()}"


Db = Path | str
"""Where a journal is: a SQLite file's path, or a PostgreSQL URL (`postgresql://...`)."""


def parse_location(value: str) -> Db:
    """A journal named on the command line: a URL as text, anything else a path."""
    return value if is_url(value) else Path(value)


class _Location(click.ParamType):  # type: ignore[type-arg]
    """A journal file, or a `postgresql://` URL (kept as text: a path would fold its `//`)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Db:
        if isinstance(value, Path) or is_url(str(value)):
            return value if isinstance(value, Path) else str(value)
        path = Path(value)
        if path.is_dir():
            self.fail(f"{printable(str(path))!r} is a folder, not a journal file", param, ctx)
        return path


def db_option(fn: F) -> F:
    """`--db PATH|URL`, with `JOURNAL_DB` and then ./journal.db as the defaults."""
    return click.option(
        "--db",
        "db",
        type=_Location(),
        default=None,
        help="The journal: a SQLite file, or a PostgreSQL database (postgresql://...). "
        "Default: $JOURNAL_DB, else ./journal.db.",
    )(fn)


def db_path(db: Db | None) -> Db:
    if db is not None:
        return db
    named = os.environ.get("JOURNAL_DB") or "journal.db"
    return named if is_url(named) else Path(named)


def open_journal(
    db: Db | None,
    *,
    write: bool = False,
    create: bool = False,
    durability: Durability = "normal",
) -> Store:
    """Open the journal for this command, for reading unless it writes; closed at its end.

    Reading never writes, never waits for a writer, and works on read-only media. Only `write`
    upgrades an older journal, and only `create` makes one where no file is.
    """
    path = db_path(db)
    ctx = click.get_current_context()
    ctx.meta[_DB] = path
    journal = open_store(
        path,
        create=create,
        readonly=not (write or create),
        durability=durability,
        timeout=_busy_timeout(),
        secrets=tuple(secrets()),
    )
    ctx.call_on_close(journal.close)
    return journal


def _busy_timeout() -> float:
    """Seconds a writing command waits for another's write lock: $JOURNAL_BUSY_TIMEOUT, or 30."""
    text = os.environ.get("JOURNAL_BUSY_TIMEOUT", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        msg = f"JOURNAL_BUSY_TIMEOUT must be a number of seconds, not {text!r}"
        raise click.UsageError(msg)
    return seconds


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
