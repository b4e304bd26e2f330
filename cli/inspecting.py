"""`journal runs`, `show`, `logs`, `replay` and `verify`: reading runs back from the journal."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import click

from runjournal.cli.costs import dollars, spent_json, spent_words
from runjournal.cli.output import event_json, event_line, json_line, plural, printable, short, table
from runjournal.cli.shared import (
    InputError,
    db_option,
    db_path,
    json_option,
    open_journal,
    redact,
    redact_env_option,
)
from runjournal.journal import (
    Journal,
    JournalCorrupt,
    Problem,
    Run,
    RunNotFound,
    Store,
    heads,
    replay,
    state_at,
    verify,
)
from runjournal.journal.costs import Spent
from runjournal.machine.errors import TargetNotFound
from runjournal.machine.loader import load
from runjournal.machine.rerun import Divergence, Reproduced, post_mortem, rerun


def status_of(run: Run, journal: Store) -> str:
    """The run's status, with `interrupted` for a running run that no live process holds."""
    if run.status != "running":
        return run.status
    lease = journal.lease(run.run_id)
    return "running" if lease is not None and lease.is_live(journal.clock()) else "interrupted"


STATUSES = (
    "running",
    "interrupted",
    "needs_attention",
    "resolved",
    "failed",
    "killed",
    "done",
)
"""What `journal runs` shows. All are the `runs.status` column but `interrupted`, which is a
`running` run that no live process holds: its process died, and `journal resume` goes on."""


def flags(run: Run, status: str) -> str:
    """What needs doing about a run, or is worth a look, in a few words."""
    said = []
    if status == "interrupted":
        said.append("ready to resume: its process is gone")
    elif status == "resolved":
        said.append("ready to resume: answered")
    if run.anomaly:
        said.append("cost.anomaly")
    return "; ".join(said)


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show only the newest N.")
@click.option(
    "--status",
    "statuses",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Only runs with this status (repeatable).",
)
@click.option("--machine", help="Only this machine's runs.")
@json_option
@db_option
def runs(
    limit: int | None,
    statuses: tuple[str, ...],
    machine: str | None,
    as_json: bool,
    db: Path | None,
) -> None:
    """List the journal's runs, newest first.

    A run whose process died shows as `interrupted` (running, with no live process), and one
    whose actions in doubt a person answered as `resolved`: both are flagged ready to resume
    (`journal resume RUN`, or `journal resume --all`). Money is billed, possibly billed
    (requests whose outcome is unknown, at their worst case) and their total; a run made by
    `journal fork` names the run and seq it was forked from.

    \b
    Example:
        journal runs --status interrupted --status resolved
    """
    journal = open_journal(db)
    stored = {"interrupted": "running"}
    wanted = tuple({stored.get(s, s) for s in statuses}) or None
    listed = [(r, status_of(r, journal)) for r in journal.runs(machine=machine, statuses=wanted)]
    found = [(r, s) for r, s in listed if not statuses or s in statuses][:limit]
    if as_json:
        for r, status in found:
            payload = {**attrs.asdict(r), **spent_json(spent(r)), "status": status}
            click.echo(json_line({**payload, "flags": flags(r, status)}))
        return
    columns = [
        "run",
        "machine",
        "status",
        "step",
        "steps",
        "billed",
        "possibly billed",
        "total",
        "started",
        "forked from",
        "flags",
    ]
    rows = []
    for r, s in found:
        money = spent(r)
        rows.append(
            (
                r.run_id,
                r.machine,
                s,
                r.step,
                r.steps,
                dollars(money.billed),
                dollars(money.possibly_billed),
                dollars(money.total),
                r.started_at,
                None if r.forked_from is None else f"{r.forked_from} at seq {r.forked_at}",
                flags(r, s),
            )
        )
    click.echo(table(columns, rows))


def spent(run: Run) -> Spent:
    """What the run spent: billed, possibly billed, total."""
    return Spent.of(run.cost_nusd, run.total_nusd)


def latest(journal: Journal) -> Run:
    """The run created last, for a command given no RUN; said on stderr. RunNotFound."""
    found = journal.runs(limit=1)
    if not found:
        msg = f"no runs in {journal.path} yet: start one with `journal run`, or give --db"
        raise RunNotFound(msg)
    click.echo(f"latest run: {found[0].run_id}", err=True)
    return found[0]


def chosen(journal: Journal, run_id: str | None) -> Run:
    """The run RUN names, or the latest without one."""
    return latest(journal) if run_id is None else journal.find_run(run_id)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@json_option
