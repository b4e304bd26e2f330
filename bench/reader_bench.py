"""Whether reading a journal waits for the processes writing it: read latency, idle and busy.

    python bench/reader_bench.py [--reads 60] [--writers 8]

Times `journal runs` and `journal sql "select count(*) from events"` (each a whole command, a
new process) and the same reads in this process (`Journal.open(readonly=True)`, then the runs
or the count), first on an idle journal, then while WRITERS processes each run a pipeline
against it as fast as a model answering in 5 ms lets them (a commit every few milliseconds
each). Prints p50 and p99 per read, and how many reads failed (e.g. "database is locked").
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runjournal.journal import Journal

WRITER = """
import sys, time, attrs
from runjournal import machine
from runjournal.machine import runner
from runjournal.journal import Journal
from runjournal.machine import Machine

@attrs.frozen
class Count:
    n: int = 0
    limit: int = 0

m = Machine("writer", state=Count, start="step")

@m.step
def step(ctx, s):
    if s.n == s.limit:
        return ctx.finish(s)
    ctx.effect("ask", lambda: time.sleep(0.005) or s.n)  # a model that answers in 5 ms
    return ctx.goto("step", attrs.evolve(s, n=s.n + 1))

stop = time.monotonic() + float(sys.argv[2])
with Journal.open(sys.argv[1]) as journal:
    while time.monotonic() < stop:
        runner.start(journal, runner.prepare(m, {"limit": 50}), target="w", code_hash="0")
"""


def journal_command() -> list[str]:
    script = Path(sys.executable).parent / "journal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runjournal.cli"]


def timed(fn: Callable[[], bool], reads: int) -> tuple[list[float], int]:
    """Seconds each call took, and how many failed."""
    times, failures = [], 0
    for _ in range(reads):
        t0 = time.perf_counter()
        ok = fn()
        times.append(time.perf_counter() - t0)
        failures += not ok
    return times, failures


def command(db: Path, *args: str) -> Callable[[], bool]:
    def run() -> bool:
        done = subprocess.run(
            [*journal_command(), *args, "--db", str(db)], capture_output=True, text=True
        )
        return done.returncode == 0 and "locked" not in done.stderr

    return run


def in_process(db: Path, what: str) -> Callable[[], bool]:
    def read() -> bool:
        try:
            with Journal.open(db, readonly=True) as journal:
                if what == "runs":
                    journal.runs()
                else:
                    journal.conn.execute("SELECT count(*) FROM events").fetchone()
        except Exception:
            return False
        return True

    return read


def p(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=60)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "journal.db"
        # A journal with history to read: writers run alone for a few seconds first.
        Journal.open(db, create=True).close()
        warm = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), "3"]) for _ in range(4)]
        for w in warm:
            w.wait()
        reads: dict[str, Callable[[], bool]] = {
            "`journal runs`": command(db, "runs"),
            '`journal sql "select count(*) from events"`': command(
                db, "sql", "select count(*) from events"
            ),
            "runs, in-process": in_process(db, "runs"),
            "count(*), in-process": in_process(db, "count"),
        }
        idle = {name: timed(fn, args.reads) for name, fn in reads.items()}
        seconds = 600
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(seconds)])
            for _ in range(args.writers)
        ]
        try:
            time.sleep(2)  # the writers are all writing
            busy = {name: timed(fn, args.reads) for name, fn in reads.items()}
        finally:
            for w in writers:
                w.kill()
                w.wait()
        conn = sqlite3.connect(db)
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        conn.close()

    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores; {args.reads} reads each; {events:,} events in the journal "
        f"at the end; {args.writers} writers\n"
    )
    print(
        "| read | idle p50 | idle p99 | with writers p50 | with writers p99 | p99 ratio "
        "| failed reads |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in reads:
        quiet, loud = idle[name][0], busy[name][0]
        failed = idle[name][1] + busy[name][1]
        print(
            f"| {name} | {p(quiet, 50):.1f} ms | {p(quiet, 99):.1f} ms | {p(loud, 50):.1f} ms "
            f"| {p(loud, 99):.1f} ms | {p(loud, 99) / p(quiet, 99):.2f}x | {failed} |"
        )


if __name__ == "__main__":
    sys.exit(main())
