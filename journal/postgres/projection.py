"""The derived tables on PostgreSQL: `journal.projection`'s statements, in psycopg's style.

The changes a batch makes (`projection.project`, pure) are applied by the same upserts as on
SQLite, their `:name` parameters written `%(name)s`; the store applies them in each append's
transaction, and `journal verify` to temporary tables of the same names for its rebuild.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from runjournal.journal import projection
from runjournal.journal.errors import RunIsDone


def _named(sql: str) -> str:
    """SQLite's `:name` parameters as psycopg's `%(name)s`: one statement text, both engines."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


_UPSERTS = {table: _named(sql) for table, sql in projection.UPSERTS.items()}


def apply(
    conn: psycopg.Connection[Any],
    run_id: str,
    changes: projection.Changes,
    *,
    counted: bool = True,
) -> None:
    """`projection._apply` in PostgreSQL's SQL: the same statements, the same checks (not
    `counted` in a pipeline, where `runjournal_writer` checked the run's row before)."""
    sets, adds = changes.sets, changes.adds
    assignments = [f"{col} = %s" for col in sets] + [f"{col} = {col} + %s" for col in adds]
    cur = conn.execute(
        f"UPDATE runs SET {', '.join(assignments)} WHERE run_id = %s AND status != 'done'",
        (*sets.values(), *adds.values(), run_id),
    )
    if counted and cur.rowcount != 1:
        raise RunIsDone(
            f"run {run_id} is done (or missing from the runs table): nothing more can be added"
        )
    for table, row in projection.upserts(run_id, changes):
        conn.execute(_UPSERTS[table], row)
