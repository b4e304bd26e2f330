"""The one writer of a run: numbers its events, batches them into commits, keeps its lease.

Events are of two sorts. An effect's outcome must be on disk before the run goes on, so
`commit` appends it at once. A transition, a snapshot or a decision is computed from what is
already journaled; if it is lost in a crash, resuming computes it again. `record` holds those
and they ride along with the next commit, so a step with one effect costs one commit, not two.
They are also written when too many are held or they have waited too long.

Commits from several threads (the items of a parallel step) are grouped: while one thread
appends, the others' events wait in the buffer, and the next append takes them all, in one
transaction and one fsync; each `commit` returns once its own event is written. A commit with
a check (`claim`, `reserve`) is appended alone, with what is held before it, since its check
may refuse it and nothing else.

Each append hands the store a batch made ready here (journal/batch.py: kinds checked, data
encoded, secrets redacted), so a store's append is only what its transaction must do.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from runjournal.journal import blobs
from runjournal.journal.batch import prepare
from runjournal.journal.errors import JournalError, LeaseLost
from runjournal.journal.events import Event, dumps, timestamp
from runjournal.journal.kinds import Data
from runjournal.journal.leases import Holder, KillRequest
from runjournal.journal.protocol import Store
from runjournal.journal.spending import Reserve


class RunWriter:
    """Appends the events of one run; any thread may use it."""

    def __init__(
        self,
        journal: Store,
        run_id: str,
        *,
        last_seq: int,
        heartbeat: Heartbeat | None = None,
        owner: str | None = None,
        max_pending: int = 256,
        max_delay: float = 0.5,
        on_commit: Callable[[Sequence[Event]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.last_seq = last_seq
        self.heartbeat = heartbeat
        self.owner = owner or (heartbeat.holder.owner if heartbeat is not None else None)
        """The lease owner each append is checked against, in its transaction (None: none)."""
        self.max_pending = max_pending
        self.max_delay = max_delay
        self.bytes_written = 0
        """The size of the JSON data of every event handed to this writer so far."""
        self.on_commit = on_commit
        """Told each batch of events once it is committed, as written: the live log."""
        self._events: list[Event] = []
        self._texts: list[str] = []
        self._blobs: list[str | blobs.Payload] = []
        self._pending_since = 0.0
        self._sync = False
        """Whether an event held asked to be on disk when its commit returns."""
        self._written = last_seq
        """The last seq appended: a commit whose event is at or before it returns at once."""
        self._lock = threading.Lock()
        """Guards the held events and the numbering; held briefly, never across an append."""
        self._writing = threading.Lock()
        """One append at a time; taken before `_lock`, never after it."""

    def _add(self, step: str | None, data: Data, now: float) -> Event:
        fields = data.as_json()
        # Encoded now, so a value JSON cannot hold fails at the call that gave it.
        text = dumps(fields)
        self.last_seq += 1
        event = Event(self.run_id, self.last_seq, timestamp(now), data.KIND, step, fields)
        self._events.append(event)
        self._texts.append(text)
        self.bytes_written += len(text)
        return event

    def blob(self, text: str | blobs.Payload) -> str:
        """Keep `text` to be stored once, by content hash, with the next write; return its ref.

        A payload (journal/parts.py) comes redacted and named already."""
        if isinstance(text, str):
            text = self.journal.redact(text)  # the ref names what is stored, secrets redacted
        with self._lock:
            self._blobs.append(text)
        return text.name if isinstance(text, blobs.Payload) else blobs.ref(text)

    def record(self, step: str | None, data: Data) -> Event:
        """Hold an event that can be computed again, to be written with the next commit."""
        now = self.journal.clock()
        with self._lock:
            if not self._events:
                self._pending_since = now
            event = self._add(step, data, now)
            due = (
                len(self._events) >= self.max_pending or now - self._pending_since >= self.max_delay
            )
        if due:
            self.flush()
        return event

    def commit(
        self,
        step: str | None,
        data: Data,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: Reserve | None = None,
    ) -> Event:
        """Append an event, with everything held before it, and return once it is written.

        With `sync`, the commit is on disk when this returns, whatever the journal's durability.
        With `claim` or `reserve`, see `Store.append`: nothing is written when the action key
        is taken, or when the model request could pass a limit.
        """
        if claim is not None or reserve is not None:
            return self._commit_checked(step, [data], sync=sync, claim=claim, reserve=reserve)[-1]
        with self._lock:
            event = self._add(step, data, self.journal.clock())
            self._sync = self._sync or sync
        with self._writing:
            if self._written < event.seq:  # else another thread's commit took it along
                self._append_held(own=event)
        return event

    def commit_all(
        self, step: str | None, data: Sequence[Data], *, sync: bool = False, reserve: Reserve
    ) -> list[Event]:
        """Append several events at once, all or none, with everything held before them: a
        Message Batch's requests, whose worst case `reserve` holds in all."""
        return self._commit_checked(step, data, sync=sync, claim=None, reserve=reserve)

    def _commit_checked(
        self,
        step: str | None,
        data: Sequence[Data],
        *,
        sync: bool,
        claim: tuple[str, str] | None,
        reserve: Reserve | None,
    ) -> list[Event]:
        # Under both locks throughout: no event may be numbered after these until their check
        # has passed, for refused events are taken back and the run's seqs stay gapless.
        with self._writing, self._lock:
            now = self.journal.clock()
            held = len(self._events)
            events = [self._add(step, d, now) for d in data]
            try:
                written = self._append(
                    self._events, self._texts, self._blobs, sync or self._sync, claim, reserve
                )
            except BaseException:
                del self._events[held:], self._texts[held:]
                self.last_seq -= len(events)
                raise
            self._written = events[-1].seq
            self._events, self._texts, self._blobs, self._sync = [], [], [], False
            self._tell(written)
            return events

    def flush(self) -> None:
        with self._writing:
            self._append_held(own=None)

    def _append_held(self, own: Event | None) -> None:
        """Append every event held: under `_writing`, not `_lock`, so others may hold more
        meanwhile, to go with the next append."""
        with self._lock:
            if not self._events:
                return  # blobs held stay for the event that will refer to them
            events, texts, blobs, sync = self._events, self._texts, self._blobs, self._sync
            self._events, self._texts, self._blobs, self._sync = [], [], [], False
        try:
            written = self._append(events, texts, blobs, sync, None, None)
        except BaseException:
            with self._lock:
                if own is not None and events[-1] is own and not self._events:
                    # Alone, as before grouping: this commit's event is taken back.
                    events, texts = events[:-1], texts[:-1]
                    self.last_seq -= 1
                # Held again, in front of any held since: each is true, and a later commit or
                # flush may still write them; the callers waiting on them try again.
                self._events[:0], self._texts[:0], self._blobs[:0] = events, texts, blobs
                self._sync = self._sync or sync
            raise
        self._written = events[-1].seq
        self._tell(written)

    def _tell(self, written: Sequence[Event]) -> None:
        # Under `_writing`: the live log sees batches in the order they were committed.
        if self.on_commit is not None:
            self.on_commit(written)

    def _append(
        self,
        events: list[Event],
        texts: list[str],
        blobs: list[str | blobs.Payload],
        sync: bool,
        claim: tuple[str, str] | None,
        reserve: Reserve | None,
    ) -> Sequence[Event]:
        if self.heartbeat is not None and self.heartbeat.lost:
            msg = (
                f"run {self.run_id}: another process took over this run's lease; "
                "this process stops without writing"
            )
            raise LeaseLost(msg)
        # Checked, encoded and redacted here, above the store: the same for every backend.
        batch = prepare(
            events,
            texts=texts,
            blobs=blobs,
            redact=self.journal.redact,
            secrets=self.journal.secrets,
        )
        return self.journal.append(
            batch,
            sync=sync,
            claim=claim,
            reserve=reserve,
            owner=self.owner,
        )


