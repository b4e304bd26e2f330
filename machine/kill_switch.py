"""The kill switch: a run's limits, the error-rate breaker, and `Guard`, which checks them, a
person's kill and a signal's stop, wherever the run waits.

Limits are declared on the machine and overridden for one run from the command line; the
limits in force are recorded with `run.started` and `run.resumed`. Each is checked *before*
what it limits: a step before it runs, a model request before it is sent, against the worst the
request can cost (`model.pricing.worst_case`). A limit reached ends the run as `killed`, recorded.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar, cast

import attrs

from runjournal.journal import Heartbeat, LimitReached, kinds
from runjournal.journal.spending import NUSD, Reserve
from runjournal.machine.errors import Killed
from runjournal.machine.signals import StopRequest

T = TypeVar("T")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        msg = f"{attribute.name} must be above 0, not {value!r}"
        raise ValueError(msg)


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@attrs.frozen
class Breaker:
    """Stops a run that keeps failing to reach a model, instead of hammering it.

    It opens when more than `error_rate` of the last `window` model attempts failed (once
    there have been `window`), or after `consecutive` failures in a row: by default before one
    call's retries are used up (6 attempts), so that a storm of 429s or 529s ends the run
    `killed`, to be resumed once it has passed, rather than failed. It counts attempts of this
    process only: a resume, a person's decision to go on, starts it afresh.
    """

    window: int = attrs.field(default=20, validator=_positive)
    error_rate: float = attrs.field(default=0.5, validator=_positive)
    consecutive: int = attrs.field(default=5, validator=_positive)


@attrs.frozen
class Limits:
    """What a run may spend or do before it is stopped; None is no limit."""

    max_cost_usd: Decimal | None = attrs.field(default=None, converter=_money, validator=_positive)
    """Billed plus possibly billed (the worst case of every request whose outcome is unknown)."""
    max_tokens: int | None = attrs.field(default=None, validator=_positive)
    """Tokens of every kind (input, output, cache writes and reads), billed or possibly."""
    max_steps: int | None = attrs.field(default=None, validator=_positive)
    max_model_calls: int | None = attrs.field(default=None, validator=_positive)
    """Requests sent to a model, every attempt counted (retries and asks again)."""
    breaker: Breaker | None = attrs.Factory(Breaker)

    def merge(self, overrides: dict[str, Any]) -> Limits:
        """These limits, with each of `overrides` (a field name to its value) put in place."""
        return attrs.evolve(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        """As recorded with the run: money as a decimal string, so it reads back exactly."""
        out = attrs.asdict(self, recurse=True)
        if self.max_cost_usd is not None:
            out["max_cost_usd"] = str(self.max_cost_usd)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        breaker = data.get("breaker")
        return cls(
            max_cost_usd=data.get("max_cost_usd"),
            max_tokens=data.get("max_tokens"),
            max_steps=data.get("max_steps"),
            max_model_calls=data.get("max_model_calls"),
            breaker=Breaker(**breaker) if breaker is not None else None,
        )


OVERRIDABLE = ("max_cost_usd", "max_tokens", "max_steps", "max_model_calls")
"""The fields a run's limits may be overridden on from the command line."""


