"""`journal datasette`: Datasette over a journal file, read-only, with the journal's metadata: what
each table, view and column holds, facets, and canned queries (cost, decisions, actions in doubt,
kills, a run's timeline and its model calls).

Datasette 0.65 is an optional extra (`pip install 'runjournal[datasette]'`), imported only to
serve. It reads a file it is not told is immutable through `mode=ro` connections, so a live
journal stays current and is never written; its one writable connection, made only for a
writable canned query or a plugin that writes, is made `query_only` by the plugin here.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import attrs
import click

from runjournal.cli.output import printable
from runjournal.cli.shared import Db, InputError, db_option, db_path, open_journal
from runjournal.journal import kinds
from runjournal.journal.stores import is_url
from runjournal.journal.tables import KIND_VIEWS, VIEW_EXTRAS

INSTALL = "pip install 'runjournal[datasette]'"
PLUGIN = "runjournal_query_only"

_EVENT = {
    "run_id": "the run",
    "seq": "the event's place in its run: 1, 2, 3, ... in the order written",
    "at": "when it was written, ISO 8601 UTC (clocks step back: order by seq)",
    "step": "the step it belongs to",
}
_TOKENS = {
    "input_tokens": "input tokens, apart from cache writes and reads",
    "output_tokens": "output tokens, thinking included",
    "cache_write_tokens": "tokens written to the prompt cache (5-minute and 1-hour)",
    "cache_read_tokens": "tokens read from the prompt cache",
}
_MONEY = {
    "cost_usd": "billed: what the API charged, in USD",
    "possibly_billed_usd": "possibly billed: the worst case of the requests whose outcome is "
    "unknown (a timeout, a dropped connection, a crash), in USD",
    "cost_nusd": "billed, in nano-dollars: exact",
    "total_nusd": "billed and possibly billed together, in nano-dollars: what caps and budgets "
    "count",
}
_SUMS = {
    "calls": "model calls answered",
    "requests": "model requests sent: every attempt",
    **_TOKENS,
    **{k: v for k, v in _MONEY.items() if k != "total_nusd"},
}
_VIEW_EXTRAS = {
    "changes": "how many operations the delta holds",
    **_TOKENS,
    "thinking_tokens": "output tokens that were thinking (part of output_tokens)",
}

_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "events": (
        "The facts, append-only: every event of every run, in the order written. The views "
        "named for each kind of event split `data` into columns.",
        {
            **_EVENT,
            "kind": "what happened: run.started, transition, model.answered, decision, ...",
            "hash": "sha256 of the run's previous hash and this event: the chain `journal "
            "verify` checks",
            "data": "a JSON object: the fields of its kind",
        },
    ),
    "runs": (
        "One row per run, projected from its events: status, counts, tokens and money.",
        {
            "run_id": "the run's id; any unique prefix names it on the command line",
            "ordinal": "1, 2, 3, ... in the order runs were created",
            "machine": "the machine's name",
            "target": "where its code is: path.py:name or module:name",
            "code_hash": "a hash of that code: its version",
            "run_key": "the run key: a second start with it finds this run",
            "forked_from": "the run it was forked from",
            "forked_at": "the seq it was forked at",
            "status": "submitted, running (interrupted when no live process holds it), done, "
            "failed, needs_attention, waiting, resolved or killed",
            "wake_at": "when a waiting run may be taken up again: the deadline of its wait, or "
            "the moment to look at its Message Batch again",
            "step": "the next step to run",
            "steps": "transitions taken",
            "error": "why it failed, on one line",
            "limits": "the limits in force (JSON)",
            "model_requests": "model requests sent: every attempt",
            "model_calls": "model calls answered",
            "total_tokens": "tokens billed and possibly billed together",
            "anomaly": "1 when it recorded a cost.anomaly",
            **_TOKENS,
            **_MONEY,
        },
    ),
    "actions": (
        "Each irreversible action of each run, as its latest event leaves it.",
        {
            "status": "intended (its intent is on disk, no outcome yet: in doubt once no "
            "process executes its run), in_doubt, done, failed, not_done or skipped",
            "key": "its action key: the idempotency key handed to the outside system",
            "attempts": "attempts made",
            "result": "what it returned (JSON)",
            "resolved_by": "the person who said what happened (`journal resolve`)",
        },
    ),
    "action_keys": (
        "The seen-store: the latest state of each action name and key across all runs, so that "
        "a key done by one run is not done again by another.",
        {"run_id": "the run that holds or did it"},
    ),
    "spend": (
        "What each machine spent each day (by the day each request was sent) on each model: "
        "what budgets are checked against.",
        {
            "model_requests": "requests sent",
            "model_calls": "calls answered",
            **_TOKENS,
            "cost_nusd": _MONEY["cost_nusd"],
            "total_nusd": _MONEY["total_nusd"],
        },
    ),
    "budgets": (
        "What a machine's runs may spend per day and per run (`journal budget set`).",
        {"per_day_nusd": "per day, in nano-dollars", "per_run_nusd": "per run, in nano-dollars"},
    ),
    "kill_requests": (
        "Kills asked for and not yet carried out by the run's process (`journal kill`); the "
        "row goes once the run records run.killed.",
        {"requested_by": "the person", "reason": "the reason they gave"},
    ),
    "leases": (
        "Which process executes a run: the holder renews `expires_at` (Unix seconds) while it "
        "runs.",
        {"expires_at": "Unix time after which another process may take the run over"},
    ),
    "blobs": (
        "Payloads stored once by content hash: run inputs, model requests, big members of "
        "states; CAST(data AS TEXT) reads any.",
        {},
    ),
    "pace": (
        "The pace of model requests shared by the workers of this journal: a bucket per limit.",
        {},
    ),
    "_sqlite_migrations": ("The schema migrations applied to this journal.", {}),
}

_COST_VIEWS = {
    "cost_by_run": ("Model calls, tokens and money of each run (over runs).", "run"),
    "cost_by_machine": ("Model calls, tokens and money of each machine (over runs).", "machine"),
    "cost_by_model": ("Model calls, tokens and money of each model (over spend).", "model"),
    "cost_by_day": (
        "Model calls, tokens and money of each day, by the day each request was sent (over spend).",
        "day",
    ),
}

_FACETS = {
    "events": ["kind", "step"],
    "runs": ["status", "machine"],
    "actions": ["status", "name"],
    "decisions": ["outcome"],
    "model_calls": ["model", "stop_reason"],
    "model_failures": ["error_type"],
}
_SORT_DESC = {"runs": "ordinal", "cost_by_run": "cost_nusd", "cost_by_day": "day"}


def _run(column: str = "run_id") -> str:
    """The run :run_id names by its id or any prefix of it, as on the command line; '' names
    every run."""
    return f"substr({column}, 1, length(:run_id)) = :run_id"


def _machine(column: str = "machine") -> str:
    """The machine :machine names; '' names every machine."""
    return f"(:machine = '' OR {column} = :machine)"


def _get(path: str) -> str:
    return f"json_extract(data, '$.{path}')"


_DETAIL = f"""CASE
        WHEN kind = 'run.started' THEN {_get("machine")} || ' at '
            || coalesce({_get("to_step")}, {_get("step")}, '?')
        WHEN kind = 'transition' THEN 'to ' || coalesce({_get("to_step")}, {_get("to")}, 'the end')
        WHEN kind = 'decision' THEN {_get("item")} || ': ' || {_get("outcome")}
            || coalesce(' (' || {_get("reason")} || ')', '')
        WHEN kind = 'model.answered' THEN {_get("model")}
            || coalesce(' ' || {_get("stop_reason")}, '') || ', '
            || {_get("usage.input_tokens")} || ' in, ' || {_get("usage.output_tokens")} || ' out'
        WHEN kind = 'model.requested' THEN {_get("model")} || ', round ' || {_get("round")}
            || ', attempt ' || {_get("attempt")}
        WHEN kind = 'model.failed' THEN coalesce({_get("status")} || ' ', '')
            || {_get("error_type")} || ': ' || {_get("message")}
        WHEN kind = 'output.rejected' THEN {_get("errors")}
        WHEN kind LIKE 'action.%' THEN {_get("name")} || ' ' || {_get("key")}
            || coalesce(' ' || {_get("outcome")}, '') || coalesce(': ' || {_get("message")}, '')
        WHEN kind = 'effect.done' THEN {_get("name")}
        WHEN kind = 'snapshot' THEN 'after ' || {_get("transitions")} || ' transitions'
        WHEN kind = 'run.done' THEN {_get("steps")} || ' steps'
        WHEN kind = 'run.failed' THEN {_get("error")}
        ELSE {_get("message")}
    END"""

QUERIES: dict[str, dict[str, Any]] = {
    "cost_per_run": {
        "title": "Cost per run",
        "description": "Model calls, tokens and money of each run (from cost_by_run), the "
        "dearest first: billed (cost_usd), possibly billed, and total, what caps and budgets "
        "count. machine: one machine's runs, or empty for all.",
        "params": ["machine"],
        "sql": f"""SELECT c.run AS run_id, c.machine, r.status, c.steps, c.calls, c.requests,
    c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens,
    c.cost_usd, c.possibly_billed_usd, r.total_nusd / 1e9 AS total_usd
