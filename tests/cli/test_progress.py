"""Tests for the progress line (`cli.progress.Progress`): on a terminal, one status line rewritten
in place while a run executes, cleared before the outcome; off a terminal, none of it.

The terminal is a pseudo-terminal from pexpect; every wait is on output seen, with a timeout.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import FIXTURES, journal_command

from runjournal.cli.progress import _columns

LINES = str(FIXTURES / "lines.py")
SLOW = str(FIXTURES / "slow.json")
# The progress line: `\r`, the step, `N steps` or `done/all`, ..., then erase to the line's end.
STEPS = re.compile(r"\r(measure|record) · (\d+) steps? · ")
ITEMS = re.compile(r"\rgo · (\d+)/(\d+) · ")

# Counts its items (`progress=`); stops (fails) at an item while a file `stop-ITEM` exists.
COUNTED = """
import os
import time

import attrs
from runjournal.machine import Context, Machine, Transition


@attrs.frozen
class S:
    items: tuple[str, ...]
    pause: float = 0.15  # longer than the redraw interval: each effect's batch is drawn
    next: int = 0


counted = Machine("counted", state=S, start="go", progress=lambda s: (s.next, len(s.items)))


@counted.step
def go(ctx: Context, s: S) -> Transition:
    if s.next == len(s.items):
        return ctx.finish(s)
    item = s.items[s.next]
    ctx.effect("wait", lambda: time.sleep(s.pause))
    if os.path.exists("stop-" + item):
        raise RuntimeError("stopped at " + item)
    ctx.decide(item=item, outcome="done")
    return ctx.goto("go", attrs.evolve(s, next=s.next + 1))
"""


def spawn(*args: str, db: Path, cwd: Path, columns: int = 200) -> pexpect.spawn:
    """`journal ARGS --db DB` on a pseudo-terminal, by default wide enough for the whole line;
    `$COLUMNS` unset, so the terminal's own width is what counts."""
    command = [*journal_command(), *args, "--db", str(db)]
    env = {name: value for name, value in os.environ.items() if name != "COLUMNS"}
    return pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(cwd),
        env={**env, "TERM": "xterm"},
        encoding="utf-8",
        dimensions=(24, columns),
        timeout=30,
    )


