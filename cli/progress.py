"""The progress line: on a terminal, one status line rewritten in place while a run executes."""

from __future__ import annotations

import copy
import os
import shutil
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import IO, Any

from runjournal.cli.output import plural, printable, write_flushed
from runjournal.journal import Event, Run, Store, delta, parts, state_at
from runjournal.journal import events as k
from runjournal.journal.kinds import to_step
from runjournal.machine import Machine, convert

_REDRAW_EVERY = 0.1  # seconds: a fast run would otherwise redraw the line thousands of times
_CLEAR = "\r\x1b[K"  # to the line's start, then erase to its end


class Progress:
    """The status line a terminal shows while a run executes, rewritten in place: step, items
    done of all (when the machine says how to count them), model calls, retries, rejections,
    cost, elapsed time and the last decision.

    Counts start from the run's row when it starts or resumes, and go on from the events. The
    state, which the machine's `progress` counts items from, is folded along: the first state
    from `run.started` (or, on a resume, from the journal), then each transition's delta.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        journal: Store,
        machine: Machine[Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.journal = journal
        self.machine = machine
        self.count = machine.progress
        self.clock = clock
        self.began = clock()
        self.drawn_at: float | None = None
        self.step: str | None = None
        self.steps = self.calls = self.retries = self.rejections = 0
        self.cost_usd = 0.0
        self.decision: str | None = None
        self.state: Any = None
        self.items: tuple[int, int] | None = None
        self.counted = True  # `items` is up to date with `state`

    def start(self, run: Run, held: Sequence[Event]) -> None:
        self.step, self.steps = run.step, run.steps
        self.calls, self.retries, self.rejections = (
            run.model_calls,
            run.model_failures,
            run.rejections,
        )
        self.cost_usd = run.cost_nusd / 1e9
        if self.count is None:
            return
        started = next((e for e in held if e.kind == k.RUN_STARTED), None)
        try:
            if started is not None:
                data = started.data
                state = parts.join(data["state"], data.get("state_parts"), self.journal.blob)
                self.state = copy.deepcopy(state)
            else:  # a resume: the fold it began with, again (cheap: snapshots bound it)
                self.state = state_at(self.journal, run.run_id).state
        except Exception:
            self.count = None  # the progress line goes on without items
        self.counted = False

    def update(self, events: Sequence[Event]) -> None:
        for e in events:
            if e.step is not None:
                self.step = e.step
            if e.kind == k.TRANSITION:
                self.steps += 1
                self.step = to_step(e.data)
                if self.count is not None:
                    self._fold(e.data["delta"])
            elif e.kind == k.MODEL_ANSWERED:
                self.calls += 1
                self.cost_usd += e.data.get("cost_usd") or 0.0
            elif e.kind == k.MODEL_FAILED:
                self.retries += 1
            elif e.kind == k.OUTPUT_REJECTED:
                self.rejections += 1
            elif e.kind == k.DECISION:
                self.decision = f"{e.data.get('item')} → {e.data.get('outcome')}"
        self.draw()

    def _fold(self, ops: list[dict[str, Any]]) -> None:
        try:
            # Copied: the fold changes values in place, and these are the event's own.
            self.state = delta.apply(self.state, copy.deepcopy(ops))
        except Exception:
            self.count = None
        self.counted = False

    def _items(self) -> tuple[int, int] | None:
        if self.count is not None and not self.counted:
            try:
                value = convert.structure(
                    self.machine.converter, self.state, self.machine.state, "the state"
                )
                done, total = self.count(value)
                self.items = (int(done), int(total))
            except Exception:
                # The machine's own code: whatever it raises, the run is not the line's to stop.
                self.count, self.items = None, None
            self.counted = True
        return self.items

    def line(self) -> str:
        parts = [self.step or "(end)"]
        items = self._items()
        parts.append(f"{items[0]}/{items[1]}" if items else plural(self.steps, "step"))
        if self.calls or self.retries or self.rejections:
            parts.append(plural(self.calls, "model call"))
            if self.retries:
                parts.append(f"{self.retries} {'retry' if self.retries == 1 else 'retries'}")
            if self.rejections:
                parts.append(f"{self.rejections} rejected")
            parts.append(f"${self.cost_usd:.4f} billed")
        parts.append(_elapsed(self.clock() - self.began))
        if self.decision is not None:
            parts.append(self.decision)
        return printable(" · ".join(parts))

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and self.drawn_at is not None and now - self.drawn_at < _REDRAW_EVERY:
            return
        self.drawn_at = now
        if not write_flushed(
            self.stream, f"\r{_fit(self.line(), _columns(self.stream) - 1)}\x1b[K"
        ):
            self.drawn_at = None

    def clear(self) -> None:
        if self.drawn_at is not None:
            write_flushed(self.stream, _CLEAR)
            self.drawn_at = None


def _elapsed(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


_COLUMNS = 80  # when no one can say
_MOST_COLUMNS = 1000  # past any screen: a terminal that says more is wrong


def _sane(columns: int) -> bool:
    return 0 < columns <= _MOST_COLUMNS


def _columns(stream: IO[str]) -> int:
    """The terminal's width, asked each time: it may have been resized.

    The stream's own terminal first; else `shutil.get_terminal_size` (`$COLUMNS`, then
    stdout's terminal); else 80. A width of 0, which `script` and some CI terminals report, or
    past 1000, is no answer: trusted, it would cut the line to nothing.
    """
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a terminal, or no file at all
        columns = 0
    if not _sane(columns):
        columns = shutil.get_terminal_size((_COLUMNS, 24)).columns
    return columns if _sane(columns) else _COLUMNS


def _fit(text: str, columns: int) -> str:
    """`text` cut to `columns` cells: wide characters take two, combining ones none; a line
    longer than the terminal would wrap, and `\\r` could no longer rewrite it."""
    used = 0
    for i, c in enumerate(text):
        cells = 0 if unicodedata.combining(c) else 1 + (unicodedata.east_asian_width(c) in "WF")
        if used + cells > columns:
            return text[:i]
        used += cells
    return text
