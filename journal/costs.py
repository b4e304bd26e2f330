"""Cost reports: model calls, tokens and dollars by run, machine, model, day or code version.

Read from the derived tables (`runs`, and `spend` for models and days), never by scanning
events, so a report costs in proportion to the runs or days it covers. Dollars are summed as
integers of nano-dollars and shown as exact decimals; "possibly billed" is the worst case of
the requests whose outcome is unknown (a timeout, a dropped connection, a crash), apart from
what was billed.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from journal.store import Journal

BY: Final = ("run", "machine", "version", "model", "day")

_TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
_SUMS = ", ".join(
    [
        "sum(model_calls)",
        "sum(model_requests)",
        *(f"sum({t})" for t in _TOKENS),
        "sum(cost_nusd)",
        "sum(exposure_nusd - cost_nusd)",
    ]
)
_GROUPS: Final = {
    # by: (the key columns shown, their SQL, the table, per-step figures known)
    "run": (("run", "machine", "code_hash"), "run_id, machine, code_hash", "runs", True),
    "machine": (("machine",), "machine", "runs", True),
    "version": (
        ("machine", "code_hash", "first_seen"),
        "machine, code_hash, min(started_at)",
        "runs",
        True,
    ),
    "model": (("model",), "model", "spend", False),
    "day": (("day",), "day", "spend", False),
}


@attrs.frozen
class Report:
    """A cost report: its column names and rows."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def _usd(nusd: int | None) -> Decimal:
    return Decimal(nusd or 0) / Decimal(1_000_000_000)


def report(
    journal: Journal, by: str, *, since: datetime.date | None = None, machine: str | None = None
) -> Report:
    """Cost by `by` (one of BY), of runs started (or, by model and day, requests sent) on or
    after `since`, of one machine or all."""
    keys, group, table, per_step = _GROUPS[by]
    where, params = ["1"], []
    if since is not None:
        where.append("started_at >= ?" if table == "runs" else "day >= ?")
        params.append(since.isoformat())
    if machine is not None:
        where.append("machine = ?")
        params.append(machine)
    extra = ", sum(steps), sum(decisions)" if per_step else ", NULL, NULL"
    group_by = group.removesuffix(", min(started_at)")
    order = "min(ordinal)" if table == "runs" else group_by
    sql = (
        f"SELECT {group}, {_SUMS}{extra} FROM {table} WHERE {' AND '.join(where)} "
        f"GROUP BY {group_by} ORDER BY {order}"
    )
    rows = []
    for row in journal.conn.execute(sql, params):
        shown = row[: len(keys)]
        calls, requests, *tokens, billed, possibly, steps, decisions = row[len(keys) :]
        rows.append(
            (
                *shown,
                calls,
                requests,
                *tokens,
                _usd(billed),
                _usd(possibly),
                *_rates(tokens, steps, decisions),
            )
        )
    columns = [
        *keys,
        "calls",
        "requests",
        *_TOKENS,
        "cost_usd",
        "possibly_billed_usd",
        "input_tokens_per_step",
        "output_tokens_per_step",
        "tokens_per_decision",
    ]
    return Report(columns, rows)


def _rates(
    tokens: Sequence[int], steps: int | None, decisions: int | None
) -> tuple[float | None, float | None, float | None]:
    """Input tokens (of every kind) and output tokens per step; all tokens per decided item."""
    taken_in = tokens[0] + tokens[2] + tokens[3]
    every = sum(tokens)
    return (
        round(taken_in / steps, 1) if steps else None,
        round(tokens[1] / steps, 1) if steps else None,
        round(every / decisions, 1) if decisions else None,
    )
