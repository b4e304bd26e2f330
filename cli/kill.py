"""`journal kill`: stopping runs now, wherever their processes are."""

from __future__ import annotations

import time

import click

from runjournal.cli.shared import Db, db_option, open_journal, who
from runjournal.journal import Run, Store
from runjournal.machine.model import anthropic_api
from runjournal.machine.model.batching import cancelling
from runjournal.machine.stopping import KILLABLE
from runjournal.machine.stopping import kill as kill_run


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--all", "every", is_flag=True, help="Every run that has not ended (or --machine's).")
@click.option("--machine", help="With --all: only this machine's runs.")
@click.option("--reason", help="Why: recorded with the kill.")
@click.option("--by", help="Who kills. Default: your user name @ this host.")
@db_option
def kill(
    run_id: str | None,
    every: bool,
    machine: str | None,
    reason: str | None,
    by: str | None,
    db: Db | None,
) -> None:
    """Stop RUN (or --all runs) now: it ends `killed`, and `journal resume` can go on later.

    The process executing the run sees the request within a second wherever it waits (between
    effects, in a backoff, in a model request, which it abandons); a run no process executes is
    marked killed at once. The kill is recorded with who asked and why. A run waiting on a
    Message Batch has the batch canceled, through the API that ANTHROPIC_API_KEY (and
    ANTHROPIC_BASE_URL) reach; the answers it had are kept for a resume.

    \b
    Example:
        journal kill 3fa2 --reason "looping on ticket T-17"
    """
    if (run_id is None) == (not every):
        raise click.UsageError("give a RUN, or --all")
    if machine is not None and not every:
        raise click.UsageError("--machine goes with --all")
    journal = open_journal(db, write=True)
    if every:
        targets = journal.runs(machine=machine, statuses=KILLABLE)
    else:
        targets = [journal.find_run(str(run_id))]
    person = who(by)
    requested = []
    # A run waiting on a Message Batch has it canceled: through the API of the environment.
    cancel = cancelling(anthropic_api().connect, lambda line: click.echo(line, err=True))
    for run in targets:
        if kill_run(journal, run.run_id, by=person, reason=reason, cancel=cancel) == "killed":
            click.echo(f"killed run {run.run_id}: no process was executing it")
        else:
            requested.append(run)
    for run in _wait_stopped(journal, requested):
        click.echo(f"killed run {run.run_id}: its process stopped it")
    if not targets:
        click.echo("no run to kill")


def _wait_stopped(journal: Store, runs: list[Run]) -> list[Run]:
    """The runs, once their processes have stopped them (a few seconds at most)."""
    deadline = time.monotonic() + 10
    waiting = {r.run_id for r in runs}
    stopped = []
    while waiting and time.monotonic() < deadline:
        for run_id in sorted(waiting):
            run = journal.run(run_id)
            if run.status != "running":
                waiting.discard(run_id)
                stopped.append(run)
        time.sleep(0.1)
    for run_id in sorted(waiting):
        click.echo(f"kill requested: run {run_id} stops at its next wait", err=True)
    return stopped
