"""A run seen as it executes: a log line per event, a progress line, and `logging` records.

`journal run` and `journal resume` hand `Live.on_event` each batch of the run's events as the
journal commits it (`Options.on_event`): already redacted, and on a resume only the new ones,
so nothing is told twice. Where stderr is not a terminal (a container, cron, CI), the run is
told on stderr: by default a brief line per outcome (run start and end, model call outcomes,
decisions, effects, actions, kills), with `--log all` every event as `journal logs` prints it;
on a terminal, one status line is rewritten in place instead. `--log-file` appends the lines to
a file too, and every event is a record of the `runjournal` logger, for whatever handlers the
host program set up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Literal

import attrs
import click

from runjournal.cli.output import brief_line, event_json, event_line, write_flushed
from runjournal.cli.progress import Progress
from runjournal.cli.shared import F, one_line
from runjournal.journal import Event, Run, Store
from runjournal.journal import events as k
from runjournal.machine import Machine

LOGGER = "runjournal"
"""The name of the logger each event is handed to."""

_WARNINGS = frozenset(
    {k.RUN_FAILED, k.RUN_KILLED, k.RUN_INTERRUPTED, k.RUN_NEEDS_ATTENTION, k.COST_ANOMALY}
)
# A failure that is retried is routine (a 429); one that is not is worth a look.
_RETRIED = frozenset({k.MODEL_FAILED, k.ACTION_FAILED})
_SETTINGS = "runjournal.live"

# What the brief log tells (`--log brief`, the default): how the run and each call, effect,
# action and judgment in it came out, and what went wrong. Left to `--log all`: the steps
# (transition, snapshot), a model call's request (its outcome follows) and an action's intent
# (its outcome follows; one that never comes makes the run need attention, which is told).
BRIEF_KINDS = frozenset(
    {
        k.RUN_STARTED,
        k.RUN_RESUMED,
        k.RUN_DONE,
        k.RUN_FAILED,
        k.RUN_NEEDS_ATTENTION,
        k.RUN_KILLED,
        k.RUN_INTERRUPTED,
        k.MODEL_ANSWERED,
        k.MODEL_FAILED,
        k.OUTPUT_REJECTED,
        k.DECISION,
        k.EFFECT_DONE,
        k.ACTION_DONE,
        k.ACTION_FAILED,
        k.ACTION_SKIPPED,
        k.ACTION_RESOLVED,
        k.COST_ANOMALY,
    }
)

LogFormat = Literal["logfmt", "json"]
LogLevel = Literal["brief", "all"]


def level_of(event: Event) -> int:
    """WARNING for a run that ended badly or stopped, a cost anomaly, and a model call or an
    action that failed and will not be retried; INFO for everything else."""
    if event.kind in _WARNINGS:
        return logging.WARNING
    if event.kind in _RETRIED and event.data.get("delay_s") is None:
        return logging.WARNING
    return logging.INFO


def record_extra(event: Event) -> dict[str, Any]:
    """What a log record carries besides its message (the event's logfmt line).

    `journal` holds the whole event as `journal logs --json` prints it (run_id, seq, at, kind,
    step, data), exact and uncut; `journal_run_id`, `journal_seq`, `journal_at`, `journal_kind`
    and `journal_step` repeat its fixed fields flat, for format strings and filters. Every
    name starts with `journal`, so none can clash with a LogRecord attribute (`name`, `msg`).
    """
    fields = {
        "run_id": event.run_id,
        "seq": event.seq,
        "at": event.at,
        "kind": event.kind,
        "step": event.step,
    }
    return {
        "journal": {**fields, "data": event.data},
        **{f"journal_{name}": value for name, value in fields.items()},
    }


def log_records(
    events: Sequence[Event],
    *,
    logger: logging.Logger | None = None,
    lines: Sequence[str] | None = None,
) -> None:
    """Hand each event to `logger` (default: `runjournal`), one record each; usable as
    `Options(on_event=log_records)`.

    Nothing is handed on while no handler would get it: Python's last-resort handler would
    print the warnings on stderr a second time.
    """
    logger = logger or logging.getLogger(LOGGER)
    if not logger.hasHandlers():
        return
    for i, event in enumerate(events):
        level = level_of(event)
        if logger.isEnabledFor(level):
            line = lines[i] if lines is not None else event_line(event)
            logger.log(level, line, extra=record_extra(event))


@attrs.frozen
class Settings:
    """How a run is shown as it executes: the options of `live_options`.

    `log` is None when `--log` was not given (lines off a terminal, a progress line on one);
    `verbose` (`-v`) is `--log all`.
    """

    log_format: LogFormat = "logfmt"
    log_file: IO[str] | None = None
    quiet: bool = False
    log: LogLevel | None = None
    verbose: bool = False

    @property
    def level(self) -> LogLevel:
        """Which events the logfmt lines tell: `brief` ones (`BRIEF_KINDS`) or `all`."""
        return "all" if self.verbose else self.log or "brief"

    @property
    def lines_asked(self) -> bool:
        """Lines were asked for by name: written even on a terminal, instead of progress."""
        return self.log is not None or self.verbose


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    kept = ctx.meta.setdefault(_SETTINGS, {})
    kept[param.name or ""] = value
    if kept.get("quiet") and (kept.get("log") or kept.get("verbose")):
        raise click.UsageError("--quiet and --log (or -v) contradict each other: give one", ctx)


def live_options(fn: F) -> F:
    """`--log-format`, `--log-file`, `--quiet`, `--log` and `-v`, for commands that execute a
    run."""
    options = (
        click.option(
            "--log-format",
            type=click.Choice(["logfmt", "json"]),
            default="logfmt",
            show_default=True,
            expose_value=False,
            callback=_keep,
            help="How the run is told as its events are committed: logfmt lines (see "
            "--log), or every event whole, exact, as a JSON object (as `journal logs --json` "
            "prints it).",
        ),
        click.option(
            "--log-file",
            type=click.File("a", encoding="utf-8", lazy=False),
            metavar="PATH",
            expose_value=False,
            callback=_keep,
            help="Also append the lines to PATH (created if missing), flushed as each batch "
            "of events is committed.",
        ),
        click.option(
            "--quiet",
            "-q",
            is_flag=True,
            expose_value=False,
            callback=_keep,
            help="Print no event lines and no progress line on stderr: only how the run ended, "
            "and errors.",
        ),
        click.option(
            "--log",
            type=click.Choice(["brief", "all"]),
            is_flag=False,
            flag_value="brief",
            default=None,
            expose_value=False,
            callback=_keep,
            help="Which events the logfmt lines tell: brief (the default: run start and end, "
            "each model call's outcome, decisions, effects, actions, kills; bookkeeping "
            "fields left out, long values cut, floats rounded) or all (every event, every "
            "field, as `journal logs` prints it). Given, lines are written on stderr even "
            "when it is a terminal, where a progress line is shown by default.",
        ),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            expose_value=False,
            callback=_keep,
            help="The same as --log all.",
        ),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def settings_of(ctx: click.Context) -> Settings:
    """The settings `live_options` parsed for this command."""
    return Settings(**ctx.meta.get(_SETTINGS, {}))


def is_terminal(stream: IO[str]) -> bool:
    """A terminal that can rewrite a line in place (not TERM=dumb)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a file at all
        return False
    return tty and os.environ.get("TERM") != "dumb"


class Live:
    """What this process shows of one run while executing it: wire `on_start` and `on_event`
    into `Options`, and `close` once the run returned or raised."""

    def __init__(
        self,
        settings: Settings,
        *,
        journal: Store,
        machine: Machine[Any],
        announce: Callable[[Run], None],
        stream: IO[str],
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        terminal = is_terminal(stream)
        self.settings = settings
        self.announce = announce
        self.logger = logger
        self.lines: IO[str] | None = None
        if not settings.quiet and (settings.lines_asked or not terminal):
            self.lines = stream
        self.file = settings.log_file
        self.progress: Progress | None = None
        if not settings.quiet and not settings.lines_asked and terminal:
            self.progress = Progress(stream, journal=journal, machine=machine, clock=clock)
        self.troubles: list[str] = []
        # Events told before the run is announced: its `run.started` or `run.resumed`. They
        # wait for the announcement, so that "run 3fa2 started" stays the first line.
        self._held: list[Event] | None = []

    def on_start(self, run: Run) -> None:
        held, self._held = self._held or [], None
        if self.progress is not None:
            self.progress.start(run, held)
        if not self.settings.quiet:
            self.announce(run)
        self._tell(held)
        if self.progress is not None:
            self.progress.draw(force=True)

    def on_event(self, events: Sequence[Event]) -> None:
        if self._held is not None:
            self._held.extend(events)
            return
        self._tell(events)
        if self.progress is not None:
            self.progress.update(events)

    def close(self) -> None:
        """Tell what is still held, clear the progress line, and say if a log stopped."""
        if self._held:
            # The run never got going here (the journal failed under it): its error is the one
            # line stderr gets, as for any error; the log file and `logging` still get these.
            held, self._held, self.lines = self._held, None, None
            self._tell(held)
        if self.progress is not None:
            self.progress.clear()
        for trouble in self.troubles:
            click.echo(one_line(trouble), err=True)

    def _tell(self, events: Sequence[Event]) -> None:
        if not events:
            return
        lines: list[str] | None = None  # each event's full line, for `logging` too
        if self.lines is not None or self.file is not None:
            if self.settings.log_format == "json":
                text = "".join(f"{event_json(e)}\n" for e in events)
            elif self.settings.level == "all":
                lines = [event_line(e) for e in events]
                text = "".join(f"{line}\n" for line in lines)
            else:
                text = "".join(f"{brief_line(e)}\n" for e in events if e.kind in BRIEF_KINDS)
            if text and self.lines is not None and not write_flushed(self.lines, text):
                self.lines = None  # stderr is gone (a closed pipe): the run goes on without it
            if text and self.file is not None and not write_flushed(self.file, text):
                self.troubles.append(f"warning: --log-file stopped at seq {events[0].seq}")
                self.file = None
        log_records(events, logger=self.logger, lines=lines)


@contextlib.contextmanager
def view(
    journal: Store, machine: Machine[Any], *, announce: Callable[[Run], None]
) -> Iterator[Live]:
    """The live view of the run this command executes, closed however the run ends: the
    progress line is gone before the outcome or an error is printed."""
    live = Live(
        settings_of(click.get_current_context()),
        journal=journal,
        machine=machine,
        announce=announce,
        stream=sys.stderr,
    )
    try:
        yield live
    finally:
        live.close()
