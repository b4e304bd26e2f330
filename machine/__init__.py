"""runjournal's behaviour: machines, the runner, and what steps use (effects, asks, actions).

Everything a pipeline author, a test of a pipeline, or the command line may use is listed here.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    __version__: str
else:

    def __getattr__(name: str) -> str:
        # The version is read when asked for: importlib.metadata is slow to import.
        if name != "__version__":
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib.metadata import version

        return version("runjournal")


from runjournal.machine.actions import resolve
from runjournal.machine.api import resume, run
from runjournal.machine.context import Context
from runjournal.machine.definition import Machine
from runjournal.machine.errors import (
    ActionError,
    AnswerCut,
    AnswerRefused,
    CallFailed,
    ConversionError,
    DefinitionError,
    IgnoredInput,
    InputMismatch,
    InputUnreadable,
    Interrupted,
    Killed,
    MachineError,
    ModelCallFailed,
    ModelRefused,
    ModelUnavailable,
    NeedsAttention,
    NothingToAnswer,
    NoValidAnswer,
    RequestRefused,
    Retryable,
    SchemaError,
    StateNotJSON,
    UnknownInputField,
    Waiting,
)
from runjournal.machine.execution import Options, Outcome
from runjournal.machine.files import atomic_write
from runjournal.machine.kill_switch import Breaker, Limits
from runjournal.machine.model import Models, anthropic_api
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable, Usage
from runjournal.machine.offline import offline
from runjournal.machine.pacing import RateLimits
from runjournal.machine.ports import Checkpoint
from runjournal.machine.retry import RetryPolicy
from runjournal.machine.signals import StopRequest, stop_on_signals
from runjournal.machine.transitions import Fail, Finish, Goto, Transition
from runjournal.machine.waiting import answer

__all__ = [
    "ActionError",
    "AnswerCut",
    "AnswerRefused",
    "Breaker",
    "CallFailed",
    "Capabilities",
    "Checkpoint",
    "Context",
    "ConversionError",
    "DefinitionError",
    "Fail",
    "Finish",
    "Goto",
    "IgnoredInput",
    "InputMismatch",
    "InputUnreadable",
    "Interrupted",
    "Killed",
    "Limits",
    "Machine",
    "MachineError",
    "ModelCallFailed",
    "ModelRefused",
    "ModelUnavailable",
    "Models",
    "NeedsAttention",
    "NoValidAnswer",
    "NothingToAnswer",
    "Options",
    "Outcome",
    "PriceTable",
    "RateLimits",
    "RequestRefused",
    "RetryPolicy",
    "Retryable",
    "SchemaError",
    "StateNotJSON",
    "StopRequest",
    "Transition",
    "UnknownInputField",
    "Usage",
    "Waiting",
    "answer",
    "anthropic_api",
    "atomic_write",
    "offline",
    "resolve",
    "resume",
    "run",
    "stop_on_signals",
]
