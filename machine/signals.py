"""Stopping runs for a signal: SIGTERM (what systemd, Docker and Kubernetes send) and SIGINT
(Ctrl-C).

The first signal asks; it raises nothing where it lands. Each run this process executes stops
at its next safe point: before a step, a model request, an action or an effect, or in a wait
(a backoff, the rate limit's pace). A model request already sent is let finish, so its answer is
journaled and never paid for twice. The run records `run.interrupted`, lets its lease go, and
`journal resume` goes on from there.

A second signal stops at once: `Interrupted` is raised where the process is, in a step's own
code too. Only the journal's own work is let finish first (a write half done, its lock held),
and the runner's around a step (taking the lease, ending the run): there the stop waits for the
next safe point, which is never further than the end of that work. An action cut between its
intent and its outcome is in doubt, and a resume reconciles it as after a crash.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from runjournal.machine.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether this process was asked to stop, by which signal, and how urgently.

    Shared by every run the process executes (`Options.stop`); `stop_on_signals` sets it from
    the signal handlers, and a test or an embedding program may call `ask` itself.
    """

    def __init__(self, told: Callable[[str], None] | None = None) -> None:
        self.told = told
        """Told, from the signal handler, what a signal did: a line for a person."""
        self.signal: str | None = None
        """The first signal's name, once one came."""
        self.at_once = False
        """A second signal came: in-flight model requests are given up on too."""
        self.asked = threading.Event()
        """Set with the first signal: waits end early on it."""

    def ask(self, name: str) -> None:
        """Ask the runs to stop: at their next safe point, or at once if asked before."""
        if self.signal is None:
            self.signal = name
            said = f"{name}: stopping at the next safe point (a second signal stops at once)"
        else:
            self.at_once = True
            said = f"{name} again: stopping at once"
        self.asked.set()
        if self.told is not None:
            self.told(said)

    def check(self, *, in_flight: bool = False) -> None:
        """Raise Interrupted if a stop was asked for; with `in_flight` (a model request is on
        its way) only if it was asked twice."""
        if self.signal is not None and (self.at_once or not in_flight):
            raise Interrupted(self.signal, at_once=self.at_once)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """Within the block, SIGTERM and SIGINT ask `stop` instead of ending the process.

    Signal handlers can only be set from the main thread: elsewhere this does nothing, and the
    signals keep their handlers.

    \b
    Example:
        stop = StopRequest()
        with stop_on_signals(stop):
            outcome = runner.start(journal, prepared, ..., options=Options(stop=stop))
        if outcome.interrupted:
            ...  # exit 128 + the signal's number, as a shell would
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        again = stop.signal is not None
        stop.ask(name)
        if again and _may_stop_here(frame):
            raise Interrupted(stop.signal or name, at_once=True)

    before = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


_RUNNER = ("runjournal.machine.runner", "runjournal.machine.execution")
"""The runner's modules, named rather than imported: they import this one."""


def _may_stop_here(frame: FrameType | None) -> bool:
    """Whether a second signal may raise where the main thread is.

    Not inside the journal's code (a transaction half done, the journal's lock held), and not in
    the runner's own work around a step (taking the lease, recording the run's end, letting the
    lease go): within a step, or outside any run, yes.
    """
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "runjournal.journal" or module.startswith("runjournal.journal."):
            return False
        if module in _RUNNER:
            return frame.f_code.co_name == "_loop"  # `Execution._loop`: within a step
        frame = frame.f_back
    return True


def exit_code(name: str) -> int:
    """The exit code a shell gives a process ended by the signal `name`: 128 + its number."""
    return 128 + int(signal.Signals[name])
