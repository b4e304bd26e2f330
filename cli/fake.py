"""`journal fake-model`: the offline fake Messages API, served on loopback for other processes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from runjournal.machine.testing.fake import PromptCache

_PER_MINUTE = click.IntRange(min=1)
# `machine.testing.fake.PROMPT_CACHES`, spelled out: attaching this command to `journal` must
# not import the fake (and httpx2) for every other command. tests/cli/test_startup.py compares.
_PROMPT_CACHES = ("warm", "cold", "instance")


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
    help="Seconds an injected 429 asks to wait.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Mean seconds each request takes before it is answered.",
)
@click.option(
    "--jitter",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="FRACTION",
    help="Spread of the latency: 0.5 makes a 0.2 s latency anything from 0.1 to 0.3 s.",
)
@click.option("--rpm", type=_PER_MINUTE, metavar="N", help="Requests per minute, else no limit.")
@click.option(
    "--itpm",
    type=_PER_MINUTE,
    metavar="N",
    help="Input tokens per minute, cache reads not counted, else no limit.",
)
@click.option(
    "--otpm", type=_PER_MINUTE, metavar="N", help="Output tokens per minute, else no limit."
)
@click.option(
    "--max-output",
    is_flag=True,
    help="Report max_tokens output tokens for every answer, the most a budget must allow.",
)
@click.option(
    "--prompt-cache",
    type=click.Choice(_PROMPT_CACHES),
    default="warm",
    show_default=True,
    help="Cached prompt prefixes: always read (warm), always written (cold), or written "
    "the first time this server sees them and read after (instance).",
)
def fake_model(
    host: str,
    port: int,
    spec: str,
    log: Path | None,
    retry_after: float,
    latency: float,
    jitter: float,
    rpm: int | None,
    itpm: int | None,
    otpm: int | None,
    max_output: bool,
    prompt_cache: PromptCache,
) -> None:
    """Serve the fake Anthropic Messages API until interrupted; print its URL.

    Point any client at it with ANTHROPIC_BASE_URL (and any ANTHROPIC_API_KEY): the real SDK
    talks to it as to the API, with the faults of --spec injected at their rates. With --rpm,
    --itpm or --otpm a request over a limit gets a 429 with retry-after and the API's
    anthropic-ratelimit-* headers.

    \b
    Example:
        journal fake-model --port 8765 --spec chaos --log requests.jsonl
    """
    from runjournal.machine.testing.fake import (  # only this command needs it
        FakeModel,
        parse_spec,
        serve,
    )

    model = FakeModel(
        faults=parse_spec(spec),
        retry_after=retry_after,
        latency=latency,
        jitter=jitter,
        rpm=rpm,
        itpm=itpm,
        otpm=otpm,
        max_output=max_output,
        prompt_cache=prompt_cache,
    )
    with serve(model, host=host, port=port, log=log) as server:
        click.echo(server.url)  # alone on its line, for a parent process to read
        threading.Event().wait()