class Heartbeat:
    """Renews a run's lease from a thread of its own until stopped, and watches for a person's
    request to kill the run (`kill_requested` is set when one is found)."""

    def __init__(
        self, journal: Store, run_id: str, holder: Holder, ttl: float, *, poll: float = 0.5
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.holder = holder
        self.ttl = ttl
        self.poll = min(poll, ttl / 3)
        self.lost = False
        self.kill: KillRequest | None = None
        self.kill_requested = threading.Event()
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        # A connection of its own: the run's thread may be in the middle of a write.
        journal: Store | None = None
        renew_at = time.monotonic() + self.ttl / 3
        try:
            while not self._stop.is_set():
                self._woken.wait(self.poll)
                self._woken.clear()
                if self._stop.is_set():
                    return
                try:
                    journal = journal or self.journal.reopen()
                    if self.kill is None:
                        self.kill = journal.kill_request(self.run_id)
                        if self.kill is not None:
                            self.kill_requested.set()
                    if time.monotonic() < renew_at:
                        continue
                    renewed = journal.renew_lease(self.run_id, self.holder.owner, self.ttl)
                    renew_at = time.monotonic() + self.ttl / 3
                except (sqlite3.Error, JournalError):
                    continue  # busy, or the disk full: two more beats come before the expiry
                if not renewed:
                    self.lost = True
                    return
        finally:
            if journal is not None:
                journal.close()

    def wake(self) -> None:
        """Look for a kill request now (a notification said one was made), not at the next
        poll."""
        self._woken.set()

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join()
