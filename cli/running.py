"""`journal run` and `journal resume`: execute a run to its end and say how it ended."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import sys
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import click

from runjournal.cli import live
from runjournal.cli.costs import spent_words
from runjournal.cli.inspecting import status_of
from runjournal.cli.output import plural, printable
from runjournal.cli.shared import (
    F,
    InputError,
    db_option,
    durability_option,
    one_line,
    open_journal,
    redact_env_option,
)
from runjournal.journal import Durability, JournalError, Run, Store
from runjournal.journal.costs import Spent
from runjournal.machine import MachineError, Options, Outcome, RateLimits, loader, runner, signals
from runjournal.machine.errors import IgnoredInput, Interrupted, TargetNotFound
from runjournal.machine.inputs import read as read_input
from runjournal.machine.model import Models, anthropic_api
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.offline import offline

_PER_MINUTE = click.IntRange(min=1)


def model_options(fn: F) -> F:
    """`--fake-model SPEC`, `--prices FILE`, `--capabilities FILE` and the API's limits per
    minute (`--rpm`, `--itpm`, `--otpm`), for commands that execute a run."""
    for flag, what in (
        ("--otpm", "output tokens"),
        ("--itpm", "input tokens"),
        ("--rpm", "requests"),
    ):
        fn = click.option(
            flag,
            type=_PER_MINUTE,
            metavar="N",
            help=f"The API's limit of {what} per minute to pace model requests under (else "
            "learned from the answers' anthropic-ratelimit-* headers).",
        )(fn)
    fn = click.option(
        "--capabilities",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A capabilities file (the format of machine/model/capabilities.json) whose models "
        "add to or replace the shipped ones: what a model accepts, for a model priced with "
        "--prices.",
    )(fn)
    fn = click.option(
        "--prices",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A price file (the format of machine/model/prices.json) whose models add to or "
        "replace the shipped prices.",
    )(fn)
    return click.option(
        "--fake-model",
        "fake_model",
        metavar="SPEC",
        help="Answer every ask from the offline fake Messages API, with faults: none, chaos, "
        "or rates such as '429=0.2,garbage=0.1,seed=7'. Without it, ANTHROPIC_API_KEY is used.",
    )(fn)


def _cost_cap(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount <= 0:
        raise click.BadParameter(f"an amount of dollars above 0, not {value!r}", ctx, param)
    return amount


def limit_options(fn: F) -> F:
    """`--max-cost`, `--max-tokens`, `--max-steps`, `--max-calls`: this run's limits."""
    positive = click.IntRange(min=1)
    for flag, name, kind, what in reversed(
        (
            ("--max-cost", "max_cost_usd", None, "USD billed or possibly billed"),
            ("--max-tokens", "max_tokens", positive, "tokens of every kind"),
            ("--max-steps", "max_steps", positive, "steps"),
            ("--max-calls", "max_model_calls", positive, "model requests, every attempt"),
        )
    ):
        fn = click.option(
            flag,
            name,
            type=kind,
            metavar="N" if kind else "USD",
            callback=_cost_cap if kind is None else None,
            help=f"Stop the run, killed, before it passes this many {what}; over the "
            "machine's own limit, and kept for its resumes.",
        )(fn)
    return fn


def rate_limits(rpm: int | None, itpm: int | None, otpm: int | None) -> RateLimits:
    """The limits per minute given on the command line."""
    return RateLimits(rpm=rpm, itpm=itpm, otpm=otpm)


def models_for(
    fake_model: str | None, prices: Path | None, capabilities: Path | None = None
) -> Models:
    """The models a run uses, from the command line; bad specs, price and capabilities files
    exit 2."""
    table = PriceTable.load(prices)
    described = Capabilities.load(capabilities)
    if fake_model is not None:
        return offline(fake_model, prices=table, capabilities=described)
    return anthropic_api(table, described)


