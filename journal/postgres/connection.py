"""Connections to a journal on PostgreSQL: the pool its stores share, how values are read, the
server's clock, and psycopg's errors as the journal's own.

A store holds one connection of a small per-process pool (`Pool`) for its life; `reopen` takes
another. Every connection reads times back as the journal's own ISO 8601 text
(`2026-12-05T23:20:34.123Z`, as `events.timestamp` writes them) and `json` as the text stored, so
that rows come back as the SQLite journal gives them and hashes are checked on the stored text.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.adapt
import psycopg.errors
import psycopg_pool

from runjournal.journal.errors import (
    DiskFull,
    JournalBusy,
    JournalError,
    JournalUnreachable,
    ReadOnlyJournal,
)

KILL_CHANNEL = "runjournal_kill"
"""The channel a kill request is notified on, when it commits; the payload is the run's id."""

# psycopg says as warnings what the store raises as its own errors (each failed attempt of the
# pool to connect, a pipeline given up after an error): a person is told once, by the store.
logging.getLogger("psycopg").addHandler(logging.NullHandler())
logging.getLogger("psycopg").propagate = False


class _At(psycopg.adapt.Loader):
    """A `timestamptz` read back as the journal writes times: ISO 8601 UTC, milliseconds, Z."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()  # '2026-12-05 23:20:34.12+00': UTC, ISO DateStyle
        fraction = text[20:-3] if text[19:20] == "." else ""
        return f"{text[:10]}T{text[11:19]}.{(fraction + '000')[:3]}Z"


class _Text(psycopg.adapt.Loader):
    """`json` read back as the text stored, byte for byte: what its hash covers."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("timestamptz", _At)
    conn.adapters.register_loader("json", _Text)
    conn.adapters.register_loader("jsonb", _Text)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO'")


def display(url: str) -> str:
    """The URL with its password hidden: what error messages name."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL journal"
    host = str(info.get("host") or "localhost")
    user = f"{info['user']}@" if info.get("user") else ""
    if host.startswith("/"):  # a Unix socket's folder
        return f"postgresql://{user}/{info.get('dbname') or ''}?host={host}"
    return f"postgresql://{user}{host}/{info.get('dbname') or ''}"


class Pool:
    """The connections a process's stores of one journal share: one per open store."""

    def __init__(self, url: str, *, readonly: bool, max_size: int = 16, timeout: float = 30.0):
        self.url = url
        self.name = display(url)
        self.readonly = readonly
        self.timeout = timeout
        self._users = 0
        self._lock = threading.Lock()

        def configure(conn: psycopg.Connection[Any]) -> None:
            _configure(conn)
            if readonly:
                conn.execute("SET default_transaction_read_only = on")

        # Once, directly: a server that cannot be reached is one line, at once, not the pool's
        # retries until its timeout.
        try:
            psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
        except psycopg.Error as e:
            said = (str(e).strip().splitlines() or [type(e).__name__])[0]
            msg = f"cannot connect to {self.name}: {said}"
            raise JournalUnreachable(msg) from e
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": 2},
            configure=configure,
            open=False,
            timeout=timeout,
            name="runjournal",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise self._unreachable(e) from e

    def _unreachable(self, e: BaseException) -> JournalUnreachable:
        # What libpq said, once: never the URL itself, which may hold a password.
        try:
            psycopg.connect(self.url, connect_timeout=5).close()
            said = str(e)
        except psycopg.Error as first:
            said = str(first).strip().splitlines()[0] if str(first).strip() else repr(first)
        return JournalUnreachable(f"cannot connect to {self.name}: {said}")

    def take(self) -> psycopg.Connection[Any]:
        with self._lock:
            self._users += 1
        try:
            return self._pool.getconn()
        except psycopg_pool.PoolTimeout as e:
            with self._lock:
                self._users -= 1
            msg = f"{self.name}: no connection free in {self.timeout:g} s"
            raise JournalBusy(msg) from e

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        try:
            self._pool.putconn(conn)
        finally:
            with self._lock:
                self._users -= 1
                last = self._users == 0
            if last:
                self._pool.close()


class ServerClock:
    """The database server's clock, read on this host: the local clock plus the offset to the
    server's, measured when connecting and again each `every` seconds.

    Events are stamped, budgets' days counted and leases judged by one clock, the server's, so a
    host whose clock is wrong cannot take a live run's lease or count a day twice.
    """

    def __init__(
        self, ask: Callable[[], float], *, local: Callable[[], float] = time.time, every: float = 60
    ) -> None:
        self._ask = ask
        self._local = local
        self._every = every
        self._lock = threading.Lock()
        self.offset = 0.0
        self._measured = -float("inf")
        self.measure()

    def measure(self) -> None:
        """Ask the server its time; the offset is its answer less the local time halfway."""
        before = self._local()
        server = self._ask()
        after = self._local()
        with self._lock:
            self.offset = server - (before + after) / 2
            self._measured = time.monotonic()

    def __call__(self) -> float:
        if time.monotonic() - self._measured > self._every:
            # The last offset stands until the server answers again.
            with contextlib.suppress(JournalError):
                self.measure()
        return self._local() + self.offset


def translate(e: psycopg.Error, name: str) -> JournalError:
    """The journal's own error for what PostgreSQL or libpq said."""
    said = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        return ReadOnlyJournal(f"{name} was opened for reading: {said}")
    if isinstance(e, psycopg.errors.DiskFull):
        return DiskFull(f"the disk of {name}'s server is full: nothing was lost ({said})")
    if isinstance(e, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return JournalBusy(f"{name} is busy: {said}; try again once it is done")
    if isinstance(e, psycopg.OperationalError):
        return JournalUnreachable(f"{name}: the connection failed ({said})")
    return JournalError(f"{name}: {said}")
