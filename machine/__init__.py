"""runjournal's behaviour: machines, the runner, and what steps use (effects, asks, actions).

Everything a pipeline author, a test of a pipeline, or the command line may use is listed here.
"""

from typing import TYPE_CHECKING

from machine.errors import NameClash  # imports nothing of `journal` when run

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

    def _refuse_a_shadowed_journal() -> None:
        # A journal.py beside the user's program, first on sys.path, is what `import journal`
        # finds: the imports below would fail naming a missing name. Say which file is in the
        # way instead; in the usual case this costs two string operations.
        import os

        import journal

        found = getattr(journal, "__file__", None) or next(
            iter(getattr(journal, "__path__", [])), ""
        )
        ours = os.path.join(os.path.dirname(os.path.dirname(__file__)), "journal")
        where = os.path.dirname(found)
        if where != ours and os.path.realpath(where) != os.path.realpath(ours):
            raise NameClash(found or "a module named journal", "journal")

    _refuse_a_shadowed_journal()
    del _refuse_a_shadowed_journal


from machine.actions import resolve
from machine.api import resume, run
from machine.context import Context
from machine.definition import Machine
from machine.errors import (
    ActionError,
    AnswerCut,
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
    NoValidAnswer,
    RequestRefused,
    Retryable,
    SchemaError,
    StateNotJSON,
    UnknownInputField,
)
from machine.files import atomic_write
from machine.limits import Breaker, Limits
from machine.model import Models, anthropic_api
from machine.model.capabilities import Capabilities
from machine.model.pricing import PriceTable, Usage
from machine.offline import offline
from machine.pacing import RateLimits
from machine.ports import Checkpoint
from machine.retry import RetryPolicy
from machine.runner import Options, Outcome
from machine.signals import StopRequest, stop_on_signals
from machine.transitions import Fail, Finish, Goto, Transition

__all__ = [
    "ActionError",
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
    "anthropic_api",
    "atomic_write",
    "offline",
    "resolve",
    "resume",
    "run",
    "stop_on_signals",
]
