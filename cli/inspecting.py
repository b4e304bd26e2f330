"""`journal runs`, `show` and `logs`: reading runs back from the journal."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
import click

from runjournal.cli.costs import dollars, spent_json, spent_words
from runjournal.cli.output import event_json, event_line, json_line, plural, printable, table
from runjournal.cli.shared import (
    Db,
    db_option,
    json_option,
    open_journal,
)
from runjournal.journal import (
    Run,
    RunNotFound,
    Store,
)
from runjournal.journal import events as k
from runjournal.journal.costs import Spent
from runjournal.journal.events import dumps


def status_of(run: Run, journal: Store) -> str:
    """The run's status, with `interrupted` for a running run that no live process holds."""
    if run.status != "running":
        return run.status
    lease = journal.lease(run.run_id)
    return "running" if lease is not None and lease.is_live(journal.clock()) else "interrupted"


STATUSES = (
    "submitted",
    "running",
    "interrupted",
    "needs_attention",
    "waiting",
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
    elif status == "waiting":
        said.append(run.error or "waiting for an answer")
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
    db: Db | None,
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


def latest(journal: Store) -> Run:
    """The run created last, for a command given no RUN; said on stderr. RunNotFound."""
    found = journal.runs(limit=1)
    if not found:
        msg = f"no runs in {journal.location} yet: start one with `journal run`, or give --db"
        raise RunNotFound(msg)
    click.echo(f"latest run: {found[0].run_id}", err=True)
    return found[0]


def chosen(journal: Store, run_id: str | None) -> Run:
    """The run RUN names, or the latest without one."""
    return latest(journal) if run_id is None else journal.find_run(run_id)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@json_option
@db_option
def show(run_id: str | None, as_json: bool, db: Db | None) -> None:
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
    fields += [("wait", line) for line in _wait_lines(journal, run)]
    fields += [("batch", line) for line in _batch_lines(journal, run)]
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


def _wait_lines(journal: Store, run: Run) -> list[str]:
    """Each wait of the run (`ctx.wait_for`): what it asked, and its answer, who gave it and
    why; or its default, taken at its deadline; or that it waits still."""
    said: dict[str, str] = {}
    kinds = (k.WAIT_STARTED, k.WAIT_ANSWERED, k.WAIT_EXPIRED)
    for e in journal.events(run.run_id, kinds=kinds):
        d = e.data
        where = f"{d['name']} ({e.step} {d['call']})"
        if e.kind == k.WAIT_STARTED:
            asked = f" of {d['of']}" if d.get("of") else ""
            until = f" until {d['deadline']}" if d.get("deadline") else ""
            said[where] = f"{where}: waiting{asked}{until}"
        elif e.kind == k.WAIT_ANSWERED:
            why = f": {d['reason']}" if d.get("reason") else ""
            said[where] = f"{where}: {dumps(d['value'])}, answered by {d['by']} at {e.at}{why}"
        else:
            said[where] = f"{where}: {dumps(d['value'])}, the default, at {d['deadline']}"
    return list(said.values())


def _batch_lines(journal: Store, run: Run) -> list[str]:
    """Each Message Batch of the run (`ctx.ask_batch`): its id, size, and how it stands:
    intended (not yet created), running, ended with its counts, or canceled."""
    said: dict[tuple[str | None, str, int], str] = {}
    kinds = (k.BATCH_INTENDED, k.BATCH_CREATED, k.BATCH_ENDED, k.BATCH_CANCELED)
    sizes: dict[tuple[str | None, str, int], int] = {}
    for e in journal.events(run.run_id, kinds=kinds):
        d = e.data
        place = (e.step, str(d["call"]), int(d["batch"]))
        where = f"{d['name']} ({e.step} {d['call']}) {d['batch']}"
        if e.kind == k.BATCH_INTENDED:
            sizes[place] = len(d["items"])
            said[place] = f"{where}: {plural(sizes[place], 'request')}, intended, not created"
            continue
        head = f"{where}: {d['batch_id']}, {plural(sizes.get(place, 0), 'request')}"
        if e.kind == k.BATCH_CREATED:
            found = ", found by listing" if d.get("adopted") else ""
            said[place] = f"{head}, created{found}"
        elif e.kind == k.BATCH_CANCELED:
            said[place] = f"{head}, canceled by {d['by']}"
        else:
            counts = ", ".join(
                f"{d[n]} {n}" for n in ("succeeded", "errored", "expired", "canceled") if d[n]
            )
            said[place] = f"{head}, ended: {counts or 'nothing'}"
    return list(said.values())


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
    db: Db | None,
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
