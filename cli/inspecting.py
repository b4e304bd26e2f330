"""`journal runs`, `show`, `logs` and `replay`: reading runs back, without the pipeline's code."""

from __future__ import annotations

import json
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import click

from cli.main import db_option, db_path, json_option, open_journal
from cli.output import event_json, event_line, json_line, plural, printable, short, table
from journal import Journal, JournalCorrupt, Problem, Run, heads, replay, state_at, verify
from journal.limits import NUSD


def status_of(run: Run, journal: Journal) -> str:
    """The run's status, with `interrupted` for a running run that no live process holds."""
    if run.status != "running":
        return run.status
    lease = journal.lease(run.run_id)
    return "running" if lease is not None and lease.is_live(journal.clock()) else "interrupted"


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show only the newest N.")
@json_option
@db_option
def runs(limit: int | None, as_json: bool, db: Path | None) -> None:
    """List the journal's runs, newest first.

    A run whose process died shows as `interrupted`: resume it with `journal resume`.

    \b
    Example:
        journal runs --limit 10
    """
    journal = open_journal(db)
    found = [(r, status_of(r, journal)) for r in journal.runs(limit=limit)]
    if as_json:
        for r, status in found:
            click.echo(json_line({**attrs.asdict(r), "status": status}))
        return
    columns = ["run", "machine", "status", "step", "steps", "cost", "started", "updated", "flags"]
    rows = [
        (
            r.run_id,
            r.machine,
            s,
            r.step,
            r.steps,
            f"${r.cost_usd:.4f}",
            r.started_at,
            r.updated_at,
            "cost.anomaly" if r.anomaly else "",
        )
        for r, s in found
    ]
    click.echo(table(columns, rows))


@click.command()
@click.argument("run_id", metavar="RUN")
@json_option
@db_option
def show(run_id: str, as_json: bool, db: Path | None) -> None:
    """Show where RUN stands: status, step, counts, holder, error.

    RUN is a run id or any unique prefix of one.

    \b
    Example:
        journal show 3fa2
    """
    journal = open_journal(db)
    run = journal.find_run(run_id)
    status = status_of(run, journal)
    lease = journal.lease(run.run_id)
    if as_json:
        holder = attrs.asdict(lease) if lease is not None else None
        click.echo(json_line({**attrs.asdict(run), "status": status, "holder": holder}, indent=2))
        return
    decisions = plural(run.decisions, "decision")
    fields: list[tuple[str, Any]] = [
        ("run", run.run_id),
        ("machine", run.machine),
        ("code", f"{run.target} (hash {run.code_hash})"),
        ("key", run.run_key),
        ("status", status),
        ("step", run.step),
        ("steps", run.steps),
        ("events", f"{run.last_seq} ({plural(run.effects, 'effect')}, {decisions})"),
        ("actions", run.actions),
        ("resumes", run.resumes),
        ("started", run.started_at),
        ("updated", run.updated_at),
        ("ended", run.ended_at),
    ]
    if run.model_calls or run.model_failures:
        fields.append(("model", _model_line(run)))
    limits = _limits_line(run)
    if limits is not None:
        fields.append(("limits", limits))
    if status == "running" and lease is not None:
        fields.append(("holder", lease.describe()))
    if run.error:
        fields.append(("error", run.error))
    if status in ("interrupted", "failed", "resolved", "killed"):
        fields.append(("next", f"journal resume {run.run_id}"))
    width = max(len(name) for name, _ in fields)
    indent = "\n" + " " * (width + 2)  # a value's further lines cannot pass for fields
    for name, value in fields:
        text = "-" if value is None else printable(str(value), multiline=True)
        click.echo(f"{name.ljust(width)}  " + text.replace("\n", indent))


def _model_line(run: Run) -> str:
    calls = plural(run.model_calls, "call")
    failed = plural(run.model_failures, "failed attempt")
    trouble = f"{failed}, {plural(run.rejections, 'rejected answer')}"
    tokens = (
        f"tokens {run.input_tokens:,} in, {run.output_tokens:,} out, "
        f"{run.cache_write_tokens:,} cache write, {run.cache_read_tokens:,} cache read"
    )
    possibly = Decimal(run.exposure_nusd - run.cost_nusd) / NUSD
    maybe = f", possibly billed ${possibly:f} more" if possibly else ""
    return f"{calls} ({trouble}); {tokens}; cost ${Decimal(run.cost_nusd) / NUSD:f}{maybe}"


