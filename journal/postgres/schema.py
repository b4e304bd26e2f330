"""The journal's schema on PostgreSQL: its tables, triggers and views, and bringing a database
up to date under an advisory lock.

The same tables as the SQLite journal (journal/tables.py), in PostgreSQL's types: times are
`timestamptz`, counters `bigint`, and an event's `data` is `json`, not `jsonb`. `json` keeps the
text as written, byte for byte, which is what each event's hash covers (journal/chain.py), so
`journal verify` recomputes the same chain on either engine and `journal copy` moves a run
without re-encoding it; `->`, `->>` and `#>>` read it all the same. (`jsonb` reorders keys and
respaces the text: the chain could no longer be checked from what is stored.)

Migrations are numbered like SQLite's, in the `runjournal_migrations` table, and applied by the
first process that opens the database, under `pg_advisory_xact_lock`, so processes starting at
once on many hosts apply each exactly once.
"""

from __future__ import annotations

from runjournal.journal import kinds
from runjournal.journal.tables import KIND_VIEWS

MIGRATION_LOCK = 0x524A4E4C
"""The advisory lock held while migrating: "RJNL", as the SQLite journal's application_id."""

_NUMERIC = {"cost_usd", "worst_case_usd", "delay_s", "value", "baseline", "ratio", "threshold"}
_INTEGER = {
    "round",
    "attempt",
    "worst_case_tokens",
    "latency_ms",
    "status",
    "baseline_runs",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "thinking_tokens",
}
_OBJECTS = {"inputs", "result", "delta", "content", "usage", "errors", "stop_details", "cap"}
_OBJECTS |= {"worst_case", "baseline_code_hashes"}


def _column(name: str, path: str) -> str:
    """SQL reading `path` (dot separated) of `data` as the column `name`, typed."""
    keys = "{" + ",".join(path.split(".")) + "}"
    if name in _OBJECTS:
        return f"data #> '{keys}' AS {name}"
    text = f"data #>> '{keys}'"
    if name in _NUMERIC:
        return f"({text})::double precision AS {name}"  # SQLite's REAL
    if name in _INTEGER:
        return f"({text})::bigint AS {name}"
    if name in ("retryable",):
        return f"({text})::boolean AS {name}"
    return f"{text} AS {name}"


_EXTRAS: dict[str, dict[str, str]] = {
    "transitions": {"changes": "json_array_length(data -> 'delta') AS changes"},
    "model_calls": {
        "input_tokens": _column("input_tokens", "usage.input_tokens"),
        "output_tokens": _column("output_tokens", "usage.output_tokens"),
        "cache_write_tokens": "((data #>> '{usage,cache_write_5m_tokens}')::bigint"
        " + (data #>> '{usage,cache_write_1h_tokens}')::bigint) AS cache_write_tokens",
        "cache_read_tokens": _column("cache_read_tokens", "usage.cache_read_tokens"),
        "thinking_tokens": _column("thinking_tokens", "usage.thinking_tokens"),
    },
}


def _kind_view(view: str, kind: str) -> str:
    columns = {name: _column(name, name) for name in kinds.fields(kind)}
    columns |= _EXTRAS.get(view, {})
    return (
        f"CREATE VIEW {view} AS SELECT run_id, seq, at, step, {', '.join(columns.values())} "
        f"FROM events WHERE kind = '{kind}'"
    )


_TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")


def _cost_view(by: str, group: str, source: str, extra: str = "") -> str:
    sums = ", ".join(f"sum({t})::bigint AS {t}" for t in _TOKENS)
    return f"""
        CREATE VIEW cost_by_{by} AS
        SELECT {group} AS {by}{extra}, sum(model_calls)::bigint AS calls,
               sum(model_requests)::bigint AS requests, {sums},
               (sum(cost_nusd) / 1e9)::double precision AS cost_usd,
               (sum(total_nusd - cost_nusd) / 1e9)::double precision AS possibly_billed_usd,
               sum(cost_nusd)::bigint AS cost_nusd
        FROM {source} GROUP BY {group} ORDER BY {group}
    """


_COUNTERS = (
    "steps",
    "last_seq",
    "transition_seq",
    "snapshot_seq",
    "effects",
    "decisions",
    "actions",
    "resumes",
)
_MONEY = (
    "model_requests",
    "model_calls",
    "model_failures",
    "rejections",
    *_TOKENS,
    "total_tokens",
    "cost_nusd",
    "total_nusd",
    "anomaly",
)

_SPEND = ("model_requests", "model_calls", *_TOKENS, "cost_nusd", "total_nusd")

