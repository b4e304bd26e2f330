"""What a run and a machine may spend, checked by the journal: a run's caps, checked before each
model request, and the budgets shared by the runs of a machine.

A request's worst case is checked in the same transaction that writes its intent
(`model.requested`), against what its run has spent or may have spent (`runs.total_*`,
`runs.model_requests`) and what its machine has spent today (`spend`), so that processes
sharing a journal cannot together go past a budget.
"""

from __future__ import annotations

import sqlite3

import attrs

from runjournal.journal.errors import LimitReached

NUSD = 1_000_000_000
"""Nano-dollars in a dollar."""


@attrs.frozen
class Reserve:
    """A model request about to be sent: its worst case, and the run's caps."""

    nusd: int
    """What it can cost at most, in nano-dollars."""
    tokens: int
    """How many tokens it can be billed for at most."""
    max_cost_nusd: int | None = None
    max_tokens: int | None = None
    max_model_calls: int | None = None
    requests: int = 1
    """How many model requests it stands for: a Message Batch's items, each one request."""


@attrs.frozen
class Budget:
    """What a machine may spend: per day (UTC) across all its runs, and per run by default."""

    machine: str
    per_day_nusd: int | None
    per_run_nusd: int | None
    updated_at: str
    updated_by: str
    spent_today_nusd: int = 0
    """Billed and possibly billed today, when read with `budgets(day=...)`."""


def check_caps(reserve: Reserve, total: int, tokens: int, requests: int) -> None:
    """LimitReached if the request could take its run past a cap, the run having spent or
    possibly spent `total` nano-dollars and `tokens` tokens over `requests` requests. Every
    backend's check, in the transaction that writes the request's intent."""
    if (
        reserve.max_model_calls is not None
        and requests + reserve.requests > reserve.max_model_calls
    ):
        raise LimitReached("max_model_calls", requests, reserve.max_model_calls, "model calls")
    if reserve.max_tokens is not None and tokens + reserve.tokens > reserve.max_tokens:
        raise LimitReached(
            "max_tokens", tokens, reserve.max_tokens, "tokens", worst_case=reserve.tokens
        )
    if reserve.max_cost_nusd is not None and total + reserve.nusd > reserve.max_cost_nusd:
        raise LimitReached(
            "max_cost_usd",
            total / NUSD,
            reserve.max_cost_nusd / NUSD,
            "USD",
            worst_case=reserve.nusd / NUSD,
        )


def check_budget(reserve: Reserve, spent: int, per_day: int, machine: str, day: str) -> None:
    """LimitReached if the request could take its machine past its budget for `day`, the
    machine's runs having spent or possibly spent `spent` nano-dollars that day."""
    if spent + reserve.nusd > per_day:
        raise LimitReached(
            "budget_per_day",
            spent / NUSD,
            per_day / NUSD,
            f"USD on {day} across the runs of {machine}",
            worst_case=reserve.nusd / NUSD,
        )


def _reserve(conn: sqlite3.Connection, run_id: str, reserve: Reserve, day: str) -> None:
    """Raise LimitReached if the request could take its run or machine past a cap."""
    machine, total, tokens, requests = conn.execute(
        "SELECT machine, total_nusd, total_tokens, model_requests FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    check_caps(reserve, total, tokens, requests)
    row = conn.execute("SELECT per_day_nusd FROM budgets WHERE machine = ?", (machine,)).fetchone()
    if row is None or row[0] is None:
        return
    (spent,) = conn.execute(
        "SELECT coalesce(sum(total_nusd), 0) FROM spend WHERE machine = ? AND day = ?",
        (machine, day),
    ).fetchone()
    check_budget(reserve, spent, row[0], machine, day)


PACE_SQL = """
INSERT INTO pace (name, level, stamp) VALUES ({p}, {p}, {p})
ON CONFLICT (name) DO UPDATE SET
    level = {least}({p}, pace.level + max(0.0, excluded.stamp - pace.stamp) * {p}) - {p},
    stamp = excluded.stamp
RETURNING level
"""
"""A take from a shared bucket (`pace`): its name, the level a new bucket starts at (a full
second, less the take), now; then the capacity, the rate a second, and the take."""


def pace_params(name: str, limit: int, amount: float, now: float) -> tuple[object, ...]:
    capacity, rate = max(1.0, limit / 60.0), limit / 60.0
    return (name, capacity - amount, now, capacity, rate, amount)


def pace_wait(level: float, limit: int) -> float:
    """Seconds until a bucket left at `level` is out of debt."""
    return 0.0 if level >= 0 else -level / (limit / 60.0)


def _set_budget(
    conn: sqlite3.Connection,
    machine: str,
    per_day_nusd: int | None,
    per_run_nusd: int | None,
    at: str,
    by: str,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO budgets (machine, per_day_nusd, per_run_nusd, updated_at, "
        "updated_by) VALUES (?, ?, ?, ?, ?)",
        (machine, per_day_nusd, per_run_nusd, at, by),
    )


def _budgets(conn: sqlite3.Connection, day: str, machine: str | None = None) -> list[Budget]:
    sql = (
        "SELECT b.machine, b.per_day_nusd, b.per_run_nusd, b.updated_at, b.updated_by, "
        "coalesce((SELECT sum(total_nusd) FROM spend s WHERE s.machine = b.machine "
        "AND s.day = ?), 0) FROM budgets b"
    )
    params: list[str] = [day]
    if machine is not None:
        sql += " WHERE b.machine = ?"
        params.append(machine)
    return [Budget(*row) for row in conn.execute(sql + " ORDER BY b.machine", params)]
