"""Money spent on model requests, in the vocabulary's three words, and cost reports by run,
machine, model, day or code version.

Every amount is said the same way wherever it is shown (`Spent`): *billed*, what the API has
charged (the `cost_usd` columns); *possibly billed*, the worst case of the requests whose outcome
is unknown (a timeout, a dropped connection, a crash), apart from what was billed; and *total*,
the two together, which is what caps and budgets count (the `total_nusd` columns).

Read from the derived tables (`runs`, and `spend` for models and days), never by scanning
events, so a report costs in proportion to the runs or days it covers. Dollars are summed as
integers of nano-dollars and kept as exact decimals.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from runjournal.journal.events import timestamp
from runjournal.journal.protocol import Store
from runjournal.journal.spending import NUSD

BY: Final = ("run", "machine", "version", "model", "day")

_TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
_SUMS = ", ".join(
    [
        # Cast: PostgreSQL sums integers as numeric.
        *(
            f"CAST(sum({c}) AS BIGINT)"
            for c in ("model_calls", "model_requests", *_TOKENS, "cost_nusd", "total_nusd")
        ),
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
class Spent:
    """Money spent, exact: billed, possibly billed, and their total."""

    billed_nusd: int
    possibly_billed_nusd: int

    @property
    def billed(self) -> Decimal:
        """What the API has charged."""
        return _usd(self.billed_nusd)

    @property
    def possibly_billed(self) -> Decimal:
        """The worst case of the requests whose outcome is unknown, apart from what was billed."""
        return _usd(self.possibly_billed_nusd)

    @property
    def total(self) -> Decimal:
        """Billed and possibly billed together: what caps and budgets count."""
        # Each amount divided from integers, never summed as decimals: `$1`, not `$1.0`.
        return _usd(self.billed_nusd + self.possibly_billed_nusd)

    @classmethod
    def of(cls, cost_nusd: int | None, total_nusd: int | None) -> Spent:
        """From the tables' integers: `cost_nusd` billed, `total_nusd` billed and possibly."""
        return cls(cost_nusd or 0, (total_nusd or 0) - (cost_nusd or 0))


def spent_today(journal: Store) -> dict[str, Spent]:
    """What each machine spent today (UTC, by the day each request was sent): what its budget
    is checked against. A machine with no request today is absent."""
    day = timestamp(journal.clock())[:10]
    rows = journal.query(
        "SELECT machine, CAST(sum(cost_nusd) AS BIGINT), CAST(sum(total_nusd) AS BIGINT) "
        "FROM spend WHERE day = ? GROUP BY machine",
        (day,),
    ).rows
    return {machine: Spent.of(billed, total) for machine, billed, total in rows}


@attrs.frozen
class Report:
    """A cost report: its column names and rows."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def _usd(nusd: int | None) -> Decimal:
    return Decimal(nusd or 0) / NUSD


def report(
    journal: Store, by: str, *, since: datetime.date | None = None, machine: str | None = None
) -> Report:
    """Cost by `by` (one of BY), of runs started (or, by model and day, requests sent) on or
    after `since`, of one machine or all."""
    keys, group, table, per_step = _GROUPS[by]
    where, params = ["true"], []
    if since is not None:
        where.append("started_at >= ?" if table == "runs" else "day >= ?")
        params.append(since.isoformat())
    if machine is not None:
        where.append("machine = ?")
        params.append(machine)
    extra = (
        ", CAST(sum(steps) AS BIGINT), CAST(sum(decisions) AS BIGINT)"
        if per_step
        else ", NULL, NULL"
    )
    group_by = group.removesuffix(", min(started_at)")
    order = "min(ordinal)" if table == "runs" else group_by
    sql = (
        f"SELECT {group}, {_SUMS}{extra} FROM {table} WHERE {' AND '.join(where)} "
        f"GROUP BY {group_by} ORDER BY {order}"
    )
    rows = []
    for row in journal.query(sql, params).rows:
        shown = row[: len(keys)]
        calls, requests, *tokens, billed, total, steps, decisions = row[len(keys) :]
        spent = Spent.of(billed, total)
        rows.append(
            (
                *shown,
                calls,
                requests,
                *tokens,
                spent.billed,
                spent.possibly_billed,
                spent.total,
                *_rates(tokens, steps, decisions),
            )
        )
    columns = [
        *keys,
        "calls",
        "requests",
        *_TOKENS,
        # Billed is `cost_usd`, as in the `runs` table and the cost_by_* views.
        "cost_usd",
        "possibly_billed_usd",
        "total_usd",
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