FROM cost_by_run c JOIN runs r ON r.run_id = c.run
WHERE {_machine("c.machine")}
ORDER BY r.total_nusd DESC, r.ordinal""",
    },
    "cost_per_day": {
        "title": "Cost per day",
        "description": "Model calls, tokens and money of each day (UTC, by the day each "
        "request was sent; from spend, as cost_by_day), the latest first. machine: one "
        "machine's, or empty for all.",
        "params": ["machine"],
        "sql": f"""SELECT day, sum(model_calls) AS calls, sum(model_requests) AS requests,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cache_write_tokens) AS cache_write_tokens, sum(cache_read_tokens) AS cache_read_tokens,
    sum(cost_nusd) / 1e9 AS cost_usd, sum(total_nusd - cost_nusd) / 1e9 AS possibly_billed_usd,
    sum(total_nusd) / 1e9 AS total_usd
FROM spend WHERE {_machine()}
GROUP BY day ORDER BY day DESC""",
    },
    "decision_outcomes": {
        "title": "Decisions by outcome",
        "description": "How many decisions of each machine came to each outcome, over how many "
        "runs and items (from decisions). run_id: one run (any prefix of its id), or empty "
        "for all.",
        "params": ["run_id"],
        "sql": f"""SELECT r.machine, d.outcome, count(*) AS decisions,
    count(DISTINCT d.run_id) AS runs, count(DISTINCT d.item) AS items
