"""`journal replay`: a run's state after each transition, folded from the journal alone; or,
with --rerun, the machine's code executed again against it."""

from __future__ import annotations

import sys

import attrs
import click

from runjournal.cli.output import json_line, printable, short
from runjournal.cli.shared import (
    Db,
    InputError,
    db_option,
    json_option,
    open_journal,
    redact,
    redact_env_option,
)
from runjournal.journal import replay, state_at
from runjournal.machine.errors import TargetNotFound
from runjournal.machine.loader import load
from runjournal.machine.rerun import Divergence, Reproduced, post_mortem, rerun


@click.command("replay")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--at", "at_seq", type=click.IntRange(min=1), help="Print the whole state at this seq."
)
@click.option(
    "--rerun",
    "again",
    is_flag=True,
    help="Execute the machine's code again against the journal, offline, and name the first "
    "place where it does otherwise than the run did.",
)
@click.option(
    "--target",
    help="With --rerun: where the machine's code is, if not where the run recorded it.",
)
@click.option(
    "--pdb",
    "debug",
    is_flag=True,
    help="With --rerun: stop in the Python debugger where the code diverges (only when "
    "standard input is a terminal).",
)
@json_option
@redact_env_option
@db_option
def replay_command(
    run_id: str,
    at_seq: int | None,
    again: bool,
    target: str | None,
    debug: bool,
    as_json: bool,
    db: Db | None,
) -> None:
    """Show RUN's state after each transition, folded from the journal alone; or, with
    --rerun, execute the machine's code again against it.

    Without --rerun no pipeline code is imported. Without --at, each transition prints the step
    it ended, the next step, and what changed; with --json, the whole state after each one.

    --rerun imports the machine's code (the run's target, or --target) and executes the run
    from its start: each model call gets the answer the run got, each effect and action its
    recorded outcome; nothing is sent, run or written. Step by step it compares what the code
    does with what the run did, and names the first divergence (another request, with a diff
    of the prompt; another decision, action key or transition; a call the run never made or no
    longer makes; another ending): exit 1. Exit 0 when the code reproduces the run. With --pdb,
    the debugger stops in the step at the call that diverged, or where the step raised; only
    when standard input is a terminal (otherwise it says so and does not stop). Give the run's
    --redact-env too, so that prompts holding those values hash as they were recorded.

    \b
    Example:
        journal replay 3fa2 --at 40
        journal replay 3fa2 --rerun --target fixtures/triage.py
    """
    if not again and (target is not None or debug):
        raise click.UsageError("--target and --pdb go with --rerun")
    if again and at_seq is not None:
        raise click.UsageError("--at prints a recorded state, --rerun executes the code: not both")
    journal = open_journal(db)
    run = journal.find_run(run_id)
    if again:
        try:
            loaded = load(target or run.target)
        except TargetNotFound as e:
            msg = f"run {run.run_id}'s code was at {run.target}, which is gone: pass --target"
            raise InputError(msg) from e
        if loaded.code_hash != run.code_hash:
            click.echo(f"note: code {loaded.code_hash}, the run's was {run.code_hash}", err=True)
        if debug and not sys.stdin.isatty():
            click.echo("note: --pdb stops only when standard input is a terminal", err=True)
            debug = False
        result = rerun(journal, run.run_id, loaded.machine, debug=post_mortem if debug else None)
        if as_json:
            fields = {"reproduced": isinstance(result, Reproduced), **attrs.asdict(result)}
            click.echo(json_line({**fields, "message": result.message}))
        else:
            click.echo(printable(redact(result.describe()), multiline=True))
        if isinstance(result, Divergence):
            click.get_current_context().exit(1)
        return
    if at_seq is not None:
        at = state_at(journal, run.run_id, at_seq)
        if as_json:
            payload = {
                "seq": at.seq,
                "step": at.step,
                "transitions": at.transitions,
                "state": at.state,
            }
            click.echo(json_line(payload))
        else:
            next_step = printable(at.step or "(end)")
            click.echo(f"# run {run.run_id} after seq {at.seq}, next step {next_step}")
            click.echo(json_line(at.state, indent=2))
        return
    for change in replay(journal, run.run_id):
        if as_json:
            payload = {"seq": change.seq, "at": change.at, "step": change.step, "to": change.to}
            click.echo(json_line({**payload, "state": change.state}))
            continue
        if change.step is None:
            click.echo(printable(f"#{change.seq} start -> {change.to}: {short(change.state, 120)}"))
            continue
        click.echo(printable(f"#{change.seq} {change.step} -> {change.to or '(end)'}"))
        for op in change.ops:
            value = f" = {short(op['value'])}" if "value" in op else ""
            click.echo(printable(f"    {op['op']} {op['path'] or '/'}{value}"))
