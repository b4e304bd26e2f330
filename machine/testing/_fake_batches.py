"""The fake Message Batches API (`/v1/messages/batches`): create, retrieve, list, cancel, delete
and results, held by one `FakeModel` under its lock (`Batches`), with its faults (`BatchFaults`).

Shapes follow the SDK's `anthropic.types.messages` (`MessageBatch`, `DeletedMessageBatch`,
`MessageBatchIndividualResponse`) and the API reference (create, retrieve, list, cancel, delete,
results: https://platform.claude.com/docs/en/api/messages/batches/create and its siblings
`.../retrieve`, `.../list`, `.../cancel`, `.../delete`, `.../results`) and the guide
(https://platform.claude.com/docs/en/build-with-claude/batch-processing).

Create answers 400 (invalid_request_error, in the API's words, e.g. "requests.0.custom_id: String
should have at most 64 characters", sdk#984) only for a malformed shape: `requests` not a list of
1 to 100,000 items (the reference's minItems and maxItems), an item with other keys than
`custom_id` and `params`, a `custom_id` not 1-64 characters of [a-zA-Z0-9_-] or not unique in
the batch, a `params` not an object; a body over 256 MB is a 413 request_too_large. The `params`
are checked as the guide says, "asynchronously, and validation errors are returned when
processing of the entire batch has ended": an item the fake would refuse as a `POST /v1/messages`
body (the same `_fake_server.invalid` and `_fake_contract.check`) comes back `errored` with that
error. Any other item is answered as `POST /v1/messages` answers that body (`FakeModel._answer`:
the same content and usage, output faults such as garbage included), without its transport
faults (429, 5xx, reset, timeout), latency or rate limits, which batch calls do not meet either.

Time is the fake's `clock`. A batch is `in_progress` (so says create, always) until
`processing_time` seconds after creation, 24 hours at most; its items finish evenly over that
time in a shuffled order (seeded: the results come in that order, never the request order).
It is `ended` from the first call at or after that moment, which answers its items. A cancel
makes it `canceling`; it ends, as of the moment of the cancel, once the clock has moved past
that moment: items finished by then keep their answer, the others are `canceled`. Cancelling an
ended batch is a 400 (not documented; worded as reported by users of the API), as are results
before the end and a delete before the end (the delete page: "If you'd like to delete an
in-progress batch, you must first cancel it"). Results are gone (404) 29 days after creation,
when `archived_at` is set. Private to `machine.testing.fake`.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs

from runjournal.machine.errors import FakeSpecError
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.testing import _fake_contract as contract
from runjournal.machine.testing._fake_server import (
    BATCHES,
    Hangup,
    Lines,
    Reply,
    error,
    invalid,
    not_found,
    unauthenticated,
)
from runjournal.machine.testing._fake_values import canonical, digest


class Answering(Protocol):
    """What the batches ask of the fake that holds them (`fake.FakeModel`): a protocol, so that
    this module need not import the one that imports it."""

    capabilities: Capabilities
    aliases: Mapping[str, str]

    @property
    def faults(self) -> Any: ...

    def _answer(
        self, body: Any, body_hash: str, times: int, request_id: str, faults: Any
    ) -> tuple[str | None, Reply | Hangup]: ...


MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
EXPIRY = 24 * 3600.0
RETENTION = 29 * 24 * 3600.0
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# The faults of `fake.FAULTS` that happen to an HTTP request, not to an answer: a batch item
# meets none of them (its server errors are `BatchFaults.errored`).
_TRANSPORT = frozenset({"429", "529", "500", "503", "400", "reset", "timeout"})
_LOST_AS = ("timeout", "reset")
_NAMES = "expired=R, errored=R, lost=R, lost_as=timeout|reset; or none"

Status = Literal["in_progress", "canceling", "ended"]


def _rate(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise FakeSpecError(f"batch fault {attribute.name} is {value}, outside [0, 1]")


def _lost_as(instance: Any, attribute: Any, value: str) -> None:
    if value not in _LOST_AS:
        raise FakeSpecError(f"lost_as is {value!r}, not timeout or reset")


@attrs.frozen
class BatchFaults:
    """How often each batch fault happens; draws are keyed by the fake's fault seed."""

    expired: float = attrs.field(default=0.0, validator=_rate)
    """Per item: comes back `expired` (which the API does only at 24 hours; the fake at the end)."""
    errored: float = attrs.field(default=0.0, validator=_rate)
    """Per item: comes back `errored` with an api_error, a server error worth sending again."""
    lost: float = attrs.field(default=0.0, validator=_rate)
    """Per create call: the batch is created but its answer is lost, as `lost_as` says, so
    the caller knows of it only by listing."""
    lost_as: Literal["timeout", "reset"] = attrs.field(default="timeout", validator=_lost_as)
    """"timeout" (no answer until the client gives up) or "reset" (the connection dropped)."""

    def __attrs_post_init__(self) -> None:
        if self.expired + self.errored > 1.0 + 1e-9:
            msg = f"expired and errored add up to {self.expired + self.errored:g}, above 1"
            raise FakeSpecError(msg)


