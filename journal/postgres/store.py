"""The journal on PostgreSQL: the same roles as the SQLite journal (`journal.protocol.Backend`),
in PostgreSQL's SQL, for many processes on many hosts at once.

Every write is one READ COMMITTED transaction that first locks what it depends on, so that
writers on other hosts serialize where they must and nowhere else: an append locks its run's row
(the lease it checks cannot be taken over meanwhile, nor the run's caps overspent), a claim locks
its action key (`pg_advisory_xact_lock`: two runs never both act on one key), a reservation
locks its machine's budget row (runs on many hosts never together pass a day's budget), and
creating a run takes the one creation lock (ordinals are dense, in creation order). There is no
global serial and no table lock: a run's events are ordered by `(run_id, seq)`, whose primary
key refuses a second writer's batch. `done` is final, checked by a trigger as on SQLite.

Times come from the server's clock (`ServerClock`) unless a clock is given, and a kill request
is notified (`NOTIFY runjournal_kill`) when it commits, for the workers that listen.
"""

from __future__ import annotations

import json
import secrets as random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Self

import psycopg
import psycopg.errors

from runjournal.journal import batch as batches
from runjournal.journal import chain, leases, parts, projection, spending
from runjournal.journal.base import StoreBase
from runjournal.journal.batch import Batch, Row
from runjournal.journal.blobs import Payload
from runjournal.journal.blobs import holds as blob_holds
from runjournal.journal.connection import Durability
from runjournal.journal.errors import (
    ActionBusy,
    ActionKeyDone,
    AmbiguousRunId,
    BlobMissing,
    ConcurrentAppend,
    JournalCorrupt,
    JournalError,
    JournalMissing,
    JournalTooNew,
    LeaseHeld,
    LeaseLost,
    QueryFailed,
    QueryRefused,
    QueryStopped,
    ReadOnlyJournal,
    RunIsDone,
    RunNotFound,
)
from runjournal.journal.events import Clock, Event, dumps, timestamp
from runjournal.journal.leases import Holder, KillRequest, Lease
from runjournal.journal.postgres import schema
from runjournal.journal.postgres.connection import KILL_CHANNEL, Pool, ServerClock, translate
from runjournal.journal.postgres.projection import apply as _apply
from runjournal.journal.query import Rows
from runjournal.journal.rows import ACTION_COLUMNS, RUN_COLUMNS, Action, Problem, Run
from runjournal.journal.spending import Budget, Reserve

_CREATE_LOCK = 0x524A4E43
_PAGE = 2000  # events read per statement: reads never hold a cursor open between rows
_LEASE_COLUMNS = "run_id, owner, pid, host, process_start, acquired_at, expires_at"
_ALLOWED = {"select", "with", "values", "table", "explain", "show"}


_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, at, kind, step, data, hash) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


