"""Model calls: `ctx.ask` through the anthropic SDK, journaled, retried, validated and priced.

Two loops that never mix. The transport loop (`machine.retry`) sends one request until the API
answers, journaling every attempt (`model.requested`, `model.failed`, `model.answered`); the
SDK's own retries are off. The validation loop reads the answer (`machine.model.output`); an answer
that does not fit is journaled (`output.rejected`) and the model is asked again with the errors
in the conversation. An API error is never pasted into a prompt.

On resume, an answer in the journal is read again instead of asked for: nothing is paid twice.
A journaled request whose hash differs from the one the code now builds stops the step, named
by step and call, rather than returning an answer to another question.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import cattrs

from runjournal.journal import Event, LimitReached, kinds
from runjournal.journal import events as k
from runjournal.machine import convert, journaled, retry
from runjournal.machine.errors import (
    AnswerCut,
    CallFailed,
    Failure,
    Killed,
    ModelCallFailed,
    ModelRefused,
    ModelUnavailable,
    NoValidAnswer,
)
from runjournal.machine.journaled import Calls, Placed
from runjournal.machine.kill_switch import Guard
from runjournal.machine.model import output, request
from runjournal.machine.model.capabilities import Capabilities, Effort, Mechanism, ModelCapabilities
from runjournal.machine.model.jsonschema import tool_for
from runjournal.machine.model.pricing import Price, PriceTable, Usage, cost, worst_case
from runjournal.machine.model.request import ThinkingOption
from runjournal.machine.pacing import Pace

if TYPE_CHECKING:
    import anthropic


T = TypeVar("T")

THROTTLES = (429, 529)
"""The statuses that say "slow down": rate limited, overloaded."""


@attrs.frozen
class Models:
    """How a run reaches models: a client factory, the prices, and what each model accepts.

    The client is made on the first `ask`, so a run that asks nothing needs no API key.
    """

    connect: Callable[[], anthropic.Anthropic]
    prices: PriceTable
    secrets: tuple[str, ...] = ()
    """Strings the journal must never hold: the API key, whichever model answers."""
    capabilities: Capabilities = attrs.field(factory=Capabilities.load)
    """What each model documents it accepts: how requests are built and checked."""
    unavailable: str | None = None
    """Why no client can be made (no API key): a machine that names its model is refused
    before its run starts, rather than failing at its first ask."""


def env_secrets() -> tuple[str, ...]:
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    return (key,) if key else ()


def anthropic_api(
    prices: PriceTable | None = None, capabilities: Capabilities | None = None
) -> Models:
    """The real Anthropic API, with `ANTHROPIC_API_KEY` (and `ANTHROPIC_BASE_URL` if set)."""
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    unavailable = None if key else _NO_KEY

    def connect() -> anthropic.Anthropic:
        import anthropic  # only when a step asks: importing the SDK takes a while

        if unavailable is not None:
            raise ModelUnavailable(unavailable)
        return anthropic.Anthropic(api_key=key, max_retries=0)

    return Models(
        connect,
        prices or PriceTable.load(),
        secrets=env_secrets(),
        capabilities=capabilities or Capabilities.load(),
        unavailable=unavailable,
    )


_NO_KEY = (
    "ANTHROPIC_API_KEY is not set: set it to call the Anthropic API, "
    "or run offline with --fake-model (e.g. --fake-model none)"
)


class ModelSession:
    """The model side of one executing run: its client, made once, and the pace of its
    requests; shared by the threads of a parallel step."""

    def __init__(
        self, models: Models, retrying: retry.Retrying, guard: Guard, pace: Pace | None = None
    ) -> None:
        self.models = models
        self.retrying = retrying
        self.guard = guard
        self.pace = pace or Pace()
        self.clock = retrying.clock
        self._client: anthropic.Anthropic | None = None
        self._lock = threading.Lock()
        self._tools: dict[type, dict[str, Any]] = {}
        self._answers: cattrs.Converter | None = None
        self._plans: dict[tuple[Any, ...], request.Plan] = {}

    def tool(self, schema: type) -> dict[str, Any]:
        """The tool a model answers `schema` through, derived once per run."""
        with self._lock:
            if schema not in self._tools:
                self._tools[schema] = tool_for(schema)
            return self._tools[schema]

    def plan(
        self,
        schema: type,
        model: ModelCapabilities,
        thinking: ThinkingOption,
        effort: Effort | None,
        max_tokens: int,
        temperature: float | None,
    ) -> request.Plan:
        """How asks for `schema` with these settings are made, planned once per run: every
        item of a `ctx.map` asks the same way."""
        key = (schema, model.model, thinking, effort, max_tokens, temperature)
        with self._lock:
            try:
                found = self._plans.get(key)
            except TypeError:  # a setting no plan could take, such as thinking=[...]
                found = None
        if found is None:
            found = request.plan(
                self.models.capabilities,
                model,
                tool=None if schema is str else self.tool(schema),
                thinking=thinking,
                effort=effort,
                max_tokens=max_tokens,
                temperature=temperature,
            )
            with self._lock:
                self._plans[key] = found
        return found

    def answers(self, converter: cattrs.Converter) -> cattrs.Converter:
        """The machine's converter made to refuse keys a class does not have, as the schema
        does; made on the first ask, after the pipeline has registered its hooks."""
        with self._lock:
            if self._answers is None:
                self._answers = convert.answers(converter)
            return self._answers

    def client(self) -> anthropic.Anthropic:
        with self._lock:
            if self._client is None:
                self._client = self.models.connect()
            return self._client

    def abandon(self) -> None:
        """Close the client, and the connection of any request still waiting on it."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def ask(
        self,
        calls: Calls,
        schema: type[T],
        *,
        prompt: str,
        system: str | None,
        model: str | None,
        max_tokens: int,
        retries: int,
        cache_system: bool,
        thinking: ThinkingOption,
        effort: Effort | None,
        temperature: float | None,
        key: str | None,
    ) -> T:
        name = schema.__name__
        placed = journaled.place(calls, "ask", name, key)
        if model is None:
            msg = f"step {calls.step!r}: ctx.ask needs model=, e.g. model='claude-haiku-5-5'"
            raise ValueError(msg)
        # Priced and checked before anything is sent: an unknown model is an error, never $0,
        # and a request the model's documented rules refuse costs nothing.
        price = self.models.prices.price(model, on=_day(self.clock()))
        model_caps = self.models.capabilities.of(price.model)
        plan = self.plan(schema, model_caps, thinking, effort, max_tokens, temperature)
        tool_name = None if plan.tool is None else str(plan.tool["name"])
        asking = _Ask(self, calls, placed, name, price, plan.mechanism)
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        errors: list[str] = []
        for round_ in range(retries + 1):
            body = request.build(
                model,
                plan,
                system=system,
                messages=messages,
                max_tokens=max_tokens,
                cache_system=cache_system,
            )
            response = asking.answer(round_, body)
            answer = output.read_answer(
                response, schema, tool=tool_name, converter=self.answers(calls.converter)
            )
            if isinstance(answer, output.Accepted):
                return answer.value
            asking.rejected(round_, answer)
            errors = answer.errors
            where = f"run {calls.run_id}, step {calls.step!r}, call {placed.call}"
            if answer.stop == "refusal":
                raise ModelRefused(f"{where}: {errors[0]}; asking again the same is no use")
            if answer.stop == "model_context_window_exceeded":
                raise AnswerCut(f"{where}: {errors[0]}")
            if answer.stop == "max_tokens":
                # The same question with twice the room, up to the model's limit: the limits
                # check the larger request's worst case before it is sent.
                if max_tokens >= model_caps.max_output_tokens:
                    msg = (
                        f"{where}: the answer was cut off at max_tokens {max_tokens:,}, "
                        f"{model}'s most; ask for less"
                    )
                    raise AnswerCut(msg)
                max_tokens = min(2 * max_tokens, model_caps.max_output_tokens)
                continue
            messages += output.feedback(response, answer, schema_name=name, tool=tool_name)
        msg = (
            f"run {calls.run_id}, step {calls.step!r}, call {placed.call}: {retries + 1} answers "
            f"in a row did not fit {name}; the last: {'; '.join(errors)}"
        )
        raise NoValidAnswer(msg)


