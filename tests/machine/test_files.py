"""Tests for `machine.files.atomic_write`: readers and crashes see the old file or the new one."""

from __future__ import annotations

import fcntl
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from runjournal.machine import atomic_write, files

OLD, NEW = "A" * 200_000, "B" * 300_000
CONTENTS = 'OLD, NEW = "A" * 200_000, "B" * 300_000'  # the same, for the other processes
TEMPORARY = re.compile(r"\.state\.txt\.runjournal-[0-9a-f]{16}\.tmp")

READER = f"""
import sys, time
{CONTENTS}
path, stop = sys.argv[1], sys.argv[2]
import os
reads = bad = 0
while not os.path.exists(stop):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        continue
    reads += 1
    if text not in (OLD, NEW):
        bad += 1
print(reads, bad)
"""

WRITER = f"""
import sys
{CONTENTS}
sys.path.insert(0, {{root!r}})
from runjournal.machine import atomic_write
path = sys.argv[1]
print("ready", flush=True)
n = 0
while True:
    atomic_write(path, NEW if n % 2 else OLD)
    n += 1
"""


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """Another process reads the file in a loop during 1,000 rewrites: always whole."""
    target, stop = tmp_path / "state.txt", tmp_path / "stop"
    atomic_write(target, OLD)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(target), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for n in range(1000):
        atomic_write(target, NEW if n % 2 == 0 else OLD)
    stop.touch()
    out, _ = reader.communicate(timeout=60)
    reads, bad = map(int, out.split())
    assert reads > 100, "the reader hardly ran: the test proved nothing"
    assert bad == 0
    assert target.read_text() == OLD
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_kill_during_a_rewrite_leaves_old_or_new(tmp_path: Path) -> None:
    """SIGKILL a process rewriting the file, 20 times at random moments: never a mix."""
    target = tmp_path / "state.txt"
    atomic_write(target, OLD)
    rng = random.Random(7)
    for _ in range(20):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER.format(root=str(ROOT)), str(target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert target.read_text() in (OLD, NEW)
    # A kill between the temporary file and the rename can leave that file, never the target;
    # the next write removes it.
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(TEMPORARY.fullmatch(name) for name in leftovers)
    atomic_write(target, NEW)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_new_file_has_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "page.json"
    atomic_write(target, b"{}", mode=0o600)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o600


PAUSED = """
import sys
sys.path.insert(0, {root!r})
from runjournal.machine import atomic_write

def pause(temporary):
    print(temporary, flush=True)
    sys.stdin.readline()  # until the test says go on, or kills this process

atomic_write(sys.argv[1], sys.argv[2], _before_rename=pause)
"""


def paused_writer(target: Path, data: str) -> tuple[subprocess.Popen[str], Path]:
    """A process writing `data` to `target`, paused before the rename, and its temporary."""
    writer = subprocess.Popen(
        [sys.executable, "-c", PAUSED.format(root=str(ROOT)), str(target), data],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    temporary = Path(writer.stdout.readline().strip())  # printed once the writer is paused
    assert TEMPORARY.fullmatch(temporary.name), temporary
    assert temporary.read_text() == data  # whole and synced, the target not yet replaced
    return writer, temporary


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_next_write_removes_a_killed_writers_temporary(tmp_path: Path) -> None:
    """SIGKILL between the temporary and the rename leaves it; the next write removes it."""
    target = tmp_path / "state.txt"
    atomic_write(target, "old")
    writer, temporary = paused_writer(target, "killed")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert temporary.exists() and target.read_text() == "old"
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert names(tmp_path) == ["state.txt"]


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    """A write removes a killed writer's temporary but not one another process is writing."""
    target = tmp_path / "state.txt"
    live, working = paused_writer(target, "live")
    dead, abandoned = paused_writer(target, "killed")  # its own clean-up spared `working`
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    atomic_write(target, "mine")
    assert not abandoned.exists()
    assert working.read_text() == "live"
    assert target.read_text() == "mine"
    live.communicate("go on\n", timeout=60)
    assert live.returncode == 0  # its rename found its temporary where it left it
    assert target.read_text() == "live"
    assert names(tmp_path) == ["state.txt"]


HAMMER = """
import sys
sys.path.insert(0, {root!r})
from runjournal.machine import atomic_write
path, me, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for n in range(times):
    atomic_write(path, f"{{me}} {{n}}")
"""


def test_concurrent_writers_never_remove_each_others_temporaries(tmp_path: Path) -> None:
    """Three processes rewrite one file 300 times each, each write cleaning up: none fails."""
    target = tmp_path / "state.txt"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER.format(root=str(ROOT)), str(target), str(me), "300"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(3)
    ]
    for writer in writers:  # all imported and waiting, so that their writes overlap
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    assert target.read_text().endswith(" 299")
    assert names(tmp_path) == ["state.txt"]


def test_only_our_abandoned_temporaries_of_that_target_are_removed(tmp_path: Path) -> None:
    """Another target's temporaries, other programs' files, folders and links stay."""
    digits = "0123456789abcdef"
    ours = tmp_path / f".state.txt.runjournal-{digits}.tmp"
    ours.write_text("abandoned")
    foreign = [
        ".state.txt.abc123.tmp",  # another program's, or an older runjournal's
        ".state.txt.runjournal-0123.tmp",
        f".state.txt.runjournal-{digits.upper()}.tmp",
        f".state.txt.runjournal-{digits}.tmp.bak",
        f"state.txt.runjournal-{digits}.tmp",
        f"..state.txt.runjournal-{digits}.tmp",  # the target .state.txt's
        f".other.txt.runjournal-{digits}.tmp",
        "state.txt.tmp",
    ]
    for name in foreign:
        (tmp_path / name).write_text("not ours")
    folder = tmp_path / f".state.txt.runjournal-{'1' * 16}.tmp"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep")
    link = tmp_path / f".state.txt.runjournal-{'2' * 16}.tmp"
    link.symlink_to(elsewhere)
    atomic_write(tmp_path / "state.txt", "new")
    assert not ours.exists()
    assert all((tmp_path / name).read_text() == "not ours" for name in foreign)
    assert folder.is_dir() and link.is_symlink() and elsewhere.read_text() == "keep"


def test_a_target_name_is_matched_literally(tmp_path: Path) -> None:
    """A name with regular-expression characters matches itself only."""
    digits = "0123456789abcdef"
    ours = tmp_path / f".p[1]+.json.runjournal-{digits}.tmp"
    theirs = tmp_path / f".p1.json.runjournal-{digits}.tmp"  # what p[1]+ would match as a regex
    ours.write_text("abandoned")
    theirs.write_text("another target's")
    atomic_write(tmp_path / "p[1]+.json", "{}")
    assert not ours.exists() and theirs.exists()


def test_a_writer_whose_new_temporary_was_removed_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another write may take a temporary between its open and its writer's flock, see it
    unlocked, and remove it: the writer notices and writes through a new one."""
    target = tmp_path / "state.txt"
    real = fcntl.flock
    removed: list[Path] = []

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not removed:  # the writer's own lock, the first time
            [temporary] = [p for p in tmp_path.iterdir() if TEMPORARY.fullmatch(p.name)]
            files._remove_abandoned(tmp_path, target.name)  # another write's clean-up, just then
            assert not temporary.exists()
            removed.append(temporary)
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    atomic_write(target, "new")
    assert removed and target.read_text() == "new"
    assert names(tmp_path) == ["state.txt"]


def test_a_write_costs_the_same_in_a_folder_of_many_files(tmp_path: Path) -> None:
    """Writing into a folder that holds 20,000 files costs about what writing into an empty one
    does: the folder is listed for temporaries only when it changed since this process's last
    write (listing 20,000 files would cost several times a write). A ratio in one test."""

    def per_write(folder: Path) -> float:
        atomic_write(folder / "first.json", "{}")
        best = float("inf")
        for n in range(3):
            start = time.perf_counter()
            for i in range(50):
                atomic_write(folder / f"page-{n}-{i}.json", "{}")
            best = min(best, time.perf_counter() - start)
        return best

    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    for i in range(20_000):
        (full / f"T-{i:06d}.json").touch()
    few, many = per_write(empty), per_write(full)
    assert many < 3 * few, (few, many)
