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
@click.option(
    "--batch-time",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a Message Batch runs before it ends (24 hours at most).",
)
@click.option(
    "--batch-faults",
    default="none",
    show_default=True,
    help="Message Batch faults: none, or e.g. 'expired=0.1,errored=0.1,lost=1,lost_as=reset'.",
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
    batch_time: float,
    batch_faults: str,
) -> None:
    """Serve the fake Anthropic Messages API until interrupted; print its URL.

    Point any client at it with ANTHROPIC_BASE_URL (and any ANTHROPIC_API_KEY): the real SDK
    talks to it as to the API, with the faults of --spec injected at their rates. With --rpm,
    --itpm or --otpm a request over a limit gets a 429 with retry-after and the API's
    anthropic-ratelimit-* headers. The Message Batches endpoints are served too: a batch ends
    --batch-time seconds after its create, with the faults of --batch-faults (items expired or
    errored; `lost`: a create whose answer is lost, its batch made all the same).

    \b
    Example:
        journal fake-model --port 8765 --spec chaos --log requests.jsonl
        journal fake-model --batch-time 60 --batch-faults errored=0.05
    """
    from runjournal.machine.testing.fake import (  # only this command needs it
        FakeModel,
        parse_batch_spec,
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
        processing_time=batch_time,
        batch_faults=parse_batch_spec(batch_faults),
    )
    with serve(model, host=host, port=port, log=log) as server:
        click.echo(server.url)  # alone on its line, for a parent process to read
        threading.Event().wait()