def parse_batch_spec(spec: str) -> BatchFaults:
    """`none`, or comma-separated items of expired=R, errored=R, lost=R, lost_as=timeout|reset.

    E.g. "expired=0.1,errored=0.1,lost=1,lost_as=reset". Bad specs raise FakeSpecError.
    """
    if spec.strip() == "none":
        return BatchFaults()
    given: dict[str, Any] = {}
    for item in spec.split(","):
        name, eq, text = (part.strip() for part in item.partition("="))
        if not eq or name not in ("expired", "errored", "lost", "lost_as"):
            raise FakeSpecError(f"{item.strip()!r} is not a batch fault; {_NAMES}")
        if name in given:
            raise FakeSpecError(f"{name!r} is given twice; {_NAMES}")
        try:
            given[name] = text if name == "lost_as" else float(text)
        except ValueError:
            raise FakeSpecError(f"rate of {name} must be a number, not {text!r}") from None
    return BatchFaults(**given)


@attrs.frozen
class Batch:
    """One batch as the fake holds it (`FakeModel.batches`), as of the fake's clock."""

    id: str
    custom_ids: tuple[str, ...]
    """In the order of the create request."""
    created_at: float
    """By the fake's `clock`."""
    status: Status
    answered: bool
    """Whether its create call was answered; False if the answer was lost (`BatchFaults.lost`)."""
    deleted: bool
    usage: Mapping[str, Mapping[str, Any]]
    """custom_id -> usage of each item that succeeded, once ended: what the API bills (at the
    batch price, half: the pricing layer's business); the other items are not billed."""


@attrs.frozen
class BatchCall:
    """One call to the batch endpoints, as the server logs it."""

    endpoint: str
    """create, retrieve, list, cancel, delete or results; "unknown" for another path."""
    batch_id: str | None
    fault: str | None
    """"lost" for a create whose answer was lost."""
    request_id: str
    custom_ids: tuple[str, ...] = ()
    """A create's requests, in order: what a test counts to see no item asked twice."""


