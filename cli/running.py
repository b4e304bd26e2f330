"""`journal run` and `journal resume`: execute a run to its end and say how it ended."""

from __future__ import annotations

import concurrent.futures
import warnings
from pathlib import Path
from typing import Any

import attrs
import click

from runjournal.cli import live
from runjournal.cli.executing import Given, execution_options, report, stoppable, tell
from runjournal.cli.inspecting import status_of
from runjournal.cli.output import printable
from runjournal.cli.shared import InputError, one_line
from runjournal.journal import JournalError, Run, Store
from runjournal.machine import MachineError, Options, Outcome, api, loader, runner, signals, waiting
from runjournal.machine.errors import IgnoredInput, Interrupted, TargetNotFound
from runjournal.machine.waiting import due


def _announce(verb: str) -> Any:
    def on_start(run: Run) -> None:
        click.echo(printable(f"run {run.run_id} {verb}: {run.machine} ({run.target})"), err=True)

    return on_start


wait_option = click.option(
    "--wait",
    "hold",
    is_flag=True,
    help="If the run stops to wait for a person (ctx.wait_for), keep this process until it is "
    "answered or its deadline passes, then go on.",
)
"""`--wait` of `run` and `resume`."""


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
    help="A run key: starting the same machine with the same key again resumes that run, "
    "or reports it if it is done, and never starts a second one.",
)
@wait_option
@execution_options(live_view=True)
@stoppable
def run(
    stop: signals.StopRequest,
    target: str,
    input_path: Path | None,
    run_key: str | None,
    hold: bool,
    given: Given,
) -> None:
    """Start a run of the machine in TARGET and execute it to its end.

    TARGET is path/to/file.py or package.module, with :NAME to pick one machine when the
    file has several. Exits 0 when the run is done, 3 when a limit or a person killed it, 8
    when it stopped to wait for a person's answer (`journal answer`; --wait keeps this
    process until then), 1 when it failed or stopped (resume it with `journal resume`), 2 on
    bad input, 143 or 130 when SIGTERM or Ctrl-C stopped it at a safe point (a second signal
    stops it at once).
    While it executes, each outcome (a model call, a decision, an action, the run's end) is
    a line on stderr (`--log all`: every event, as `journal logs` prints them), or, on a
    terminal, one progress line.

    \b
    Example:
        journal run fixtures/triage.py --input fixtures/tickets.jsonl --fake-model chaos
    """
    options = given.options(stop=stop)
    loaded = loader.load(target)
    assert options.models is not None
    runner.check_models(loaded.machine, options.models)
    # Everything is checked before the journal is opened: bad input never touches it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredInput)  # said below, as one line
        prepared = api.prepare(loaded.machine, {} if input_path is None else input_path)
    if prepared.ignored:
        click.echo(f"warning: {one_line(str(IgnoredInput(prepared.ignored)))}", err=True)
    journal = given.journal(create=True)
    with live.view(journal, prepared.machine, announce=_announce("started")) as view:
        told = attrs.evolve(options, on_start=view.on_start, on_event=view.on_event)
        outcome = api.start(journal, loaded, prepared, key=run_key, options=told)
    if not outcome.created and outcome.executed:
        click.echo(
            f"note: run key {run_key!r} belongs to run {outcome.run.run_id}; resumed it", err=True
        )
    if hold:
        outcome = _held(journal, outcome, loaded, options, stop)
    report(outcome)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--target",
    help="Where the machine's code is now, if it moved since the run started.",
)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Resume every run a crash left behind (interrupted), a person answered (resolved), or "
    "whose wait passed its deadline (waiting).",
)
@click.option("--machine", "machine_name", metavar="M", help="With --all: only this machine's.")
@wait_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --all: how many runs to resume at once.",
)
@execution_options(live_view=True)
@stoppable
def resume(
    stop: signals.StopRequest,
    run_id: str | None,
    target: str | None,
    every: bool,
    machine_name: str | None,
    workers: int,
    hold: bool,
    given: Given,
) -> None:
    """Rebuild RUN's state from the journal and go on from its unfinished step.

    Effects whose outcome is journaled are not run again. RUN is a run id or any unique
    prefix of one. Refused (exit 1) while another live process executes the run. With --all,
    every run that is ready to resume, in turn (or --workers at once), each under its lease,
    one outcome line each; the exit code is the worst of theirs.

    \b
    Example:
        journal resume 3fa2
        journal resume --all --machine triage --workers 4
    """
    if (run_id is None) == (not every):
        raise click.UsageError("give a RUN, or --all")
    if (machine_name is not None or workers != 1) and not every:
        raise click.UsageError("--machine and --workers go with --all")
    if hold and every:
        raise click.UsageError("--wait goes with one RUN, not --all")
    options = given.options(stop=stop)
    assert options.models is not None
    journal = given.journal()
    if every:
        code = _resume_all(journal, machine_name, workers, target, options)
        if code:
            click.get_current_context().exit(code)
        return
    found = journal.find_run(str(run_id))
    if found.status == "done":
        report(Outcome[Any](found, None, executed=False))
        return
    loaded = _load(found, target)
    runner.check_models(loaded.machine, options.models)
    with live.view(journal, loaded.machine, announce=_announce("resumed")) as view:
        told = attrs.evolve(options, on_start=view.on_start, on_event=view.on_event)
        outcome = api.go_on(journal, found.run_id, loaded, options=told)
    if hold:
        outcome = _held(journal, outcome, loaded, options, stop)
    report(outcome)


