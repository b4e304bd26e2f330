"""Reading a journal file: runs, events, blobs, leases and budgets, and the check of the part of
a run a writer builds on.

Each read runs on the store's own connection and raises the journal's errors, never SQLite's
(`connection.reading`). Events come back in seq order and are read as they are iterated, so a
long run is read in flat memory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from runjournal.journal import events as k
from runjournal.journal import leases, parts, spending
from runjournal.journal.batch import Row
from runjournal.journal.blobs import holds as blob_holds
from runjournal.journal.blobs import text as blob_text
from runjournal.journal.connection import Connected, reading
from runjournal.journal.errors import AmbiguousRunId, BlobMissing, JournalCorrupt, RunNotFound
from runjournal.journal.events import Event, timestamp
from runjournal.journal.leases import Lease
from runjournal.journal.rows import ACTION_COLUMNS, RUN_COLUMNS, Action, Run
from runjournal.journal.verify import file_problems, verify_part

_SELECT_EVENTS = "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = ?"


class Reading(Connected):
    """The reads of an open journal file."""

    @reading
    def check_run(self, run_id: str, *, upto: int | None = None) -> None:
        """Raise JournalCorrupt if the part of the run a writer builds on is damaged.

        That part is the `run.started` event and the input it refers to, and what a fold up to
        `upto` (default: the run's last event) reads: the newest whole state at or before it
        and the events after it, each checked against the hash chain from the event before
        them. Not `journal verify`: the events before that state are not read, so this costs
        what the fold costs, however long the run. The first call on a connection also runs
        SQLite's quick check of the whole file (a fraction of a second per 100 MB).
        """
        if not self._file_checked:
            damaged = file_problems(self.conn, "quick")
            if damaged:
                msg = (
                    f"{self.path} is damaged (sqlite: {damaged[0][0]}); nothing was written: "
                    f"`journal verify --db {self.path}` reports what SQLite finds"
                )
                raise JournalCorrupt(msg)
            self._file_checked = True
        sql = "SELECT max(seq) FROM events WHERE run_id = ? AND kind IN (?, ?)"
        params: list[Any] = [run_id, k.RUN_STARTED, k.SNAPSHOT]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        (base,) = self.conn.execute(sql, params).fetchone()
        found = verify_part(self.conn, run_id, first=base or 1, upto=upto)
        if found is None and base != 1:
            found = verify_part(self.conn, run_id, first=1, upto=1)
        if found is None:
            found = _input_problem(self.conn, run_id)
        if found is not None:
            msg = (
                f"{self.path} is damaged: run {run_id}, {found}; nothing was written: "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise JournalCorrupt(msg)

    # Budgets, kills and leases

    @reading
    def budgets(self, machine: str | None = None) -> list[spending.Budget]:
        """The budgets set, each with what its machine spent today (UTC)."""
        return spending._budgets(self.conn, timestamp(self.clock())[:10], machine)

    @reading
    def kill_request(self, run_id: str) -> leases.KillRequest | None:
        return leases._kill_request(self.conn, run_id)

    @reading
    def lease(self, run_id: str) -> Lease | None:
        return leases._lease(self.conn, run_id)

    @reading
    def leases(self) -> dict[str, Lease]:
        """Every lease held or left behind, by run id."""
        return leases._leases(self.conn)

    # Events and blobs

    @reading
    def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """The run's events with `after < seq <= upto`, in order, read as they are iterated."""
        sql = _SELECT_EVENTS + " AND seq > ?"
        params: list[Any] = [run_id, after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(kinds)
        loads = json.loads
        for run, seq, at, kind, step, data in self.conn.execute(sql + " ORDER BY seq", params):
            yield Event(run, seq, at, kind, step, loads(data))

    @reading
    def stored(self, run_id: str, *, after: int = 0) -> Iterator[Row]:
        rows = self.conn.execute(
            "SELECT run_id, seq, at, kind, step, data, hash FROM events "
            "WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after),
        )
        return iter(rows)

    @reading
    def transitions(
        self, run_id: str, *, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, str, str | None, str]]:
        """`(seq, at, step, data as JSON text)` of the run's transitions: what a fold reads.

        Rows, not events: a replay reads hundreds of thousands of them.
        """
        sql = "SELECT seq, at, step, data FROM events WHERE run_id = ? AND kind = ? AND seq > ?"
        params: list[Any] = [run_id, k.TRANSITION, after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        return iter(self.conn.execute(sql + " ORDER BY seq", params))

    @reading
    def latest_snapshot(self, run_id: str, upto: int | None = None) -> Event:
        """The newest event holding a whole state (`run.started`, `snapshot`) up to `upto`."""
        sql = _SELECT_EVENTS + " AND kind IN (?, ?)"
        params: list[Any] = [run_id, k.RUN_STARTED, k.SNAPSHOT]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        row = self.conn.execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        if row is None:
            msg = f"run {run_id} has no recorded state at or before seq {upto}"
            raise RunNotFound(msg)
        data = json.loads(row[5])
        data["state"] = parts.join(data["state"], data.get("state_parts"), self.blob)
        return Event(row[0], row[1], row[2], row[3], row[4], data)

    @reading
    def blob(self, ref: str) -> str:
        try:
            text = blob_text(self.conn, ref)
        except UnicodeDecodeError as e:
            msg = (
                f"{self.path} is damaged: the blob {ref} is not UTF-8 text; "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise JournalCorrupt(msg) from e
        if text is None:
            msg = (
                f"{self.path} is damaged: the blob {ref} is gone; "
                f"`journal verify --db {self.path}` names all that is wrong"
            )
            raise BlobMissing(msg)
        return text

    # Runs and actions

    @reading
    def run(self, run_id: str) -> Run:
        return self._run(self.conn, run_id)

    def _run(self, conn: sqlite3.Connection, run_id: str) -> Run:
        row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            msg = f"no run {run_id} in {self.path}"
            raise RunNotFound(msg)
        return Run(*row)

    @reading
    def find_run(self, prefix: str) -> Run:
        """The run whose id is or starts with `prefix`."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
            msg = f"no run {prefix!r} in {self.path}: run ids are hex (see `journal runs`)"
            raise RunNotFound(msg)
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id GLOB ? ORDER BY ordinal LIMIT 11",
            (prefix.lower() + "*",),
        ).fetchall()
        if not rows:
            msg = f"no run {prefix!r} in {self.path} (see `journal runs`)"
            raise RunNotFound(msg)
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            msg = f"run id prefix {prefix!r} is ambiguous: it matches {shown}"
            raise AmbiguousRunId(msg)
        return self._run(self.conn, rows[0][0])

    @reading
    def actions(self, run_id: str | None = None, *, key: str | None = None) -> list[Action]:
        """Actions by run and key, oldest first; only one run's, or one key's, when asked."""
        columns = ", ".join(f"a.{c}" for c in ACTION_COLUMNS.split(", "))
        sql = f"SELECT {columns} FROM actions a JOIN runs r ON r.run_id = a.run_id WHERE 1"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND a.run_id = ?"
            params.append(run_id)
        if key is not None:
            sql += " AND a.key = ?"
            params.append(key)
        rows = self.conn.execute(sql + " ORDER BY r.ordinal, a.seq", params)
        return [Action.from_row(row) for row in rows]

    @reading
    def runs(
        self,
        *,
        limit: int | None = None,
        machine: str | None = None,
        statuses: Sequence[str] | None = None,
        before: int | None = None,
    ) -> list[Run]:
        """Runs, newest (last created) first: all, or those of a machine, with a status, or
        created before the run of ordinal `before`."""
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE 1"
        params: list[Any] = []
        if machine is not None:
            sql += " AND machine = ?"
            params.append(machine)
        if statuses is not None:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params.extend(statuses)
        if before is not None:
            sql += " AND ordinal < ?"
            params.append(before)
        sql += " ORDER BY ordinal DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Run(*row) for row in self.conn.execute(sql, params)]


def _input_problem(conn: sqlite3.Connection, run_id: str) -> str | None:
    """What is wrong with a blob the run's `run.started` refers to (its input and the parts of
    its input and first state), if anything."""
    row = conn.execute(
        "SELECT json_extract(data, '$.input'), json_extract(data, '$.input_parts'), "
        "json_extract(data, '$.state_parts') "
        "FROM events WHERE run_id = ? AND seq = 1",
        (run_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    refs = [row[0], *(ref for held in row[1:] if held for ref in json.loads(held).values())]
    for ref in refs:
        found = conn.execute("SELECT size, data FROM blobs WHERE hash = ?", (ref,)).fetchone()
        if found is None:
            return f"the blob {ref} that seq 1 refers to is gone"
        if not blob_holds(ref, *found):
            return f"the blob {ref} that seq 1 refers to was changed: it fails its hash"
    return None
