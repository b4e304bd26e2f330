"""How fast the journal is on this machine, beside raw sqlite3 at the same durability.

    python bench/journal_bench.py [--steps 10000] [--events 100000]

Prints a Markdown table:
- microseconds per step of a run whose every step makes one effect (one effect event and one
  transition event per step), at the default durability (`synchronous=NORMAL`) and at `full`;
- raw `sqlite3`, one INSERT and one commit per event, same table shape, same settings;
- events folded per second when replaying a run of `--events` transitions;
- seconds to resume that run (lease, fold from the newest snapshot, re-enter the step);
- microseconds per event of the hash chain (each event's sha256 over the previous hash and
  the event as stored), over the events of the step run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from runjournal.journal import Durability, Journal, chain, replay
from runjournal.machine import Context, Machine, Options, Transition, runner


@attrs.frozen
class Count:
    n: int = 0
    limit: int = 0
    total: int = 0


def counting(effects: bool, stop_at: int | None = None) -> Machine[Count]:
    m = Machine("bench", state=Count, start="step")

    @m.step
    def step(ctx: Context, s: Count) -> Transition:
        if s.n == stop_at:
            raise KeyboardInterrupt  # stands for a crash, at a known place
        if s.n == s.limit:
            return ctx.finish(s)
        value = ctx.effect("tick", lambda: s.n) if effects else s.n
        return ctx.goto("step", attrs.evolve(s, n=s.n + 1, total=s.total + value))

    return m


def fresh(path: Path) -> Path:
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    return path


def per_step_us(folder: Path, steps: int, durability: Durability) -> float:
    db = fresh(folder / f"steps-{durability}.db")
    with Journal.open(db, create=True, durability=durability) as journal:
        prepared = runner.prepare(counting(effects=True), {"limit": steps})
        t0 = time.perf_counter()
        outcome = runner.start(journal, prepared, target="bench", code_hash="0")
        elapsed = time.perf_counter() - t0
    assert outcome.run.status == "done" and outcome.run.effects == steps
    return elapsed / steps * 1e6


def raw_sqlite_us(folder: Path, events: int, durability: Durability) -> float:
    conn = sqlite3.connect(fresh(folder / f"raw-{durability}.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "at TEXT NOT NULL, kind TEXT NOT NULL, step TEXT, data TEXT NOT NULL, UNIQUE (run_id, seq))"
    )
    data = json.dumps({"name": "tick", "call": "#0", "result": 1})
    t0 = time.perf_counter()
    for seq in range(events):
        conn.execute(
            "INSERT INTO events (run_id, seq, at, kind, step, data) VALUES (?, ?, ?, ?, ?, ?)",
            ("r", seq, "2026-11-26T00:00:00.000Z", "effect.done", "step", data),
        )
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed / events * 1e6


def chain_us(folder: Path) -> tuple[float, int, float]:
    """Microseconds per event to chain the events of the step run; their count and mean size."""
    conn = sqlite3.connect(folder / "steps-normal.db")
    rows = conn.execute("SELECT run_id, seq, at, kind, step, data FROM events").fetchall()
    conn.close()
    event_hash, previous = chain.event_hash, chain.GENESIS
    t0 = time.perf_counter()
    for run_id, seq, at, kind, step, data in rows:
        previous = event_hash(previous, run_id, seq, at, kind, step, data)
    elapsed = time.perf_counter() - t0
    size = sum(len(row[5]) for row in rows) / len(rows)
    return elapsed / len(rows) * 1e6, len(rows), size


def long_run(folder: Path, events: int, effects: bool) -> tuple[Path, str]:
    """A run of about `events` events, stopped just before its end.

    With effects, each step has one effect and one transition; without, only a transition.
    """
    db = fresh(folder / f"long-{effects}.db")
    steps = events // 2 if effects else events
    with Journal.open(db, create=True) as journal:
        prepared = runner.prepare(counting(effects, stop_at=steps), {"limit": steps + 1})
        with contextlib.suppress(KeyboardInterrupt):
            runner.start(journal, prepared, target="bench", code_hash="0")
        (run,) = journal.runs()
    return db, run.run_id


def fold_rate(db: Path, run_id: str) -> tuple[int, int, float]:
    """The run's events, its transitions, and the time to replay every state."""
    with Journal.open(db) as journal:
        events = journal.run(run_id).last_seq
        t0 = time.perf_counter()
        transitions = sum(1 for _ in replay(journal, run_id)) - 1
        elapsed = time.perf_counter() - t0
    return events, transitions, elapsed


def resume_seconds(db: Path, run_id: str) -> float:
    """From calling resume to the first step running again."""
    entered: list[float] = []
    m = Machine("bench", state=Count, start="step")

    @m.step
    def step(ctx: Context, s: Count) -> Transition:
        entered.append(time.perf_counter())
        raise KeyboardInterrupt

    with Journal.open(db) as journal:
        t0 = time.perf_counter()
        with contextlib.suppress(KeyboardInterrupt):
            runner.resume(journal, run_id, m, target="bench", code_hash="0", options=Options())
    return entered[0] - t0


def best(times: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for durability in ("normal", "full"):
            # Alternated, best of three: this measures the code, not a neighbour's burst.
            ours, raw = [], []
            for _ in range(args.repeat):
                ours.append(per_step_us(folder, args.steps, durability))
                raw.append(raw_sqlite_us(folder, args.steps, durability))
            rows.append((durability, min(ours), min(raw)))
        hashing = min((chain_us(folder) for _ in range(args.repeat)), key=lambda r: r[0])
        folds = []
        for effects in (True, False):
            db, run_id = long_run(folder, args.events, effects)
            events, transitions, elapsed = min(
                (fold_rate(db, run_id) for _ in range(args.repeat)), key=lambda r: r[2]
            )
            resume = best(args.repeat, lambda: resume_seconds(db, run_id))  # noqa: B023
            folds.append((effects, events, transitions, elapsed, resume))

    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {platform.system()}; {args.steps:,} steps, one effect each\n"
    )
    print("| durability | runjournal, µs per step | raw sqlite3, µs per committed event | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for durability, ours, raw in rows:
        print(f"| {durability} | {ours:,.1f} | {raw:,.1f} | {ours / raw:.2f}x |")
    per_event, events_hashed, size = hashing
    print(
        f"\nHash chain: {per_event:.2f} µs per event appended "
        f"({events_hashed:,} events of {size:.0f} bytes on average)\n"
    )
    print("| run replayed | events | transitions | events folded per second | resume |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for effects, events, transitions, elapsed, resume in folds:
        shape = "one effect per step" if effects else "transitions only (worst case)"
        print(
            f"| {shape} | {events:,} | {transitions:,} | {events / elapsed:,.0f} "
            f"| {resume * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    sys.exit(main())
