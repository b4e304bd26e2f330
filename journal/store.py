"""The SQLite journal: appends events to runs, creates runs, and keeps their leases and budgets.

This is the only module that writes `events`. Every write is one `BEGIN IMMEDIATE` transaction
(journal/connection.py) that does in SQL only what must happen inside it; the batch it stores
was made ready above it, the same for every backend (journal/batch.py: the kind check, the JSON,
the secrets redacted, the derived tables' changes). An append checks the writer's lease, the
action claim and the cost reservation, stores the blobs and the events (each chained to the run's
event before the batch, read in the transaction), and applies the changes to the derived tables.
A seq already taken makes the whole batch fail (`ConcurrentAppend`), so two writers never
interleave. Reads are `Reading`'s (journal/reading.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from secrets import token_hex
from typing import Any

from runjournal.journal import batch as batches
from runjournal.journal import leases, projection, spending
from runjournal.journal.batch import Batch, Row
from runjournal.journal.blobs import put as put_blob
from runjournal.journal.errors import (
    ActionBusy,
    ActionKeyDone,
    ConcurrentAppend,
    JournalCorrupt,
    LeaseHeld,
    LeaseLost,
    RunIsDone,
)
from runjournal.journal.events import Event, timestamp
from runjournal.journal.leases import Holder, Lease
from runjournal.journal.reading import Reading
from runjournal.journal.rows import Problem, Run
from runjournal.journal.verify import heads, verify

_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, at, kind, step, data, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class Journal(Reading):
    """An open journal file. Not shared between processes; each opens its own."""

    # Appending

    def append(
        self,
        batch: Batch,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: spending.Reserve | None = None,
        owner: str | None = None,
    ) -> Sequence[Event]:
        """Append `batch` (see `batch.prepare`) and update the derived tables, atomically.

        `owner` (the writer's lease owner) is checked against the run's lease in the same
        transaction: a process whose lease was taken over writes nothing (LeaseLost), however
        late it noticed.
        `claim` (action name, key) first checks, in the same transaction, that no run has done
        that action key (ActionKeyDone) and no other run is acting on it (ActionBusy).
        `reserve` (with a model request) first checks, in the same transaction, that the request
        cannot take the run past its caps or its machine past today's budget (LimitReached).
        Nothing is appended to a run that is done (RunIsDone).
        Returns the events as written (redacted).
        """
        run_id = batch.run_id
        with self._write(sync=sync) as conn:
            if owner is not None:
                _check_owner(conn, run_id, owner)
            if claim is not None:
                _claim(conn, run_id, *claim)
            if reserve is not None:
                spending._reserve(conn, run_id, reserve, batch.day)
            for blob in batch.blobs:
                put_blob(conn, blob)
            self._insert(conn, batch)
            projection._apply(conn, run_id, batch.changes)
            if batch.kills:
                conn.execute("DELETE FROM kill_requests WHERE run_id = ?", (run_id,))
        return batch.events

    def _insert(self, conn: sqlite3.Connection, batch: Batch) -> None:
        """Insert the events, each chained to the one before it, inside the caller's write."""
        run_id = batch.run_id

        def read(seq: int) -> str | None:
            row = conn.execute(
                "SELECT hash FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)
            ).fetchone()
            return None if row is None else str(row[0])

        rows = batch.rows(self._heads.previous(run_id, batch.first, read))
        try:
            conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                msg = (
                    f"run {run_id}: seq {batch.first} is already taken; "
                    "another process is writing this run"
                )
                raise ConcurrentAppend(msg) from e
            if "run.done" in str(e):
                raise _done(run_id) from e
            raise
        self._heads.moved(run_id, rows[-1][1], rows[-1][-1])

    def create_run(
        self,
        *,
        machine: str,
        target: str,
        code_hash: str,
        step: str,
        state: Any,
        input: Any,
        run_key: str | None,
        holder: Holder | None,
        lease_ttl: float,
        limits: dict[str, Any] | None = None,
        limit_overrides: dict[str, Any] | None = None,
        forked_from: tuple[str, int] | None = None,
    ) -> tuple[Run, bool]:
        """Record a new run and take its lease; with a run key already used, return that run.

        The second value is True when the run was created. `limits` are the limits in force,
        `limit_overrides` those given for this run alone (recorded with `run.started`);
        `forked_from` the run and seq whose state this one starts from.
        """
        if forked_from is not None:  # a fork never starts from a damaged record
            self.check_run(forked_from[0], upto=forked_from[1])
        now = self.clock()
        with self._write() as conn:
            if run_key is not None:
                row = conn.execute(
                    "SELECT run_id FROM runs WHERE machine = ? AND run_key = ?", (machine, run_key)
                ).fetchone()
                if row is not None:
                    return self._run(conn, row[0]), False
            run_id = _new_run_id(conn)
            # Creation order, counted in the same transaction: runs are listed by it, never by
            # a clock that may step back.
            (ordinal,) = conn.execute("SELECT coalesce(max(ordinal), 0) + 1 FROM runs").fetchone()
            started = batches.start(
                run_id,
                timestamp(now),
                ordinal=ordinal,
                machine=machine,
                target=target,
                code_hash=code_hash,
                step=step,
                state=state,
                input=input,
                run_key=run_key,
                limits=limits,
                limit_overrides=limit_overrides,
                forked_from=forked_from,
                redact=self.redact,
                secrets=self.secrets,
                submitted=holder is None,
            )
            for blob in started.blobs:
                put_blob(conn, blob)
            conn.execute("INSERT INTO runs (run_id) VALUES (?)", (run_id,))
            self._insert(conn, started)
            projection._apply(conn, run_id, started.changes)
            if holder is not None:
                leases._acquire(conn, run_id, holder, now, lease_ttl)
            return self._run(conn, run_id), True

    def import_run(
        self, run_id: str, rows: Iterable[Row], blobs: Callable[[], Iterable[str]]
    ) -> bool:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                return False
            conn.execute("INSERT INTO runs (run_id) VALUES (?)", (run_id,))
            for chunk in batches.chunked(rows, 5000):
                conn.executemany(_INSERT_EVENT, chunk)
            for blob in blobs():
                put_blob(conn, blob)
            # Read back in this transaction, a page at a time: a long run in flat memory.
            projection._apply(conn, run_id, projection.project(self.events(run_id)))
        return True

    def rebuild_runs(self) -> None:
        """Derive the runs table again from the events alone."""
        with self._write() as conn:
            projection._rebuild(conn, lambda run_id: self.events(run_id))

    def verify(self, run_id: str | None = None) -> list[Problem]:
        """Every problem found, in the whole journal or in one run (journal/verify.py)."""
        return verify(self, run_id)

    def heads(self, run_id: str | None = None) -> dict[str, tuple[int, str]]:
        """The last seq and hash of each run (or of one)."""
        return heads(self, run_id)

    # Leases

    def acquire_lease(self, run_id: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the run's lease; return the one taken over, if any.

        Raises LeaseHeld if a live process has it, and RunIsDone if the run is done: the status
        is read in the same transaction, so a run that another process finished a moment ago
        is never taken up again.
        """
        self.check_run(run_id)  # a writer never builds on a damaged record
        with self._write() as conn:
            if self._run(conn, run_id).status == "done":
                raise _done(run_id)
            return leases._acquire(conn, run_id, holder, self.clock(), ttl)

    def claim_run(
        self,
        holder: Holder,
        ttl: float,
        *,
        machines: Sequence[str] | None = None,
        excluded: Sequence[str] = (),
    ) -> Run | None:
        now = self.clock()
        sql, params = leases.claimable(now, machines, excluded)
        with self._write() as conn:
            for (run_id,) in conn.execute(sql.replace("%s", "?"), params).fetchall():
                try:
                    self.check_run(run_id)
                    leases._acquire(conn, run_id, holder, now, ttl)
                except (LeaseHeld, JournalCorrupt):
                    continue  # a live process on this host, or a damaged run: not this one
                return self._run(conn, run_id)
        return None

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        with self._write() as conn:
            return leases._renew(conn, run_id, owner, self.clock(), ttl)

    def notify_kills(self, told: Callable[[str], None]) -> Callable[[], None] | None:
        return None  # SQLite has no notifications: the heartbeat polls `kill_requests`

    def release_lease(self, run_id: str | None, owner: str) -> None:
        with self._write() as conn:
            leases._release(conn, run_id, owner)

    # Budgets and kills

    def set_budget(
        self, machine: str, *, per_day_nusd: int | None, per_run_nusd: int | None, by: str
    ) -> None:
        """Set what `machine` may spend per day and per run (None: no such budget)."""
        with self._write() as conn:
            at = timestamp(self.clock())
            spending._set_budget(conn, machine, per_day_nusd, per_run_nusd, at, by)

    def pace(self, name: str, limit: int, amount: float) -> float:
        sql = spending.PACE_SQL.format(p="?", least="min")
        with self._write() as conn:
            params = spending.pace_params(name, limit, amount, self.clock())
            (level,) = conn.execute(sql, params).fetchone()
        return spending.pace_wait(level, limit)

    def request_kill(self, run_id: str, *, by: str, reason: str | None) -> None:
        """Ask the process executing the run to stop it (it looks every half second)."""
        with self._write() as conn:
            leases._request_kill(conn, run_id, timestamp(self.clock()), by, reason)


def _done(run_id: str) -> RunIsDone:
    return RunIsDone(f"run {run_id} is done: nothing more can be added to it")


def _check_owner(conn: sqlite3.Connection, run_id: str, owner: str) -> None:
    row = conn.execute("SELECT owner FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] != owner:
        msg = (
            f"run {run_id}: another process took over this run's lease; "
            "this process stops without writing"
        )
        raise LeaseLost(msg)


def _claim(conn: sqlite3.Connection, run_id: str, name: str, key: str) -> None:
    row = conn.execute(
        "SELECT run_id, status, result, seq FROM action_keys WHERE name = ? AND key = ?",
        (name, key),
    ).fetchone()
    if row is None:
        return
    owner, status, result, seq = row
    if status == "done":
        raise ActionKeyDone(name, key, owner, seq, json.loads(result) if result else None)
    if status in ("intended", "in_doubt") and owner != run_id:
        raise ActionBusy(name, key, owner)


def _new_run_id(conn: sqlite3.Connection) -> str:
    while True:
        run_id = token_hex(6)
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            return run_id
