"""Pacing one run's model requests: how many may be in flight, and how many per minute.

Two controls, both in front of every attempt (retries included):

- **A concurrency window and a rate, adapted additively up and multiplicatively down (AIMD)**:
  each answer widens the window by 1/window (one more request in flight per window of
  answers) and gives back a twentieth of the rate; a 429 or a 529 halves both and holds every
  new request until the `retry-after` the API gave has passed. Throttles of requests sent
  before that decrease are one event, not several: halved once, and counted once by the
  breaker. The rate is what two processes sharing a key settle on: neither knows of the
  other, and each gives way when the API says so.
- **Token buckets for the API's three limits per minute** (requests, input tokens, output
  tokens), configured (`RateLimits`) or learned from the `anthropic-ratelimit-*-limit` headers
  of the answers, kept in step with their `-remaining` headers. An answer saying nothing
  remains is taken as a throttle that did not happen yet (as TCP takes a congestion mark): the
  rate is halved, so that a run which is winning gives way to another sharing the key before
  the other is starved. A bucket refills at its limit
  per minute and holds at most one second of it, so requests are spread out, never sent in a
  burst that the API would refuse. Output is reserved at `max_tokens` (as the API estimates
  it) and the unused part given back once the answer says how much was used.

Thread-safe: the threads of a parallel step (`ctx.map`) share one `Pace`.

Runs in other processes (workers sharing a key) learn of each other only from throttles, unless
the pace is `shared`: then each request first takes its part of each known limit from a bucket
the journal keeps for every process (`Store.pace`), and waits its turn there.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping

import attrs

# A dimension's name in the `anthropic-ratelimit-*` headers.
REQUESTS, INPUT, OUTPUT = "requests", "input-tokens", "output-tokens"


_PER_MINUTE = attrs.validators.optional(attrs.validators.ge(1))


@attrs.frozen
class RateLimits:
    """The API's limits per minute for the model a run asks (None: unknown, learned from the
    answers' headers if they carry them). Give them when several processes share a key."""

    rpm: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Requests per minute."""
    itpm: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Input tokens per minute."""
    otpm: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Output tokens per minute."""


@attrs.define
class _Bucket:
    """A limit per minute: refills at `limit` / 60 a second and holds one second of it.

    `level` may go below zero: an amount larger than the bucket is let through when it is full
    and leaves it in debt, so a big request is slow rather than impossible.
    """

    limit: int
    level: float
    stamp: float

    @property
    def capacity(self) -> float:
        return max(1.0, self.limit / 60.0)

    def refill(self, now: float, share: float) -> None:
        rate = self.limit / 60.0 * share
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * rate)
        self.stamp = now

    def wait(self, amount: float, share: float) -> float:
        """Seconds until the bucket covers `amount` (0: now)."""
        short = min(amount, self.capacity) - self.level
        return 0.0 if short <= 1e-9 else short / (self.limit / 60.0 * share)


@attrs.frozen
class Ticket:
    """One attempt let through: what it took from the buckets, and the window it was sent in."""

    input_tokens: int
    max_tokens: int
    epoch: int


class Pace:
    """The concurrency window and the rate buckets of one executing run."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        most: int = 64,
        seed: int | None = None,
        shared: Callable[[str, int, float], float] | None = None,
    ) -> None:
        self.clock = clock
        self.shared = shared
        """Takes an amount of a limit per minute from a bucket shared with other processes;
        returns the seconds to wait (`Store.pace`)."""
        self.most = most
        """The widest the window gets: more threads than this are held back anyway."""
        self.window = float(most)
        """How many requests may be in flight; halved by a throttle, widened by answers."""
        self.share = 1.0
        """The part of each limit per minute this run uses: halved by a throttle, given back
        by answers."""
        self.in_flight = 0
        self.throttles = 0
        """Throttle events (one per decrease, however many requests it refused)."""
        self._epoch = 0
        self._not_before = 0.0
        self._configured = limits or RateLimits()
        self._buckets: dict[str, _Bucket] = {}
        now = clock()
        for name, limit in (
            (REQUESTS, self._configured.rpm),
            (INPUT, self._configured.itpm),
            (OUTPUT, self._configured.otpm),
        ):
            if limit is not None:
                self._buckets[name] = _Bucket(limit, max(1.0, limit / 60.0), now)
        self._changed = threading.Condition()
        self._jitter = random.Random(seed)

    def limits(self) -> dict[str, int]:
        """The limits per minute in force, by header name: configured or learned."""
        with self._changed:
            return {name: bucket.limit for name, bucket in self._buckets.items()}

    def acquire(self, input_tokens: int, max_tokens: int, *, check: Callable[[], None]) -> Ticket:
        """Wait until one more request may be sent, take its share of each bucket, and return
        its ticket. `check` is called at least every 0.1 s while waiting: a kill raises there."""
        amounts = {REQUESTS: 1, INPUT: input_tokens, OUTPUT: max_tokens}
        if self.shared is not None:
            self._take_shared(amounts, check)
        with self._changed:
            while True:
                now = self.clock()
                wait = self._not_before - now
                for name, bucket in self._buckets.items():
                    bucket.refill(now, self.share)
                    wait = max(wait, bucket.wait(amounts[name], self.share))
                if wait <= 0 and self.in_flight < max(1, int(self.window)):
                    break
                self._changed.wait(min(0.1, wait) if wait > 0 else 0.1)
                check()
            for name, bucket in self._buckets.items():
                bucket.level -= amounts[name]
            self.in_flight += 1
            return Ticket(input_tokens, max_tokens, self._epoch)

    def _take_shared(self, amounts: Mapping[str, int], check: Callable[[], None]) -> None:
        """Wait for this request's turn in the buckets shared with other processes."""
        assert self.shared is not None
        with self._changed:
            known = {name: bucket.limit for name, bucket in self._buckets.items()}
        wait = max(
            (self.shared(name, limit, amounts[name]) for name, limit in known.items()),
            default=0.0,
        )
        until = self.clock() + wait
        while (left := until - self.clock()) > 0:
            time.sleep(min(0.1, left))
            check()

    def answered(
        self,
        ticket: Ticket,
        *,
        input_tokens: int,
        output_tokens: int,
        headers: Mapping[str, str],
    ) -> None:
        """The request was answered: widen the window, give back what it did not use, and
        learn from the rate-limit headers."""
        with self._changed:
            self.in_flight -= 1
            self.window = min(float(self.most), self.window + 1.0 / self.window)
            self.share = min(1.0, self.share + 0.05)
            now = self.clock()
            for name, used, reserved in (
                (INPUT, input_tokens, ticket.input_tokens),
                (OUTPUT, output_tokens, ticket.max_tokens),
            ):
                bucket = self._buckets.get(name)
                if bucket is not None:
                    bucket.refill(now, self.share)
                    bucket.level = min(bucket.capacity, bucket.level + reserved - used)
            if self._learn(headers, now) and ticket.epoch == self._epoch:
                self._epoch += 1
                self._slow_down(now)
            self._changed.notify_all()

    def failed(self, ticket: Ticket, *, throttled: bool, retry_after: float | None) -> bool:
        """The request failed; a throttle (429, 529) halves the window and holds new requests
        for `retry_after`. True when this is a new throttle event, False for a request that was
        in flight before the last one (already answered for) or that was not throttled."""
        with self._changed:
            self.in_flight -= 1
            new = throttled and ticket.epoch == self._epoch
            now = self.clock()
            if new:
                self._epoch += 1
                self.throttles += 1
                self.window = max(1.0, min(self.window, self.in_flight + 1.0) / 2.0)
                self._slow_down(now)
            if throttled and retry_after is not None:
                # Spread out: runs sharing a key, told the same retry-after, must not all come
                # back at the same instant, nor always in the same order.
                wait = retry_after * (1.0 + 0.5 * self._jitter.random())
                self._not_before = max(self._not_before, now + wait)
            self._changed.notify_all()
            return new

    def _slow_down(self, now: float) -> None:
        for bucket in self._buckets.values():
            bucket.refill(now, self.share)  # what was earned at the old rate
        self.share = max(1.0 / 64, self.share / 2.0)

    def _learn(self, headers: Mapping[str, str], now: float) -> bool:
        """Take in the rate-limit headers; True if they say a limit has nothing left."""
        exhausted = False
        configured = {
            REQUESTS: self._configured.rpm,
            INPUT: self._configured.itpm,
            OUTPUT: self._configured.otpm,
        }
        for name in (REQUESTS, INPUT, OUTPUT):
            limit = _int(headers.get(f"anthropic-ratelimit-{name}-limit"))
            remaining = _int(headers.get(f"anthropic-ratelimit-{name}-remaining"))
            bucket = self._buckets.get(name)
            if limit is not None and limit >= 1:
                mine = configured[name]
                limit = limit if mine is None else min(mine, limit)
                if bucket is None:
                    bucket = self._buckets[name] = _Bucket(limit, 0.0, now)
                bucket.limit = limit
            if bucket is not None and remaining is not None:
                # The API counts what other processes on the same key spent too.
                bucket.level = min(bucket.level, float(remaining))
                exhausted = exhausted or remaining < 1
        return exhausted


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
