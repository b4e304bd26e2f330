"""Asks that can wait, at half price: `ctx.ask_batch`, through the Message Batches API, durable
across crashes.

One `ask_batch` makes one or more batches, numbered from 0: the first holds every item, each
later one the items still due (an answer that did not fit, asked again with the errors; an item
that errored, expired or was canceled, sent again). Each batch goes through the journal so that
no crash makes it twice, loses it or pays for an item twice:

1. Intent: each item's `model.requested` (its request, hash, `custom_id` and worst case at batch
   prices) and `batch.intended` are written together and synced, reserving the whole batch's
   worst case against the run's caps and its machine's budget, before the create is sent.
2. Create, then `batch.created` with the id. The create has no idempotency key, so a create
   that may have reached the API (a timeout, a reset, a crash before the id was journaled) is
   never sent again blindly: the batches created since the intent are listed first, and one of
   this size is adopted; none is created anew; several stop the run for a person.
3. Wait: while the batch runs, the step stops and the run is `waiting` (`run.waiting`, its
   deadline the moment to look again, later as the batch grows older); any process resumes it.
4. Results, as they are streamed: each item's `model.answered` (priced at batch prices) or
   `model.failed` (not billed), written in groups; a resume skips the `custom_id`s journaled.
   Then `batch.ended` with the counts.

A kill while the batch runs cancels it (`batch.canceled`); the items it had answered keep their
answers, and a resume sends the others in a new batch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from runjournal.journal import Event, JournalError, LimitReached, Store, kinds
from runjournal.journal import events as k
from runjournal.journal.events import timestamp
from runjournal.machine import journaled, retry
from runjournal.machine.errors import (
    AnswerCut,
    DefinitionError,
    Interrupted,
    Killed,
    MachineError,
    ModelCallFailed,
    ModelRefused,
    NeedsAttention,
    NoValidAnswer,
    Waiting,
)
from runjournal.machine.journaled import Calls, Placed
from runjournal.machine.model import output, request
from runjournal.machine.model.ask import ModelSession, hash_request, request_timeout
from runjournal.machine.model.pricing import Usage, cost, worst_case

if TYPE_CHECKING:
    import anthropic

    from runjournal.machine.model.capabilities import Effort
    from runjournal.machine.model.request import ThinkingOption

T = TypeVar("T")

MAX_ITEMS = 100_000
"""The most requests one Message Batch takes (the batch guide)."""
RESULTS_PER_COMMIT = 50
"""Results written together as they are read: a crash loses at most these, read again."""
LATEST_POLL = 300.0
"""The longest wait between two looks at a running batch, in seconds."""
LISTING_MARGIN = 300.0
"""How long before its intent a batch found by listing may have been created: clock skew."""
_NOT_BILLED = ("errored", "expired", "canceled")


@attrs.define
class _Item:
    """One prompt of the batch, as it goes from batch to batch until its answer fits."""

    key: str
    call: str
    """Its place: the ask_batch's place, a slash, its key."""
    messages: list[dict[str, Any]]
    max_tokens: int
    round: int = 0
    attempt: int = 0
    """Batches sent in this round (errored, expired, canceled items are sent again)."""
    failures: int = 0
    """Errored and expired results, against the retry policy's attempts."""
    done: bool = False
    value: Any = None


@attrs.frozen
class BatchAsk:
    """What every request of one `ask_batch` is made with."""

    schema: type
    system: str | None
    model: str
    max_tokens: int
    retries: int
    cache_system: bool
    thinking: ThinkingOption
    effort: Effort | None
    temperature: float | None
    poll: float
    """Seconds before the first look at a running batch."""


def ask_batch(
    session: ModelSession,
    calls: Calls,
    ask: BatchAsk,
    prompts: Mapping[str, str],
    *,
    key: str | None,
) -> dict[str, Any]:
    """The answers to `prompts` (item key -> prompt), by key; see `Context.ask_batch`."""
    name = ask.schema.__name__
    placed = journaled.place(calls, "batch", name, key)
    _check(calls, prompts, ask)
    return _Batching(session, calls, placed, ask, prompts).answers()