def _held(
    journal: Store,
    outcome: Outcome[Any],
    loaded: loader.Target,
    options: Options,
    stop: signals.StopRequest,
) -> Outcome[Any]:
    """`--wait`: while the run waits for a person, keep this process; once it is answered or
    its deadline passed, go on with it. A signal ends the wait, the run still waiting."""
    while outcome.run.status == "waiting":
        run_id = outcome.run.run_id
        click.echo(printable(f"run {run_id} {outcome.run.error} (--wait: waiting here)"), err=True)
        why = waiting.hold(journal, run_id, stop=stop)
        if why not in ("resolved", "due"):
            return Outcome[Any](journal.run(run_id), None)
        with live.view(journal, loaded.machine, announce=_announce("resumed")) as view:
            told = attrs.evolve(options, on_start=view.on_start, on_event=view.on_event)
            outcome = api.go_on(journal, run_id, loaded, options=told)
    return outcome


def _load(run: Run, target: str | None) -> loader.Target:
    try:
        return loader.load(target or run.target)
    except TargetNotFound as e:
        raise InputError(
            f"run {run.run_id}'s code was at {run.target}, which is gone: "
            "pass --target with where it is now"
        ) from e


READY = ("interrupted", "resolved")
"""What `resume --all` takes up: runs a crash left behind, and runs a person answered for; and
runs waiting past their deadline, whose default a resume takes."""


def _resume_all(
    journal: Store, machine_name: str | None, workers: int, target: str | None, options: Options
) -> int:
    """Resume every run ready to resume; the worst exit code of theirs."""
    ready = [
        r
        for r in journal.runs(machine=machine_name, statuses=("running", "resolved", "waiting"))
        if status_of(r, journal) in READY or (r.status == "waiting" and due(journal, r.run_id))
    ]
    if not ready:
        click.echo("no run to resume")
        return 0
    loaded = {r.run_id: _load(r, target) for r in ready}
    for code in loaded.values():
        assert options.models is not None
        runner.check_models(code.machine, options.models)

    def one(run: Run) -> Outcome[Any]:
        # A connection of its own for each: runs resumed at once each write through theirs.
        with journal.reopen() as own:
            code = loaded[run.run_id]
            click.echo(f"run {run.run_id} resumed: {run.machine} ({code.location})", err=True)
            return api.go_on(own, run.run_id, code, options=options)

    codes = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, run): run for run in reversed(ready)}  # oldest first
        for future in concurrent.futures.as_completed(futures):
            try:
                codes.append(tell(future.result()))
            except (JournalError, MachineError) as e:
                click.echo(one_line(f"run {futures[future].run_id}: {e}"), err=True)
                codes.append(1)
            except Interrupted as e:  # stopped before it was taken up: nothing written
                click.echo(f"run {futures[future].run_id} not resumed: {e}", err=True)
                codes.append(signals.exit_code(e.signal))
    return max(codes, key=lambda c: (c != 0, c))