FROM decisions d JOIN runs r ON r.run_id = d.run_id
WHERE {_run("d.run_id")}
GROUP BY r.machine, d.outcome ORDER BY r.machine, decisions DESC, d.outcome""",
    },
    "in_doubt_actions": {
        "title": "Actions in doubt",
        "description": "Actions whose outcome is unknown: in_doubt (an attempt failed and may "
        "have happened) and intended (its intent is on disk, no outcome yet). An intended "
        "action is in doubt only when no process executes its run: held_by names the process "
        "whose lease on the run has not expired, which may be doing the action right now "
        "(journal actions --in-doubt also checks that it is alive). Check the outside system, "
        "then journal resolve RUN KEY --done or --not-done, and journal resume RUN.",
        "params": ["machine"],
        "sql": f"""SELECT a.run_id, r.machine, r.status AS run_status, a.step, a.name, a.key,
    a.status, a.attempts, a.intended_at, a.updated_at,
    CASE WHEN l.expires_at > (julianday('now') - 2440587.5) * 86400
        THEN l.pid || '@' || l.host END AS held_by
FROM actions a JOIN runs r ON r.run_id = a.run_id LEFT JOIN leases l ON l.run_id = a.run_id
WHERE a.status IN ('intended', 'in_doubt') AND {_machine("r.machine")}
ORDER BY r.ordinal, a.seq""",
    },
    "kills_and_requests": {
        "title": "Kills",
        "description": "Runs stopped by a limit or by a person (run.killed, from kills), and "
        "kills asked for that the run's process has not yet carried out (kill_requests, state "
        "requested), the newest runs first. machine: one machine's, or empty for all.",
        "params": ["machine"],
        "sql": f"""SELECT run_id, machine, run_status, state, killed_by, who, reason, limit_name,
    value, cap, message, requested_at, killed_at
