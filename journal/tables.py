"""The journal's tables, triggers and views: the statements of each numbered migration.

Each `M000n` is the statements of migration n, applied in order by `schema.migrate` inside the
caller's transaction; a journal's schema is what they leave. A migration, once released, is never
edited: a journal made before it is brought up to date by it as written. What changes is made
anew by a later one (`M0005` makes `runs` again, and the view of each kind of event from its
fields, `KIND_VIEWS`).
"""

from __future__ import annotations

from runjournal.journal import kinds


def _view(view: str, kind: str, /, **columns: str) -> str:
    """A view of one kind of event: each column is a JSON path into `data` ($.x) or SQL."""
    selected = [
        f"json_extract(data, '{source}') AS {column}"
        if source.startswith("$")
        else f"{source} AS {column}"
        for column, source in columns.items()
    ]
    return (
        f"CREATE VIEW {view} AS SELECT run_id, seq, at, step, {', '.join(selected)} "
        f"FROM events WHERE kind = '{kind}'"
    )


def _fields(*names: str) -> dict[str, str]:
    """Columns named as the `data` fields they come from."""
    return {name: f"$.{name}" for name in names}


NO_UPDATE = """
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed'); END
    """

M0001 = (
    """
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        data TEXT NOT NULL CHECK (json_valid(data)),
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID
    """,
    """
    -- Resume and replay start from the newest snapshot; this keeps finding it cheap.
    CREATE INDEX events_snapshots ON events (run_id, seq)
        WHERE kind IN ('run.started', 'snapshot')
    """,
    NO_UPDATE,
    """
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END
    """,
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        machine TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        code_hash TEXT NOT NULL DEFAULT '',
        run_key TEXT,
        status TEXT NOT NULL DEFAULT 'running',
        step TEXT,
        steps INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        transition_seq INTEGER NOT NULL DEFAULT 0,
        snapshot_seq INTEGER NOT NULL DEFAULT 0,
        effects INTEGER NOT NULL DEFAULT 0,
        decisions INTEGER NOT NULL DEFAULT 0,
        resumes INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        started_at TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL DEFAULT '',
        ended_at TEXT
    )
    """,
    """
    CREATE UNIQUE INDEX runs_machine_key ON runs (machine, run_key)
        WHERE run_key IS NOT NULL
    """,
    """
    CREATE TABLE leases (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        process_start TEXT,
        acquired_at TEXT NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE blobs (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data TEXT NOT NULL
    )
    """,
    _view(
        "decisions",
        "decision",
        item="$.item",
        outcome="$.outcome",
        reason="$.reason",
        inputs="$.inputs",
    ),
    _view("effects", "effect.done", name="$.name", call="$.call", result="$.result"),
    _view(
        "transitions",
        "transition",
        to_step="$.to",
        changes="json_array_length(data, '$.delta')",
        delta="$.delta",
    ),
)


M0002 = (
    *(
        f"ALTER TABLE runs ADD COLUMN {column} {kind} NOT NULL DEFAULT 0"
        for column, kind in (
            ("model_calls", "INTEGER"),
            ("model_failures", "INTEGER"),
            ("rejections", "INTEGER"),
            ("input_tokens", "INTEGER"),
            ("output_tokens", "INTEGER"),
            ("cache_write_tokens", "INTEGER"),
            ("cache_read_tokens", "INTEGER"),
            ("cost_usd", "REAL"),
        )
    ),
    _view(
        "model_calls",
        "model.answered",
        **_fields("call", "round", "attempt", "model", "request_id", "stop_reason"),
        input_tokens="$.usage.input_tokens",
        output_tokens="$.usage.output_tokens",
        cache_write_tokens="json_extract(data, '$.usage.cache_write_5m_tokens')"
        " + json_extract(data, '$.usage.cache_write_1h_tokens')",
        cache_read_tokens="$.usage.cache_read_tokens",
        **_fields("cost_usd", "latency_ms"),
    ),
    _view(
        "model_failures",
        "model.failed",
        **_fields(
            "call",
            "round",
            "attempt",
            "status",
            "error_type",
            "retryable",
            "delay_s",
            "request_id",
            "message",
        ),
    ),
    _view(
        "rejections",
        "output.rejected",
        **_fields("call", "round"),
        schema="$.name",
        **_fields("errors", "raw"),
    ),
    *(
        f"""
        CREATE VIEW cost_by_{by} AS
        SELECT {column} AS {by}, count(*) AS calls,
               sum(m.input_tokens) AS input_tokens, sum(m.output_tokens) AS output_tokens,
               sum(m.cache_write_tokens) AS cache_write_tokens,
               sum(m.cache_read_tokens) AS cache_read_tokens,
               sum(m.cost_usd) AS cost_usd
        FROM model_calls m JOIN runs r ON r.run_id = m.run_id
        GROUP BY 1 ORDER BY 1
        """
        for by, column in (
            ("run", "m.run_id"),
            ("machine", "r.machine"),
            ("model", "m.model"),
            ("day", "date(m.at)"),
        )
    ),
)


_ACTION_KINDS = (
    "'action.intended', 'action.done', 'action.failed', 'action.skipped', 'action.resolved'"
)

M0003 = (
    "ALTER TABLE runs ADD COLUMN actions INTEGER NOT NULL DEFAULT 0",
    # The seen-store: the latest state of each action key across every run, so that a key
    # done by one run is not done again by another, and two runs never act on a key at once.
    """
    CREATE TABLE action_keys (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        step TEXT,
        call TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        seq INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (name, key)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE VIEW actions AS
    SELECT run_id, step, call, name, key, status, attempts, result, intended_at, updated_at, seq
    FROM (
        SELECT run_id, seq, step,
               json_extract(data, '$.call') AS call,
               json_extract(data, '$.name') AS name,
               json_extract(data, '$.key') AS key,
               CASE kind
                   WHEN 'action.intended' THEN 'intended'
                   WHEN 'action.done' THEN 'done'
                   WHEN 'action.skipped' THEN 'skipped'
                   WHEN 'action.failed' THEN
                       CASE WHEN json_extract(data, '$.in_doubt') THEN 'in_doubt' ELSE 'failed' END
                   WHEN 'action.resolved' THEN 'resolved_' || json_extract(data, '$.outcome')
               END AS status,
               sum(kind = 'action.intended') OVER same AS attempts,
               json_extract(data, '$.result') AS result,
               min(CASE WHEN kind = 'action.intended' THEN at END) OVER same AS intended_at,
               at AS updated_at,
               row_number() OVER (
                   PARTITION BY run_id, json_extract(data, '$.name'), json_extract(data, '$.key')
                   ORDER BY seq DESC
               ) AS latest
        FROM events
        WHERE kind IN ({_ACTION_KINDS})
        WINDOW same AS (
            PARTITION BY run_id, json_extract(data, '$.name'), json_extract(data, '$.key')
        )
    )
    WHERE latest = 1
    """,
)


M0004 = (
    # Each event's hash binds it to the one before it in its run (journal/chain.py).
    "ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT ''",
    # `done` is final: a trigger refuses any event after a run's run.done, whatever writes it.
    # The partial index makes that check one lookup instead of a scan of the run.
    "CREATE INDEX events_done ON events (run_id) WHERE kind = 'run.done'",
    """
    CREATE TRIGGER events_none_after_done BEFORE INSERT ON events
    WHEN EXISTS (
        SELECT 1 FROM events INDEXED BY events_done WHERE run_id = NEW.run_id AND kind = 'run.done'
    )
    BEGIN SELECT RAISE(ABORT, 'run is done: no event may follow run.done'); END
    """,
    # Runs are listed in the order they were created, which a clock stepping back cannot change.
    "ALTER TABLE runs ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0",
    """
    UPDATE runs SET ordinal = (
        SELECT count(*) FROM runs AS r
        WHERE r.started_at < runs.started_at
           OR (r.started_at = runs.started_at AND r.run_id <= runs.run_id)
    )
    """,
    "CREATE INDEX runs_ordinal ON runs (ordinal)",
)


# The runs table again, with what limits and exact costs need; it is a projection, so it is
# made anew and rebuilt from the events. Costs are integers of nano-dollars (`_nusd`), so that
# sums are exact; `cost_usd` and `possibly_billed_usd` are computed from them. As 0005 made it:
# 0008 renames `exposure_*` (billed and possibly billed together) to `total_*`.
_RUNS = """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        ordinal INTEGER NOT NULL DEFAULT 0,
        machine TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        code_hash TEXT NOT NULL DEFAULT '',
        run_key TEXT,
        forked_from TEXT,
        forked_at INTEGER,
        status TEXT NOT NULL DEFAULT 'running',
        step TEXT,
        steps INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        transition_seq INTEGER NOT NULL DEFAULT 0,
        snapshot_seq INTEGER NOT NULL DEFAULT 0,
        effects INTEGER NOT NULL DEFAULT 0,
        decisions INTEGER NOT NULL DEFAULT 0,
        actions INTEGER NOT NULL DEFAULT 0,
        resumes INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        started_at TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL DEFAULT '',
        ended_at TEXT,
        limits TEXT,
        limit_overrides TEXT,
        model_requests INTEGER NOT NULL DEFAULT 0,
        model_calls INTEGER NOT NULL DEFAULT 0,
        model_failures INTEGER NOT NULL DEFAULT 0,
        rejections INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        exposure_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nusd INTEGER NOT NULL DEFAULT 0,
        exposure_nusd INTEGER NOT NULL DEFAULT 0,
        anomaly INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL GENERATED ALWAYS AS (cost_nusd / 1e9) VIRTUAL,
        possibly_billed_usd REAL GENERATED ALWAYS AS ((exposure_nusd - cost_nusd) / 1e9) VIRTUAL
    )
    """

_TOKENS = "input_tokens, output_tokens, cache_write_tokens, cache_read_tokens"


def _cost_view(by: str, group: str, source: str, extra: str = "", total: str = "total_nusd") -> str:
    """A cost view grouped by `group` over `source` (runs or spend), exact sums shown in USD;
    `total` is the column of billed and possibly billed together (`exposure_nusd` before 0008)."""
    sums = ", ".join(f"sum({t}) AS {t}" for t in _TOKENS.split(", "))
    return f"""
        CREATE VIEW cost_by_{by} AS
        SELECT {group} AS {by}{extra}, sum(model_calls) AS calls, sum(model_requests) AS requests,
               {sums},
               sum(cost_nusd) / 1e9 AS cost_usd,
               sum({total} - cost_nusd) / 1e9 AS possibly_billed_usd,
               sum(cost_nusd) AS cost_nusd
        FROM {source} GROUP BY {group} ORDER BY {group}
    """


def _cost_views(total: str = "total_nusd") -> tuple[str, ...]:
    """The four cost views, by run and machine (over `runs`), by model and day (over `spend`)."""
    return (
        _cost_view("run", "run_id", "runs", ", machine, code_hash, sum(steps) AS steps", total),
        _cost_view("machine", "machine", "runs", total=total),
        _cost_view("model", "model", "spend", total=total),
        _cost_view("day", "day", "spend", total=total),
    )


KIND_VIEWS = {
    "decisions": "decision",
    "effects": "effect.done",
    "transitions": "transition",
    "model_calls": "model.answered",
    "model_failures": "model.failed",
    "rejections": "output.rejected",
    "kills": "run.killed",
    "anomalies": "cost.anomaly",
}
"""The view of each kind of event: `run_id, seq, at, step`, then the kind's fields. A change to
a kind's fields is a new migration that makes its view again."""

VIEW_EXTRAS: dict[str, dict[str, str]] = {
    "transitions": {
        # Journals written before `to_step` said `to`.
        "to_step": "coalesce(json_extract(data, '$.to_step'), json_extract(data, '$.to'))",
        "changes": "json_array_length(data, '$.delta')",
    },
    "model_calls": {
        "input_tokens": "$.usage.input_tokens",
        "output_tokens": "$.usage.output_tokens",
        "cache_write_tokens": "json_extract(data, '$.usage.cache_write_5m_tokens')"
        " + json_extract(data, '$.usage.cache_write_1h_tokens')",
        "cache_read_tokens": "$.usage.cache_read_tokens",
        "thinking_tokens": "$.usage.thinking_tokens",
    },
}
"""Columns a view adds to (or computes for) its kind's fields."""


def _kind_view(view: str, kind: str) -> str:
    extras = VIEW_EXTRAS.get(view, {})
    columns = {name: f"$.{name}" for name in kinds.fields(kind)} | extras
    return _view(view, kind, **columns)


M0005 = (
    *(f"DROP VIEW cost_by_{by}" for by in ("run", "machine", "model", "day")),
    "DROP VIEW actions",
    "DROP TABLE runs",
    _RUNS,
    "CREATE UNIQUE INDEX runs_machine_key ON runs (machine, run_key) WHERE run_key IS NOT NULL",
    "CREATE INDEX runs_ordinal ON runs (ordinal)",
    "CREATE INDEX runs_machine ON runs (machine, ordinal)",
    # Each action of each run as its latest event leaves it (the seen-store is action_keys).
    """
    CREATE TABLE actions (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        step TEXT,
        call TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        resolved_by TEXT,
        intended_at TEXT,
        updated_at TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (run_id, name, key)
    ) WITHOUT ROWID
    """,
    # What each machine spent each day on each model, by the day each request was sent: what a
    # budget is checked against, in the same transaction as the request's intent.
    """
    CREATE TABLE spend (
        machine TEXT NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        model_requests INTEGER NOT NULL DEFAULT 0,
        model_calls INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nusd INTEGER NOT NULL DEFAULT 0,
        exposure_nusd INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (machine, day, model)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE budgets (
        machine TEXT PRIMARY KEY,
        per_day_nusd INTEGER,
        per_run_nusd INTEGER,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL
    )
    """,
    # A person's kill of a run, as a durable row the run's process polls (it may be anywhere,
    # and only it may append to its run).
    """
    CREATE TABLE kill_requests (
        run_id TEXT PRIMARY KEY,
        requested_at TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        reason TEXT
    )
    """,
    *_cost_views(total="exposure_nusd"),
    # The views of events, one per kind, their columns the kind's fields (journal/kinds.py):
    # one name for each datum, in the data, the log and SQL. Made anew over those of 0001-0002.
    *(f"DROP VIEW {view}" for view in ("decisions", "effects", "transitions")),
    *(f"DROP VIEW {view}" for view in ("model_calls", "model_failures", "rejections")),
    *(_kind_view(view, kind) for view, kind in KIND_VIEWS.items()),
)


# model.answered says how its request asked for the answer (`mechanism`) and why a refusal
# refused (`stop_details`), and its usage how many of the output tokens were thinking.
M0006 = ("DROP VIEW model_calls", _kind_view("model_calls", "model.answered"))


# No table changes: `run.started` and `snapshot` may now hold a state's or an input's big members
# as blobs (journal/parts.py). Counted as a migration so that an older runjournal, which would
# read null in their place, refuses the journal instead.
M0007: tuple[str, ...] = ()


# One word per datum: billed and possibly billed together is the `total` every command prints
# (`total_usd`), in the tables too, where it was called `exposure`. The numbers stay as they
# are; the cost views, which name the column, are made again.
M0008 = (
    *(f"DROP VIEW cost_by_{by}" for by in ("run", "machine", "model", "day")),
    "ALTER TABLE runs RENAME COLUMN exposure_nusd TO total_nusd",
    "ALTER TABLE runs RENAME COLUMN exposure_tokens TO total_tokens",
    "ALTER TABLE spend RENAME COLUMN exposure_nusd TO total_nusd",
    *_cost_views(),
)


# The pace of model requests shared by the runs of one journal (`journal worker`): a bucket per
# limit per minute, refilled at that limit and holding a second of it, that every process takes
# from in a transaction, so runs on many workers together stay under the limit of their key.
M0009 = (
    """
    CREATE TABLE pace (
        name TEXT PRIMARY KEY,
        level REAL NOT NULL,
        stamp REAL NOT NULL
    )
    """,
)


# A model request may be an item of a Message Batch (`ctx.ask_batch`): its `custom_id` there, and
# the outcome's `batch_id`. The views of the outcomes are made again with those columns. And a
# run's `wake_at`, the deadline of its latest `run.waiting`, lets a worker claim a waiting run
# whose time has come (a wait's default to take, a batch to look at again).
M0010 = (
    "DROP VIEW model_calls",
    "DROP VIEW model_failures",
    _kind_view("model_calls", "model.answered"),
    _kind_view("model_failures", "model.failed"),
    "ALTER TABLE runs ADD COLUMN wake_at TEXT",
    """
    UPDATE runs SET wake_at = (
        SELECT json_extract(e.data, '$.deadline') FROM events e
        WHERE e.run_id = runs.run_id AND e.kind = 'run.waiting' ORDER BY e.seq DESC LIMIT 1
    )
    """,
    "CREATE INDEX runs_wake_at ON runs (wake_at) WHERE status = 'waiting'",
)
