"""The journal as machine/ and cli/ see it (`Store`), and what a backend must write (`Backend`).

`journal.Journal` (SQLite) is the first implementation; `tests/journal/test_contract.py` is the
contract every implementation passes. A backend plays roles, each a protocol of its own, so that
a reader (and a second backend) sees what goes together: `EventLog` (runs, events, blobs),
`Views` (runs and actions derived from the events, and read-only SQL), `Leases` (who executes
a run, and kill requests), `Spending` (budgets); `Backend` is those roles and a lifecycle, each
member written in the backend's own SQL. `Store` adds what is written once for every backend,
in `journal.base.StoreBase`, which a backend subclasses: `Redacting` (the secrets kept out) and
`with`. What a store does that is not storage (the kind check, the JSON, the redaction, the hash
of each event) happens above the backend too, in `journal.batch`: an append is handed a
`Batch` made ready by `batch.prepare` (as `RunWriter` does). Three reads a backend still writes
though they could be written over the others, each for what it costs: `transitions` (rows, not
events: the fold's fast path over `events`), `latest_snapshot` (one indexed row, not every
snapshot of the run) and `find_run` (a prefix match in the backend's index, not a scan of `runs`).
What the protocol promises, on any backend:

- A run's events are ordered by `(run_id, seq)` alone: seq numbers them from 1 without gaps,
  and the unique `(run_id, seq)` key is the concurrency control. There is no global order of
  events, and nothing is ordered by a clock (clocks step back) or by a storage row number.
  Runs are listed by `Run.ordinal`, their creation order, counted when each is created.
- Every write is one transaction: all of it is visible, or none of it. A store refused a
  write (any error below) has written nothing.
- One writer per run: a run's lease names the process executing it. An append given the
  writer's lease `owner` (as `RunWriter` gives it) checks, inside its transaction, that the
  lease is still that owner's; a writer whose lease was taken over or let go gets LeaseLost
  (or ConcurrentAppend, the taker having appended first) and writes nothing.
- `done` is final: nothing is appended after `run.done`, and its lease is never taken again.
- A person's kill request is a durable row: the run's process reads it with `kill_request`
  (a poll, or on a notification), and the append that records `run.killed` clears it.
- Secrets given to `keep_out` never reach storage, in events, blobs or a run's input: a batch
  is redacted with the store's secrets by `batch.prepare`, and `create_run` redacts the run's
  input and first state with them (`batch.start`).
- A store opened read-only refuses every write (ReadOnlyJournal) and takes no write lock.
- Errors are the journal's own (journal/errors.py); no driver exception escapes a store.

Any thread may append through a store, one at a time; `reopen` gives another thread (a
worker, the lease's heartbeat) a store with a connection of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, Self, runtime_checkable

from runjournal.journal.batch import Batch, Row
from runjournal.journal.events import Clock, Event
from runjournal.journal.leases import Holder, KillRequest, Lease
from runjournal.journal.query import Rows
from runjournal.journal.rows import Action, Problem, Run
from runjournal.journal.spending import Budget, Reserve


@runtime_checkable
class Querying(Protocol):
    """Read-only SQL over the journal (`journal sql`), in the backend's own dialect: the part
    of a store that `journal sql` and audits need, and a pipeline does not."""

    def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        interrupted: Callable[[], bool] | None = None,
    ) -> Rows:
        """Run one statement, in the backend's own dialect, in a read-only transaction; its
        rows are read as they are iterated.

        QueryRefused for anything that would write; QueryFailed for bad SQL; QueryStopped
        once `timeout` seconds pass or `interrupted()` is true.
        """
        ...


class EventLog(Protocol):
    """The record itself: runs created with their first event, events appended in order and
    read back, and the blobs they refer to. What every backend must keep exactly."""

    def append(
        self,
        batch: Batch,
        *,
        sync: bool = False,
        claim: tuple[str, str] | None = None,
        reserve: Reserve | None = None,
        owner: str | None = None,
    ) -> Sequence[Event]:
        """Append a batch of one run's events (seqs following its last), made ready by
        `batch.prepare` (kinds checked, data encoded, secrets redacted: BadEvent and NotJSON
        are raised there, before any transaction), with what they imply (the run's row, action
        keys, spend: `batch.changes`; the blobs), in one transaction, and return them as
        written (`batch.events`).

        The events are stored as `batch.rows(previous)`, `previous` being the hash of the
        run's event before the batch, read in the transaction (`chain.Heads`). `sync`: durable
        on return. `claim` (action name, key) is checked first in the same transaction:
        ActionKeyDone when a run has done the key, ActionBusy when another run is acting on
        it. `reserve` checks the request's worst case against the run's caps and its machine's
        budget for the day (`batch.day`): LimitReached. A seq already taken fails the whole
        batch (ConcurrentAppend); a done run takes nothing (RunIsDone); with `owner`, a run
        whose lease another owner holds (or none does) takes nothing either (LeaseLost),
        checked in the same transaction; a batch whose first seq does not follow the run's last
        is refused (ConcurrentAppend). Appending `run.killed` clears the kill request.
        """
        ...

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
        """Record a run (`run.started`, its input as a blob, its ordinal) and give `holder` its
        lease, in one transaction; `(run, True)`. With no `holder`, the run is recorded
        `submitted`, for a worker to claim (`claim_run`).

        With a `run_key` the machine used before, nothing is written: `(that run, False)`.
        """
        ...

    def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """The run's events with `after < seq <= upto`, of `kinds` only when given, in seq
        order, read as they are iterated. An unknown run has none."""
        ...

    def transitions(
        self, run_id: str, *, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, str, str | None, str]]:
        """`(seq, at, step, data as JSON text)` of the run's transitions with
        `after < seq <= upto`, in seq order: what a fold reads, without building events."""
        ...

    def stored(self, run_id: str, *, after: int = 0) -> Iterator[Row]:
        """The run's events with `seq > after` as stored, `(run_id, seq, at, kind, step, data
        as JSON text, hash)`, in seq order: what `journal copy` moves, byte for byte."""
        ...

    def import_run(
        self, run_id: str, rows: Iterable[Row], blobs: Callable[[], Iterable[str]]
    ) -> bool:
        """Store the run's events exactly as another journal holds them (their seqs, times,
        data and hashes), read as they are written, then the blobs they refer to (`blobs()`,
        called once the rows are read), and derive its rows, in one transaction; False
        (nothing written) when a run of that id is here already."""
        ...

    def latest_snapshot(self, run_id: str, upto: int | None = None) -> Event:
        """The last event holding a whole state (`run.started`, `snapshot`) at or before
        `upto`. RunNotFound when there is none."""
        ...

    def blob(self, ref: str) -> str:
        """The payload stored under `ref` (`sha256:` and its hex digest). LookupError."""
        ...


class Views(Querying, Protocol):
    """What is derived from the events and kept beside them to be read fast: runs, actions."""

    def run(self, run_id: str) -> Run:
        """The run's row as its events leave it. RunNotFound."""
        ...

    def find_run(self, prefix: str) -> Run:
        """The one run whose id is or starts with `prefix`. RunNotFound, AmbiguousRunId."""
        ...

    def runs(
        self,
        *,
        limit: int | None = None,
        machine: str | None = None,
        statuses: Sequence[str] | None = None,
        before: int | None = None,
    ) -> list[Run]:
        """Runs, last created first (by ordinal, never by time): of a machine, with a status,
        created before the run of ordinal `before` (the next page), at most `limit`."""
        ...

    def actions(self, run_id: str | None = None, *, key: str | None = None) -> list[Action]:
        """Each action key of each run as its latest event leaves it, runs in creation order
        and then by seq; of one run, or one key, when asked."""
        ...


class Leases(Protocol):
    """Who executes a run, and what they are asked: each run's lease, and a person's kill
    request, which the executing process polls."""

    def acquire_lease(self, run_id: str, holder: Holder, ttl: float) -> Lease | None:
        """Give `holder` the run's lease for `ttl` seconds, in one transaction that also reads
        the run's status; return the lease taken over, if it was another's.

        LeaseHeld while another live process holds it; RunIsDone for a done run; RunNotFound.
        """
        ...

    def claim_run(
        self,
        holder: Holder,
        ttl: float,
        *,
        machines: Sequence[str] | None = None,
        excluded: Sequence[str] = (),
    ) -> Run | None:
        """Give `holder` the lease of one runnable run (submitted, interrupted, resolved, or
        running with its lease expired), the first created, of `machines` when given and not
        one of `excluded` (runs that failed this worker); None if
        there is none. Processes claiming at once get different runs, none waiting for another
        (on PostgreSQL, `FOR UPDATE SKIP LOCKED`)."""
        ...

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        """Push the lease's expiry `ttl` seconds on; False (nothing written) when the lease is
        no longer `owner`'s: it was taken over."""
        ...

    def release_lease(self, run_id: str | None, owner: str) -> None:
        """Give the lease up, if it is still `owner`'s; another's is left alone. With no
        `run_id`, every lease `owner` holds: one whose taking was cut short before its caller
        learnt the run's id."""
        ...

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease, live or left behind by a process that ended; None when released."""
        ...

    def request_kill(self, run_id: str, *, by: str, reason: str | None) -> None:
        """Record a person's request to stop the run, durably, in one transaction (a newer
        request replaces an older one); the run's process reads it with `kill_request`."""
        ...

    def kill_request(self, run_id: str) -> KillRequest | None:
        """The request waiting to kill the run, as committed by any process; None if none."""
        ...

    def notify_kills(self, told: Callable[[str], None]) -> Callable[[], None] | None:
        """Call `told(run_id)`, from a thread of the store's, each time a kill request is
        committed, until the function returned is called; None where the engine cannot
        notify (SQLite), and `kill_request` polled is the only way."""
        ...


class Spending(Protocol):
    """Budgets: what each machine may spend a day and a run, shared by the runs of a machine."""

    def set_budget(
        self, machine: str, *, per_day_nusd: int | None, per_run_nusd: int | None, by: str
    ) -> None:
        """Set what the runs of `machine` may spend together per UTC day, and each run by
        default (None: no such budget), replacing what was set. One transaction."""
        ...

    def budgets(self, machine: str | None = None) -> list[Budget]:
        """The budgets set, by machine, each with what its machine spent today (UTC)."""
        ...

    def pace(self, name: str, limit: int, amount: float) -> float:
        """Take `amount` from the shared bucket `name`, which refills at `limit` a minute and
        holds a second of it, in one transaction; the seconds the caller must wait before
        spending it (0: now). A bucket in debt queues its takers in the order they took."""
        ...


class Auditing(Protocol):
    """Checking the record: what `journal verify` reports, on any backend."""

    def verify(self, run_id: str | None = None) -> list[Problem]:
        """Every problem found, in the whole journal or in one run; empty means it is sound:
        each run's seqs and hash chain, its blobs, its snapshots, and the derived tables
        against a rebuild from the events (which writes nothing). What the engine cannot
        read is a problem too, reported, not raised."""
        ...

    def heads(self, run_id: str | None = None) -> dict[str, tuple[int, str]]:
        """The last seq and hash of each run (or of one): kept elsewhere, they show that a run
        was not rewritten since."""
        ...

    def check_run(self, run_id: str, *, upto: int | None = None) -> None:
        """JournalCorrupt if the part of the run a writer builds on (its first event and
        input, and from its newest state at or before `upto` on) fails its hash chain."""
        ...


class Redacting(Protocol):
    """The secrets kept out of everything written. Written once, in `journal.base.StoreBase`:
    no backend implements it."""

    def keep_out(self, *secrets: str) -> None:
        """Never write these strings from now on: each becomes `[redacted]` in events, blobs
        and inputs. Strings shorter than 8 characters (no key is) are ignored."""
        ...

    def redact(self, text: str) -> str:
        """`text` with every secret kept out replaced, as it would be written."""
        ...

    @property
    def secrets(self) -> tuple[str, ...]:
        """What `redact` replaces: each secret kept out, and its form escaped in JSON."""
        ...


class Backend(EventLog, Views, Leases, Spending, Auditing, Protocol):
    """What a backend writes itself, in its own SQL: every role, and its lifecycle."""

    @property
    def location(self) -> str:
        """What messages call this journal: its file's path, or its database (no password)."""
        ...

    @property
    def readonly(self) -> bool:
        """Whether it was opened for reading only."""
        ...

    @property
    def clock(self) -> Clock:
        """The time this store stamps events and judges leases by; injected in tests."""
        ...

    def reopen(self) -> Self:
        """Another store on the same journal, with its own connection, for another thread."""
        ...

    def close(self) -> None:
        """Let the connection go; the store is not used after."""
        ...


class Store(Backend, Redacting, Protocol):
    """An open journal as machine/ and cli/ use it: a backend's roles, and what
    `journal.base.StoreBase` adds to every backend (`Redacting`, and `with` over `close`)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
