"""What the commands that execute a run (`journal run`, `resume` and `fork`) share: one set of
options, saying which models answer, under what limits, into which journal, and the `Options`
made from them; the stop a signal asks for; and how a run's end is told, with its exit code.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import attrs
import click

from runjournal.cli import live
from runjournal.cli.costs import spent_words
from runjournal.cli.output import plural, printable
from runjournal.cli.shared import (
    DOLLARS,
    Db,
    F,
    db_option,
    dollars_above_zero,
    durability_option,
    open_journal,
    redact_env_option,
)
from runjournal.journal import Durability, Store
from runjournal.journal.costs import Spent
from runjournal.machine import Options, Outcome, RateLimits, signals
from runjournal.machine.errors import Interrupted
from runjournal.machine.model import Models, anthropic_api
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.offline import offline

_PER_MINUTE = click.IntRange(min=1)


@attrs.frozen
class Given:
    """What a command that executes a run was given on its command line: the models, the
    API's limits per minute, this run's limits, and the journal."""

    fake_model: str | None
    prices: Path | None
    capabilities: Path | None
    rpm: int | None
    itpm: int | None
    otpm: int | None
    limits: dict[str, Any]
    durability: Durability
    db: Db | None

    def options(self, **how: Any) -> Options:
        """The `Options` runs execute with: the models (bad specs, price and capabilities
        files exit 2), the limits, the pace, and `how` (`stop`, `on_start`, `on_event`)."""
        return Options(
            models=models_for(self.fake_model, self.prices, self.capabilities),
            limits=self.limits,
            rate_limits=RateLimits(rpm=self.rpm, itpm=self.itpm, otpm=self.otpm),
            **how,
        )

    def journal(self, *, create: bool = False) -> Store:
        """The journal, open for writing (an older one upgraded; with `create`, made)."""
        return open_journal(self.db, write=True, create=create, durability=self.durability)


_GIVEN = tuple(f.name for f in attrs.fields(Given) if f.name != "limits")
_LIMITS = ("max_cost_usd", "max_tokens", "max_steps", "max_model_calls")


def execution_options(*, live_view: bool) -> Callable[[F], F]:
    """The options of every command that executes a run, handed to it as one `given: Given`:
    the models (`--fake-model`, `--prices`, `--capabilities`, `--rpm`, `--itpm`, `--otpm`), the
    run's limits (`--max-*`), with `live_view` how it is told as it goes (`cli.live`), and the
    journal (`--durability`, `--redact-env`, `--db`)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            limits = {name: kwargs.pop(name) for name in _LIMITS}
            given = Given(**{name: kwargs.pop(name) for name in _GIVEN}, limits=limits)
            return fn(*args, given=given, **kwargs)

        decorated: Any = command
        for option in reversed(
            (
                model_options,
                limit_options,
                *((live.live_options,) if live_view else ()),
                durability_option,
                redact_env_option,
                db_option,
            )
        ):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


def model_options(fn: F) -> F:
    """`--fake-model SPEC`, `--prices FILE`, `--capabilities FILE` and the API's limits per
    minute (`--rpm`, `--itpm`, `--otpm`)."""
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
    amount = dollars_above_zero(value)
    if amount is None:
        raise click.BadParameter(f"{DOLLARS}, not {value!r}", ctx, param)
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


WAITING = 8
"""The exit code of a run that stopped to wait for a person's answer (`ctx.wait_for`)."""


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
    if run.status == "waiting":
        click.echo(printable(f"run {run.run_id} {run.error}"), err=True)
        click.echo(f"then: journal resume {run.run_id} (or journal resume --all)", err=True)
        return WAITING
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
