"""What a request to the fake Messages API costs and how long it takes: the usage of its prompt
(prompt caching included), its latency with jitter, and the rate limits that meter it, kept as
the API's continuously refilled token buckets and reported in its `anthropic-ratelimit-*` and
`retry-after` headers.

Private to `machine.testing.fake`, which calls `Limits` under its own lock.
"""

from __future__ import annotations

import datetime
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from runjournal.machine.testing import _fake_values as values

CacheHits = Callable[[str, Sequence[tuple[Any, Any]], list[int]], list[int]]
"""Given the model, the prompt's pieces and the indices of those marked `cache_control`,
the marked indices whose prefix the prompt cache holds."""

# A refill computed in floats may land a hair below a whole token it should reach.
_EPSILON = 1e-9


def prompt_usage(
    body: Mapping[str, Any], cache_hits: CacheHits, ratio: Decimal = Decimal(1)
) -> dict[str, Any]:
    """The input side of `usage`: tokens as characters / 4 times the tokenizer's `ratio`; the
    prompt up to its last `cache_control` block is read from the cache as far as `cache_hits`
    says, the rest written."""
    pieces = values.prompt_pieces(body)
    sizes = [len(p if isinstance(p, str) else values.canonical(p)) for p, _ in pieces]
    marks = [i for i, (_, control) in enumerate(pieces) if control is not None]
    read = created = 0
    ttl = "5m"
    if marks:
        last = marks[-1]
        control = pieces[last][1] or {}
        ttl = "1h" if control.get("ttl") == "1h" else "5m"
        hits = cache_hits(body["model"], pieces, marks)
        full = values.tokens(sum(sizes[: last + 1]), ratio)
        read = values.tokens(sum(sizes[: hits[-1] + 1]), ratio) if hits else 0
        created = full - read
        uncached = values.tokens(sum(sizes[last + 1 :]), ratio)
    else:
        uncached = values.tokens(sum(sizes), ratio)
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": created if ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": created if ttl == "1h" else 0,
        },
    }


class Cache:
    """One fake's prompt cache: the prefixes written to it; thread-safe."""

    def __init__(self) -> None:
        self._written: set[str] = set()
        self._lock = threading.Lock()

    def hits(
        self,
        prompt_cache: str,
        model: str,
        pieces: Sequence[tuple[Any, Any]],
        marks: list[int],
        *,
        remember: bool,
    ) -> list[int]:
        """A `CacheHits` as `prompt_cache` says: all marks (warm), none (cold), or those
        written before (instance), with `remember` writing them all from now on."""
        if prompt_cache == "warm":
            return marks
        if prompt_cache == "cold":
            return []
        keys = {
            i: values.digest(model, values.canonical([p for p, _ in pieces[: i + 1]]))
            for i in marks
        }
        with self._lock:
            hits = [i for i in marks if keys[i] in self._written]
            if remember:
                self._written.update(keys.values())
        return hits


def sleep(seconds: float) -> bool:
    """Sleep in the caller's thread, never cut short: how an in-process request waits."""
    time.sleep(seconds)
    return False


def delay(latency: float, jitter: float, rng: random.Random) -> float:
    """Seconds one request takes: uniform in [latency * (1 - jitter), latency * (1 + jitter)].

    Uniform, not exponential: its mean is `latency` and it is bounded both ways, so a test
    knows the slowest answer it may wait for. `jitter` is a fraction in [0, 1].
    """
    if not jitter:
        return latency
    return latency * (1.0 + jitter * (2.0 * rng.random() - 1.0))


