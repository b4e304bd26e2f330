"""`journal fake-model`: the offline fake Messages API, served on loopback for other processes."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from machine import FakeModel, parse_spec, serve


@click.command("fake-model")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--spec",
    default="none",
    show_default=True,
    help="Faults to inject: none, chaos, or e.g. '429=0.2,garbage=0.1,seed=7'.",
)
@click.option(
    "--log",
    "log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per request received.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds a 429 asks to wait.",
)
def fake_model(host: str, port: int, spec: str, log: Path | None, retry_after: float) -> None:
    """Serve the fake Anthropic Messages API until interrupted; print its URL.

    Point any client at it with ANTHROPIC_BASE_URL (and any ANTHROPIC_API_KEY): the real SDK
    talks to it as to the API, with the faults of --spec injected at their rates.

    \b
    Example:
        journal fake-model --port 8765 --spec chaos --log requests.jsonl
    """
    model = FakeModel(faults=parse_spec(spec), retry_after=retry_after)
    with serve(model, host=host, port=port, log=log) as server:
        click.echo(server.url)  # alone on its line, for a parent process to read
        threading.Event().wait()