FROM (
    SELECT k.run_id, r.machine, r.status AS run_status, r.ordinal, k.seq, 'killed' AS state,
        k.killed_by, k.who, k.reason, k.limit_name, k.value, k.cap, k.message,
        k.requested_at, k.at AS killed_at
    FROM kills k JOIN runs r ON r.run_id = k.run_id
    UNION ALL
    SELECT q.run_id, r.machine, r.status, r.ordinal, NULL, 'requested', 'person',
        q.requested_by, q.reason, NULL, NULL, NULL, NULL, q.requested_at, NULL
    FROM kill_requests q LEFT JOIN runs r ON r.run_id = q.run_id
)
WHERE {_machine()}
ORDER BY ordinal DESC, seq DESC""",
    },
    "run_timeline": {
        "title": "A run's timeline",
        "description": "Every event of one run in the order written (seq): its kind, step and "
        "time, a line saying what it was, and its data. run_id: the run's id or any unique "
        "prefix of it.",
        "params": ["run_id"],
        "sql": f"""SELECT run_id, seq, at, step, kind, {_get("call")} AS call,
    {_DETAIL} AS detail,
    data
FROM events WHERE :run_id <> '' AND {_run()}
ORDER BY run_id, seq""",
    },
    "run_model_calls": {
        "title": "A run's model calls",
        "description": "Every attempt at a model call of one run, in the order written: "
        "answered (with its tokens, cost in USD and latency), failed (retried or not) and "
        "answers rejected (asked again). run_id: the run's id or any unique prefix of it.",
        "params": ["run_id"],
        "sql": f"""SELECT run_id, seq, at, step, call, round, attempt, model, outcome, detail,
    input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, thinking_tokens,
    cost_usd, latency_ms, request_id
