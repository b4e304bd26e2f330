"""runjournal's behaviour: machine definitions, the runner, and the effect API steps use.

Everything a pipeline author or the command line may use is listed here.
"""

from machine.context import Checkpoint, Context
from machine.convert import ConversionError
from machine.definition import Fail, Finish, Goto, Machine, Transition
from machine.errors import (
    DefinitionError,
    InputMismatch,
    MachineError,
    ReplayMismatch,
    RunAlreadyDone,
    StateNotJSON,
    TargetLoadError,
    TargetNotFound,
    WrongMachine,
)
from machine.loader import Target, load
from machine.runner import Options, Outcome, Prepared, prepare, resume, start

__all__ = [
    "Checkpoint",
    "Context",
    "ConversionError",
    "DefinitionError",
    "Fail",
    "Finish",
    "Goto",
    "InputMismatch",
    "Machine",
    "MachineError",
    "Options",
    "Outcome",
    "Prepared",
    "ReplayMismatch",
    "RunAlreadyDone",
    "StateNotJSON",
    "Target",
    "TargetLoadError",
    "TargetNotFound",
    "Transition",
    "WrongMachine",
    "load",
    "prepare",
    "resume",
    "start",
]