def stoppable(fn: F) -> F:
    """Run the command with SIGTERM and Ctrl-C asking its runs to stop at a safe point (see
    `machine.signals`); the command gets the request as `stop`."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        stop = signals.StopRequest(told=_say)
        with signals.stop_on_signals(stop):
            try:
                return fn(stop, *args, **kwargs)
            except Interrupted as e:
                # Out of a run: before one was taken up, or after it let go (a second signal
                # while the outcome is told). Either way no run was cut half way.
                click.echo(
                    f"{e}: nothing was left half done; `journal runs` shows where runs stand",
                    err=True,
                )
                click.get_current_context().exit(signals.exit_code(e.signal))

    return cast(F, command)


def _say(line: str) -> None:
    # Said from a signal handler, which may run while the main thread is inside a write to
    # sys.stderr: a buffered stream refuses to be entered twice, a raw write does not mind.
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"{line}\n".encode())


def _announce(verb: str) -> Any:
    def on_start(run: Run) -> None:
        click.echo(printable(f"run {run.run_id} {verb}: {run.machine} ({run.target})"), err=True)

    return on_start


def report(outcome: Outcome[Any]) -> None:
    """Say how the run ended, and exit 0 if it is done, 3 if it was killed, 128 + the signal's
    number if a signal interrupted it (130 Ctrl-C, 143 SIGTERM), 1 otherwise."""
    code = tell(outcome)
    if code:
        click.get_current_context().exit(code)


def tell(outcome: Outcome[Any]) -> int:
    """Say how the run ended; the exit code that says it: 0 done, 3 killed, 130 or 143
    interrupted (Ctrl-C, SIGTERM), 1 otherwise."""
    run = outcome.run
    for found in outcome.anomalies:
        click.echo(
            f"warning: run {run.run_id} used {found['value']:g} {found['metric'].replace('_', ' ')}"
            f", {found['ratio']:g}x the median of {found['baseline']:g} over the last "
            f"{found['baseline_runs']} runs of {run.machine} (a cost.anomaly is recorded)",
            err=True,
        )
    if outcome.code_changed is not None:
        before, now = outcome.code_changed
        click.echo(
            f"note: run {run.run_id} resumed under changed code ({before} -> {now})", err=True
        )
    if not outcome.executed:
        click.echo(f"run {run.run_id} is already done ({run.steps} steps): nothing to do")
        return 0
    if outcome.interrupted is not None:
        said = outcome.interrupted.signal
        click.echo(
            printable(
                f"run {run.run_id} interrupted by {said} at step {run.step}: what was done is "
                f"journaled; journal resume {run.run_id} goes on"
            ),
            err=True,
        )
        return signals.exit_code(said)
    counts = [plural(run.steps, "step")]
    for n, word in ((run.decisions, "decision"), (run.actions, "action"), (run.effects, "effect")):
        if n:
            counts.append(plural(n, word))
    if run.model_calls:
        spent = spent_words(Spent.of(run.cost_nusd, run.total_nusd))
        counts.append(f"{plural(run.model_calls, 'model call')} ({spent})")
    if run.status == "done":
        click.echo(f"run {run.run_id} done: {', '.join(counts)}")
        return 0
    if run.status == "killed":
        click.echo(printable(f"run {run.run_id} killed at step {run.step}: {run.error}"), err=True)
        click.echo(f"journal resume {run.run_id} goes on (with higher limits if need be)", err=True)
        return 3
    if run.status == "needs_attention":
        click.echo(printable(f"run {run.run_id} stopped at step {run.step}: {run.error}"), err=True)
    elif run.status == "failed":
        click.echo(printable(f"run {run.run_id} failed at step {run.step}: {run.error}"), err=True)
        click.echo(f"after fixing the cause: journal resume {run.run_id}", err=True)
    else:
        click.echo(
            printable(f"run {run.run_id} stopped ({run.status}) at step {run.step}"), err=True
        )
        click.echo(f"journal resume {run.run_id} goes on", err=True)
    return 1


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
@model_options
@limit_options
@live.live_options
@durability_option
@redact_env_option
@db_option
@stoppable
def run(
    stop: signals.StopRequest,
    target: str,
    input_path: Path | None,
    run_key: str | None,
    fake_model: str | None,
    prices: Path | None,
    capabilities: Path | None,
    rpm: int | None,
    itpm: int | None,
    otpm: int | None,
    durability: Durability,
    db: Path | None,
    **limits: Any,
) -> None:
    """Start a run of the machine in TARGET and execute it to its end.

    TARGET is path/to/file.py or package.module, with :NAME to pick one machine when the
    file has several. Exits 0 when the run is done, 3 when a limit or a person killed it, 1
    when it failed or stopped (resume it with `journal resume`), 2 on bad input, 143 or 130
    when SIGTERM or Ctrl-C stopped it at a safe point (a second signal stops it at once).
    While it executes, each outcome (a model call, a decision, an action, the run's end) is
    a line on stderr (`--log all`: every event, as `journal logs` prints them), or, on a
    terminal, one progress line.

    \b
    Example:
        journal run fixtures/triage.py --input fixtures/tickets.jsonl --fake-model chaos
    """
    models = models_for(fake_model, prices, capabilities)
    loaded = loader.load(target)
    runner.check_models(loaded.machine, models)
    # Everything is checked before the journal is opened: bad input never touches it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredInput)  # said below, as one line
        prepared = runner.prepare(loaded.machine, read_input(input_path))
    if prepared.ignored:
        click.echo(f"warning: {one_line(str(IgnoredInput(prepared.ignored)))}", err=True)
    journal = open_journal(db, create=True, durability=durability)
    with live.view(journal, prepared.machine, announce=_announce("started")) as view:
        outcome = runner.start(
            journal,
            prepared,
            target=loaded.location,
            code_hash=loaded.code_hash,
            run_key=run_key,
            options=Options(
                on_start=view.on_start,
                on_event=view.on_event,
                models=models,
                limits=limits,
                rate_limits=rate_limits(rpm, itpm, otpm),
                stop=stop,
            ),
        )
    if not outcome.created and outcome.executed:
        click.echo(
            f"note: run key {run_key!r} belongs to run {outcome.run.run_id}; resumed it", err=True
        )
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
    help="Resume every run a crash left behind (interrupted) or a person answered (resolved).",
)
@click.option("--machine", "machine_name", metavar="M", help="With --all: only this machine's.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --all: how many runs to resume at once.",
)
@model_options
@limit_options
@live.live_options
@durability_option
@redact_env_option
@db_option
@stoppable
def resume(
    stop: signals.StopRequest,
    run_id: str | None,
    target: str | None,
    every: bool,
    machine_name: str | None,
    workers: int,
    fake_model: str | None,
    prices: Path | None,
    capabilities: Path | None,
    rpm: int | None,
    itpm: int | None,
    otpm: int | None,
    durability: Durability,
    db: Path | None,
    **limits: Any,
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
    models = models_for(fake_model, prices, capabilities)
    journal = open_journal(db, write=True, durability=durability)
    if every:
        options = Options(
            models=models, limits=limits, rate_limits=rate_limits(rpm, itpm, otpm), stop=stop
        )
        code = _resume_all(journal, machine_name, workers, target, options)
        if code:
            click.get_current_context().exit(code)
        return
    found = journal.find_run(str(run_id))
    if found.status == "done":
        report(Outcome[Any](found, None, executed=False))
        return
    loaded = _load(found, target)
    runner.check_models(loaded.machine, models)
    with live.view(journal, loaded.machine, announce=_announce("resumed")) as view:
        outcome = runner.resume(
            journal,
            found.run_id,
            loaded.machine,
            target=loaded.location,
            code_hash=loaded.code_hash,
            options=Options(
                on_start=view.on_start,
                on_event=view.on_event,
                models=models,
                limits=limits,
                rate_limits=rate_limits(rpm, itpm, otpm),
                stop=stop,
            ),
        )
    report(outcome)


def _load(run: Run, target: str | None) -> loader.Target:
    try:
        return loader.load(target or run.target)
    except TargetNotFound as e:
        raise InputError(
            f"run {run.run_id}'s code was at {run.target}, which is gone: "
            "pass --target with where it is now"
        ) from e


READY = ("interrupted", "resolved")
"""What `resume --all` takes up: runs a crash left behind, and runs a person answered for."""


def _resume_all(
    journal: Store, machine_name: str | None, workers: int, target: str | None, options: Options
) -> int:
    """Resume every run ready to resume; the worst exit code of theirs."""
    ready = [
        r
        for r in journal.runs(machine=machine_name, statuses=("running", "resolved"))
        if status_of(r, journal) in READY
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
            return runner.resume(
                own,
                run.run_id,
                code.machine,
                target=code.location,
                code_hash=code.code_hash,
                options=options,
            )

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
