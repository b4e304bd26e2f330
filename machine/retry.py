"""The only retry loop in runjournal: which failures deserve another attempt, and when.

Model calls and irreversible actions share it. The SDK client is built with `max_retries=0`, so
every attempt passes through `call`, and the caller journals each failure from `on_failure`
before any wait. Time and randomness come in as arguments (`Retrying` holds one run's policy,
sleep, jitter and clock): nothing here reads a clock or sleeps on its own, and there is no
module state. A journal error raised during an attempt is never classified: it propagates.

Failures are classified by HTTP status, never by exception class, because the SDK's class for a
status has changed between versions (529 was not an `InternalServerError`, now it is).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import sys
from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

import attrs

from runjournal.journal import JournalError
from runjournal.machine.errors import CallFailed, Failure, Retryable

T = TypeVar("T")

RETRYABLE_STATUS: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""Statuses that say "try again later": timeouts, lock conflicts, rate limits, server trouble."""

FATAL_STATUS: frozenset[int] = frozenset({400, 401, 403, 404, 413, 422, 501, 505})
"""Statuses that the same request will get again. Any 4xx not in RETRYABLE_STATUS is fatal too.

Other 5xx are retried, as the SDK does: the server says the fault is its own, and the ones not
named here mostly come from proxies and CDNs in front of it (e.g. 520-524), which recover.
501 (Not Implemented) and 505 (HTTP Version Not Supported) are the exceptions: by definition
the server will never do what was asked, so retrying only spends time.
"""

_MESSAGE_LIMIT = 300

_Classes: TypeAlias = tuple[type[BaseException], ...]


@attrs.frozen
class RetryPolicy:
    """How many attempts a call gets and how long to wait between them."""

    max_attempts: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    """Attempts in all, the first included."""
    base: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    """Seconds: the backoff before retry n is uniform(0, min(cap, base * 2**(n-1)))."""
    cap: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    """A server's retry-after longer than this is cut to this."""


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """retry-after-ms (float milliseconds) first, then retry-after as (float) seconds, then as an
    HTTP date relative to `now` (epoch seconds). Negative -> 0. Unparseable -> None. Header names
    are case-insensitive."""
    lower = {name.lower(): value for name, value in headers.items()}
    ms = _number(lower.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000, 0.0)
    value = lower.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT; "-0000" parses as naive
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - now, 0.0)


def classify(exc: BaseException, *, now: float) -> Failure:
    """By status code, never by exception class: anthropic.APIStatusError (use .status_code,
    .response.headers, .request_id, .type / the body's error.type); `x-should-retry: true|false`
    in the response headers overrides the status rule; anthropic.APIConnectionError and
    APITimeoutError are retryable (error_type "connection_error" / "timeout"); `Retryable` is
    retryable with its retry_after; duck-typed HTTP errors from other clients an action might use
    (an exception with an int `status_code` or `code`/`status` attribute and optional headers, or a
    `.response` with `.status_code` and `.headers` — e.g. httpx/httpx2 HTTPStatusError,
    urllib.error.HTTPError) by their status; httpx2.TransportError / builtin ConnectionError /
    TimeoutError (socket-level) retryable; everything else fatal."""
    name = type(exc).__name__
    text = _one_line(str(exc))
    status = _status(exc)
    sdk_error = isinstance(exc, _loaded("anthropic.APIStatusError"))
    # Below 400 a status is no HTTP failure (the SDK's APIResponseValidationError carries the
    # 200 it could not read) unless the SDK says it is: an error event inside a stream arrives on
    # the stream's 200 response, and is then fatal like any status we do not know to retry.
    if status is not None and (status >= 400 or sdk_error):
        return _http_failure(exc, status, now, sdk_error=sdk_error)
    if isinstance(exc, _loaded("anthropic.APITimeoutError")):
        return Failure(True, None, "timeout", "request timed out", None, None)
    if isinstance(exc, _loaded("anthropic.APIConnectionError")):
        cause = exc.__cause__
        message = (
            text if cause is None else f"{text} ({_one_line(str(cause)) or type(cause).__name__})"
        )
        return Failure(True, None, "connection_error", message, None, None)
    if isinstance(exc, Retryable):
        return Failure(True, None, name, text, None, exc.retry_after)
    # Middleware in recent SDKs raises this to ask for a retry.
    if isinstance(exc, _loaded("anthropic.RetryableError")):
        return Failure(True, None, name, text, None, None)
    # An action may use httpx or httpx2 directly; the SDK wraps these in its own classes.
    timeouts: _Classes = (
        TimeoutError,
        *_loaded("httpx2.TimeoutException", "httpx.TimeoutException"),
    )
    if isinstance(exc, timeouts):
        return Failure(True, None, "timeout", text or name, None, None)
    transport: _Classes = (
        ConnectionError,
        *_loaded("httpx2.TransportError", "httpx.TransportError"),
    )
    if isinstance(exc, transport):
        return Failure(True, None, "connection_error", text or name, None, None)
    return Failure(False, None, name, text or name, None, None)


