"""Errors raised by machines and the runner: each names the run, step or file concerned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    # Not imported when run: `machine/__init__` imports this module to say that a file of the
    # user's shadows `journal`, before it may import anything from it.
    from runjournal.journal import kinds


@attrs.frozen
class Ignored:
    """A key of an input that no field took, at every place alike but for list indices and
    dict keys: `$.tickets[*].subjet`, found `count` times, first at `$.tickets[0].subjet`."""

    pattern: str
    first: str
    count: int
    key: str
    owner: str
    """The class that has no field `key`."""
    fields: tuple[str, ...]
    """The fields `owner` has."""

    def describe(self) -> str:
        has = ", ".join(self.fields) if self.fields else "no fields"
        where = self.first if self.count == 1 else f"{self.pattern} ({self.count} times)"
        return f"{where}: {self.owner} has no field {self.key!r}, it has {has}"


@attrs.frozen
class Failure:
    """One failed attempt, as the journal records it."""

    retryable: bool
    status: int | None
    """HTTP status; None for connection errors and exceptions that are not HTTP."""
    error_type: str
    """The API's error.type when known, else "connection_error", "timeout" or the class name."""
    message: str
    """One line, without headers or request bodies."""
    request_id: str | None
    retry_after: float | None
    """Seconds the server asked us to wait, if it said."""

    def describe(self) -> str:
        """E.g. "529 overloaded_error: Overloaded (request req_123)"."""
        text = self.error_type if self.status is None else f"{self.status} {self.error_type}"
        if self.message:
            text += f": {self.message}"
        if self.request_id:
            text += f" (request {self.request_id})"
        return text


class MachineError(Exception):
    """Base class of every error the machine layer raises."""


class DefinitionError(MachineError, ValueError):
    """A machine is declared wrongly: an unknown start step, a step defined twice."""


class TargetNotFound(MachineError, FileNotFoundError):
    """The file or module named as a run's target does not exist."""


class TargetLoadError(MachineError, ImportError):
    """The target exists but cannot be imported, or holds no (or more than one) machine."""


class InputMismatch(MachineError, ValueError):
    """A run's input does not fit the machine's state type."""


class InputUnreadable(MachineError, ValueError):
    """A run's input cannot be read (no file, not UTF-8, not JSON), or holds what the journal
    cannot take (NaN, a lone surrogate, nesting deeper than 200), said with the line and field."""


class UnknownInputField(InputMismatch):
    """A machine made with `strict_input=True` got input fields its state types do not have."""

    def __init__(self, machine: str, ignored: Sequence[Ignored]) -> None:
        super().__init__(
            f"machine {machine!r} takes strict input, and the input has fields its state does "
            f"not: {_listed(ignored)}; correct them, or make the machine without strict_input"
        )
        self.ignored = tuple(ignored)


class IgnoredInput(UserWarning):
    """Input fields the state types do not have were left out of a run's first state."""

    def __init__(self, ignored: Sequence[Ignored]) -> None:
        super().__init__(
            f"input fields left out, the state has no place for them: {_listed(ignored)}"
        )
        self.ignored = tuple(ignored)


def _listed(ignored: Sequence[Ignored], most: int = 5) -> str:
    shown = "; ".join(each.describe() for each in ignored[:most])
    return shown if len(ignored) <= most else f"{shown}; and {len(ignored) - most} more"


class StateNotJSON(MachineError, TypeError):
    """A state does not survive the trip through the journal's JSON unchanged."""


class ReplayMismatch(MachineError):
    """On re-entering a step, the code makes a call the journal does not have at that place."""


class WrongMachine(MachineError, ValueError):
    """The code loaded to resume a run is not the machine that started it."""


class NeedsAttention(MachineError):
    """An action's outcome is unknown and the action is not safe to repeat: a person decides."""

    def __init__(self, message: str, *, name: str, key: str, call: str) -> None:
        super().__init__(message)
        self.name, self.key, self.call = name, key, call


class Waiting(NeedsAttention):
    """A step waits for a person's answer (`ctx.wait_for`): the run stops as `waiting`."""

    def __init__(self, message: str, *, name: str, call: str, of: str | None) -> None:
        super().__init__(message, name=name, key=name, call=call)
        self.of = of
        self.deadline: str | None = None


