"""Listening for kill requests on PostgreSQL: one dedicated connection per process, LISTEN.

`journal kill` writes its durable row and notifies `runjournal_kill` with the run's id in the
same transaction, so the notification is sent when, and only if, the row is committed. A
notification is a shortcut, never the record: one missed (the listener reconnecting, a pooler
that cannot carry LISTEN) is made up for by the heartbeat's own look at the row.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from runjournal.journal.postgres.connection import KILL_CHANNEL

_RECONNECT = 1.0  # seconds between two attempts while the server cannot be reached


class Listener:
    """Calls `told(run_id)` for each kill request notified, from a thread of its own."""

    def __init__(self, url: str, told: Callable[[str], None]) -> None:
        self.url = url
        self.told = told
        self.listening = threading.Event()
        """Set once LISTEN took effect (tests wait for it)."""
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._listen, name="kill-listener", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {KILL_CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self.told(notice.payload)
            except psycopg.Error:
                self.listening.clear()
                self._stop.wait(_RECONNECT)
            finally:
                self._conn = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def listen(url: str, told: Callable[[str], None]) -> Callable[[], None]:
    """Start a listener; return what stops it."""
    listener = Listener(url, told).start()
    with contextlib.suppress(Exception):
        listener.listening.wait(5)
    return listener.stop