def delay(policy: RetryPolicy, attempt: int, failure: Failure, rng: random.Random) -> float:
    """The wait before attempt `attempt + 1`: the server's retry_after (capped at
    max_retry_after) when it gave one, else full-jitter backoff."""
    if failure.retry_after is not None:
        return max(0.0, min(failure.retry_after, policy.max_retry_after))
    # The exponent is bounded so a huge attempt number cannot overflow a float.
    ceiling = min(policy.cap, policy.base * 2.0 ** min(attempt - 1, 1000))
    return rng.uniform(0.0, ceiling)


def call(
    fn: Callable[[int], T],
    *,
    policy: RetryPolicy,
    on_failure: Callable[[int, Failure, float | None], None],
    sleep: Callable[[float], None],
    rng: random.Random,
    clock: Callable[[], float],
    classify: Callable[..., Failure] = classify,
) -> T:
    """Call fn(attempt) for attempt = 1, 2, ... until it returns. After each failure call
    on_failure(attempt, failure, wait) — wait is None when no retry follows — then sleep(wait).
    Raise CallFailed (from the last exception) when the failure is not retryable or attempts
    are used up. KeyboardInterrupt/SystemExit and other BaseExceptions pass through untouched."""
    attempt = 1
    while True:
        try:
            return fn(attempt)
        except Exception as exc:  # BaseException (interrupts, exits) is not ours to handle
            failure = classify(exc, now=clock())
            if not failure.retryable or attempt >= policy.max_attempts:
                on_failure(attempt, failure, None)
                raise CallFailed(failure, attempts=attempt, exhausted=failure.retryable) from exc
            wait = delay(policy, attempt, failure, rng)
            # Journaled before the wait: a crash while sleeping still leaves the attempt on record.
            on_failure(attempt, failure, wait)
        sleep(wait)
        attempt += 1


def _loaded(*names: str) -> _Classes:
    """The exception classes named "module.Class" whose module is imported, for isinstance.

    An exception can only be an instance of a class already imported, so this never imports:
    loading the SDK takes over a second, and a run that asks no model should not pay for it.
    """
    found: list[type[BaseException]] = []
    for dotted in names:
        module, _, name = dotted.rpartition(".")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, on itself or on its `.response`."""
    for value in (
        _get(exc, "status_code"),
        _get(exc, "status"),
        _get(exc, "code"),
        _get(_get(exc, "response"), "status_code"),
    ):
        # `code` means other things elsewhere (websocket close codes, errno names): only a
        # number in the HTTP range counts.
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _http_failure(exc: BaseException, status: int, now: float, *, sdk_error: bool) -> Failure:
    response = _get(exc, "response")
    headers = _headers(_get(exc, "headers")) or _headers(_get(response, "headers"))
    should_retry = headers.get("x-should-retry", "").strip().lower()
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    elif status in RETRYABLE_STATUS or status in FATAL_STATUS:
        retryable = status in RETRYABLE_STATUS
    else:
        retryable = 500 <= status <= 599
    error_type = message = None
    request_id = _text(headers.get("request-id")) or _text(headers.get("x-request-id"))
    if sdk_error:
        body = _get(exc, "body")
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        error_type = _text(_get(exc, "type")) or _text(error.get("type"))
        message = _text(_get(exc, "api_message")) or _text(error.get("message"))
        request_id = _text(_get(exc, "request_id")) or request_id
    # Else a reason phrase, never str(exc): other clients put the URL (which may hold a key) or
    # the whole response body in their message.
    message = (
        message
        or _text(_get(exc, "reason"))
        or _text(_get(response, "reason_phrase"))
        or _text(_get(response, "reason"))
        or ""
    )
    return Failure(
        retryable=retryable,
        status=status,
        error_type=error_type or type(exc).__name__,
        message=_one_line(message),
        request_id=request_id,
        retry_after=parse_retry_after(headers, now),
    )


def _get(obj: object, name: str) -> object:
    """`obj.name`, or None: classifying must not fail on an odd exception's properties."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _headers(raw: object) -> dict[str, str]:
    """Any headers object with `.items()` (httpx Headers, email.message.Message, a dict), with
    names in lower case."""
    items = _get(raw, "items")
    if not callable(items):
        return {}
    try:
        return {str(name).lower(): str(value) for name, value in items()}
    except Exception:  # not a headers object after all
        return {}


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


@attrs.frozen
class Retrying:
    """How one run retries what fails, model calls and actions alike."""

    policy: RetryPolicy
    sleep: Callable[[float], None]
    rng: random.Random
    clock: Callable[[], float]

    def call(
        self,
        fn: Callable[[int], T],
        on_failure: Callable[[int, Failure, float | None], None],
        classify: Callable[..., Failure] = classify,
    ) -> T:
        def classify_or_raise(exc: BaseException, *, now: float) -> Failure:
            if isinstance(exc, JournalError):
                raise exc  # the journal's trouble is not the call's: never retried, never hidden
            return classify(exc, now=now)

        return call(
            fn,
            policy=self.policy,
            on_failure=on_failure,
            sleep=self.sleep,
            rng=self.rng,
            clock=self.clock,
            classify=classify_or_raise,
        )