def request_timeout(max_tokens: int) -> anthropic.Timeout:
    """How long one request may take: the SDK's own allowance for `max_tokens` (an hour for
    128,000 tokens), and never under its default of 10 minutes.

    Given explicitly, because the SDK refuses outright a non-streaming request it expects to
    take over 10 minutes (above about 21,000 `max_tokens`), which a thinking model's answer, or
    a cut answer asked again with twice the room, soon needs.
    """
    import anthropic

    return anthropic.Timeout(max(600.0, 3600.0 * max_tokens / 128_000), connect=5.0)


def _day(t: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).date()


def _rounds(recorded: list[Event]) -> dict[int, dict[str, Event]]:
    """The journaled events of one ask, by round and kind."""
    rounds: dict[int, dict[str, Event]] = {}
    for e in recorded:
        rounds.setdefault(e.data["round"], {})[e.kind] = e
    return rounds


def hash_request(request: dict[str, Any], redact: Callable[[str], str]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Of the request as the journal keeps it: a secret in the prompt is [redacted] in the state
    # a resume folds, and the request built from that must still be recognised as this one.
    return hashlib.sha256(redact(canonical).encode()).hexdigest()[:16]


class _Ask:
    """One `ctx.ask` call: its place, its journaled rounds, and the events it writes."""

    def __init__(
        self,
        session: ModelSession,
        calls: Calls,
        placed: Placed,
        name: str,
        price: Price,
        mechanism: Mechanism,
    ) -> None:
        self.session = session
        self.guard = session.guard
        self.calls = calls
        self.placed = placed
        self.call = placed.call
        self.name = name
        self.price = price
        self.rounds = _rounds(placed.events)
        self.mechanism = mechanism

    def _place(self, round_: int) -> dict[str, Any]:
        """The fields every event of this ask has: its place, its schema, its round."""
        return {"call": self.call, "name": self.name, "round": round_}

    def answer(self, round_: int, request: dict[str, Any]) -> dict[str, Any]:
        """The response to `request`: from the journal if it holds one, else from the API."""
        calls = self.calls
        request_hash = hash_request(request, calls.writer.journal.redact)
        held = self.rounds.get(round_, {})
        send = partial(self._send, round_, request, request_hash)
        return journaled.ask_round(
            calls, self.placed, self.name, round_, request, request_hash, held, send
        )

    def _send(self, round_: int, request: dict[str, Any], request_hash: str) -> dict[str, Any]:
        session, writer, step, guard = self.session, self.calls.writer, self.calls.step, self.guard
        request_ref = writer.blob(json.dumps(request, ensure_ascii=False))
        client = session.client()
        worst_tokens, worst_usd = worst_case(request, self.price)
        sent: list[Event] = []  # the model.requested of the attempt in progress

        pace = session.pace
        # The API's input tokens are about 4 characters each: the rate buckets' estimate, put
        # right by the usage the answer reports.
        input_estimate = len(json.dumps(request, ensure_ascii=False)) // 4
        counted_already: set[int] = set()  # throttles of a decrease already made

        def attempt(n: int) -> tuple[Any, float, int]:
            guard.before_request()
            ticket = pace.acquire(input_estimate, request["max_tokens"], check=guard.check)
            try:
                sent[:] = [
                    writer.commit(
                        step,
                        kinds.ModelRequested(
                            **self._place(round_),
                            attempt=n,
                            model=request["model"],
                            request_hash=request_hash,
                            request=request_ref,
                            mechanism=self.mechanism,
                            worst_case_usd=float(worst_usd),
                            worst_case_tokens=worst_tokens,
                        ),
                        reserve=guard.reserve(worst_tokens, worst_usd),
                    )
                ]
            except BaseException as e:
                pace.failed(ticket, throttled=False, retry_after=None)
                if isinstance(e, LimitReached):
                    raise guard.limit_reached(e) from e
                raise
            self.calls.checkpoint("model.before")
            started = time.perf_counter()
            try:
                raw = guard.call(
                    lambda: client.messages.with_raw_response.create(
                        **request, timeout=request_timeout(request["max_tokens"])
                    )
                )
                message = raw.parse()
            except Killed:
                pace.failed(ticket, throttled=False, retry_after=None)
                # Given up on: it may still be billed, at worst its worst case.
                abandoned = Failure(False, None, "abandoned", "the run was killed", None, None)
                failed(n, abandoned, None)
                session.abandon()
                raise
            except BaseException as e:
                failure = retry.classify(e, now=session.clock())
                throttled = failure.status in THROTTLES
                new = pace.failed(ticket, throttled=throttled, retry_after=failure.retry_after)
                if throttled and not new:
                    counted_already.add(n)
                raise
            usage = getattr(message, "usage", None)
            pace.answered(
                ticket,
                input_tokens=(getattr(usage, "input_tokens", 0) or 0)
                + (getattr(usage, "cache_creation_input_tokens", 0) or 0),
                output_tokens=getattr(usage, "output_tokens", 0) or 0,
                headers=raw.headers,
            )
            return message, time.perf_counter() - started, n

        def outcome() -> dict[str, Any]:
            """What an attempt's outcome repeats of its request: the projection needs it."""
            return {
                **self._place(round_),
                "model": request["model"],
                "requested_at": sent[0].at,
                "worst_case_usd": float(worst_usd),
                "worst_case_tokens": worst_tokens,
            }

        def failed(n: int, failure: Failure, wait: float | None) -> None:
            if n not in counted_already:
                guard.record(False)
            writer.commit(
                step,
                kinds.ModelFailed(
                    **outcome(),
                    attempt=n,
                    status=failure.status,
                    error_type=failure.error_type,
                    message=failure.message,
                    request_id=failure.request_id,
                    retryable=failure.retryable,
                    delay_s=wait,
                ),
            )

        try:
            message, latency, attempts = session.retrying.call(attempt, failed)
        except CallFailed as e:
            msg = f"run {self.calls.run_id}, step {step!r}, call {self.call}: {e}"
            raise ModelCallFailed(msg) from e
        guard.record(True)
        body = message.model_dump(mode="json", exclude_none=True)
        usage = Usage.from_api(body.get("usage", {}))
        # Priced by the day it was answered: a price that changed since the ask began applies.
        price = session.models.prices.price(request["model"], on=_day(session.clock()))
        writer.commit(
            step,
            kinds.ModelAnswered(
                **outcome(),
                attempt=attempts,
                request_hash=request_hash,
                mechanism=self.mechanism,
                request_id=getattr(message, "_request_id", None),
                stop_reason=body.get("stop_reason"),
                stop_details=body.get("stop_details"),
                content=body.get("content", []),
                usage=attrs.asdict(usage),
                cost_usd=float(cost(price, usage)),
                latency_ms=round(latency * 1000, 1),
            ),
        )
        self.calls.checkpoint("model.answered")
        return {
            "content": body.get("content", []),
            "stop_reason": body.get("stop_reason"),
            "stop_details": body.get("stop_details"),
        }

    def rejected(self, round_: int, answer: output.Rejected) -> None:
        if k.OUTPUT_REJECTED in self.rounds.get(round_, {}):
            return  # journaled before the crash
        self.calls.writer.commit(
            self.calls.step,
            kinds.OutputRejected(**self._place(round_), errors=answer.errors, raw=answer.raw),
        )