@attrs.define
class _Bucket:
    """One limit per minute as a token bucket: holds `limit`, refills at `limit` / 60 a second.

    `level` may go below zero: an amount larger than the whole bucket is admitted when the
    bucket is full and leaves it in debt, so such a request is slow rather than impossible,
    and the rate over a long run still keeps to the limit.
    """

    limit: int
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, amount: int) -> float:
        """Seconds until the bucket can cover `amount` (0 if it can now)."""
        short = min(amount, self.limit) - self.level
        return 0.0 if short <= _EPSILON else short / self.rate

    def remaining(self) -> int:
        return max(0, math.floor(self.level + _EPSILON))

    def full_in(self) -> float:
        return max(0.0, self.limit - self.level) / self.rate


@attrs.frozen
class Refusal:
    """Why a request was not admitted: the limit it would exceed, and when to try again."""

    retry_after: int
    """Whole seconds until every bucket could cover the request, rounded up as the API does."""
    message: str


# A dimension's name in the headers, and how a refusal words it.
_WORDS = {"requests": "requests", "input-tokens": "input tokens", "output-tokens": "output tokens"}


class Limits:
    """Requests, input tokens and output tokens per minute; each optional.

    A request is admitted if every configured bucket can cover it: one request, its input
    tokens, and its `max_tokens` as the estimate of its output, which `settle` later corrects
    to the output tokens actually produced (refunding the difference), as the API does.
    """

    def __init__(
        self,
        *,
        rpm: int | None,
        itpm: int | None,
        otpm: int | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        for name, limit in (("rpm", rpm), ("itpm", itpm), ("otpm", otpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} is {limit}; a rate limit is at least 1 per minute")
        self.clock = clock
        self.wall_clock = wall_clock
        now = clock()
        self._buckets = {
            name: _Bucket(limit, float(limit), now)
            for name, limit in (("requests", rpm), ("input-tokens", itpm), ("output-tokens", otpm))
            if limit is not None
        }

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def admit(self, input_tokens: int, max_tokens: int) -> Refusal | None:
        """Take this request from every bucket, or none of them and say why not."""
        amounts = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        now = self.clock()
        waits: dict[str, float] = {}
        for name, bucket in self._buckets.items():
            bucket.refill(now)
            waits[name] = bucket.wait(amounts[name])
        longest = max(waits, key=lambda name: waits[name], default=None)
        if longest is not None and waits[longest] > 0:
            limit = self._buckets[longest].limit
            text = (
                f"This request would exceed your rate limit of {limit} {_WORDS[longest]} "
                "per minute (fake)."
            )
            return Refusal(max(1, math.ceil(waits[longest] - _EPSILON)), text)
        for name, bucket in self._buckets.items():
            bucket.level -= amounts[name]
        return None

    def settle(self, reserved: int, used: int) -> None:
        """Charge `used` output tokens for a request admitted with `reserved` (its max_tokens)."""
        bucket = self._buckets.get("output-tokens")
        if bucket is not None:
            bucket.refill(self.clock())
            bucket.level = min(bucket.limit, bucket.level + reserved - used)

    def headers(self) -> dict[str, str]:
        """The `anthropic-ratelimit-*` headers of the configured limits, as of now.

        `tokens-*` repeats whichever of input and output tokens has fewer remaining.
        """
        now, wall = self.clock(), self.wall_clock()
        headers: dict[str, str] = {}
        for name, bucket in self._buckets.items():
            bucket.refill(now)
            headers |= _describe(name, bucket, wall)
        tokens = [self._buckets[n] for n in ("input-tokens", "output-tokens") if n in self._buckets]
        if tokens:
            headers |= _describe("tokens", min(tokens, key=_Bucket.remaining), wall)
        return headers


def _describe(name: str, bucket: _Bucket, wall: float) -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{name}"
    return {
        f"{prefix}-limit": str(bucket.limit),
        f"{prefix}-remaining": str(bucket.remaining()),
        f"{prefix}-reset": rfc3339(wall + bucket.full_in()),
    }


def rfc3339(timestamp: float) -> str:
    """A wall-clock time as the API writes it, in UTC, rounded up to the second."""
    moment = datetime.datetime.fromtimestamp(math.ceil(timestamp), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
