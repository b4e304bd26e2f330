"""Leases: which process is executing a run, whether that process is still alive, and what a
person asks of it.

A run is executed by one process at a time. The holder (owner token, pid, host, the process's
start time) and an expiry are in the `leases` table; the holder renews the expiry while it
runs. A lease can be taken over when its expiry has passed, or at once when its process is
on this host and gone (or its pid now belongs to another process).

A person's kill request is a row of `kill_requests` that the process executing the run reads
while it waits (only that process may append to its run).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from runjournal.journal.errors import LeaseHeld
from runjournal.journal.events import timestamp


@attrs.frozen
class Holder:
    """The process that holds, or asks for, a lease."""

    owner: str
    pid: int
    host: str
    process_start: str | None

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, pid, socket.gethostname(), _process_start(pid))


@attrs.frozen
class KillRequest:
    """A person's request to stop a run, waiting for the run's process to carry it out."""

    run_id: str
    requested_at: str
    requested_by: str
    reason: str | None


@attrs.frozen
class Lease:
    """A row of the `leases` table."""

    run_id: str
    owner: str
    pid: int
    host: str
    process_start: str | None
    acquired_at: str
    expires_at: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (lease until {timestamp(self.expires_at)})"

    def is_live(self, now: float) -> bool:
        if self.expires_at <= now:
            return False
        if self.host != socket.gethostname():
            return True
        return _process_alive(self.pid, self.process_start)


def _process_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None where there is no such file."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def _process_start(pid: int) -> str | None:
    fields = _process_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _process_alive(pid: int, process_start: str | None) -> bool:
    if os.path.isdir("/proc/self"):
        fields = _process_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        # A recycled pid belongs to a process that started at another time.
        return process_start is None or fields[19] == process_start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_COLUMNS = "run_id, owner, pid, host, process_start, acquired_at, expires_at"


RUNNABLE = ("submitted", "running", "interrupted", "resolved")
"""The statuses a worker takes a run up in (`running`: its process ended without letting go)."""


def claimable(
    now: float, machines: Sequence[str] | None, excluded: Sequence[str] = ()
) -> tuple[str, list[Any]]:
    """SQL (`%s` parameters) of the runs a worker may claim now, first created first: runnable
    (or waiting, past the deadline of its wait) and with no lease, or one that expired."""
    marks = ", ".join(["%s"] * len(RUNNABLE))
    sql = (
        f"SELECT run_id FROM runs r WHERE (status IN ({marks}) "
        "OR (status = 'waiting' AND wake_at <= %s)) AND NOT EXISTS "
        "(SELECT 1 FROM leases l WHERE l.run_id = r.run_id AND l.expires_at > %s)"
    )
    params: list[Any] = [*RUNNABLE, timestamp(now), now]
    if machines:
        sql += f" AND machine IN ({', '.join(['%s'] * len(machines))})"
        params += machines
    if excluded:
        sql += f" AND run_id NOT IN ({', '.join(['%s'] * len(excluded))})"
        params += excluded
    return sql + " ORDER BY ordinal LIMIT 8", params


def _lease(conn: sqlite3.Connection, run_id: str) -> Lease | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    return Lease(*row) if row else None


def _leases(conn: sqlite3.Connection) -> dict[str, Lease]:
    return {row[0]: Lease(*row) for row in conn.execute(f"SELECT {_COLUMNS} FROM leases")}


def _acquire(
    conn: sqlite3.Connection, run_id: str, holder: Holder, now: float, ttl: float
) -> Lease | None:
    """Take the lease inside the caller's write transaction; return the lease taken over, if any.

    Raises LeaseHeld when another live process holds it.
    """
    current = _lease(conn, run_id)
    if current is not None and current.owner != holder.owner and current.is_live(now):
        msg = (
            f"run {run_id} is being executed by {current.describe()}; "
            "wait for it to finish or stop that process, then resume"
        )
        raise LeaseHeld(msg)
    conn.execute(
        f"INSERT OR REPLACE INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
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


def _renew(conn: sqlite3.Connection, run_id: str, owner: str, now: float, ttl: float) -> bool:
    """Push the expiry on; False when the lease is no longer this owner's."""
    cur = conn.execute(
        "UPDATE leases SET expires_at = ? WHERE run_id = ? AND owner = ?",
        (now + ttl, run_id, owner),
    )
    return cur.rowcount == 1


def _release(conn: sqlite3.Connection, run_id: str | None, owner: str) -> None:
    if run_id is None:
        conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))
    else:
        conn.execute("DELETE FROM leases WHERE run_id = ? AND owner = ?", (run_id, owner))


def _request_kill(
    conn: sqlite3.Connection, run_id: str, at: str, by: str, reason: str | None
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO kill_requests (run_id, requested_at, requested_by, reason) "
        "VALUES (?, ?, ?, ?)",
        (run_id, at, by, reason),
    )


def _kill_request(conn: sqlite3.Connection, run_id: str) -> KillRequest | None:
    row = conn.execute(
        "SELECT run_id, requested_at, requested_by, reason FROM kill_requests WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return KillRequest(*row) if row else None