class NothingToAnswer(MachineError, LookupError):
    """`journal answer` names a wait the run is not waiting for."""


class AnswerRefused(MachineError, ValueError):
    """An answer does not fit the shape its wait declared: nothing was recorded."""


class ActionError(MachineError):
    """An action failed for sure (a fatal error, or retries used up)."""


class NothingToResolve(MachineError, LookupError):
    """`journal resolve` named a key that has no action in doubt in that run."""


class NothingToKill(MachineError, LookupError):
    """`journal kill` named a run that has ended already (done, or killed)."""


class ConversionError(MachineError, ValueError):
    """A value does not fit the type asked for; `errors` lists each problem with its path."""

    def __init__(self, what: str, type_name: str, errors: list[str]) -> None:
        self.what = what
        self.type_name = type_name
        self.errors = errors
        super().__init__(f"{what} does not fit {type_name}: {'; '.join(errors)}")


class FakeSpecError(MachineError, ValueError):
    """A --fake-model spec that cannot be parsed; the message says what is wrong."""


class SchemaError(MachineError, TypeError):
    """A type that cannot be described as JSON Schema; the message names the field path."""


class ModelUnavailable(MachineError):
    """No way to reach a model: no API key, and no fake model asked for."""


class ModelCallFailed(MachineError):
    """The API did not answer: a fatal error, or retries used up. Names run, step and call."""


class NoValidAnswer(MachineError):
    """Every answer the model gave, first and retried, failed validation."""


class UnknownModel(MachineError, LookupError):
    """No price for a model: the message names it, some models the table knows, and the fix."""


class PriceFileError(MachineError, ValueError):
    """A price file that cannot be read; the message names the file and the problem."""


class CapabilitiesFileError(MachineError, ValueError):
    """A capabilities file that cannot be read; the message names the file and the problem."""


class RequestRefused(MachineError, ValueError):
    """A request the model's documented rules refuse, stopped before it is sent: the message
    names the rule, its source and what to ask for instead. Nothing was sent or spent."""


class ModelRefused(MachineError):
    """The model declined to answer (stop reason `refusal`); asking again the same is no use."""


class AnswerCut(MachineError):
    """The answer was cut off (at `max_tokens`, or a full context window) and cannot be asked
    for again with more room."""


class Retryable(Exception):
    """Raised by an action's code to say: this failed, and trying again is safe."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CallFailed(MachineError):
    """The call did not succeed: `failure` is the last failure, `attempts` how many were made,
    `exhausted` True when it stopped for lack of attempts (False: the failure was not retryable)."""

    def __init__(self, failure: Failure, *, attempts: int, exhausted: bool) -> None:
        if exhausted:
            msg = f"gave up after {attempts} attempts: {failure.describe()}"
        else:
            msg = f"not retryable: {failure.describe()}"
        super().__init__(msg)
        self.failure = failure
        self.attempts = attempts
        self.exhausted = exhausted


class Killed(BaseException):
    """The run is being stopped: a limit was reached, or a person killed it.

    A BaseException, like KeyboardInterrupt, so that a step's own `except Exception` cannot
    swallow it: the runner records it as `run.killed` and the run ends `killed`.
    """

    def __init__(self, record: kinds.RunKilled) -> None:
        super().__init__(record.message)
        self.record = record
        """The run.killed event's data: who or which limit, and why."""


class Interrupted(BaseException):
    """The process was asked to stop (SIGTERM, Ctrl-C): the run lets go, to be resumed.

    A BaseException, as Killed is. Raised at the run's next safe point after a first
    signal, or at once after a second (see `machine.signals`); the runner records it as
    `run.interrupted`, releases the run's lease and returns.
    """

    def __init__(self, signal: str, *, at_once: bool = False) -> None:
        super().__init__(
            f"interrupted by {signal}" + (" (a second time: at once)" if at_once else "")
        )
        self.signal = signal
        """The signal's name: SIGTERM or SIGINT."""
        self.at_once = at_once
        """True after a second signal: wherever the step was, not at a safe point."""
