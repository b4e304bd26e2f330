"""runjournal's behaviour: machines, the runner, and what steps use (effects, asks, actions).

Everything a pipeline author, a test of a pipeline, or the command line may use is listed here.
"""

from machine.actions import resolve
from machine.context import Checkpoint, Context
from machine.definition import Fail, Finish, Goto, Machine, Transition
from machine.errors import (
    ActionFailed,
    CallFailed,
    ConversionError,
    DefinitionError,
    FakeSpecError,
    InputMismatch,
    MachineError,
    ModelCallFailed,
    ModelUnavailable,
    NeedsAttention,
    NothingToKill,
    NothingToResolve,
    OutputRejected,
    PriceFileError,
    ReplayMismatch,
    Retryable,
    RunKilled,
    SchemaError,
    StateNotJSON,
    TargetLoadError,
    TargetNotFound,
    UnknownModel,
    WrongMachine,
)
from machine.fake import FakeModel, FakeServer, Faults, parse_spec, serve
from machine.files import atomic_write
from machine.limits import Breaker, Limits
from machine.loader import Target, load
from machine.model import Models, anthropic_api, offline
from machine.pricing import Price, PriceTable, Usage, cost
from machine.rerun import Divergence, Reproduced, rerun
from machine.retry import RetryPolicy
from machine.runner import Options, Outcome, Prepared, fork, prepare, resume, start

__all__ = [
    "ActionFailed",
    "Breaker",
    "CallFailed",
    "Checkpoint",
    "Context",
    "ConversionError",
    "DefinitionError",
    "Divergence",
    "Fail",
    "FakeModel",
    "FakeServer",
    "FakeSpecError",
    "Faults",
    "Finish",
    "Goto",
    "InputMismatch",
    "Limits",
    "Machine",
    "MachineError",
    "ModelCallFailed",
    "ModelUnavailable",
    "Models",
    "NeedsAttention",
    "NothingToKill",
    "NothingToResolve",
    "Options",
    "Outcome",
    "OutputRejected",
    "Prepared",
    "Price",
    "PriceFileError",
    "PriceTable",
    "ReplayMismatch",
    "Reproduced",
    "RetryPolicy",
    "Retryable",
    "RunKilled",
    "SchemaError",
    "StateNotJSON",
    "Target",
    "TargetLoadError",
    "TargetNotFound",
    "Transition",
    "UnknownModel",
    "Usage",
    "WrongMachine",
    "anthropic_api",
    "atomic_write",
    "cost",
    "fork",
    "load",
    "offline",
    "parse_spec",
    "prepare",
    "rerun",
    "resolve",
    "resume",
    "serve",
    "start",
]
