"""`journal run` and `journal resume`: execute a run to its end and say how it ended."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

import machine
from cli.main import F, InputError, db_option, durability_option, open_journal
from cli.output import plural
from journal import Durability, Run
from machine import Options, Outcome, TargetNotFound
from machine.model import Models, anthropic_api, offline
from machine.pricing import PriceTable

_LINES_SUFFIXES = (".jsonl", ".ndjson")


def read_input(path: Path | None) -> Any:
    """The run's input: a JSON document, or JSON Lines as a list; `-` reads standard input."""
    if path is None:
        return {}
    name = str(path)
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InputError(f"no input file {name}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{name} is not UTF-8 text") from e
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror}") from e
    if not text.strip():
        raise InputError(f"{name} is empty: give a JSON document or JSON Lines")
    if not name.endswith(_LINES_SUFFIXES):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                raise InputError(
                    f"{name}: not JSON: {e.msg} at line {e.lineno} column {e.colno}"
                ) from e
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{name}: line {n}: not JSON: {e.msg} at column {e.colno}") from e
    return values


def model_options(fn: F) -> F:
    """`--fake-model SPEC` and `--prices FILE`, for commands that execute a run."""
    fn = click.option(
        "--prices",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A price file (the format of machine/prices.json) whose models add to or "
        "replace the shipped prices.",
    )(fn)
    return click.option(
        "--fake-model",
        "fake_model",
        metavar="SPEC",
        help="Answer every ask from the offline fake Messages API, with faults: none, chaos, "
        "or rates such as '429=0.2,garbage=0.1,seed=7'. Without it, ANTHROPIC_API_KEY is used.",
    )(fn)


def models_for(fake_model: str | None, prices: Path | None) -> Models:
    """The models a run uses, from the command line; bad specs and price files exit 2."""
    table = PriceTable.load(prices)
    return offline(fake_model, prices=table) if fake_model is not None else anthropic_api(table)


def _announce(verb: str) -> Any:
    def on_start(run: Run) -> None:
        click.echo(f"run {run.run_id} {verb}: {run.machine} ({run.target})", err=True)

    return on_start


def report(outcome: Outcome) -> None:
    """Say how the run ended, and exit 0 if it is done, 1 if not."""
    run = outcome.run
    if outcome.code_changed is not None:
        before, now = outcome.code_changed
        click.echo(
            f"note: run {run.run_id} resumed under changed code ({before} -> {now})", err=True
        )
    if not outcome.executed:
        click.echo(f"run {run.run_id} is already done ({run.steps} steps): nothing to do")
        return
    counts = [plural(run.steps, "step")]
    for n, word in ((run.decisions, "decision"), (run.actions, "action"), (run.effects, "effect")):
        if n:
            counts.append(plural(n, word))
    if run.model_calls:
        counts.append(f"{plural(run.model_calls, 'model call')} costing ${run.cost_usd:.4f}")
    if run.status == "done":
        click.echo(f"run {run.run_id} done: {', '.join(counts)}")
        return
    if run.status == "needs_attention":
        click.echo(f"run {run.run_id} stopped at step {run.step}: {run.error}", err=True)
    elif run.status == "failed":
        click.echo(f"run {run.run_id} failed at step {run.step}: {run.error}", err=True)
        click.echo(f"after fixing the cause: journal resume {run.run_id}", err=True)
    else:
        click.echo(f"run {run.run_id} stopped ({run.status}) at step {run.step}", err=True)
        click.echo(f"journal resume {run.run_id} goes on", err=True)
    click.get_current_context().exit(1)


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
@durability_option
@db_option
def run(
    target: str,
    input_path: Path | None,
    run_key: str | None,
    fake_model: str | None,
    prices: Path | None,
    durability: Durability,
    db: Path | None,
) -> None:
    """Start a run of the machine in TARGET and execute it to its end.

    TARGET is path/to/file.py or package.module, with :NAME to pick one machine when the
    file has several. Exits 0 when the run is done, 1 when it failed or stopped (resume it
    with `journal resume`), 2 on bad input.

    \b
    Example:
        journal run fixtures/triage.py --input fixtures/tickets.jsonl --fake-model chaos
    """
    models = models_for(fake_model, prices)
    loaded = machine.load(target)
    # Everything is checked before the journal is opened: bad input never touches it.
    prepared = machine.prepare(loaded.machine, read_input(input_path))
    journal = open_journal(db, create=True, durability=durability)
    outcome = machine.start(
        journal,
        prepared,
        target=loaded.location,
        code_hash=loaded.code_hash,
        run_key=run_key,
        options=Options(on_start=_announce("started"), models=models),
    )
    if not outcome.created and outcome.executed:
        click.echo(
            f"note: run key {run_key!r} belongs to run {outcome.run.run_id}; resumed it", err=True
        )
    report(outcome)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--target",
    help="Where the machine's code is now, if it moved since the run started.",
)
@model_options
@durability_option
@db_option
def resume(
    run_id: str,
    target: str | None,
    fake_model: str | None,
    prices: Path | None,
    durability: Durability,
    db: Path | None,
) -> None:
    """Rebuild RUN's state from the journal and go on from its unfinished step.

    Effects whose outcome is journaled are not run again. RUN is a run id or any unique
    prefix of one. Refused (exit 1) while another live process executes the run.

    \b
    Example:
        journal resume 3fa2
    """
    models = models_for(fake_model, prices)
    journal = open_journal(db, durability=durability)
    found = journal.find_run(run_id)
    if found.status == "done":
        report(Outcome(found, executed=False))
        return
    try:
        loaded = machine.load(target or found.target)
    except TargetNotFound as e:
        raise InputError(
            f"run {found.run_id}'s code was at {found.target}, which is gone: "
            "pass --target with where it is now"
        ) from e
    outcome = machine.resume(
        journal,
        found.run_id,
        loaded.machine,
        target=loaded.location,
        code_hash=loaded.code_hash,
        options=Options(on_start=_announce("resumed"), models=models),
    )
    report(outcome)