def finish(child: pexpect.spawn) -> str:
    """What the process printed until it exited; asserts it exited 0."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return str(child.before)


def assert_outcome_on_a_clean_line(seen: str) -> str:
    """The progress line was erased (`\\r` then erase to the line's end) right before the
    outcome, which starts its line; returns the run id."""
    found = re.search(r"\r\x1b\[Krun (\w+) done: ", seen)
    assert found is not None, seen[-300:]
    after = seen[found.end() :]
    assert "\r" not in after.rstrip("\r\n"), after  # nothing drawn over it since
    return found.group(1)


def test_the_progress_line_updates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    child = spawn("run", LINES, "--input", SLOW, db=db, cwd=tmp_path)
    child.expect(r"run \w+ started: lines")
    counts: list[int] = []
    while len(counts) < 4 or counts[-1] < 6:
        child.expect(STEPS)
        counts.append(int(child.match.group(2)))
    assert counts == sorted(counts) and len(set(counts)) >= 3
    seen = child.after + finish(child)
    assert_outcome_on_a_clean_line(seen)
    assert "kind=" not in seen  # no event lines on a terminal
    assert all(len(line) < 200 for line in seen.split("\r"))


def test_items_and_the_last_decision_show_and_a_resume_counts_on(tmp_path: Path) -> None:
    """With `progress=` the line shows items done of all, from the state folded along; a
    resumed run starts from the state in the journal (2 of 4 done), not from 0."""
    (tmp_path / "counted.py").write_text(COUNTED)
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "b", "c", "d"]}))
    (tmp_path / "stop-c").touch()
    db = tmp_path / "journal.db"
    child = spawn("run", "counted.py", "--input", "in.json", db=db, cwd=tmp_path)
    child.expect(r"\rgo · 1/4 · [^\r]* · a → done\x1b\[K")
    child.expect(r"\rgo · 2/4 · [^\r]* · b → done\x1b\[K")
    child.expect(r"\r\x1b\[Krun (\w+) failed at step go: RuntimeError: stopped at c")
    run_id = child.match.group(1)
    child.expect(pexpect.EOF)
    (tmp_path / "stop-c").unlink()
    child = spawn("resume", run_id, db=db, cwd=tmp_path)
    child.expect(f"run {run_id} resumed: counted")
    child.expect(ITEMS)
    assert child.match.group(1, 2) == ("2", "4")
    child.expect(r"\rgo · 3/4 · [^\r]* · c → done\x1b\[K")
    seen = child.after + finish(child)
    assert assert_outcome_on_a_clean_line(seen) == run_id


@pytest.mark.parametrize(
    ("flags", "lines", "every"),
    [
        (("--log",), True, False),
        (("--log", "brief"), True, False),
        (("--log", "all"), True, True),
        (("-v",), True, True),
        (("--quiet",), False, False),
    ],
    ids=["log", "log brief", "log all", "v", "quiet"],
)
def test_log_and_quiet_on_a_terminal(
    tmp_path: Path, flags: tuple[str, ...], lines: bool, every: bool
) -> None:
    """--log writes event lines even on a terminal (brief ones, or with `all` or -v every
    event), --quiet nothing; neither a progress line."""
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "bb"], "out": "o"}))
    db = tmp_path / "journal.db"
    seen = finish(spawn("run", LINES, "--input", "in.json", *flags, db=db, cwd=tmp_path))
    assert "\x1b[K" not in seen and " · " not in seen
    assert ("kind=run.started" in seen) is lines
    assert ("kind=transition" in seen) is every
    assert ("started: lines" in seen) is lines
    assert re.search(r"run \w+ done: ", seen)


def test_a_terminal_of_zero_columns_still_shows_the_progress_line(tmp_path: Path) -> None:
    """A terminal that says it is 0 columns wide (as under `script`) is taken as 80 wide,
    not as one where the line must be cut to nothing."""
    db = tmp_path / "journal.db"
    seen = finish(spawn("run", LINES, "--input", SLOW, db=db, cwd=tmp_path, columns=0))
    drawn = [line for line in seen.split("\r") if line.endswith("\x1b[K") and line != "\x1b[K"]
    assert any(STEPS.match("\r" + line) for line in drawn), seen[-300:]
    assert all(len(line) <= 80 + len("\x1b[K") for line in drawn)
    assert_outcome_on_a_clean_line(seen)


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: its controlling side and the side a program writes to."""
    control, side = os.openpty()
    try:
        yield control, side
    finally:
        os.close(side)
        os.close(control)


def set_columns(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


@pytest.mark.parametrize(
    ("reported", "env", "expected"),
    [
        (120, None, 120),  # the terminal's own width
        (120, "90", 120),  # the stream's terminal comes first: stdout may be elsewhere
        (0, None, 80),  # `script`: 0 is no answer
        (0, "90", 90),  # ... then $COLUMNS
        (0, "0", 80),
        (5000, None, 80),  # past any screen: no answer either
    ],
)
def test_columns_treats_zero_and_absurd_widths_as_unknown(
    terminal: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
    reported: int,
    env: str | None,
    expected: int,
) -> None:
    _, side = terminal
    set_columns(side, reported)
    if env is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", env)
    monkeypatch.setattr(sys, "__stdout__", None)  # stdout is no terminal either
    with open(side, "w", closefd=False) as stream:
        assert os.get_terminal_size(stream.fileno()).columns == reported
        assert _columns(stream) == expected


def test_columns_of_a_stream_that_is_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "__stdout__", None)
    with open(os.devnull, "w") as stream:
        assert _columns(stream) == 80


def test_no_progress_line_without_a_terminal(tmp_path: Path) -> None:
    """Through pipes, stderr has the event lines and the run's notes: no `\\r`, no escape."""
    (tmp_path / "counted.py").write_text(COUNTED)
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "b"], "pause": 0.0}))
    done = subprocess.run(
        [*journal_command(), "run", "counted.py", "--input", "in.json"],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "TERM": "xterm", "JOURNAL_DB": str(tmp_path / "journal.db")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "\r" not in err and "\x1b" not in err and " · " not in err
    assert all(" run_id=" in line for line in err.splitlines()[1:])
    assert done.stdout.decode().startswith("run ")
