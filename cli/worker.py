"""`journal submit` and `journal worker`: runs recorded now and executed by workers, on any
number of hosts sharing a journal (PostgreSQL, or one SQLite file on one host)."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from runjournal.cli.executing import Given, execution_options, stoppable
from runjournal.cli.output import printable
from runjournal.cli.shared import InputError, one_line
from runjournal.machine import api, loader, runner, signals
from runjournal.machine.errors import IgnoredInput
from runjournal.machine.worker import Executed, Worker


@click.command()
@click.argument("target")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="The run's input: a JSON file, a JSON Lines file (.jsonl), or - for standard input.",
)
@click.option(
    "--key",
    "run_key",
    help="A run key: submitting the same machine with the same key again records nothing "
    "new and prints that run's id.",
)
@execution_options(live_view=False)
def submit(target: str, input_path: Path | None, run_key: str | None, given: Given) -> None:
    """Record a run of the machine in TARGET for a worker to execute (`journal worker`), and
    print its id. Nothing is executed here: the run is `submitted` until a worker claims it.

    The input and the machine are checked as `journal run` checks them, before anything is
    written; the limits given (--max-*) are recorded with the run and hold wherever it runs.

    \b
    Example:
        journal submit fixtures/triage.py --input fixtures/tickets.jsonl --key 2026-12-05 \\
            --db postgresql://pipelines@db.internal/journal
    """
    loaded = loader.load(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredInput)
        prepared = api.prepare(loaded.machine, {} if input_path is None else input_path)
    if prepared.ignored:
        click.echo(f"warning: {one_line(str(IgnoredInput(prepared.ignored)))}", err=True)
    journal = given.journal(create=True)
    run, created = runner.submit(
        journal,
        prepared,
        target=loaded.location,
        code_hash=loaded.code_hash,
        run_key=run_key,
        limits=given.limits,
    )
    if not created:
        click.echo(
            f"note: run key {run_key!r} belongs to run {run.run_id} ({run.status})", err=True
        )
    click.echo(run.run_id)


@click.command()
@click.option(
    "--machines",
    metavar="M[,M...]",
    help="Only runs of these machines (comma separated). Default: every machine's.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=30),
    default=1,
    show_default=True,
    help="How many runs this worker executes at once (30 at most), each on a thread and two "
    "connections (its writes, its lease).",
)
@click.option(
    "--exit-when-idle",
    is_flag=True,
    help="End once no run is left to claim and none is executing (a batch job, a test).",
)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Do not listen for kill notifications (PostgreSQL): a kill is then seen at the "
    "run's next heartbeat (a third of the lease).",
)
@click.option(
    "--lease",
    "lease_ttl",
    type=click.FloatRange(min=0.3),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a run's lease lasts unrenewed: how soon another worker takes up the runs "
    "of a worker that died.",
)
@execution_options(live_view=False)
@stoppable
def worker(
    stop: signals.StopRequest,
    machines: str | None,
    concurrency: int,
    exit_when_idle: bool,
    no_listen: bool,
    lease_ttl: float,
    given: Given,
) -> None:
    """Claim runnable runs (submitted, interrupted, resolved, or left by a process that died,
    once its lease expired) and execute them, --concurrency at a time, until stopped.

    Start as many as you like, on as many hosts as share the journal: each run is executed by
    one worker at a time. SIGTERM (or Ctrl-C) claims nothing more and stops each run at its
    next safe point, handing it back for another worker; a second signal stops at once. A run
    whose code changed since it was submitted is executed all the same, the change noted.
    Each run's end is a line on stdout: its id, status, steps and cost.

    \b
    Example:
        journal worker --machines triage --concurrency 4 \\
            --db postgresql://pipelines@db.internal/journal
    """
    wanted = [m.strip() for m in machines.split(",") if m.strip()] if machines else None
    if machines is not None and not wanted:
        raise InputError("--machines names no machine")
    options = given.options(stop=stop, lease_ttl=lease_ttl, shared_pace=True)
    journal = given.journal(create=True)
    click.echo(
        printable(f"worker started: {concurrency} at a time on {journal.location}"), err=True
    )
    Worker(
        journal,
        options,
        concurrency=concurrency,
        machines=wanted,
        exit_when_idle=exit_when_idle,
        listen=not no_listen,
        told=_told,
    ).work()
    if stop.signal is not None:
        click.get_current_context().exit(signals.exit_code(stop.signal))


def _told(executed: Executed) -> None:
    if executed.error is not None:
        click.echo(one_line(f"run {executed.run_id}: {executed.error}"), err=True)
        return
    assert executed.outcome is not None
    run = executed.outcome.run
    changed = executed.outcome.code_changed
    note = f" (code changed {changed[0]} -> {changed[1]})" if changed else ""
    click.echo(
        printable(
            f"run {run.run_id} {run.status}: {run.steps} steps, ${run.cost_usd:g} billed{note}"
        )
    )