class PostgresJournal(StoreBase):
    """An open journal in a PostgreSQL database: a connection of the process's pool."""

    def __init__(
        self,
        pool: Pool,
        *,
        clock: Clock | None = None,
        secrets: Sequence[str] = (),
        durability: Durability = "normal",
    ) -> None:
        super().__init__(secrets=secrets)
        self.pool = pool
        self.location = pool.name
        self.readonly = pool.readonly
        self.durability = durability
        self.conn = pool.take()
        self._lock = threading.RLock()
        self._heads = chain.Heads()
        self._closed = False
        self.clock: Clock = clock or ServerClock(self._server_time)
        if durability == "normal":
            # As SQLite's normal: a commit outlives this process; one the server had not yet
            # flushed when it lost power may be lost. `sync` appends are flushed all the same.
            self.conn.execute("SET synchronous_commit = off")

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = False,
        readonly: bool = False,
        clock: Clock | None = None,
        secrets: Sequence[str] = (),
        durability: Durability = "normal",
        timeout: float = 30.0,
        max_connections: int = 64,
    ) -> Self:
        """Open the journal in the database at `url`, bringing an older schema up to date, and
        with `create` making it in a database that has none; read-only, a database without
        this runjournal's schema is refused and nothing is written. At most `max_connections`
        connections are open at once (one per store: a worker's run takes two)."""
        pool = Pool(url, readonly=readonly, max_size=max_connections, timeout=timeout)
        store = cls(pool, clock=clock, secrets=secrets, durability=durability)
        try:
            store._migrate(create=create)
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, *, create: bool) -> None:
        with self._translating():
            done = self._applied()
            known = [name for name, _ in schema.MIGRATIONS]
            if done is not None and len(done) == len(known):
                return
            if done is not None and [d for d in done if d not in known]:
                msg = (
                    f"{self.location} was written by a newer runjournal (migrations "
                    f"{', '.join(d for d in done if d not in known)}): upgrade runjournal"
                )
                raise JournalTooNew(msg)
            if self.readonly:
                msg = (
                    f"{self.location} holds no journal yet (or an older one): a writing "
                    "command (`journal run`, `journal migrate`) makes or upgrades it"
                )
                raise ReadOnlyJournal(msg)
            if done is None and not create:
                msg = (
                    f"no journal in {self.location}: start a run with `journal run` (or "
                    "`journal submit`), which makes one"
                )
                raise JournalMissing(msg)
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.MIGRATION_LOCK,))
                self.conn.execute(schema.CREATE_MIGRATIONS)
                applied = {
                    r[0] for r in self.conn.execute("SELECT name FROM runjournal_migrations")
                }
                for name, statements in schema.MIGRATIONS:
                    if name in applied:
                        continue
                    for statement in statements:
                        self.conn.execute(statement)
                    self.conn.execute(
                        "INSERT INTO runjournal_migrations (name) VALUES (%s)", (name,)
                    )

    def _applied(self) -> list[str] | None:
        found = self.conn.execute("SELECT to_regclass('runjournal_migrations')").fetchone()
        if found is None or found[0] is None:
            return None
        return [
            r[0] for r in self.conn.execute("SELECT name FROM runjournal_migrations ORDER BY 1")
        ]

    def _server_time(self) -> float:
        with self._translating():
            row = self.conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        assert row is not None
        return float(row[0])

    # Lifecycle

    def reopen(self) -> Self:
        return type(self)(
            self.pool, clock=self.clock, secrets=self.secrets, durability=self.durability
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.give_back(self.conn)

    # Transactions

    def _translating(self) -> _Translating:
        return _Translating(self)

    def _write(self, *, sync: bool = False) -> _Transaction:
        if self.readonly:
            msg = f"{self.location} was opened for reading: nothing can be written through it"
            raise ReadOnlyJournal(msg)
        return _Transaction(self, sync and self.durability == "normal")

    # Appending

    def append(
        self,
        batch: Batch,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: Reserve | None = None,
        owner: str | None = None,
    ) -> Sequence[Event]:
        run_id = batch.run_id
        if claim is None and reserve is None:
            return self._append_at_once(batch, sync=sync, owner=owner)
        with self._write(sync=sync) as conn:
            row = conn.execute(
                "SELECT r.status, r.machine, r.total_nusd, r.total_tokens, r.model_requests, "
                "(SELECT owner FROM leases l WHERE l.run_id = r.run_id) "
                "FROM runs r WHERE r.run_id = %s FOR UPDATE",
                (run_id,),
            ).fetchone()
            if owner is not None and (row is None or row[5] != owner):
                msg = (
                    f"run {run_id}: another process took over this run's lease; "
                    "this process stops without writing"
                )
                raise LeaseLost(msg)
            if row is None or row[0] == "done":
                raise _done(run_id)
            if claim is not None:
                _claim(conn, run_id, *claim)
            if reserve is not None:
                _reserve(conn, row[1:5], reserve, batch.day)
            for blob in batch.blobs:
                _put_blob(conn, blob)
            self._insert(conn, batch)
            _apply(conn, run_id, batch.changes)
            if batch.kills:
                conn.execute("DELETE FROM kill_requests WHERE run_id = %s", (run_id,))
        return batch.events

    def _append_at_once(self, batch: Batch, *, sync: bool, owner: str | None) -> Sequence[Event]:
        """An append with nothing to check but the run's lease and status, sent as one
        pipeline: one round trip to the server, the commit included. The checks are
        `runjournal_writer`'s, which raises inside the transaction and so rolls it back."""
        run_id = batch.run_id
        if self.readonly:
            msg = f"{self.location} was opened for reading: nothing can be written through it"
            raise ReadOnlyJournal(msg)
        with self._lock:
            conn = self.conn
            try:
                previous = self._previous(conn, batch)
                rows = batch.rows(previous)
                with conn.pipeline(), conn.transaction():
                    if sync and self.durability == "normal":
                        conn.execute("SET LOCAL synchronous_commit = on")
                    conn.execute("SELECT runjournal_writer(%s, %s)", (run_id, owner))
                    for blob in batch.blobs:
                        _put_blob(conn, blob, look=False)
                    with conn.cursor() as cur:
                        cur.executemany(_INSERT_EVENT, rows)
                    _apply(conn, run_id, batch.changes, counted=False)
                    if batch.kills:
                        conn.execute("DELETE FROM kill_requests WHERE run_id = %s", (run_id,))
            except psycopg.Error as e:
                raise self._refused(e, batch) from e
        self._heads.moved(run_id, rows[-1][1], rows[-1][-1])
        return batch.events

    def _previous(self, conn: psycopg.Connection[Any], batch: Batch) -> str:
        """The hash the batch chains from: remembered, or read (once per run and connection)."""

        def read(seq: int) -> str | None:
            row = conn.execute(
                "SELECT hash FROM events WHERE run_id = %s AND seq = %s", (batch.run_id, seq)
            ).fetchone()
            return None if row is None else str(row[0])

        return self._heads.previous(batch.run_id, batch.first, read)

    def _refused(self, e: psycopg.Error, batch: Batch) -> JournalError:
        run_id = batch.run_id
        state = getattr(e, "sqlstate", None)
        if state == "RJ002":
            return LeaseLost(
                f"run {run_id}: another process took over this run's lease; "
                "this process stops without writing"
            )
        if state == "RJ001":
            return _done(run_id)
        if isinstance(e, psycopg.errors.UniqueViolation):
            return ConcurrentAppend(
                f"run {run_id}: seq {batch.first} is already taken; "
                "another process is writing this run"
            )
        return translate(e, self.location)

    def _insert(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        run_id = batch.run_id

        def read(seq: int) -> str | None:
            row = conn.execute(
                "SELECT hash FROM events WHERE run_id = %s AND seq = %s", (run_id, seq)
            ).fetchone()
            return None if row is None else str(row[0])

        rows = batch.rows(self._heads.previous(run_id, batch.first, read))
        try:
            with conn.cursor() as cur:
                cur.executemany(_INSERT_EVENT, rows)
        except psycopg.errors.UniqueViolation as e:
            msg = (
                f"run {run_id}: seq {batch.first} is already taken; "
                "another process is writing this run"
            )
            raise ConcurrentAppend(msg) from e
        except psycopg.errors.RaiseException as e:
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
        if forked_from is not None:  # a fork never starts from a damaged record
            self.check_run(forked_from[0], upto=forked_from[1])
        now = self.clock()
        with self._write() as conn:
            # One creation at a time: ordinals dense and in order, a run key used once.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            if run_key is not None:
                found = conn.execute(
                    "SELECT run_id FROM runs WHERE machine = %s AND run_key = %s",
                    (machine, run_key),
                ).fetchone()
                if found is not None:
                    return self._run(conn, found[0]), False
            run_id = _new_run_id(conn)
            (ordinal,) = _one(conn, "SELECT coalesce(max(ordinal), 0) + 1 FROM runs")
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
                _put_blob(conn, blob)
            conn.execute("INSERT INTO runs (run_id) VALUES (%s)", (run_id,))
            self._insert(conn, started)
            _apply(conn, run_id, started.changes)
            if holder is not None:
                _acquire(conn, run_id, holder, now, lease_ttl)
            return self._run(conn, run_id), True

    def import_run(
        self, run_id: str, rows: Iterable[Row], blobs: Callable[[], Iterable[str]]
    ) -> bool:
        with self._write() as conn:
            # As a creation: ordinals and run ids are the creation lock's.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            if conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone():
                return False
            conn.execute("INSERT INTO runs (run_id) VALUES (%s)", (run_id,))
            with conn.cursor() as cur:
                for chunk in batches.chunked(rows, 5000):
                    cur.executemany(_INSERT_EVENT, chunk)
            for blob in blobs():
                _put_blob(conn, blob)
            # Read back in this transaction, a page at a time: a long run in flat memory.
            _apply(conn, run_id, projection.project(self.events(run_id)))
        return True

    def stored(self, run_id: str, *, after: int = 0) -> Iterator[Row]:
        sql = (
            "SELECT run_id, seq, at, kind, step, data, hash FROM events "
            f"WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT {_PAGE}"
        )
        for page in self._pages(sql, run_id, after, None):
            yield from page

    # Leases

    def acquire_lease(self, run_id: str, holder: Holder, ttl: float) -> Lease | None:
        self.check_run(run_id)  # a writer never builds on a damaged record
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM runs WHERE run_id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id} in {self.location}")
            if row[0] == "done":
                raise _done(run_id)
            return _acquire(conn, run_id, holder, self.clock(), ttl)

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
        # Locked rows are skipped: workers claiming at once each get another run, at once.
        sql = sql.replace(" LIMIT 8", " LIMIT 8 FOR UPDATE SKIP LOCKED")
        with self._write() as conn:
            for (run_id,) in conn.execute(sql, params).fetchall():
                try:
                    _acquire(conn, run_id, holder, now, ttl)
                except LeaseHeld:
                    # Its holder renewed the lease since the look (a late heartbeat): it lives,
                    # so the run is not this worker's. Nothing was written: try the next.
                    continue
                return self._run(conn, run_id)
            return None

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE leases SET expires_at = %s WHERE run_id = %s AND owner = %s",
                (self.clock() + ttl, run_id, owner),
            )
            return cur.rowcount == 1

    def release_lease(self, run_id: str | None, owner: str) -> None:
        with self._write() as conn:
            if run_id is None:
                conn.execute("DELETE FROM leases WHERE owner = %s", (owner,))
            else:
                conn.execute("DELETE FROM leases WHERE run_id = %s AND owner = %s", (run_id, owner))

    def lease(self, run_id: str) -> Lease | None:
        with self._translating():
            row = self.conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE run_id = %s", (run_id,)
            ).fetchone()
        return Lease(*row) if row else None

    def leases(self) -> dict[str, Lease]:
        """Every lease held or left behind, by run id."""
        with self._translating():
            rows = self.conn.execute(f"SELECT {_LEASE_COLUMNS} FROM leases").fetchall()
        return {row[0]: Lease(*row) for row in rows}

    def request_kill(self, run_id: str, *, by: str, reason: str | None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO kill_requests (run_id, requested_at, requested_by, reason) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
                "requested_at = excluded.requested_at, requested_by = excluded.requested_by, "
                "reason = excluded.reason",
                (run_id, timestamp(self.clock()), by, reason),
            )
            # Sent when the row commits: a worker listening stops the run at once; one that
            # missed it finds the row at its next heartbeat.
            conn.execute("SELECT pg_notify(%s, %s)", (KILL_CHANNEL, run_id))

    def notify_kills(self, told: Callable[[str], None]) -> Callable[[], None] | None:
        from runjournal.journal.postgres.listen import listen

        return listen(self.pool.url, told)

    def kill_request(self, run_id: str) -> KillRequest | None:
        with self._translating():
            row = self.conn.execute(
                "SELECT run_id, requested_at, requested_by, reason FROM kill_requests "
                "WHERE run_id = %s",
                (run_id,),
            ).fetchone()
        return KillRequest(*row) if row else None

    # Budgets

    def set_budget(
        self, machine: str, *, per_day_nusd: int | None, per_run_nusd: int | None, by: str
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO budgets (machine, per_day_nusd, per_run_nusd, updated_at, "
                "updated_by) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (machine) DO UPDATE SET "
                "per_day_nusd = excluded.per_day_nusd, per_run_nusd = excluded.per_run_nusd, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (machine, per_day_nusd, per_run_nusd, timestamp(self.clock()), by),
            )

    def pace(self, name: str, limit: int, amount: float) -> float:
        sql = spending.PACE_SQL.format(p="%s", least="least").replace("max(0.0,", "greatest(0.0,")
        with self._write() as conn:
            params = spending.pace_params(name, limit, amount, self.clock())
            (level,) = _one(conn, sql, params)
        return spending.pace_wait(level, limit)

    def budgets(self, machine: str | None = None) -> list[Budget]:
        day = timestamp(self.clock())[:10]
        sql = (
            "SELECT b.machine, b.per_day_nusd, b.per_run_nusd, b.updated_at, b.updated_by, "
            "coalesce((SELECT sum(total_nusd) FROM spend s WHERE s.machine = b.machine "
            "AND s.day = %s), 0)::bigint FROM budgets b"
        )
        params: list[Any] = [day]
        if machine is not None:
            sql += " WHERE b.machine = %s"
            params.append(machine)
        with self._translating():
            rows = self.conn.execute(sql + " ORDER BY b.machine", params).fetchall()
        return [Budget(*row) for row in rows]

    # Events and blobs

    def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        sql = "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = %s AND seq > %s"
        if upto is not None:
            sql += " AND seq <= %s"
        if kinds is not None:
            sql += " AND kind = ANY(%s)"
        sql += f" ORDER BY seq LIMIT {_PAGE}"
        loads = json.loads
        for page in self._pages(sql, run_id, after, upto, None if kinds is None else list(kinds)):
            for run, seq, at, kind, step, data in page:
                yield Event(run, seq, at, kind, step, loads(data))

    def _pages(
        self,
        sql: str,
        run_id: str,
        after: int,
        upto: int | None,
        *rest: Any,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of `sql` (`seq > %s` first, then `upto`, then `rest` when not None), a page
        at a time: each page is one statement, so other statements may run between them."""
        while True:
            params = [run_id, after, *(p for p in (upto, *rest) if p is not None)]
            with self._translating():
                page = self.conn.execute(sql, params).fetchall()
            if not page:
                return
            yield page
            if len(page) < _PAGE:
                return
            after = page[-1][1] if sql.startswith("SELECT run_id") else page[-1][0]

    def transitions(
        self, run_id: str, *, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, str, str | None, str]]:
        sql = (
            "SELECT seq, at, step, data FROM events WHERE run_id = %s AND seq > %s"
            + (" AND seq <= %s" if upto is not None else "")
            + f" AND kind = 'transition' ORDER BY seq LIMIT {_PAGE}"
        )
        for page in self._pages(sql, run_id, after, upto):
            yield from page

    def latest_snapshot(self, run_id: str, upto: int | None = None) -> Event:
        sql = (
            "SELECT run_id, seq, at, kind, step, data FROM events WHERE run_id = %s "
            "AND kind IN ('run.started', 'snapshot')"
        )
        params: list[Any] = [run_id]
        if upto is not None:
            sql += " AND seq <= %s"
            params.append(upto)
        with self._translating():
            row = self.conn.execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        if row is None:
            msg = f"run {run_id} has no recorded state at or before seq {upto}"
            raise RunNotFound(msg)
        data = json.loads(row[5])
        data["state"] = parts.join(data["state"], data.get("state_parts"), self.blob)
        return Event(row[0], row[1], row[2], row[3], row[4], data)

    def blob(self, ref: str) -> str:
        with self._translating():
            row = self.conn.execute("SELECT data FROM blobs WHERE hash = %s", (ref,)).fetchone()
        if row is None:
            msg = (
                f"{self.location} is damaged: the blob {ref} is gone; "
                "`journal verify` names all that is wrong"
            )
            raise BlobMissing(msg)
        return str(row[0])

    # Runs and actions

    def run(self, run_id: str) -> Run:
        with self._translating():
            return self._run(self.conn, run_id)

    def _run(self, conn: psycopg.Connection[Any], run_id: str) -> Run:
        row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
        found = row.fetchone()
        if found is None:
            raise RunNotFound(f"no run {run_id} in {self.location}")
        return Run(*found)

    def find_run(self, prefix: str) -> Run:
        if not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
            msg = f"no run {prefix!r} in {self.location}: run ids are hex (see `journal runs`)"
            raise RunNotFound(msg)
        with self._translating():
            rows = self.conn.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE %s ORDER BY ordinal LIMIT 11",
                (prefix.lower() + "%",),
            ).fetchall()
        if not rows:
            raise RunNotFound(f"no run {prefix!r} in {self.location} (see `journal runs`)")
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            msg = f"run id prefix {prefix!r} is ambiguous: it matches {shown}"
            raise AmbiguousRunId(msg)
        return self.run(rows[0][0])

    def runs(
        self,
        *,
        limit: int | None = None,
        machine: str | None = None,
        statuses: Sequence[str] | None = None,
        before: int | None = None,
    ) -> list[Run]:
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE true"
        params: list[Any] = []
        if machine is not None:
            sql += " AND machine = %s"
            params.append(machine)
        if statuses is not None:
            sql += " AND status = ANY(%s)"
            params.append(list(statuses))
        if before is not None:
            sql += " AND ordinal < %s"
            params.append(before)
        sql += " ORDER BY ordinal DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._translating():
            return [Run(*row) for row in self.conn.execute(sql, params).fetchall()]

    def actions(self, run_id: str | None = None, *, key: str | None = None) -> list[Action]:
        columns = ", ".join(f"a.{c}" for c in ACTION_COLUMNS.split(", "))
        sql = f"SELECT {columns} FROM actions a JOIN runs r ON r.run_id = a.run_id WHERE true"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND a.run_id = %s"
            params.append(run_id)
        if key is not None:
            sql += " AND a.key = %s"
            params.append(key)
        with self._translating():
            rows = self.conn.execute(sql + " ORDER BY r.ordinal, a.seq", params).fetchall()
        return [Action.from_row(row) for row in rows]

    # Checks

    def check_run(self, run_id: str, *, upto: int | None = None) -> None:
        """JournalCorrupt if the part of the run a writer builds on fails its hash chain (as
        the SQLite journal's `check_run`, without SQLite's check of the file)."""
        with self._translating():
            sql = (
                "SELECT max(seq) FROM events WHERE run_id = %s "
                "AND kind IN ('run.started', 'snapshot')"
            )
            params: list[Any] = [run_id]
            if upto is not None:
                sql += " AND seq <= %s"
                params.append(upto)
            (base,) = _one(self.conn, sql, params)
            found = self._part_problem(run_id, base or 1, upto)
            if found is None and base not in (None, 1):
                found = self._part_problem(run_id, 1, 1)
            if found is None:
                found = self._input_problem(run_id)
        if found is not None:
            msg = (
                f"{self.location} is damaged: run {run_id}, {found}; nothing was written: "
                "`journal verify` names all that is wrong"
            )
            raise JournalCorrupt(msg)

    def _part_problem(self, run_id: str, first: int, upto: int | None) -> str | None:
        previous = chain.GENESIS
        if first > 1:
            row = self.conn.execute(
                "SELECT hash FROM events WHERE run_id = %s AND seq = %s", (run_id, first - 1)
            ).fetchone()
            if row is None:
                return f"seq {first - 1} is gone"
            previous = row[0]
        rows = self.conn.execute(
            "SELECT seq, at, kind, step, data, hash FROM events WHERE run_id = %s AND seq >= %s"
            + (" AND seq <= %s" if upto is not None else "")
            + " ORDER BY seq",
            (run_id, first) if upto is None else (run_id, first, upto),
        )
        return chain.first_break(run_id, first, previous, rows)

    def _input_problem(self, run_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT data FROM events WHERE run_id = %s AND seq = 1", (run_id,)
        ).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        if data.get("input") is None:
            return None
        refs = [
            data["input"],
            *(r for f in ("input_parts", "state_parts") for r in (data.get(f) or {}).values()),
        ]
        for ref in refs:
            found = self.conn.execute(
                "SELECT size, data FROM blobs WHERE hash = %s", (ref,)
            ).fetchone()
            if found is None:
                return f"the blob {ref} that seq 1 refers to is gone"
            if not blob_holds(ref, *found):
                return f"the blob {ref} that seq 1 refers to was changed: it fails its hash"
        return None

    def verify(self, run_id: str | None = None) -> list[Problem]:
        from runjournal.journal.postgres import verify

        return verify.verify(self, run_id)

    def heads(self, run_id: str | None = None) -> dict[str, tuple[int, str]]:
        from runjournal.journal.postgres import verify

        return verify.heads(self, run_id)

    # Read-only SQL

    def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        interrupted: Callable[[], bool] | None = None,
    ) -> Rows:
        """One statement in a READ ONLY transaction on a connection of its own, with a
        `statement_timeout`; a statement that is not a query is refused before it is sent."""
        words = sql.split(None, 1)
        first = words[0].lower().rstrip(";") if words else ""
        if first not in _ALLOWED:
            what = first.upper() or "an empty statement"
            msg = f"journal sql is read-only: {what} is not allowed (only queries are)"
            raise QueryRefused(msg)
        return _query(self.pool.url, self.location, sql, params, timeout, interrupted)


class _Translating:
    __slots__ = ("journal",)

    def __init__(self, journal: PostgresJournal) -> None:
        self.journal = journal

    def __enter__(self) -> None:
        self.journal._lock.acquire()

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self.journal._lock.release()
        if isinstance(error, psycopg.Error):
            raise translate(error, self.journal.location) from error


class _Transaction:
    """One transaction under the store's lock; psycopg's errors become the journal's own."""

    __slots__ = ("_tx", "journal", "sync")

    def __init__(self, journal: PostgresJournal, sync: bool) -> None:
        self.journal = journal
        self.sync = sync
        self._tx: Any = None

    def __enter__(self) -> psycopg.Connection[Any]:
        self.journal._lock.acquire()
        conn = self.journal.conn
        try:
            self._tx = conn.transaction()
            self._tx.__enter__()
            if self.sync:
                conn.execute("SET LOCAL synchronous_commit = on")
        except BaseException as e:
            self.journal._lock.release()
            if isinstance(e, psycopg.Error):
                raise translate(e, self.journal.location) from e
            raise
        return conn

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        try:
            self._tx.__exit__(kind, error, tb)
        except psycopg.Error as e:
            raise translate(e, self.journal.location) from e
        finally:
            self.journal._lock.release()
        if isinstance(error, psycopg.Error):
            raise translate(error, self.journal.location) from error


def _one(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _done(run_id: str) -> RunIsDone:
    return RunIsDone(f"run {run_id} is done: nothing more can be added to it")


def _new_run_id(conn: psycopg.Connection[Any]) -> str:
    while True:
        run_id = random.token_hex(6)
        if conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone() is None:
            return run_id


def _put_blob(conn: psycopg.Connection[Any], blob: str | Payload, *, look: bool = True) -> None:
    if isinstance(blob, Payload):
        name, size = blob.name, blob.size
        # Looked up first (not in a pipeline): a big text stored already is not sent again.
        if look and conn.execute("SELECT 1 FROM blobs WHERE hash = %s", (name,)).fetchone():
            return
        text = "".join(blob.pieces())
    else:
        from runjournal.journal.blobs import payload

        held = payload(lambda: (blob,))
        name, size, text = held.name, held.size, blob
    conn.execute(
        "INSERT INTO blobs (hash, size, data) VALUES (%s, %s, %s) ON CONFLICT (hash) DO NOTHING",
        (name, size, text),
    )


def _claim(conn: psycopg.Connection[Any], run_id: str, name: str, key: str) -> None:
    # Held to the commit: a second run claiming the key waits, then sees this one's intent.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (dumps([name, key]),))
    row = conn.execute(
        "SELECT run_id, status, result, seq FROM action_keys WHERE name = %s AND key = %s",
        (name, key),
    ).fetchone()
    if row is None:
        return
    owner, status, result, seq = row
    if status == "done":
        raise ActionKeyDone(name, key, owner, seq, json.loads(result) if result else None)
    if status in ("intended", "in_doubt") and owner != run_id:
        raise ActionBusy(name, key, owner)


def _reserve(conn: psycopg.Connection[Any], run: Sequence[Any], reserve: Reserve, day: str) -> None:
    machine, total, tokens, requests = run
    spending.check_caps(reserve, total, tokens, requests)
    # The budget's row is locked to the commit: runs of the machine on every host reserve one
    # at a time, each seeing what the one before it reserved.
    row = conn.execute(
        "SELECT per_day_nusd FROM budgets WHERE machine = %s FOR UPDATE", (machine,)
    ).fetchone()
    if row is None or row[0] is None:
        return
    (spent,) = _one(
        conn,
        "SELECT coalesce(sum(total_nusd), 0)::bigint FROM spend WHERE machine = %s AND day = %s",
        (machine, day),
    )
    spending.check_budget(reserve, spent, row[0], machine, day)


def _acquire(
    conn: psycopg.Connection[Any], run_id: str, holder: Holder, now: float, ttl: float
) -> Lease | None:
    row = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM leases WHERE run_id = %s FOR UPDATE", (run_id,)
    ).fetchone()
    current = Lease(*row) if row else None
    if current is not None and current.owner != holder.owner and current.is_live(now):
        msg = (
            f"run {run_id} is being executed by {current.describe()}; "
            "wait for it to finish or stop that process, then resume"
        )
        raise LeaseHeld(msg)
    conn.execute(
        f"INSERT INTO leases ({_LEASE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, "
        "host = excluded.host, process_start = excluded.process_start, "
        "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
        (
            run_id,
            holder.owner,
            holder.pid,
            holder.host,
            holder.process_start,
            timestamp(now),
            now + ttl,
        ),
    )
    return current if current is not None and current.owner != holder.owner else None


def _query(
    url: str,
    location: str,
    sql: str,
    params: Sequence[Any],
    timeout: float | None,
    interrupted: Callable[[], bool] | None,
) -> Rows:
    from runjournal.journal.postgres.connection import _configure

    try:
        conn = psycopg.connect(url, autocommit=False)
        _configure(conn)
        conn.execute("SET TRANSACTION READ ONLY")
        if timeout is not None:
            conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
    except psycopg.Error as e:
        raise translate(e, location) from e
    deadline = None if timeout is None else time.monotonic() + timeout
    stop = threading.Event()

    def watch() -> None:  # Ctrl-C: the server stops the statement
        while not stop.wait(0.05):
            if interrupted is not None and interrupted():
                conn.cancel_safe()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cursor = conn.cursor(name="journal_sql")
    if params:  # given as `?`, SQLite's and the DB-API's qmark style, on either engine
        sql = sql.replace("%", "%%").replace("?", "%s")
    try:
        cursor.execute(sql, list(params) or None)
        columns = [d.name for d in cursor.description or ()]
    except psycopg.Error as e:
        stop.set()
        conn.close()
        raise _query_error(e, timeout, interrupted) from e

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            while True:
                page = cursor.fetchmany(500)
                if not page:
                    return
                for row in page:
                    if interrupted is not None and interrupted():
                        raise QueryStopped(None)
                    if deadline is not None and time.monotonic() >= deadline:
                        raise QueryStopped(timeout)
                    yield tuple(row)
        except psycopg.Error as e:
            raise _query_error(e, timeout, interrupted) from e
        finally:
            stop.set()
            conn.close()

    return Rows(columns, rows())


def _query_error(
    e: psycopg.Error, timeout: float | None, interrupted: Callable[[], bool] | None
) -> JournalError:
    if isinstance(e, psycopg.errors.QueryCanceled):
        if interrupted is not None and interrupted():
            return QueryStopped(None)
        return QueryStopped(timeout)
    said = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        return QueryRefused(f"journal sql is read-only: {said}")
    return QueryFailed(f"query failed: {said}")
