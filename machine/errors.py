"""Errors raised by machines and the runner: each names the run, step or file concerned."""

from __future__ import annotations


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


class StateNotJSON(MachineError, TypeError):
    """A state does not survive the trip through the journal's JSON unchanged."""


class ReplayMismatch(MachineError):
    """On re-entering a step, the code makes a call the journal does not have at that place."""


class RunAlreadyDone(MachineError):
    """A run that is done was asked to run again."""


class WrongMachine(MachineError, ValueError):
    """The code loaded to resume a run is not the machine that started it."""
