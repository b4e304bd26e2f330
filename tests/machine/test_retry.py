"""Tests for `machine.retry`: classifying failures, parsing retry-after, and the retry loop.

SDK exceptions are real: a real client, whose transport answers with the status and headers a
test asks for, raises them. Time and randomness are fakes: nothing here really sleeps.
"""

from __future__ import annotations

import email.message
import email.utils
import random
import urllib.error
from collections.abc import Callable
from typing import Any, ClassVar

import anthropic
import attrs
import httpx2
import pytest

from runjournal.machine.errors import CallFailed, Failure, Retryable
from runjournal.machine.retry import (
    FATAL_STATUS,
    RETRYABLE_STATUS,
    RetryPolicy,
    call,
    classify,
    delay,
    parse_retry_after,
)

NOW = 1_750_000_000.0


def sdk_error(handler: Callable[[httpx2.Request], httpx2.Response]) -> Exception:
    """What `messages.create` raises when the transport answers with `handler`."""
    client = anthropic.Anthropic(
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(anthropic.AnthropicError) as info:
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    return info.value


def api_error(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    error_type: str = "api_error",
    message: str = "boom",
    request_id: str = "req_1",
) -> Exception:
    """The SDK's exception for a JSON error response with this status and these headers."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return sdk_error(
        lambda _: httpx2.Response(
            status, headers={"request-id": request_id, **(headers or {})}, json=body
        )
    )


def raising(exc: BaseException) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc

    return handler


@attrs.define
class Loop:
    """Runs `call` with a fake clock, a seeded rng, and a sleep that only records."""

    events: list[tuple[Any, ...]] = attrs.Factory(list)

    @property
    def waits(self) -> list[float]:
        return [e[1] for e in self.events if e[0] == "sleep"]

    @property
    def failures(self) -> list[tuple[int, Failure, float | None]]:
        return [e[1:] for e in self.events if e[0] == "failed"]

    def run(self, fn: Callable[[int], Any], policy: RetryPolicy | None = None) -> Any:
        return call(
            fn,
            policy=policy or RetryPolicy(),
            on_failure=lambda n, f, w: self.events.append(("failed", n, f, w)),
            sleep=lambda w: self.events.append(("sleep", w)),
            rng=random.Random(7),
            clock=lambda: NOW,
        )


def failing(*errors: BaseException, result: str = "ok") -> tuple[Callable[[int], str], list[int]]:
    """A function that raises `errors` one per call, then returns `result`; and its calls."""
    calls: list[int] = []

    def fn(attempt: int) -> str:
        calls.append(attempt)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUS))
def test_retryable_status(status: int) -> None:
    """Each status in RETRYABLE_STATUS is retryable, with type and request id from the API."""
    f = classify(api_error(status, error_type="rate_limit_error", request_id="req_7"), now=NOW)
    assert (f.retryable, f.status, f.error_type, f.request_id) == (
        True,
        status,
        "rate_limit_error",
        "req_7",
    )


@pytest.mark.parametrize("status", sorted(FATAL_STATUS))
def test_fatal_status(status: int) -> None:
    """Each status in FATAL_STATUS (501 and 505 included) is not retried."""
    f = classify(api_error(status, error_type="invalid_request_error"), now=NOW)
    assert (f.retryable, f.status, f.error_type) == (False, status, "invalid_request_error")


@pytest.mark.parametrize("status", [402, 405, 412, 418, 425, 431, 499])
def test_other_4xx_fatal(status: int) -> None:
    """A 4xx in neither set is fatal."""
    assert classify(api_error(status), now=NOW).retryable is False


@pytest.mark.parametrize("status", [507, 511, 520, 524, 599])
def test_other_5xx_retried(status: int) -> None:
    """A 5xx in neither set is retried, as the SDK would."""
    assert classify(api_error(status), now=NOW).retryable is True


def test_529_retried_whatever_its_class() -> None:
    """529 is retried as OverloadedError and as a bare APIStatusError (older SDK mappings)."""
    real = api_error(529, error_type="overloaded_error")
    assert isinstance(real, anthropic.APIStatusError)
    bare = anthropic.APIStatusError("overloaded", response=real.response, body=real.body)
    for exc in (real, bare):
        f = classify(exc, now=NOW)
        assert (f.retryable, f.status, f.error_type) == (True, 529, "overloaded_error")


@pytest.mark.parametrize(
    ("status", "header", "retryable"),
    [(400, "true", True), (401, "TRUE", True), (529, "false", False), (503, "false", False)],
)
def test_x_should_retry_overrides_status(status: int, header: str, retryable: bool) -> None:
    """`x-should-retry` wins over the status rule, both ways."""
    f = classify(api_error(status, {"x-should-retry": header}), now=NOW)
    assert f.retryable is retryable


def test_unknown_x_should_retry_ignored() -> None:
    """A value other than true/false leaves the status rule in charge."""
    assert classify(api_error(400, {"x-should-retry": "maybe"}), now=NOW).retryable is False


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250.5"}, 0.2505),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "1.25"}, 1.25),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW + 30)}, 30.0),  # "-0000": naive
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "-10"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """ms first, then seconds, then an HTTP date; negative is 0 and garbage is None."""
    assert parse_retry_after(headers, NOW) == pytest.approx(expected)


def test_retry_after_from_real_responses() -> None:
    """Retry-after headers on the SDK's exceptions reach the Failure, a date against `now`."""
    date = email.utils.formatdate(NOW + 5, usegmt=True)
    assert classify(api_error(429, {"retry-after": "2"}), now=NOW).retry_after == 2.0
    assert classify(api_error(503, {"retry-after-ms": "250"}), now=NOW).retry_after == 0.25
    assert classify(api_error(529, {"retry-after": date}), now=NOW).retry_after == 5.0
    assert classify(api_error(500), now=NOW).retry_after is None


def test_429_retry_after_sleeps_exactly() -> None:
    """A 429 with `retry-after: 2` makes the loop sleep exactly 2.0, then try again."""
    fn, calls = failing(api_error(429, {"retry-after": "2"}, error_type="rate_limit_error"))
    loop = Loop()
    assert loop.run(fn) == "ok"
    assert loop.waits == [2.0]
    assert calls == [1, 2]


def test_retry_after_cut_to_max() -> None:
    """A retry-after above max_retry_after waits max_retry_after."""
    policy = RetryPolicy(max_retry_after=10.0)
    f = classify(api_error(429, {"retry-after": "3600"}), now=NOW)
    assert delay(policy, 1, f, random.Random(0)) == 10.0
    loop = Loop()
    loop.run(failing(api_error(429, {"retry-after": "3600"}))[0], policy)
    assert loop.waits == [10.0]


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 7, 10, 2000])
def test_full_jitter_bounds(attempt: int) -> None:
    """Backoff draws stay in [0, min(cap, base*2**(n-1))], vary, and reach near the top."""
    policy = RetryPolicy()
    ceiling = min(policy.cap, policy.base * 2 ** min(attempt - 1, 100))
    rng = random.Random(42)
    f = classify(api_error(500), now=NOW)
    draws = [delay(policy, attempt, f, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert len(set(draws)) > 1000
    assert max(draws) > 0.95 * ceiling
    assert min(draws) < 0.05 * ceiling


def test_400_makes_one_attempt() -> None:
    """A 400 is not retried: one attempt, no sleep, a message a person can act on."""
    exc = api_error(
        400,
        error_type="invalid_request_error",
        message="max_tokens: field required",
        request_id="req_9",
    )
    fn, calls = failing(exc)
    loop = Loop()
    with pytest.raises(CallFailed) as info:
        loop.run(fn)
    assert calls == [1]
    assert loop.waits == []
    assert (info.value.attempts, info.value.exhausted) == (1, False)
    assert info.value.__cause__ is exc
    assert str(info.value) == (
        "not retryable: 400 invalid_request_error: max_tokens: field required (request req_9)"
    )


def test_exhausting_attempts() -> None:
    """A 529 every time stops after max_attempts, saying so."""
    errors = [
        api_error(529, error_type="overloaded_error", message="Overloaded", request_id="req_123")
        for _ in range(6)
    ]
    fn, calls = failing(*errors)
    loop = Loop()
    with pytest.raises(CallFailed) as info:
        loop.run(fn)
    assert calls == [1, 2, 3, 4, 5, 6]
    assert len(loop.waits) == 5
    assert (info.value.attempts, info.value.exhausted) == (6, True)
    assert info.value.failure.error_type == "overloaded_error"
    assert info.value.__cause__ is errors[-1]
    assert str(info.value) == (
        "gave up after 6 attempts: 529 overloaded_error: Overloaded (request req_123)"
    )


def test_on_failure_sees_each_attempt_before_its_sleep() -> None:
    """on_failure gets every attempt with its wait, before the sleep, and None on the last."""
    fn, _ = failing(*[api_error(503) for _ in range(3)])
    loop = Loop()
    with pytest.raises(CallFailed):
        loop.run(fn, RetryPolicy(max_attempts=3))
    kinds = [e[0] for e in loop.events]
    assert kinds == ["failed", "sleep", "failed", "sleep", "failed"]
    assert [(n, w) for n, _, w in loop.failures] == [
        (1, loop.waits[0]),
        (2, loop.waits[1]),
        (3, None),
    ]
    assert all(f.status == 503 for _, f, _ in loop.failures)


def test_connection_errors_and_timeouts_retried() -> None:
    """The SDK's connection error and timeout are retried, and the loop goes on to succeed."""
    refused = sdk_error(raising(httpx2.ConnectError("[Errno 111] Connection refused")))
    timeout = sdk_error(raising(httpx2.ReadTimeout("timed out")))
    assert isinstance(refused, anthropic.APIConnectionError)
    assert isinstance(timeout, anthropic.APITimeoutError)
    c, t = classify(refused, now=NOW), classify(timeout, now=NOW)
    assert (c.retryable, c.status, c.error_type) == (True, None, "connection_error")
    assert "Connection refused" in c.message
    assert (t.retryable, t.status, t.error_type) == (True, None, "timeout")
    loop = Loop()
    assert loop.run(failing(refused, timeout, result="answer")[0]) == "answer"
    assert [f.error_type for _, f, _ in loop.failures] == ["connection_error", "timeout"]


def test_retryable_raised_by_an_action() -> None:
    """`Retryable` is retried, waiting its retry_after."""
    f = classify(Retryable("printer busy", retry_after=3.0), now=NOW)
    assert (f.retryable, f.message, f.retry_after) == (True, "printer busy", 3.0)
    loop = Loop()
    assert loop.run(failing(Retryable("busy", retry_after=3.0))[0]) == "ok"
    assert loop.waits == [3.0]


def test_urllib_http_error_with_retry_after() -> None:
    """urllib's HTTPError is classified by its status and Retry-After; its URL is not kept."""
    headers = email.message.Message()
    headers["Retry-After"] = "7"
    headers["X-Request-Id"] = "abc"
    url = "https://hooks.example/send?token=sekrit"
    busy = urllib.error.HTTPError(url, 503, "Service Unavailable", headers, None)
    f = classify(busy, now=NOW)
    assert (f.retryable, f.status, f.retry_after, f.request_id) == (True, 503, 7.0, "abc")
    assert (f.error_type, f.message) == ("HTTPError", "Service Unavailable")
    assert "sekrit" not in f.describe()
    gone = urllib.error.HTTPError(url, 404, "Not Found", email.message.Message(), None)
    assert classify(gone, now=NOW).retryable is False
    loop = Loop()
    loop.run(failing(busy)[0])
    assert loop.waits == [7.0]


def test_httpx2_status_error_and_attribute_duck_typing() -> None:
    """httpx2's HTTPStatusError (via .response) and a bare `status_code` attribute both count."""
    request = httpx2.Request("POST", "https://api.example/charge")
    response = httpx2.Response(429, headers={"Retry-After": "4"}, request=request)
    with pytest.raises(httpx2.HTTPStatusError) as info:
        response.raise_for_status()
    f = classify(info.value, now=NOW)
    assert (f.retryable, f.status, f.retry_after, f.message) == (
        True,
        429,
        4.0,
        "Too Many Requests",
    )

    class Declined(Exception):
        status_code = 402
        headers: ClassVar[dict[str, str]] = {"x-should-retry": "false"}

    assert classify(Declined(), now=NOW).retryable is False


def test_transport_and_socket_errors_retried() -> None:
    """Transport errors from httpx2 and builtin connection errors and timeouts are retried."""
    cases = {
        httpx2.ConnectError("refused"): "connection_error",
        httpx2.ReadTimeout("slow"): "timeout",
        ConnectionResetError(104, "Connection reset by peer"): "connection_error",
        TimeoutError("timed out"): "timeout",
    }
    for exc, error_type in cases.items():
        f = classify(exc, now=NOW)
        assert (f.retryable, f.status, f.error_type) == (True, None, error_type)


def test_everything_else_fatal() -> None:
    """A plain exception, or an odd `code` that is no HTTP status, is fatal under its class name."""

    class Closed(Exception):
        code = 1006  # a websocket close code

    for exc in (ValueError("bad value\nsecond line"), Closed("closed")):
        f = classify(exc, now=NOW)
        assert (f.retryable, f.status, f.error_type) == (False, None, type(exc).__name__)
        assert "\n" not in f.message


def test_message_is_one_line_without_the_body() -> None:
    """A non-JSON error page becomes its reason phrase, not the page."""
    page = "<html>\n<body>upstream connect error</body>\n</html>"
    exc = sdk_error(lambda _: httpx2.Response(502, text=page))
    f = classify(exc, now=NOW)
    assert (f.retryable, f.status, f.error_type, f.message) == (
        True,
        502,
        "InternalServerError",
        "Bad Gateway",
    )


def test_on_failure_error_stops_the_loop() -> None:
    """When on_failure raises (the journal is down), its error propagates and nothing is retried."""
    fn, calls = failing(api_error(503), api_error(503))
    slept: list[float] = []

    def on_failure(attempt: int, failure: Failure, wait: float | None) -> None:
        raise RuntimeError("journal unavailable")

    with pytest.raises(RuntimeError, match="journal unavailable"):
        call(
            fn,
            policy=RetryPolicy(),
            on_failure=on_failure,
            sleep=slept.append,
            rng=random.Random(0),
            clock=lambda: NOW,
        )
    assert calls == [1]
    assert slept == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exceptions_pass_through(exc: BaseException) -> None:
    """KeyboardInterrupt and SystemExit leave the loop untouched, with nothing journaled."""
    fn, calls = failing(exc)
    loop = Loop()
    with pytest.raises(type(exc)) as info:
        loop.run(fn)
    assert info.value is exc
    assert calls == [1]
    assert loop.events == []


def test_policy_rejects_nonsense() -> None:
    """A policy with no attempts, or a negative wait, cannot be built."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="base"):
        RetryPolicy(base=-1.0)


def test_a_journal_error_during_an_attempt_is_never_retried_or_recorded() -> None:
    """The journal's trouble is not the call's: it propagates as it is, before any failure."""
    from runjournal.journal import ConcurrentAppend
    from runjournal.machine.retry import Retrying

    failures: list[object] = []

    def attempt(n: int) -> None:
        raise ConcurrentAppend("seq 3 is already taken")

    retrying = Retrying(RetryPolicy(), lambda seconds: None, random.Random(0), lambda: 0.0)
    with pytest.raises(ConcurrentAppend):
        retrying.call(attempt, lambda *args: failures.append(args))
    assert failures == []
