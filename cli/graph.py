"""`journal graph`: a machine's steps and declared transitions, as a Mermaid flowchart."""

from __future__ import annotations

import click

from runjournal.machine.loader import load


@click.command()
@click.argument("target")
def graph(target: str) -> None:
    """Print the machine in TARGET as a Mermaid flowchart.

    TARGET is path/to/file.py[:machine] or package.module[:machine]. Each step's declared
    transitions (`@m.step(to=(...))`) are arrows; a step that declared none has a dotted arrow
    to "any step". The machine is checked first, as `journal run` checks it: a transition to a
    step that does not exist, or a step no run can reach, is an error (exit 2). Nothing is
    opened or written.

    \b
    Example:
        journal graph fixtures/triage.py > triage.mmd
    """
    click.echo(load(target).machine.mermaid())
