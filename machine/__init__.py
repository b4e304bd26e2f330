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


from machine.actions import resolve
from machine.api import resume, run
from machine.context import Checkpoint, Context
from machine.definition import Fail, Finish, Goto, Machine, Transition
from machine.errors import (
    ActionFailed,
    AnswerCut,
    CallFailed,
    ConversionError,
    DefinitionError,
    InputMismatch,
    MachineError,
    ModelCallFailed,
    ModelRefused,
    ModelUnavailable,
    NeedsAttention,
    OutputRejected,
    RequestRefused,
    Retryable,
    RunKilled,
    SchemaError,
    StateNotJSON,
)
from machine.files import atomic_write
from machine.limits import Breaker, Limits
from machine.model import Models, anthropic_api, offline
from machine.model.capabilities import Capabilities
from machine.model.pricing import PriceTable, Usage
from machine.model.retry import RetryPolicy
from machine.pacing import RateLimits
from machine.runner import Options, Outcome

__all__ = [
    "ActionFailed",
    "AnswerCut",
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
    "InputMismatch",
    "Limits",
    "Machine",
    "MachineError",
    "ModelCallFailed",
    "ModelRefused",
    "ModelUnavailable",
    "Models",
    "NeedsAttention",
    "Options",
    "Outcome",
    "OutputRejected",
    "PriceTable",
    "RateLimits",
    "RequestRefused",
    "RetryPolicy",
    "Retryable",
    "RunKilled",
    "SchemaError",
    "StateNotJSON",
    "Transition",
    "Usage",
    "anthropic_api",
    "atomic_write",
    "offline",
    "resolve",
    "resume",
    "run",
]
