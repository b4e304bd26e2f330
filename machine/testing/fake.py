"""A fake Anthropic Messages API (`POST /v1/messages`, non-streaming, and the Message Batches
API, from `machine.testing._fake_batches`) that the real SDK talks to.

Owns fault specs (`parse_spec`), the fake model (`FakeModel`: answers, faults, usage, prompt
caching, latency and rate limits, the last four reckoned in `machine.testing._fake_limits`) and
its two doors: an in-process `httpx2` transport (`FakeModel.client()`) and a loopback HTTP
server (`serve`, from `machine.testing._fake_server`) for tests whose client is another
process, perhaps killed.

A good answer and its usage are functions of the fake's settings and the request alone, so a
request is answered, and billed, the same in any process, however often its run was resumed
(usage, unless `prompt_cache="instance"`). Faults, message ids and request ids depend also on
how many times this instance has seen the same body, so a fresh process replays the same
sequence. All of it is keyed by sha256 (never Python's salted `hash()`). Header values are
never recorded or logged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import threading
import time
import types
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, get_args

import attrs
import httpx2

from runjournal.machine.errors import FakeSpecError
from runjournal.machine.model.capabilities import Capabilities, ModelCapabilities
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.testing import _fake_contract as contract
from runjournal.machine.testing import _fake_values as values
from runjournal.machine.testing._fake_batches import (
    Batch,
    BatchCall,
    Batches,
    BatchFaults,
    parse_batch_spec,
)
from runjournal.machine.testing._fake_limits import (
    Cache,
    CacheHits,
    Limits,
    delay,
    prompt_usage,
    sleep,
)
from runjournal.machine.testing._fake_server import (
    FakeServer,
    Hangup,
    Lines,
    Reply,
    error,
    is_batches,
    not_found,
    refuse,
    serve,
)
from runjournal.machine.testing._fake_values import digest

if TYPE_CHECKING:
    import anthropic

__all__ = [
    "CHAOS",
    "CHAOS_SEED",
    "FAULTS",
    "GROUPS",
    "PROMPT_CACHES",
    "Batch",
    "BatchFaults",
    "FakeModel",
    "FakeServer",
    "FakeSpecError",
    "Faults",
    "Hangup",
    "Lines",
    "PromptCache",
    "Reply",
    "Responder",
    "Seen",
    "parse_batch_spec",
    "parse_spec",
    "serve",
]

FAULTS: tuple[str, ...] = (
    "429", "529", "500", "503", "400", "reset", "timeout",
    "prose", "fence", "wrong_types", "missing", "empty", "truncated", "refusal",
)  # fmt: skip
GROUPS: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "garbage": ("prose", "fence", "wrong_types", "missing", "empty", "truncated"),
    "errors": ("429", "529", "500", "503"),
    "max_tokens": ("truncated",),  # the stop reason's name for it
})  # fmt: skip
# Transport errors and garbage, never 400 or refusal: a pipeline may rightly treat those as
# final, and a chaos run must be able to end done.
CHAOS: Mapping[str, float] = types.MappingProxyType({
    "429": 0.06, "529": 0.04, "500": 0.03, "503": 0.03, "reset": 0.03, "timeout": 0.03,
    "prose": 0.02, "fence": 0.02, "wrong_types": 0.01, "missing": 0.01, "empty": 0.01,
    "truncated": 0.01,
})  # fmt: skip
CHAOS_SEED = 7
_VALID = f"valid names: {', '.join(FAULTS)}, {', '.join(GROUPS)}, seed; or alone: chaos, none"
# status, error type and message of each error fault; 503 has no type of its own in the API.
_ERRORS: Mapping[str, tuple[int, str, str]] = types.MappingProxyType({
    "429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit (fake)."),
    "529": (529, "overloaded_error", "Overloaded (fake)."),
    "500": (500, "api_error", "Internal server error (fake)."),
    "503": (503, "api_error", "Service unavailable (fake)."),
    "400": (400, "invalid_request_error", "Injected invalid request (fake)."),
})  # fmt: skip

PromptCache = Literal["warm", "cold", "instance"]
"""How the fake bills a prompt prefix marked with `cache_control`; see `FakeModel`."""
PROMPT_CACHES: tuple[PromptCache, ...] = get_args(PromptCache)

Responder = Callable[[dict[str, Any]], Any]
"""Given the request body (a dict), returns the answer's JSON (a dict) for a structured request
(JSON outputs, or a tool), or the text (a str) for a free-text request."""


def _check_rates(instance: Any, attribute: Any, rates: Mapping[str, float]) -> None:
    for name, rate in rates.items():
        if name not in FAULTS:
            raise FakeSpecError(f"unknown fault {name!r}; {_VALID}")
        if not 0.0 <= rate <= 1.0:  # also rejects NaN
            raise FakeSpecError(f"rate of {name} is {rate}, outside [0, 1]; {_VALID}")
    if math.fsum(rates.values()) > 1.0 + 1e-9:
        total = math.fsum(rates.values())
        raise FakeSpecError(f"fault rates add up to {total:g}, above 1; {_VALID}")


def _read_only(rates: Mapping[str, float]) -> Mapping[str, float]:
    return types.MappingProxyType(dict(rates))


@attrs.frozen
class Faults:
    """How often each fault is injected: fault name -> probability per request."""

    rates: Mapping[str, float] = attrs.field(converter=_read_only, validator=_check_rates)
    seed: int = 0


def parse_spec(spec: str) -> Faults:
    """`chaos`, `none`, or comma-separated `name=rate` items plus optional `seed=N`.

    E.g. "429=0.2,garbage=0.1,seed=7". `garbage` spreads its rate evenly over prose, fence,
    wrong_types, missing, empty and truncated; `errors` over 429, 529, 500 and 503. A preset may
    take a seed: "chaos,seed=3". Bad specs raise FakeSpecError with a one-line message.
    """
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or "" in items:
        raise FakeSpecError(f"empty item in fault spec {spec!r}; {_VALID}")
    rates: dict[str, float] = {}
    seed: int | None = None
    preset: str | None = None
    given: set[str] = set()
    for item in items:
        if item in ("chaos", "none"):
            if preset is not None or given:
                raise FakeSpecError(f"{item!r} cannot be combined with other rates; {_VALID}")
            preset = item
            continue
        name, eq, text = (part.strip() for part in item.partition("="))
        if not eq:
            raise FakeSpecError(f"{item!r} is not name=rate; {_VALID}")
        if name in given or (name == "seed" and seed is not None):
            raise FakeSpecError(f"{name!r} is given twice; {_VALID}")
        if name == "seed":
            try:
                seed = int(text)
            except ValueError:
                raise FakeSpecError(f"seed must be an integer, not {text!r}; {_VALID}") from None
            continue
        if name not in FAULTS and name not in GROUPS:
            raise FakeSpecError(f"unknown fault {name!r}; {_VALID}")
        if preset is not None:
            raise FakeSpecError(f"{preset!r} cannot be combined with other rates; {_VALID}")
        try:
            rate = float(text)
        except ValueError:
            raise FakeSpecError(
                f"rate of {name} must be a number, not {text!r}; {_VALID}"
            ) from None
        if not 0.0 <= rate <= 1.0:
            raise FakeSpecError(f"rate of {name} is {text}, outside [0, 1]; {_VALID}")
        given.add(name)
        for member in GROUPS.get(name, (name,)):
            rates[member] = rates.get(member, 0.0) + rate / len(GROUPS.get(name, (name,)))
    if preset == "chaos":
        return Faults(CHAOS, seed=CHAOS_SEED if seed is None else seed)
    return Faults(rates, seed=seed or 0)


@attrs.frozen
class Seen:
    """One request as the fake saw it."""

    body_hash: str
    """sha256 of the canonical JSON of the request body (of the raw bytes if not JSON)."""
    times: int
    """How many times this fake has counted this same body, this one included; 0 for a
    request refused by the rate limits, which is not counted."""
    fault: str | None
    """The fault injected, "rate_limit" for a request refused by the rate limits, or None."""
    request_id: str


class FakeModel:
    """The fake Messages API: validates, injects faults, answers; one log entry per request.

    For a free-text request, `wrong_types` and `missing` have nothing to damage, and `prose` and
    `fence` are what a text answer is anyway: those give a good answer, logged with fault None.
    So do `wrong_types` on a tool with no properties and `missing` on one with none required.

    `reset` and `timeout` give no answer. In-process the transport raises `httpx2.ConnectError`
    or `httpx2.ReadTimeout` at once (the SDK's `APIConnectionError`, `APITimeoutError`). The
    server resets the connection (SO_LINGER 0), or waits `timeout_seconds` and then closes it:
    a client whose read timeout is shorter times out, any other sees a dropped connection.

    A good answer's content depends only on the seed and the body; its `id` and request id
    also on how many times this instance has seen the body, so they stay unique per instance.
    A responder that raises or returns the wrong type gets a 500 that says so, marked
    `x-should-retry: false`. `set_faults` changes the faults (and so the seed) at runtime, e.g.
    to start or end a storm of 529s.

    Usage counts a token per 4 characters. The prompt up to its last `cache_control` block is
    billed by `prompt_cache`: "warm" (the default) reads it from the cache, as in a pipeline
    whose traffic keeps its cache warm; "cold" writes it, as to a cache that has always
    expired. Both are functions of the request alone: a request costs the same in any process,
    however often its run was resumed. "instance" writes each prefix the first time this
    instance answers it and reads it afterwards, for tests that want writes and reads from one
    fake: usage then depends on the instance's history, and a fresh process writes again.
    Writes are 1-hour ones if that block asks for `"ttl": "1h"`, else 5-minute ones. With
    `max_output`, every answer reports `max_tokens` output tokens, the most a budget must allow.

    A request takes `latency` seconds, spread uniformly by the fraction `jitter` (0.2 s with
    jitter 0.5: 0.1 to 0.3 s), drawn from a generator seeded by the fault seed at construction:
    the same order of requests takes the same times. Requests overlap meanwhile. One refused at
    the door (401, 400, or a rate limit) is answered at once.

    `rpm`, `itpm` and `otpm` are the rate limits (`machine.testing._fake_limits.Limits`; `clock`
    drives them, `wall_clock` dates their `-reset` headers). A request over one gets a 429 with
    `retry-after` and counts in `rate_limited`; it is logged with fault "rate_limit" and times
    0 but not counted for the fault draws, so a run draws the same faults with limits or
    without. Every answer after admission carries the `anthropic-ratelimit-*` headers.

    The Message Batches API is served too (`machine.testing._fake_batches`): a batch ends
    `processing_time` seconds after its creation by `clock` (0, the default: at the first call
    after the create), and each item is answered as `POST /v1/messages` answers its params,
    output faults included, never transport faults, latency or rate limits. `batch_faults`
    make items come back expired or errored, or lose the answer to a create whose batch exists
    all the same; `batches` lists every batch created, for a test to count.
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        faults: Faults | None = None,
        retry_after: float = 2.0,
        timeout_seconds: float = 0.5,
        latency: float = 0.0,
        jitter: float = 0.0,
        rpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        max_output: bool = False,
        prompt_cache: PromptCache = "warm",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        capabilities: Capabilities | None = None,
        aliases: Mapping[str, str] | None = None,
        processing_time: float = 0.0,
        batch_faults: BatchFaults | None = None,
    ) -> None:
        if prompt_cache not in PROMPT_CACHES:
            raise ValueError(f"prompt_cache is {prompt_cache!r}, not one of {PROMPT_CACHES}")
        if not latency >= 0.0 or not 0.0 <= jitter <= 1.0:  # also rejects NaN
            raise ValueError(f"latency is {latency}, jitter {jitter}: need 0 <= latency, 0-1")
        self.responder = responder
        self._faults = faults or Faults({})
        self.retry_after = retry_after
        self.timeout_seconds = timeout_seconds
        self.latency = latency
        """Mean seconds each request takes before it is answered, like a model thinking."""
        self.jitter = jitter
        self.max_output = max_output
        self.prompt_cache: PromptCache = prompt_cache
        self.requests: list[Seen] = []
        self.rate_limited = 0
        """How many requests the rate limits refused (each answered 429)."""
        self.in_flight = 0
        """How many requests are being answered now (e.g. still out their latency)."""
        self._limits = Limits(rpm=rpm, itpm=itpm, otpm=otpm, clock=clock, wall_clock=wall_clock)
        self._counts_input = itpm is not None
        self._latencies = random.Random(digest(self._faults.seed, "latency"))
        self._times: dict[str, int] = {}
        self._cache = Cache()
        self._lock = threading.Lock()  # the server answers from several threads
        self.capabilities = capabilities or Capabilities.load()
        """What each model accepts: the API's rules the fake holds requests to."""
        self.aliases = aliases if aliases is not None else PriceTable.load().aliases
        """Other names of the models (dated ids), as the price table knows them."""
        self._batches = Batches(
            self, self._lock, processing_time=processing_time,
            faults=batch_faults or BatchFaults(), clock=clock, wall_clock=wall_clock,
        )  # fmt: skip

    @property
    def faults(self) -> Faults:
        """The faults injected now."""
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Inject `faults` from the next request on (a request in flight keeps its own)."""
        with self._lock:
            self._faults = faults

    @property
    def batches(self) -> list[Batch]:
        """Every message batch created, oldest first, as of the clock now (a lost create's
        too): e.g. to assert one batch per intent."""
        return self._batches.seen()

    @property
    def batch_faults(self) -> BatchFaults:
        """The batch faults injected now."""
        return self._batches.faults

    def set_batch_faults(self, faults: BatchFaults) -> None:
        """Inject `faults` into the batches created from now on."""
        with self._lock:
            self._batches.faults = faults

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply | Hangup:
        """Answer one `POST /v1/messages` with this body and these headers."""
        return self._handle(body, headers)[1]

    def transport(self) -> httpx2.MockTransport:
        """An httpx2 transport that sends every request to this fake, in-process."""
        return httpx2.MockTransport(self._on_request)

    def client(self, api_key: str = "fake-key") -> anthropic.Anthropic:
        """An SDK client with max_retries=0 whose requests go to this fake, in-process."""
        import anthropic  # here, not at the top: the SDK takes seconds to import

        http_client = anthropic.DefaultHttpxClient(transport=self.transport())
        return anthropic.Anthropic(
            api_key=api_key,
            base_url="http://fake-anthropic.invalid",
            max_retries=0,
            http_client=http_client,
        )

    def _on_request(self, request: httpx2.Request) -> httpx2.Response:
        reply: Reply | Lines | Hangup
        if is_batches(request.url.path):
            method, url = request.method, str(request.url)
            reply = self._batch_request(method, url, request.content, request.headers)[1]
        elif request.method != "POST" or request.url.path != "/v1/messages":
            reply = not_found(request.method, request.url.path)
        else:
            reply = self.handle(request.content, request.headers)
        if isinstance(reply, Hangup) and reply.kind == "reset":
            raise httpx2.ConnectError("fake: connection reset by peer", request=request)
        if isinstance(reply, Hangup):
            # In-process there is no clock to wait on: the client's read timeout "fires" at once.
            raise httpx2.ReadTimeout("fake: no answer before the read timeout", request=request)
        headers = dict(reply.headers)
        if isinstance(reply, Lines):
            return httpx2.Response(reply.status, headers=headers, content=reply.content())
        return httpx2.Response(reply.status, headers=headers, json=reply.body)

    def _batch_request(
        self, method: str, url: str, raw: bytes, headers: Mapping[str, str]
    ) -> tuple[BatchCall, Reply | Lines | Hangup]:
        """Answer one request to the Message Batches API; `url` is absolute, for `results_url`
        to point back at the fake. See `machine.testing._fake_batches`."""
        return self._batches.handle(method, url, raw, headers)

    def _handle(
        self, raw: bytes, headers: Mapping[str, str], wait: Callable[[float], bool] = sleep
    ) -> tuple[Seen, Reply | Hangup]:
        """Answer one request; `wait(seconds)` spends the latency and says if it was cut short
        (the server is closing), which leaves the request unanswered."""
        try:
            body: Any = json.loads(raw)
            body_hash = digest(values.canonical(body))
        except ValueError:  # not JSON, or not UTF-8
            body, body_hash = None, hashlib.sha256(raw).hexdigest()
        refused = refuse(body, headers)
        if refused is None:
            refused = contract.check(body, headers, self.capabilities, self.aliases)
        metered = refused is None and bool(self._limits)
        # Outside the lock: no other request need wait while a long prompt is counted.
        charge = self._input_tokens(body) if metered and self._counts_input else 0
        with self._lock:
            faults = self._faults
            refusal = self._limits.admit(charge, body["max_tokens"]) if metered else None
            if refusal is not None:
                self.rate_limited += 1
                # Negative: never the id of a counted request, and unique all the same.
                request_id = self._request_id(faults.seed, body_hash, -self.rate_limited)
                limited = {"retry-after": str(refusal.retry_after), **self._limits.headers()}
                seen = Seen(body_hash, 0, "rate_limit", request_id)
                self.requests.append(seen)
                return seen, error(429, "rate_limit_error", refusal.message, request_id, **limited)
            times = self._times[body_hash] = self._times.get(body_hash, 0) + 1
            self.in_flight += 1
            seconds = 0.0 if refused else delay(self.latency, self.jitter, self._latencies)
        request_id = self._request_id(faults.seed, body_hash, times)
        fault: str | None = None
        reply: Reply | Hangup
        if refused is not None:
            reply = error(*refused, request_id)
        elif seconds > 0 and wait(seconds):
            reply = Hangup("reset", request_id)
        else:
            fault, reply = self._answer(body, body_hash, times, request_id, faults)
        with self._lock:
            if metered and isinstance(reply, Reply):
                used = reply.body["usage"]["output_tokens"] if reply.status == 200 else 0
                self._limits.settle(body["max_tokens"], used)
                reply = attrs.evolve(reply, headers={**reply.headers, **self._limits.headers()})
            elif metered:
                self._limits.settle(body["max_tokens"], 0)
            seen = Seen(body_hash, times, fault, request_id)
            self.requests.append(seen)
            self.in_flight -= 1
        return seen, reply

    @staticmethod
    def _request_id(seed: int, body_hash: str, times: int) -> str:
        return "req_fake_" + digest(seed, body_hash, times, "request")[:24]

    def _answer(
        self, body: Any, body_hash: str, times: int, request_id: str, faults: Faults
    ) -> tuple[str | None, Reply | Hangup]:
        fault = _draw(faults, body_hash, times)
        if fault is not None and fault in _ERRORS:
            status, kind, text = _ERRORS[fault]
            extra = {"retry-after": f"{self.retry_after:g}"} if fault == "429" else {}
            return fault, error(status, kind, text, request_id, **extra)
        if fault == "reset":
            return fault, Hangup("reset", request_id)
        if fault == "timeout":
            return fault, Hangup("timeout", request_id)
        model = contract.model_of(body, self.capabilities, self.aliases)
        assert model is not None  # contract.check answered 404 otherwise
        seed = digest(faults.seed, body_hash, "answer")
        thought = _thought(body, model, random.Random(digest(seed, "thinking")))
        signature = contract.sign(model.model, body["messages"], thought and thought.shown)
        try:
            fault, message = values.answer(
                body, random.Random(seed), fault, self.responder, thought, signature
            )
            visible = values.tokens(values.output_chars(message["content"]), model.tokenizer_ratio)
            thinking = thought.tokens if thought else 0
            if thinking + visible > body["max_tokens"] and message["stop_reason"] != "max_tokens":
                # Out of room: the model stops mid-answer, as the API cuts it at max_tokens.
                fault, message = values.answer(
                    body, random.Random(seed), "truncated", self.responder, thought, signature
                )
        except values.ResponderFailed as e:
            # Not the model's fault but the test's: say so, and tell the SDK not to retry.
            return None, error(500, "api_error", str(e), request_id, **{"x-should-retry": "false"})
        message["id"] = "msg_fake_" + digest(faults.seed, body_hash, times, "message")[:24]
        output = thinking + visible
        if self.max_output or message["stop_reason"] == "max_tokens":
            output = body["max_tokens"]  # a cut answer used all the room it had
        thinking = min(thinking, output)
        prompt = prompt_usage(body, self._cache_hits(remember=True), model.tokenizer_ratio)
        message["usage"] = {
            "input_tokens": prompt.pop("input_tokens"),
            "output_tokens": output,
            **prompt,
            "output_tokens_details": {"thinking_tokens": thinking},
            "service_tier": "standard",
        }
        return fault, Reply(200, {"request-id": request_id}, message)

    def _cache_hits(self, *, remember: bool) -> CacheHits:
        return functools.partial(self._cache.hits, self.prompt_cache, remember=remember)

    def _input_tokens(self, body: Mapping[str, Any]) -> int:
        """What a request counts against the input tokens per minute: all but cache reads."""
        model = contract.model_of(body, self.capabilities, self.aliases)
        ratio = model.tokenizer_ratio if model is not None else Decimal(1)
        usage = prompt_usage(body, self._cache_hits(remember=False), ratio)
        return int(usage["input_tokens"] + usage["cache_creation_input_tokens"])


def _thought(
    body: Mapping[str, Any], model: ModelCapabilities, rng: random.Random
) -> values.Thought | None:
    """The thinking before the answer, when the model thinks: a few dozen to a few hundred
    tokens (within a manual budget), shown as a summary or, at display "omitted", not at all."""
    if not contract.thinking_on(body, model):
        return None
    thinking = body.get("thinking")
    thinking = thinking if isinstance(thinking, Mapping) else {}
    budget = thinking.get("budget_tokens")
    most = min(256, budget if isinstance(budget, int) else 256)
    display = thinking.get("display") or model.thinking.display
    shown = "" if display == "omitted" else values.sentence(rng)
    return values.Thought(shown, rng.randint(min(16, most), most))


def _draw(faults: Faults, body_hash: str, times: int) -> str | None:
    """At most one fault, from one draw over the cumulative rates, in the order of FAULTS."""
    key = digest(faults.seed, body_hash, times, "fault")
    draw = int(key[:16], 16) / 2**64
    total = 0.0
    for name in FAULTS:
        total += faults.rates.get(name, 0.0)
        if draw < total:
            return name
    return None