def _limits_line(run: Run) -> str | None:
    """The limits in force, e.g. `max_cost_usd $1.00, max_model_calls 400, breaker 5 in a
    row or over 50% of 20`."""
    if not run.limits:
        return None
    limits = json.loads(run.limits)
    said = [
        f"{name} {'$' if name == 'max_cost_usd' else ''}{limits[name]}"
        for name in ("max_cost_usd", "max_tokens", "max_steps", "max_model_calls")
        if limits.get(name) is not None
    ]
    breaker = limits.get("breaker")
    if breaker:
        said.append(
            f"breaker {breaker['consecutive']} in a row or over {breaker['error_rate']:.0%} "
            f"of {breaker['window']}"
        )
    return ", ".join(said) or "none"


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run ends.")
@json_option
@db_option
def logs(run_id: str, follow: bool, as_json: bool, db: Path | None) -> None:
    """Print RUN's events, one line each: time, run, seq, step, kind, then key=value fields.

    \b
    Example:
        journal logs 3fa2 | grep decision
    """
    journal = open_journal(db)
    run = journal.find_run(run_id)
    render = event_json if as_json else event_line
    last = 0
    while True:
        for event in journal.events(run.run_id, after=last):
            click.echo(render(event))
            last = event.seq
        if not follow or status_of(journal.run(run.run_id), journal) != "running":
            return
        time.sleep(0.5)


@click.command("replay")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--at", "at_seq", type=click.IntRange(min=1), help="Print the whole state at this seq."
)
@json_option
@db_option
def replay_command(run_id: str, at_seq: int | None, as_json: bool, db: Path | None) -> None:
    """Show RUN's state after each transition, folded from the journal alone.

    No pipeline code is imported. Without --at, each transition prints the step it ended,
    the next step, and what changed; with --json, the whole state after each one.

    \b
    Example:
        journal replay 3fa2 --at 40
    """
    journal = open_journal(db)
    run = journal.find_run(run_id)
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


@click.command("verify")
@click.argument("run_id", metavar="[RUN]", required=False)
@json_option
@db_option
def verify_command(run_id: str | None, as_json: bool, db: Path | None) -> None:
    """Check the journal: the file, each run's hash chain, and all that is derived from events.

    Each run's hash chain is computed again and the first event that does not match is named
    by run and seq (an edit, a deletion, events swapped); each blob is checked against its
    hash; the runs table and the action keys are rebuilt in memory and compared with what is
    stored; each snapshot is compared with the fold before it. With RUN, only that run. Exits
    1 when anything is wrong, listing it. --json also prints each run's last seq and hash:
    kept elsewhere, they show that a run was not rewritten since.

    \b
    Example:
        journal verify --db /var/lib/pipelines/journal.db
    """
    path = db_path(db)
    try:
        journal = open_journal(db)
        run = journal.find_run(run_id).run_id if run_id is not None else None
        problems = verify(journal, run)
        damaged = any(p.what.startswith("sqlite:") for p in problems)
        last = {} if damaged else heads(journal, run)
    except (JournalCorrupt, sqlite3.DatabaseError) as e:
        # The command that reports damage reports it, even where the file cannot be read.
        problems, last = [Problem(None, f"sqlite: {e}")], {}
    if as_json:
        report = {
            "ok": not problems,
            "problems": [attrs.asdict(p) for p in problems],
            "runs": {r: {"last_seq": seq, "hash": h} for r, (seq, h) in last.items()},
        }
        click.echo(json.dumps(report, indent=2))
    elif not problems:
        events = sum(seq for seq, _ in last.values())
        click.echo(f"ok: {plural(len(last), 'run')}, {plural(events, 'event')}")
    else:
        for p in problems:
            click.echo(printable(f"{p.run_id or '-'}  {'-' if p.seq is None else p.seq}  {p.what}"))
    if problems:
        click.echo(printable(f"{plural(len(problems), 'problem')} in {path}"), err=True)
        click.get_current_context().exit(1)