class BreakerState:
    """The outcomes of this process's recent model attempts, for one run's breaker."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.recent: collections.deque[bool] = collections.deque(maxlen=breaker.window)
        self.in_a_row = 0
        self._lock = threading.Lock()  # the items of a parallel step record at once

    def record(self, ok: bool) -> None:
        with self._lock:
            self.recent.append(ok)
            self.in_a_row = 0 if ok else self.in_a_row + 1

    def tripped(self) -> str | None:
        """Why the breaker is open, or None."""
        b = self.breaker
        if self.in_a_row >= b.consecutive:
            return (
                f"{self.in_a_row} model attempts failed in a row "
                f"(the breaker opens at {b.consecutive})"
            )
        failed = self.recent.count(False)
        if len(self.recent) == b.window and failed / b.window > b.error_rate:
            return (
                f"{failed} of the last {b.window} model attempts failed (the breaker opens "
                f"above {b.error_rate:.0%})"
            )
        return None

    def figures(self) -> dict[str, Any]:
        """What the breaker saw, for the run.killed event."""
        return {
            "window": len(self.recent),
            "failed": self.recent.count(False),
            "in_a_row": self.in_a_row,
            "breaker": attrs.asdict(self.breaker),
        }


class Guard:
    """One executing run's kill switch: its limits, its breaker, a person's kill request, and
    a signal's stop request.

    Every wait of the run goes through it (a backoff, a model request), so that a kill is seen
    within a second wherever the run is waiting; a check raises `Killed` (or `Interrupted`).
    """

    def __init__(
        self,
        limits: Limits,
        heartbeat: Heartbeat | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: StopRequest | None = None,
    ) -> None:
        self.limits = limits
        self.breaker = BreakerState(limits.breaker) if limits.breaker is not None else None
        self.heartbeat = heartbeat
        self._sleep = sleep
        self.stop = stop

    def check(self, *, in_flight: bool = False) -> None:
        """Raise Killed if a person asked to kill the run, Interrupted if the process was
        asked to stop (with `in_flight`, a model request on its way, only if asked twice)."""
        if self.stop is not None:
            self.stop.check(in_flight=in_flight)
        kill = self.heartbeat.kill if self.heartbeat is not None else None
        if kill is not None:
            said = f": {kill.reason}" if kill.reason else ""
            raise Killed(
                kinds.RunKilled(
                    killed_by="person",
                    message=f"killed by {kill.requested_by}{said}",
                    who=kill.requested_by,
                    reason=kill.reason,
                    requested_at=kill.requested_at,
                )
            )

    def before_step(self, steps: int) -> None:
        """Before a step runs: a kill, or the step cap reached."""
        self.check()
        cap = self.limits.max_steps
        if cap is not None and steps >= cap:
            raise Killed(
                kinds.RunKilled(
                    killed_by="limit",
                    message=f"max_steps reached: {steps} steps taken, the cap is {cap}",
                    limit_name="max_steps",
                    value=steps,
                    cap=cap,
                )
            )

    def before_request(self) -> None:
        """Before a model request is sent: a kill, or the breaker open."""
        self.check()
        why = self.breaker.tripped() if self.breaker is not None else None
        if why is not None:
            assert self.breaker is not None
            raise Killed(
                kinds.RunKilled(
                    killed_by="limit",
                    message=f"the breaker opened: {why}",
                    limit_name="breaker",
                    value=self.breaker.figures(),
                    cap=attrs.asdict(self.breaker.breaker),
                )
            )

    def reserve(self, tokens: int, usd: Decimal) -> Reserve:
        """The request's worst case and the run's caps, for the store to check as it writes."""
        cap = self.limits.max_cost_usd
        return Reserve(
            nusd=int((usd * NUSD).to_integral_value(rounding=ROUND_CEILING)),
            tokens=tokens,
            max_cost_nusd=None if cap is None else int(cap * NUSD),
            max_tokens=self.limits.max_tokens,
            max_model_calls=self.limits.max_model_calls,
        )

    def limit_reached(self, e: LimitReached) -> Killed:
        return Killed(
            kinds.RunKilled(
                killed_by="limit",
                message=str(e),
                limit_name=e.limit,
                value=e.value,
                cap=e.cap,
                worst_case=e.worst_case,
            )
        )

    def record(self, ok: bool) -> None:
        """The outcome of a model attempt, for the breaker."""
        if self.breaker is not None:
            self.breaker.record(ok)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a backoff), or less if the run is killed or stopped meanwhile."""
        if self.heartbeat is not None and self._sleep is time.sleep:
            deadline = time.monotonic() + seconds
            # A kill sets an event the wait can end on; a stop sets another: look at both.
            while (left := deadline - time.monotonic()) > 0:
                if self.heartbeat.kill_requested.wait(min(left, 0.1)):
                    break
                if self.stop is not None and self.stop.asked.is_set():
                    break
        else:
            self._sleep(seconds)
        self.check()

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` (a model request), given up on if the run is killed while it waits.

        The request runs in a thread of its own while this one watches for a kill; a request
        given up on is left to end on its own, and Killed is raised at once.
        """
        if self.heartbeat is None:
            return fn()
        outcome: list[Any] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as e:
                outcome.append((False, e))
            finally:
                done.set()

        threading.Thread(target=work, name="model-request", daemon=True).start()
        while not done.wait(0.1):
            self.check(in_flight=True)
        ok, value = outcome[0]
        if not ok:
            # A kill closes the client under every request in flight: the error that causes is
            # the kill's, and the request is abandoned, not failed and asked again.
            self.check(in_flight=True)
            raise value
        return cast(T, value)