M0001: tuple[str, ...] = (
    """
    CREATE TABLE events (
        run_id text NOT NULL,
        seq integer NOT NULL,
        at timestamptz NOT NULL,
        kind text NOT NULL,
        step text,
        data json NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (run_id, seq)
    )
    """,
    # Resume and replay start from the newest snapshot; `done` is looked up on every insert.
    """
    CREATE INDEX events_snapshots ON events (run_id, seq)
        WHERE kind IN ('run.started', 'snapshot')
    """,
    "CREATE INDEX events_done ON events (run_id) WHERE kind = 'run.done'",
    """
    CREATE FUNCTION runjournal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP;
    END $$
    """,
    """
    CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION runjournal_append_only()
    """,
    """
    CREATE FUNCTION runjournal_none_after_done() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM events WHERE run_id = NEW.run_id AND kind = 'run.done') THEN
            RAISE EXCEPTION 'run is done: no event may follow run.done'
                USING ERRCODE = 'RJ001';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER events_none_after_done BEFORE INSERT ON events
        FOR EACH ROW EXECUTE FUNCTION runjournal_none_after_done()
    """,
    # What an append checks first, in its own transaction, so that the whole append can be sent
    # at once (psycopg's pipeline): the run's row locked, and refused with its own error code
    # when its lease is not the writer's (RJ002) or the run is done (RJ001).
    """
    CREATE FUNCTION runjournal_writer(run text, writer text) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        found_status text;
    BEGIN
        SELECT status INTO found_status FROM runs WHERE run_id = run FOR UPDATE;
        IF writer IS NOT NULL AND writer IS DISTINCT FROM
                (SELECT owner FROM leases WHERE run_id = run) THEN
            RAISE EXCEPTION 'lease lost' USING ERRCODE = 'RJ002';
        END IF;
        IF found_status IS NULL OR found_status = 'done' THEN
            RAISE EXCEPTION 'run is done' USING ERRCODE = 'RJ001';
        END IF;
    END $$
    """,
    f"""
    CREATE TABLE runs (
        run_id text PRIMARY KEY,
        ordinal bigint NOT NULL DEFAULT 0,
        machine text NOT NULL DEFAULT '',
        target text NOT NULL DEFAULT '',
        code_hash text NOT NULL DEFAULT '',
        run_key text,
        forked_from text,
        forked_at integer,
        status text NOT NULL DEFAULT 'running',
        step text,
        {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in _COUNTERS)},
        error text,
        started_at timestamptz,
        updated_at timestamptz,
        ended_at timestamptz,
        limits text,
        limit_overrides text,
        {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in _MONEY)},
        cost_usd double precision GENERATED ALWAYS AS (cost_nusd / 1e9) STORED,
        possibly_billed_usd double precision
            GENERATED ALWAYS AS ((total_nusd - cost_nusd) / 1e9) STORED
    )
    """,
    "CREATE UNIQUE INDEX runs_machine_key ON runs (machine, run_key) WHERE run_key IS NOT NULL",
    "CREATE INDEX runs_ordinal ON runs (ordinal)",
    "CREATE INDEX runs_machine ON runs (machine, ordinal)",
    "CREATE INDEX runs_status ON runs (status, ordinal)",
    """
    CREATE TABLE leases (
        run_id text PRIMARY KEY,
        owner text NOT NULL,
        pid integer NOT NULL,
        host text NOT NULL,
        process_start text,
        acquired_at timestamptz NOT NULL,
        expires_at double precision NOT NULL
    )
    """,
    "CREATE INDEX leases_owner ON leases (owner)",
    """
    CREATE TABLE blobs (
        hash text PRIMARY KEY,
        size bigint NOT NULL,
        data text NOT NULL
    )
    """,
    """
    CREATE TABLE action_keys (
        name text NOT NULL,
        key text NOT NULL,
        run_id text NOT NULL,
        step text,
        call text,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        result text,
        seq integer NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (name, key)
    )
    """,
    """
    CREATE TABLE actions (
        run_id text NOT NULL,
        name text NOT NULL,
        key text NOT NULL,
        step text,
        call text,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        result text,
        resolved_by text,
        intended_at timestamptz,
        updated_at timestamptz NOT NULL,
        seq integer NOT NULL,
        PRIMARY KEY (run_id, name, key)
    )
    """,
    f"""
    CREATE TABLE spend (
        machine text NOT NULL,
        day text NOT NULL,
        model text NOT NULL,
        {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in _SPEND)},
        PRIMARY KEY (machine, day, model)
    )
    """,
    """
    CREATE TABLE budgets (
        machine text PRIMARY KEY,
        per_day_nusd bigint,
        per_run_nusd bigint,
        updated_at timestamptz NOT NULL,
        updated_by text NOT NULL
    )
    """,
    """
    CREATE TABLE pace (
        name text PRIMARY KEY,
        level double precision NOT NULL,
        stamp double precision NOT NULL
    )
    """,
    """
    CREATE TABLE kill_requests (
        run_id text PRIMARY KEY,
        requested_at timestamptz NOT NULL,
        requested_by text NOT NULL,
        reason text
    )
    """,
    _cost_view(
        "run",
        "run_id",
        "runs",
        ", min(machine) AS machine, min(code_hash) AS code_hash, sum(steps)::bigint AS steps",
    ),
    _cost_view("machine", "machine", "runs"),
    _cost_view("model", "model", "spend"),
    _cost_view("day", "day", "spend"),
    *(_kind_view(view, kind) for view, kind in KIND_VIEWS.items()),
)

# A model request may be an item of a Message Batch: its `custom_id`, the outcome's `batch_id`.
# A run's `wake_at` is the deadline of its latest `run.waiting`: when a worker may claim it.
M0002 = (
    "DROP VIEW model_calls",
    "DROP VIEW model_failures",
    _kind_view("model_calls", "model.answered"),
    _kind_view("model_failures", "model.failed"),
    "ALTER TABLE runs ADD COLUMN wake_at text",
    """
    UPDATE runs SET wake_at = (
        SELECT e.data ->> 'deadline' FROM events e
        WHERE e.run_id = runs.run_id AND e.kind = 'run.waiting' ORDER BY e.seq DESC LIMIT 1
    )
    """,
    "CREATE INDEX runs_wake_at ON runs (wake_at) WHERE status = 'waiting'",
)

MIGRATIONS: list[tuple[str, tuple[str, ...]]] = [
    ("0001_journal", M0001),
    ("0002_batch_items", M0002),
]
"""Each migration's name and statements, in order; released ones are never edited."""

CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS runjournal_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