def _check(calls: Calls, prompts: object, ask: BatchAsk) -> None:
    where = f"step {calls.step!r}: ctx.ask_batch"
    if not isinstance(prompts, Mapping):
        msg = (
            f"{where}: the prompts are a {type(prompts).__name__}; give them by item key, "
            "e.g. {t.id: t.text for t in tickets}"
        )
        raise DefinitionError(msg)
    for item_key, prompt in prompts.items():
        if not isinstance(item_key, str) or not item_key or "/" in item_key:
            msg = f"{where}: prompt key {item_key!r}; a key is a non-empty string without '/'"
            raise DefinitionError(msg)
        if not isinstance(prompt, str):
            raise DefinitionError(f"{where}: the prompt of {item_key!r} is not a string")
    if len(prompts) > MAX_ITEMS:
        msg = f"{where}: {len(prompts):,} prompts; a batch takes {MAX_ITEMS:,} at most: split them"
        raise DefinitionError(msg)
    if not ask.poll > 0:
        raise DefinitionError(f"{where}: poll must be above 0 seconds, not {ask.poll}")


class _Batching:
    """One `ask_batch` call: its place, what the journal holds of it, and the batches it makes."""

    def __init__(
        self,
        session: ModelSession,
        calls: Calls,
        placed: Placed,
        ask: BatchAsk,
        prompts: Mapping[str, str],
    ) -> None:
        self.session, self.calls, self.placed, self.ask = session, calls, placed, ask
        self.guard = session.guard
        self.name = ask.schema.__name__
        self.where = f"run {calls.run_id}, step {calls.step!r}, call {placed.call}"
        self.items = [
            _Item(k_, f"{placed.call}/{k_}", [{"role": "user", "content": p}], ask.max_tokens)
            for k_, p in prompts.items()
        ]
        # What the journal holds: the batches' own events by number, the items' by custom_id.
        self.held: dict[tuple[str, int], Event] = {}
        for e in placed.events:
            self.held[(e.kind, e.data["batch"])] = e
        self.outcomes: dict[str, Event] = {}
        self.requested: dict[str, Event] = {}
        self.rejected: dict[tuple[str, int], Event] = {}
        for item in self.items:
            for e in calls.recorded.get(item.call, []):
                self._hold_item_event(item, e)
        price = session.models.prices.price(ask.model, on=_day(session.clock()))
        self.price = price.batched(session.models.prices.batch)
        caps = session.models.capabilities.of(price.model)
        self.max_output = caps.max_output_tokens
        self.plan = session.plan(
            ask.schema, caps, ask.thinking, ask.effort, ask.max_tokens, ask.temperature
        )
        self.tool = None if self.plan.tool is None else str(self.plan.tool["name"])

    def _hold_item_event(self, item: _Item, e: Event) -> None:
        custom_id = e.data.get("custom_id")
        if e.kind == k.MODEL_REQUESTED and custom_id:
            self.requested[custom_id] = e
        elif e.kind in (k.MODEL_ANSWERED, k.MODEL_FAILED) and custom_id:
            self.outcomes[custom_id] = e
        elif e.kind == k.OUTPUT_REJECTED:
            self.rejected[(item.call, e.data["round"])] = e

    def answers(self) -> dict[str, Any]:
        number = 0
        while due := [item for item in self.items if not item.done]:
            self._batch(number, due)
            number += 1
        return {item.key: item.value for item in self.items}

    # One batch

    def _batch(self, number: int, due: list[_Item]) -> None:
        bodies = [self._body(item) for item in due]
        redact = self.calls.writer.journal.redact
        hashes = [hash_request(body, redact) for body in bodies]
        intended = self.held.get((k.BATCH_INTENDED, number))
        # The ids the intent recorded, if there is one: they name the items in the batch made.
        prefix = (
            custom_id_prefix(self.calls.run_id, self.calls.visit, self.placed.call, number)
            if intended is None
            else str(intended.data["custom_id_prefix"])
        )
        ids = [f"{prefix}{i}" for i in range(len(due))]
        for item, body, request_hash, custom_id in zip(due, bodies, hashes, ids, strict=True):
            self._asked(item, body, request_hash, custom_id)
        if intended is None:
            self._unrecorded(f"batch {number} of {self.name}")
            intended = self._intend(number, due, bodies, hashes, ids, prefix)
        elif intended.data["items"] != [item.key for item in due]:
            self.calls.journaling.mismatch(
                self.calls,
                self.placed.call,
                f"batch {number} of {', '.join(intended.data['items'][:3])}, ...",
                f"batch {number} of {', '.join(item.key for item in due[:3])}, ...",
            )
        if (k.BATCH_ENDED, number) not in self.held:
            self._unrecorded(f"batch {number} of {self.name}")
            self._through(number, intended, dict(zip(ids, due, strict=True)), bodies)
        for item, custom_id in zip(due, ids, strict=True):
            self._outcome(item, self.outcomes[custom_id])

    def _asked(self, item: _Item, body: dict[str, Any], request_hash: str, custom_id: str) -> None:
        """Tell the journaling of the item's request: the journal's, if it holds one, must be
        the same (a rerun also compares the answer)."""
        journaling = self.calls.journaling
        journaling.placed(self.calls, item.call)
        held: dict[str, Event] = {}
        requested = self.requested.get(custom_id)
        if requested is not None:
            held[k.MODEL_REQUESTED] = requested
            item.attempt = requested.data["attempt"]
        outcome = self.outcomes.get(custom_id)
        if outcome is not None and outcome.kind == k.MODEL_FAILED:
            # Not answered, and asked again in a later batch: only the request is compared.
            assert requested is not None
            if requested.data["request_hash"] != request_hash:
                had = (
                    f"ask {self.name} round {item.round} (request {requested.data['request_hash']})"
                )
                now = f"ask {self.name} round {item.round} (request {request_hash})"
                journaling.mismatch(self.calls, item.call, had, now)
            return
        if outcome is not None:
            held[k.MODEL_ANSWERED] = outcome
        journaling.asked(self.calls, item.call, self.name, item.round, body, request_hash, held)

    def _body(self, item: _Item) -> dict[str, Any]:
        ask = self.ask
        return request.build(
            ask.model,
            self.plan,
            system=ask.system,
            messages=item.messages,
            max_tokens=item.max_tokens,
            cache_system=ask.cache_system,
        )

    def _unrecorded(self, what: str) -> None:
        """A rerun stops here: what follows would call the API."""
        self.calls.journaling.unrecorded(self.calls, self.placed.call, what, self.placed.events)

    def _intend(
        self,
        number: int,
        due: list[_Item],
        bodies: list[dict[str, Any]],
        hashes: list[str],
        ids: list[str],
        prefix: str,
    ) -> Event:
        writer, guard = self.calls.writer, self.guard
        self.guard.before_request()
        self.calls.checkpoint("batch.before")
        events: list[kinds.Data] = []
        total_tokens, total_usd = 0, Decimal(0)
        for item, body, request_hash, custom_id in zip(due, bodies, hashes, ids, strict=True):
            item.attempt += 1
            tokens, usd = worst_case(body, self.price)
            total_tokens += tokens
            total_usd += usd
            events.append(
                kinds.ModelRequested(
                    call=item.call,
                    name=self.name,
                    round=item.round,
                    attempt=item.attempt,
                    model=self.ask.model,
                    custom_id=custom_id,
                    request_hash=request_hash,
                    request=writer.blob(json.dumps(body, ensure_ascii=False)),
                    mechanism=self.plan.mechanism,
                    worst_case_usd=float(usd),
                    worst_case_tokens=tokens,
                )
            )
        intended = kinds.BatchIntended(
            call=self.placed.call,
            name=self.name,
            batch=number,
            model=self.ask.model,
            items=[item.key for item in due],
            custom_id_prefix=prefix,
            requests_hash=hashlib.sha256(",".join(hashes).encode()).hexdigest()[:16],
            worst_case_usd=float(total_usd),
            worst_case_tokens=total_tokens,
        )
        events.append(intended)
        reserve = attrs.evolve(guard.reserve(total_tokens, total_usd), requests=len(due))
        try:
            written = writer.commit_all(self.calls.step, events, sync=True, reserve=reserve)
        except LimitReached as e:
            raise guard.limit_reached(e) from e
        for item, event in zip(due, written, strict=False):
            self._hold_item_event(item, event)
        self.held[(k.BATCH_INTENDED, number)] = written[-1]
        self.calls.checkpoint("batch.intended")
        return written[-1]

    def _through(
        self,
        number: int,
        intended: Event,
        items: dict[str, _Item],
        bodies: list[dict[str, Any]],
    ) -> None:
        """Create (or find) the batch, wait for it to end, and journal its results."""
        client = self.session.client()
        created = self.held.get((k.BATCH_CREATED, number))
        if created is None:
            created = self._create(client, number, intended, list(items), bodies)
        batch_id = created.data["batch_id"]
        try:
            batch = self._call(f"retrieve batch {batch_id}", batch_id, client, "retrieve")
            if batch.processing_status != "ended":
                self._wait(number, created, batch)
            self._results(client, number, batch_id, items, adopted=created.data.get("adopted"))
        except Killed as killed:
            if (k.BATCH_CANCELED, number) not in self.held:
                self._cancel(client, number, batch_id, killed)
            raise

    def _create(
        self,
        client: anthropic.Anthropic,
        number: int,
        intended: Event,
        ids: list[str],
        bodies: list[dict[str, Any]],
    ) -> Event:
        policy, rng = self.session.retrying.policy, self.session.retrying.rng
        # An intent from an earlier process may have reached the API: look before creating.
        look = any(e.seq == intended.seq for e in self.placed.events)
        for attempt in range(1, policy.max_attempts + 1):
            if look:
                found = self._candidates(client, intended)
                if len(found) == 1:
                    return self._created(number, found[0], adopted=True)
                if len(found) > 1:
                    ids_found = ", ".join(b.id for b in found)
                    msg = (
                        f"{self.where}: {len(found)} batches of {len(ids)} requests were created "
                        f"since batch {number}'s intent and any may be this run's: {ids_found}. "
                        "Cancel all but one (the Console, or the API's cancel; an ended one, "
                        "delete), then resume"
                    )
                    stop = NeedsAttention(
                        msg, name=f"batch {number}", key=ids_found, call=self.placed.call
                    )
                    self.calls.stopped = stop
                    raise stop
            self.guard.check()
            requests = [
                {"custom_id": custom_id, "params": body}
                for custom_id, body in zip(ids, bodies, strict=True)
            ]
            try:
                batch = client.messages.batches.create(
                    requests=requests,  # type: ignore[arg-type]
                    timeout=request_timeout(4096),
                )
            except (JournalError, Killed, Interrupted):
                raise
            except Exception as e:
                failure = retry.classify(e, now=self.session.clock())
                if not failure.retryable or attempt == policy.max_attempts:
                    if failure.status is not None and failure.status < 500:  # made nothing
                        self._refused(number, intended, ids, failure)
                    msg = f"{self.where}: creating batch {number}: {failure.describe()}"
                    raise ModelCallFailed(msg) from e
                look = True  # it may have been created all the same
                self.guard.sleep(retry.delay(policy, attempt, failure, rng))
                continue
            self.calls.checkpoint("batch.create_sent")
            return self._created(number, batch, adopted=False)
        raise AssertionError("the loop returns or raises")

    def _refused(self, number: int, intended: Event, ids: list[str], failure: Any) -> None:
        """The API refused the create, so no batch exists and nothing is billed: each item's
        failure, and the batch's end, are journaled (a resume fails the same way)."""
        writer, step = self.calls.writer, self.calls.step
        for custom_id in ids:
            data = kinds.ModelFailed(
                **self._outcome_fields(custom_id, intended, None),
                status=failure.status,
                error_type=failure.error_type,
                message=failure.message,
                request_id=failure.request_id,
                retryable=False,
            )
            self.outcomes[custom_id] = writer.record(step, data)
        ended = kinds.BatchEnded(
            call=self.placed.call,
            name=self.name,
            batch=number,
            batch_id="",
            succeeded=0,
            errored=len(ids),
            expired=0,
            canceled=0,
        )
        self.held[(k.BATCH_ENDED, number)] = writer.commit(step, ended, sync=True)

    def _candidates(self, client: anthropic.Anthropic, intended: Event) -> list[Any]:
        """The batches created since the intent (less a margin) with as many requests."""
        since = _moment(intended.at) - LISTING_MARGIN
        n = len(intended.data["items"])
        found = []

        def listing() -> list[Any]:
            seen = []
            for batch in client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < since:
                    break  # newest first: the rest are older
                seen.append(batch)
            return seen

        # The run's own batches, other calls' or visits', are known: never this intent's.
        journal = self.calls.writer.journal
        known = {
            e.data["batch_id"] for e in journal.events(self.calls.run_id, kinds=(k.BATCH_CREATED,))
        }
        for batch in self._retried("list batches", listing):
            if batch.id in known:
                continue
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            if total == n and batch.cancel_initiated_at is None:
                found.append(batch)
        return found

    def _created(self, number: int, batch: Any, *, adopted: bool) -> Event:
        expires = getattr(batch, "expires_at", None)
        data = kinds.BatchCreated(
            call=self.placed.call,
            name=self.name,
            batch=number,
            batch_id=batch.id,
            expires_at=None if expires is None else timestamp(expires.timestamp()),
            adopted=adopted,
        )
        event = self.calls.writer.commit(self.calls.step, data, sync=True)
        self.held[(k.BATCH_CREATED, number)] = event
        self.calls.checkpoint("batch.created")
        return event

    def _wait(self, number: int, created: Event, batch: Any) -> None:
        """Stop the step: the run waits for the batch, and looks again later."""
        now = self.session.clock()
        age = max(0.0, now - _moment(created.at))
        # Look again soon while the batch is young, then less often: most end within the hour.
        later = min(max(self.ask.poll, age / 4), max(self.ask.poll, LATEST_POLL))
        n = len(self.held[(k.BATCH_INTENDED, number)].data["items"])
        message = (
            f"waiting for Message Batch {batch.id} of {n:,} requests "
            f"({batch.processing_status}); a resume looks again from {timestamp(now + later)}: "
            f"journal resume {self.calls.run_id} (or --wait)"
        )
        self.calls.checkpoint("batch.polled")
        stop = Waiting(message, name=f"batch {number}", call=self.placed.call, of=batch.id)
        stop.deadline = timestamp(now + later)
        self.calls.stopped = stop
        raise stop

    def _results(
        self,
        client: anthropic.Anthropic,
        number: int,
        batch_id: str,
        items: dict[str, _Item],
        *,
        adopted: bool | None,
    ) -> None:
        writer, step = self.calls.writer, self.calls.step
        intended = self.held[(k.BATCH_INTENDED, number)]
        counts = dict.fromkeys(("succeeded", *_NOT_BILLED), 0)
        written = 0
        for result in self._retried(
            f"results of batch {batch_id}", lambda: client.messages.batches.results(batch_id)
        ):
            custom_id = result.custom_id
            item = items.get(custom_id)
            if item is None:
                msg = (
                    f"{self.where}: batch {batch_id} holds a request {custom_id!r} that batch "
                    f"{number} did not make"
                    + (" (it was adopted by listing: it is not this run's)" if adopted else "")
                )
                raise ModelCallFailed(msg)
            counts[result.result.type] = counts.get(result.result.type, 0) + 1
            if custom_id in self.outcomes:
                continue  # journaled before a crash
            data = self._outcome_data(custom_id, intended, batch_id, result)
            if result.result.type != "canceled":  # the breaker counts a batch's items too
                self.guard.record(result.result.type == "succeeded")
            event = writer.record(step, data)
            self.outcomes[custom_id] = event
            written += 1
            if written % RESULTS_PER_COMMIT == 0:
                writer.flush()
                self.calls.checkpoint("batch.results")
        for custom_id in items:
            if custom_id not in self.outcomes:  # no result: as if it had errored
                counts["errored"] += 1
                data = self._failed(custom_id, intended, batch_id, "missing", "no result")
                self.outcomes[custom_id] = writer.record(step, data)
        ended = kinds.BatchEnded(
            call=self.placed.call, name=self.name, batch=number, batch_id=batch_id, **counts
        )
        self.held[(k.BATCH_ENDED, number)] = writer.commit(step, ended, sync=True)
        self.calls.checkpoint("batch.ended")

    def _outcome_data(
        self, custom_id: str, intended: Event, batch_id: str, result: Any
    ) -> kinds.Data:
        outcome = result.result
        if outcome.type != "succeeded":
            error = getattr(outcome, "error", None)
            inner = getattr(error, "error", None)
            kind = outcome.type
            if inner is not None:
                kind = f"{outcome.type}: {getattr(inner, 'type', 'error')}"
            message = getattr(inner, "message", "") or outcome.type
            return self._failed(custom_id, intended, batch_id, kind, message)
        body = outcome.message.model_dump(mode="json", exclude_none=True)
        usage = Usage.from_api(body.get("usage", {}))
        requested = self.requested[custom_id]
        # Priced by the day it was read, as an ask's answer is by the day it came.
        price = self.session.models.prices.price(self.ask.model, on=_day(self.session.clock()))
        batched = price.batched(self.session.models.prices.batch)
        return kinds.ModelAnswered(
            **self._outcome_fields(custom_id, intended, batch_id),
            request_hash=requested.data["request_hash"],
            mechanism=self.plan.mechanism,
            stop_reason=body.get("stop_reason"),
            stop_details=body.get("stop_details"),
            content=body.get("content", []),
            usage=attrs.asdict(usage),
            cost_usd=float(cost(batched, usage)),
            latency_ms=round((self.session.clock() - _moment(intended.at)) * 1000, 1),
        )

    def _outcome_fields(self, custom_id: str, intended: Event, batch_id: str | None) -> Any:
        """What an item's outcome repeats of its request (`model.requested`)."""
        d = self.requested[custom_id].data
        return {
            **{name: d[name] for name in ("call", "name", "round", "attempt", "model")},
            "custom_id": custom_id,
            "batch_id": batch_id,
            "requested_at": intended.at,
            "worst_case_usd": d["worst_case_usd"],
            "worst_case_tokens": d["worst_case_tokens"],
        }

    def _failed(
        self, custom_id: str, intended: Event, batch_id: str, kind: str, message: str
    ) -> kinds.ModelFailed:
        return kinds.ModelFailed(
            **self._outcome_fields(custom_id, intended, batch_id),
            status=None,
            error_type=kind,
            message=message[:300],
            retryable=not kind.startswith("errored: invalid_request_error"),
            delay_s=None,
        )

    def _cancel(self, client: anthropic.Anthropic, number: int, batch_id: str, why: Killed) -> None:
        """Cancel the batch of a killed run: nothing more of it is billed."""
        try:
            client.messages.batches.cancel(batch_id)
        except Exception:  # already ended, or the API out of reach: the kill stands
            return
        created = self.held[(k.BATCH_CREATED, number)]
        data = canceled(created, by=why.record.who or why.record.killed_by)
        self.held[(k.BATCH_CANCELED, number)] = self.calls.writer.commit(self.calls.step, data)

    # What an item's result means

    def _outcome(self, item: _Item, event: Event) -> None:
        if event.kind == k.MODEL_FAILED:
            kind = str(event.data["error_type"])
            if kind != "canceled":
                item.failures += 1
            policy = self.session.retrying.policy
            if not event.data["retryable"] or item.failures >= policy.max_attempts:
                msg = (
                    f"{self.where}, item {item.key!r}: {item.failures} batch requests failed, "
                    f"the last {kind}: {event.data['message']}"
                )
                raise ModelCallFailed(msg)
            return  # sent again in the next batch, the same round
        response = {
            "content": event.data["content"],
            "stop_reason": event.data["stop_reason"],
            "stop_details": event.data.get("stop_details"),
        }
        answers = self.session.answers(self.calls.converter)
        answer: output.Accepted[Any] | output.Rejected = output.read_answer(
            response, self.ask.schema, tool=self.tool, converter=answers
        )
        if isinstance(answer, output.Accepted):
            item.done, item.value = True, answer.value
            return
        if (item.call, item.round) not in self.rejected:
            data = kinds.OutputRejected(
                call=item.call,
                name=self.name,
                round=item.round,
                errors=answer.errors,
                raw=answer.raw,
            )
            self.rejected[(item.call, item.round)] = self.calls.writer.commit(self.calls.step, data)
        where = f"{self.where}, item {item.key!r}"
        if answer.stop == "refusal":
            raise ModelRefused(f"{where}: {answer.errors[0]}; asking again the same is no use")
        if answer.stop == "model_context_window_exceeded":
            raise AnswerCut(f"{where}: {answer.errors[0]}")
        if item.round >= self.ask.retries:
            msg = (
                f"{where}: {item.round + 1} answers in a row did not fit {self.name}; the last: "
                f"{'; '.join(answer.errors)}"
            )
            raise NoValidAnswer(msg)
        if answer.stop == "max_tokens":
            if item.max_tokens >= self.max_output:
                msg = f"{where}: the answer was cut off at max_tokens {item.max_tokens:,}"
                raise AnswerCut(msg)
            item.max_tokens = min(2 * item.max_tokens, self.max_output)
        else:
            item.messages = item.messages + output.feedback(
                response, answer, schema_name=self.name, tool=self.tool
            )
        item.round, item.attempt, item.failures = item.round + 1, 0, 0

    # The API's idempotent calls

    def _call(self, what: str, batch_id: str, client: anthropic.Anthropic, verb: str) -> Any:
        return self._retried(what, lambda: getattr(client.messages.batches, verb)(batch_id))

    def _retried(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()`, a call that reads, retried by the run's policy; ModelCallFailed at last."""
        policy, rng = self.session.retrying.policy, self.session.retrying.rng
        for attempt in range(1, policy.max_attempts + 1):
            self.guard.check()
            try:
                return fn()
            except (JournalError, Killed, Interrupted, ModelCallFailed):
                raise
            except Exception as e:
                failure = retry.classify(e, now=self.session.clock())
                if failure.status == 404:
                    msg = (
                        f"{self.where}: {what}: the API knows no such batch (made with another "
                        "key or workspace? or by the in-process fake of a process that ended)"
                    )
                    raise ModelCallFailed(msg) from e
                if not failure.retryable or attempt == policy.max_attempts:
                    raise ModelCallFailed(f"{self.where}: {what}: {failure.describe()}") from e
                self.guard.sleep(retry.delay(policy, attempt, failure, rng))
        raise AssertionError("the loop returns or raises")


def open_batches(journal: Store, run_id: str) -> list[Event]:
    """The run's `batch.created` whose batch has neither ended nor been canceled."""
    found: dict[tuple[str | None, str, int], Event] = {}
    for e in journal.events(run_id, kinds=(k.BATCH_CREATED, k.BATCH_ENDED, k.BATCH_CANCELED)):
        place = (e.step, str(e.data["call"]), int(e.data["batch"]))
        if e.kind == k.BATCH_CREATED:
            found[place] = e
        else:
            found.pop(place, None)
    return sorted(found.values(), key=lambda e: e.seq)


def canceled(created: Event, *, by: str) -> kinds.BatchCanceled:
    """The record of the cancel of the batch `created` made."""
    d = created.data
    return kinds.BatchCanceled(
        call=d["call"], name=d["name"], batch=d["batch"], batch_id=d["batch_id"], by=by
    )


def cancelling(
    connect: Callable[[], anthropic.Anthropic], tell: Callable[[str], None]
) -> Callable[[str], bool]:
    """A `cancel` for `stopping.kill`: cancels a batch through the client `connect` makes (on
    the first cancel only), and `tell`s what it could not, one line each."""
    clients: list[anthropic.Anthropic] = []

    def cancel(batch_id: str) -> bool:
        try:
            if not clients:
                clients.append(connect())
            clients[0].messages.batches.cancel(batch_id)
        except Exception as e:
            why = e if isinstance(e, MachineError) else retry.classify(e, now=0.0).describe()
            tell(
                f"batch {batch_id} not canceled ({why}): it may still run and be billed; "
                "cancel it in the Console or with the API"
            )
            return False
        return True

    return cancel


def custom_id_prefix(run_id: str, visit: int, call: str, number: int) -> str:
    """`rj-<run>-<hash of the step visit, call and batch number>-`: an item's custom_id is this
    and its index, at most 64 characters of [A-Za-z0-9_-], unique to the run's batch."""
    run = re.sub(r"[^A-Za-z0-9]", "", run_id)[:12]
    place = hashlib.sha256(f"{run_id}\0{visit}\0{call}\0{number}".encode()).hexdigest()[:10]
    return f"rj-{run}-{place}-"


def _moment(at: str) -> float:
    """A journal timestamp as seconds since the epoch."""
    return datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _day(t: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).date()