@db_option
def show(run_id: str | None, as_json: bool, db: Path | None) -> None:
    """Show where RUN stands: status, step, counts, money, lineage, holder, error.

    RUN is a run id or any unique prefix of one; without it, the latest run (named on stderr).
    Money is billed, possibly billed (requests whose outcome is unknown, at their worst case)
    and their total. Lineage is the chain of runs RUN was forked from (`journal fork`), nearest
    first; forks, the runs forked from RUN.

    \b
    Example:
        journal show 3fa2
    """
    journal = open_journal(db)
    run = chosen(journal, run_id)
    status = status_of(run, journal)
    lease = journal.lease(run.run_id)
    parents, children = lineage(journal, run), forks(journal, run)
    if as_json:
        holder = attrs.asdict(lease) if lease is not None else None
        payload = {**attrs.asdict(run), **spent_json(spent(run)), "status": status}
        payload["lineage"] = [{"run_id": r, "seq": seq} for r, seq in parents]
        payload["forks"] = [{"run_id": r, "forked_at": seq} for r, seq in children]
        click.echo(json_line({**payload, "holder": holder}, indent=2))
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
    if run.model_requests or run.model_calls or run.model_failures or run.total_nusd:
        fields.append(("model", _model_line(run)))
        fields.append(("tokens", _tokens_line(run)))
    if parents:
        fields.append(("lineage", _lineage_line(parents)))
    if children:
        fields.append(("forks", ", ".join(f"{r} at seq {seq}" for r, seq in children)))
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
    """`3 calls (1 failed attempt, 0 rejected answers); cost $X billed, $Y possibly billed,
    $Z total`."""
    calls = plural(run.model_calls, "call")
    failed = plural(run.model_failures, "failed attempt")
    trouble = f"{failed}, {plural(run.rejections, 'rejected answer')}"
    return f"{calls} ({trouble}); cost {spent_words(spent(run))}"


def _tokens_line(run: Run) -> str:
    return (
        f"{run.input_tokens:,} in, {run.output_tokens:,} out, "
        f"{run.cache_write_tokens:,} cache write, {run.cache_read_tokens:,} cache read"
    )


def lineage(journal: Store, run: Run) -> list[tuple[str, int | None]]:
    """The runs `run` was forked from, nearest first, each with the seq forked at."""
    chain: list[tuple[str, int | None]] = []
    seen = {run.run_id}
    while run.forked_from is not None and run.forked_from not in seen:
        chain.append((run.forked_from, run.forked_at))
        seen.add(run.forked_from)
        try:
            run = journal.run(run.forked_from)
        except RunNotFound:
            break  # copied without its parent: the chain says as far as this journal knows
    return chain


def _lineage_line(chain: list[tuple[str, int | None]]) -> str:
    """`forked from 3fa2… at seq 12, which was forked from 1b2c… at seq 4`."""
    return ", which was ".join(f"forked from {r} at seq {seq}" for r, seq in chain)


def forks(journal: Store, run: Run) -> list[tuple[str, int]]:
    """The runs forked from `run`, oldest first, each with the seq of `run` it started from."""
    found = journal.query(
        "SELECT run_id, forked_at FROM runs WHERE forked_from = ? ORDER BY ordinal",
        (run.run_id,),
    )
    return [(str(r), int(seq)) for r, seq in found.rows]


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
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only events of this kind, or of the kinds under it: `model.` (or `model`) is every "
    "model.* kind (repeatable).",
)
@click.option("--step", metavar="STEP", help="Only the events of this step.")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    metavar="SEQ",
    help="Only the events after this seq.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run ends.")
@json_option
@db_option
def logs(
    run_id: str | None,
    kinds: tuple[str, ...],
    step: str | None,
    since: int,
    follow: bool,
    as_json: bool,
    db: Path | None,
) -> None:
    """Print RUN's events, one logfmt line each: at, run_id, seq, step, kind, then every field
    of the event's data under its own name, nested ones with dotted keys.

    These are the lines `journal run --log all` writes on stderr as the run executes (its
    default, `--log brief`, writes one shorter line for each event a person reads). Long values
    are cut (`--json` prints every event whole). Without RUN, the latest run's (named on
    stderr).

    \b
    Example:
        journal logs 3fa2 --kind model. --since 40 | grep status=429
    """
    journal = open_journal(db)
    run = chosen(journal, run_id)
    render = event_json if as_json else event_line
    prefixes = tuple(kind.rstrip(".") for kind in kinds)
    last = since
    while True:
        for event in journal.events(run.run_id, after=last):
            last = event.seq
            if (not prefixes or _of_kind(event.kind, prefixes)) and (
                step is None or event.step == step
            ):
                click.echo(render(event))
        if not follow or status_of(journal.run(run.run_id), journal) != "running":
            return
        time.sleep(0.5)


def _of_kind(kind: str, prefixes: tuple[str, ...]) -> bool:
    """`kind` is one of `prefixes`, or under one: `model.failed` is under `model`."""
    return any(kind == p or kind.startswith(f"{p}.") for p in prefixes)


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
    db: Path | None,
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
    except JournalCorrupt as e:
        # The command that reports damage reports it, even where the file cannot be read.
        problems, last = [Problem(None, f"sqlite: {e.__cause__ or e}")], {}
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
