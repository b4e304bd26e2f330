"""Tests for `machine.files.atomic_write`: readers and crashes see the old file or the new one."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

from machine import atomic_write

OLD, NEW = "A" * 200_000, "B" * 300_000
CONTENTS = 'OLD, NEW = "A" * 200_000, "B" * 300_000'  # the same, for the other processes

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
from machine import atomic_write
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
    # A kill between the temporary file and the rename can leave that file, never the target.
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".state.txt.") and name.endswith(".tmp") for name in leftovers)


def test_the_new_file_has_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "page.json"
    atomic_write(target, b"{}", mode=0o600)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o600