@attrs.define
class _Held:
    id: str
    custom_ids: tuple[str, ...]
    params: tuple[Any, ...]
    order: tuple[int, ...]
    """Item indices in the order the items finish, which is the order of the results."""
    created: float
    created_wall: float
    due: float
    version: str
    seed: int
    faults: BatchFaults
    outputs: Any
    """The output faults (a `fake.Faults`) of the fake when the batch was created."""
    answered: bool
    canceled: float | None = None
    ended: float | None = None
    results: dict[int, dict[str, Any]] = attrs.Factory(dict)
    deleted: bool = False

    def status(self) -> Status:
        if self.ended is not None:
            return "ended"
        return "in_progress" if self.canceled is None else "canceling"

    def wall(self, moment: float) -> str:
        """A moment by the fake's clock as the API dates it: wall time, RFC 3339, UTC."""
        stamp = self.created_wall + (moment - self.created)
        when = datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Batches:
    """The batches of one fake and its answers to the batch endpoints; every change to them
    happens under the fake's lock (the server answers from several threads)."""

    def __init__(
        self,
        model: Answering,
        lock: threading.Lock,
        *,
        processing_time: float,
        faults: BatchFaults,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        if not processing_time >= 0.0:  # also rejects NaN
            raise ValueError(f"processing_time is {processing_time}; need 0 or more seconds")
        self._model = model
        self._lock = lock
        self.processing_time = processing_time
        self.faults = faults
        self._clock = clock
        self._wall_clock = wall_clock
        self._held: list[_Held] = []
        self._by_id: dict[str, _Held] = {}
        self._creates: dict[str, int] = {}  # create body hash -> times seen
        self._times: dict[str, int] = {}  # item body hash -> times answered in a batch
        self._calls = 0

    def seen(self) -> list[Batch]:
        """Every batch created, oldest first, as of now."""
        with self._lock:
            self._settle(self._clock())
            return [_snapshot(held) for held in self._held]

    def handle(
        self, method: str, url: str, raw: bytes, headers: Mapping[str, str]
    ) -> tuple[BatchCall, Reply | Lines | Hangup]:
        """Answer one request to a path under `/v1/messages/batches` (`url` is absolute)."""
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        batch_id, _, action = parts.path.removeprefix(BATCHES).strip("/").partition("/")
        endpoint = {
            ("POST", False, ""): "create",
            ("GET", False, ""): "list",
            ("GET", True, ""): "retrieve",
            ("DELETE", True, ""): "delete",
            ("POST", True, "cancel"): "cancel",
            ("GET", True, "results"): "results",
        }.get((method, bool(batch_id), action), "unknown")
        with self._lock:
            self._calls += 1
            request_id = "req_fake_" + digest(self._model.faults.seed, "batches", self._calls)[:24]
        call = BatchCall(endpoint, batch_id or None, None, request_id)
        refused = unauthenticated(headers)
        if refused is not None:
            return call, error(*refused, request_id)
        if endpoint == "unknown":
            return call, not_found(method, parts.path)
        if endpoint == "create":
            return self._create(raw, headers, call)
        with self._lock:
            now = self._clock()
            self._settle(now)
            if endpoint == "list":
                return call, self._list(parse_qs(parts.query), now, base, request_id)
            held = self._by_id.get(batch_id)
            if held is None or held.deleted:
                message = f"message_batch_id: no message batch {batch_id!r}"
                return call, error(404, "not_found_error", message, request_id)
            return call, self._act(endpoint, held, now, base, request_id)

    def _create(
        self, raw: bytes, headers: Mapping[str, str], call: BatchCall
    ) -> tuple[BatchCall, Reply | Hangup]:
        request_id = call.request_id
        if len(raw) > MAX_BYTES:
            message = f"Request exceeds the maximum size of {MAX_BYTES} bytes"
            return call, error(413, "request_too_large", message, request_id)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        problem = _malformed(body)
        if problem is not None:
            return call, error(400, "invalid_request_error", problem, request_id)
        body_hash = digest(canonical(body))  # outside the lock: a batch may be large
        version = {k.lower(): v for k, v in headers.items()}.get("anthropic-version", "")
        with self._lock:
            now, wall = self._clock(), self._wall_clock()
            self._settle(now)  # older batches first: they were created first
            faults, outputs = self.faults, self._model.faults
            seed = outputs.seed
            times = self._creates[body_hash] = self._creates.get(body_hash, 0) + 1
            batch_id = "msgbatch_fake_" + digest(seed, body_hash, times, "batch")[:24]
            request_id = "req_fake_" + digest(seed, body_hash, times, "batch request")[:24]
            lost = _uniform(seed, body_hash, times, "lost") < faults.lost
            items = body["requests"]
            order = list(range(len(items)))
            random.Random(digest(seed, batch_id, "order")).shuffle(order)
            kept = {k: v for k, v in outputs.rates.items() if k not in _TRANSPORT}
            held = _Held(
                id=batch_id,
                custom_ids=tuple(item["custom_id"] for item in items),
                params=tuple(item["params"] for item in items),
                order=tuple(order),
                created=now,
                created_wall=wall,
                due=now + min(self.processing_time, EXPIRY),
                version=version,
                seed=seed,
                faults=faults,
                outputs=attrs.evolve(outputs, rates=kept),
                answered=not lost,
            )
            self._held.append(held)
            self._by_id[batch_id] = held
            view = _view(held, now, "")
        call = attrs.evolve(
            call, batch_id=batch_id, request_id=request_id, custom_ids=held.custom_ids
        )
        if lost:
            return attrs.evolve(call, fault="lost"), Hangup(faults.lost_as, request_id)
        return call, Reply(200, {"request-id": request_id}, view)

    def _act(
        self, endpoint: str, held: _Held, now: float, base: str, request_id: str
    ) -> Reply | Lines:
        """Retrieve, cancel, delete or results, under the lock, the batch settled as of now."""
        ended = held.ended is not None
        refusal = {
            "cancel": f"Batch {held.id} cannot be canceled because it has already finished "
            "processing.",
            "delete": f"Batch {held.id} cannot be deleted while it is processing; cancel it first.",
            "results": f"Batch {held.id} has not finished processing; its results are "
            "available once processing_status is ended.",
        }
        if (endpoint == "cancel" and ended) or (endpoint in ("delete", "results") and not ended):
            return error(400, "invalid_request_error", refusal[endpoint], request_id)
        headers = {"request-id": request_id}
        if endpoint == "delete":
            held.deleted = True
            return Reply(200, headers, {"id": held.id, "type": "message_batch_deleted"})
        if endpoint == "results":
            if now >= held.created + RETENTION:
                message = f"The results of batch {held.id} are no longer available (29 days)."
                return error(404, "not_found_error", message, request_id)
            lines = [
                {"custom_id": held.custom_ids[i], "result": held.results[i]} for i in held.order
            ]
            return Lines(200, headers, tuple(lines))
        if endpoint == "cancel" and held.canceled is None:
            held.canceled = now
        return Reply(200, headers, _view(held, now, base))

    def _list(
        self, query: Mapping[str, list[str]], now: float, base: str, request_id: str
    ) -> Reply:
        given = {key: values[-1] for key, values in query.items()}
        cursors = [key for key in ("after_id", "before_id") if key in given]
        cursor = given[cursors[0]] if cursors else None
        newest = self._held[::-1]  # newest first, in creation (write) order, never by clock
        at = next((i for i, held in enumerate(newest) if held.id == cursor), None)
        try:
            count = int(given.get("limit", "20"))
        except ValueError:
            count = 0
        message = None
        if not 1 <= count <= 1000:
            message = "limit: Input should be an integer from 1 to 1000"
        elif len(cursors) == 2:
            message = "Only one of after_id and before_id may be given"
        elif cursors and at is None:
            message = f"{cursors[0]}: no message batch {cursor!r}"
        if message is not None:
            return error(400, "invalid_request_error", message, request_id)
        if at is None:
            candidates = [held for held in newest if not held.deleted]
            page = candidates[:count]
        elif cursors == ["after_id"]:
            candidates = [held for held in newest[at + 1 :] if not held.deleted]
            page = candidates[:count]
        else:  # before_id: the page just before the cursor
            candidates = [held for held in newest[:at] if not held.deleted]
            page = candidates[-count:]
        data = [_view(held, now, base) for held in page]
        body = {
            "data": data,
            "has_more": len(candidates) > len(page),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return Reply(200, {"request-id": request_id}, body)

    def _settle(self, now: float) -> None:
        """End every batch whose time has come, oldest first: its items are answered in a
        fixed order however the calls that see it interleave."""
        for held in self._held:
            if held.ended is not None:
                continue
            if held.canceled is not None and now > held.canceled:
                self._end(held, held.canceled)
            elif held.canceled is None and now >= held.due:
                self._end(held, held.due)

    def _end(self, held: _Held, at: float) -> None:
        count = len(held.order)
        for rank, index in enumerate(held.order):
            # The fraction first: the last item finishes at exactly `due`, never a hair after.
            spent = self.processing_time * ((rank + 1) / count)
            if spent > EXPIRY:
                held.results[index] = {"type": "expired"}
            elif held.canceled is not None and held.created + spent > held.canceled:
                held.results[index] = {"type": "canceled"}
            else:
                held.results[index] = self._result(held, index)
        held.ended = at

    def _result(self, held: _Held, index: int) -> dict[str, Any]:
        """One item's result: a fault, the refusal or the answer `POST /v1/messages` gives."""
        draw = _uniform(held.seed, held.id, held.custom_ids[index], "item fault")
        if draw < held.faults.expired:
            return {"type": "expired"}
        if draw < held.faults.expired + held.faults.errored:
            return _errored("api_error", "Internal server error (fake).")
        params = held.params[index]
        problem = invalid(params)
        model = self._model
        refused = (
            contract.check(
                params, {"anthropic-version": held.version}, model.capabilities, model.aliases
            )
            if problem is None
            else (400, "invalid_request_error", problem)
        )
        if refused is not None:
            return _errored(refused[1], refused[2])
        body_hash = digest(canonical(params))
        # Counted apart from `POST /v1/messages`, and negative: never a synchronous answer's id.
        times = self._times[body_hash] = self._times.get(body_hash, 0) + 1
        request_id = "req_fake_" + digest(held.seed, body_hash, -times, "request")[:24]
        _, reply = model._answer(params, body_hash, -times, request_id, held.outputs)
        if isinstance(reply, Reply) and reply.status == 200:
            return {"type": "succeeded", "message": dict(reply.body)}
        if isinstance(reply, Reply):  # a responder that failed
            return _errored(reply.body["error"]["type"], reply.body["error"]["message"])
        return _errored("api_error", "Internal server error (fake).")


def _malformed(body: Any) -> str | None:
    """What is wrong with the shape of a create body, the way the API words it; None if nothing."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for key in body:
        if key != "requests":
            return f"{key}: Extra inputs are not permitted"
    requests = body.get("requests")
    if requests is None:
        return "requests: Field required"
    if not isinstance(requests, list):
        return "requests: Input should be a valid list"
    if not 1 <= len(requests) <= MAX_REQUESTS:
        bound = "at least 1 item" if not requests else f"at most {MAX_REQUESTS} items"
        return f"requests: List should have {bound} after validation, not {len(requests)}"
    seen: set[str] = set()
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            return f"{where}: Input should be a valid dictionary"
        for key in ("custom_id", "params"):
            if key not in item:
                return f"{where}.{key}: Field required"
        for key in item:
            if key not in ("custom_id", "params"):
                return f"{where}.{key}: Extra inputs are not permitted"
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str):
            return f"{where}.custom_id: Input should be a valid string"
        if not custom_id:
            return f"{where}.custom_id: String should have at least 1 character"
        if len(custom_id) > 64:
            return f"{where}.custom_id: String should have at most 64 characters"
        if not _CUSTOM_ID.fullmatch(custom_id):
            return f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"{where}.custom_id: {custom_id!r} is not unique within the batch"
        seen.add(custom_id)
        if not isinstance(item["params"], dict):
            return f"{where}.params: Input should be a valid dictionary"
    return None


def _view(held: _Held, now: float, base: str) -> dict[str, Any]:
    """The batch as a `message_batch` object; `base` is the scheme and host of `results_url`."""
    ended = held.ended is not None
    counts = {"processing": 0 if ended else len(held.order)}
    for kind in ("succeeded", "errored", "canceled", "expired"):
        counts[kind] = sum(1 for result in held.results.values() if result["type"] == kind)
    return {
        "id": held.id,
        "type": "message_batch",
        "processing_status": held.status(),
        "request_counts": counts,
        "ended_at": held.wall(held.ended) if held.ended is not None else None,
        "created_at": held.wall(held.created),
        "expires_at": held.wall(held.created + EXPIRY),
        "cancel_initiated_at": held.wall(held.canceled) if held.canceled is not None else None,
        "archived_at": (
            held.wall(held.created + RETENTION) if now >= held.created + RETENTION else None
        ),
        "results_url": f"{base}{BATCHES}/{held.id}/results" if ended else None,
    }


def _snapshot(held: _Held) -> Batch:
    usage = {
        held.custom_ids[i]: result["message"]["usage"]
        for i, result in sorted(held.results.items())
        if result["type"] == "succeeded"
    }
    return Batch(
        held.id, held.custom_ids, held.created, held.status(), held.answered, held.deleted, usage
    )


def _errored(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}},
    }


def _uniform(*parts: object) -> float:
    """A draw in [0, 1) keyed by `parts`."""
    return int(digest(*parts)[:16], 16) / 2**64