FROM (
    SELECT run_id, seq, at, step, call, round, attempt, model, 'answered' AS outcome,
        stop_reason AS detail, input_tokens, output_tokens, cache_write_tokens,
        cache_read_tokens, thinking_tokens, cost_usd, latency_ms, request_id
    FROM model_calls
    UNION ALL
    SELECT run_id, seq, at, step, call, round, attempt, model, 'failed',
        coalesce(status || ' ', '') || error_type || ': ' || message,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, request_id
    FROM model_failures
    UNION ALL
    SELECT run_id, seq, at, step, call, round, NULL, NULL, 'rejected', errors,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM rejections
)
WHERE :run_id <> '' AND {_run()}
ORDER BY run_id, seq""",
    },
}
"""The canned queries: read-only SQL over the tables and views, with named parameters."""


def metadata(database: str = "journal") -> dict[str, Any]:
    """Datasette 0.65 metadata for a journal that Datasette names `database` (its file's stem)."""
    tables: dict[str, dict[str, Any]] = {
        name: {"description": description, "columns": columns}
        for name, (description, columns) in _TABLES.items()
    }
    for view, kind in KIND_VIEWS.items():
        cls = kinds.KINDS[kind]
        docs = {f.name: f.metadata["doc"] for f in attrs.fields(cls) if "doc" in f.metadata}
        extras = {c: _VIEW_EXTRAS[c] for c in VIEW_EXTRAS.get(view, {}) if c not in docs}
        tables[view] = {
            "description": f"One row per {kind} event: {cls.SUMMARY}.",
            "columns": {**_EVENT, **docs, **extras},
        }
    for view, (description, by) in _COST_VIEWS.items():
        grouped = {by: f"the {by}"}
        if by == "run":
            grouped |= {"machine": "its machine", "code_hash": "its code's hash", "steps": "steps"}
        tables[view] = {"description": description, "columns": {**grouped, **_SUMS}}
    tables["runs"]["label_column"] = "machine"
    for name, facets in _FACETS.items():
        tables[name]["facets"] = facets
    for name, column in _SORT_DESC.items():
        tables[name]["sort_desc"] = column
    # A copy: Datasette adds to the queries it is given, and they are this module's.
    return copy.deepcopy(
        {
            "title": f"runjournal: {database}",
            "description": "A runjournal journal, read-only: every run of an LLM pipeline, its "
            "events, model calls, decisions, actions and cost. The canned queries are below.",
            "databases": {database: {"tables": tables, "queries": QUERIES}},
        }
    )


def read_only_plugin() -> ModuleType:
    """A Datasette plugin making every connection to a database file `query_only`: reads use
    `mode=ro` anyway; this covers the writable connection a plugin or canned query would get.
    Datasette lists it at /-/plugins."""
    from datasette import hookimpl  # type: ignore[import-untyped]

    @hookimpl  # type: ignore[untyped-decorator]
    def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
        # conn is Datasette's sqlite3 connection: only the journal layer imports sqlite3.
        db = datasette.databases.get(database)
        if db is not None and db.path is not None:
            conn.execute("PRAGMA query_only = ON")

    plugin = ModuleType(PLUGIN)
    plugin.prepare_connection = prepare_connection  # type: ignore[attr-defined]
    return plugin


@click.command("datasette")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="The port to listen on; 0 takes a free one (Datasette prints which).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on; 0.0.0.0 lets other machines read the whole journal.",
)
@click.option(
    "--metadata-only",
    is_flag=True,
    help="Print the metadata as JSON, for a Datasette of your own (datasette FILE -m FILE.json).",
)
@db_option
def datasette_command(port: int, host: str, metadata_only: bool, db: Db | None) -> None:
    """Serve the journal with Datasette, read-only: tables and views described, facets, and
    canned queries (cost per run and per day, decisions by outcome, actions in doubt, kills, a
    run's timeline and its model calls).

    Datasette reads the live file through read-only connections: nothing it serves writes to
    the journal, and what runs append shows at the next page. Needs the datasette extra
    (pip install 'runjournal[datasette]'); Ctrl-C stops it.

    \b
    Example:
        journal datasette --db journal.db --port 8001
    """
    path = db_path(db)
    if is_url(path):
        msg = (
            "Datasette reads SQLite files, and --db names a PostgreSQL database: copy it to "
            "one first (journal copy URL copy.db) and serve that"
        )
        raise InputError(msg)
    path = Path(path)
    if any(c in str(path) for c in "?#%"):
        # Datasette opens `file:PATH?mode=ro`: these would be read as part of the URI.
        msg = f"Datasette cannot open a file whose name holds ?, # or %: {printable(str(path))}"
        raise InputError(msg)
    if not metadata_only:
        _check_datasette()
    open_journal(path).close()  # a file that is not a journal, or not of this version: refused
    found = metadata(path.stem)
    if metadata_only:
        click.echo(json.dumps(found, indent=2))
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: whoever reaches it reads the journal", err=True)
    _serve(path, found, host, port)


def _check_datasette() -> None:
    """Refuse without Datasette; warn of one other than 0.65, whose metadata this is."""
    if importlib.util.find_spec("datasette") is None:
        raise InputError(f"Datasette is not installed: {INSTALL}")
    try:
        version = importlib.metadata.version("datasette")
    except importlib.metadata.PackageNotFoundError:
        return
    if not version.startswith("0.65."):
        said = f"warning: Datasette {version}: this metadata is for Datasette 0.65 ({INSTALL})"
        click.echo(said, err=True)


def _serve(path: Path, found: dict[str, Any], host: str, port: int) -> None:
    """Datasette's own `serve`, in this process, with the plugin and the metadata in a
    temporary file it reads at start; the file goes when the server stops."""
    from datasette.cli import cli as datasette_cli  # type: ignore[import-untyped]
    from datasette.plugins import pm  # type: ignore[import-untyped]

    if pm.get_plugin(PLUGIN) is None:
        pm.register(read_only_plugin(), name=PLUGIN)
    with tempfile.TemporaryDirectory(prefix="journal-datasette-") as folder:
        meta = Path(folder) / "metadata.json"
        meta.write_text(json.dumps(found))
        args = ["serve", str(path), "--metadata", str(meta), "--host", host, "--port", str(port)]
        with _sigterm_exits():
            datasette_cli.main(args, prog_name="datasette", standalone_mode=False)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM as SystemExit(143), so that the temporary files go (the server stops first:
    it takes the signal while it serves, and raises it again once it has stopped)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    before = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
