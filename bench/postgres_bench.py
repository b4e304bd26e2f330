"""The journal on PostgreSQL on this machine: a durable step beside raw psycopg, and workers
sharing one API key.

    python bench/postgres_bench.py [--db URL] [--steps 2000] [--runs 40] [--rpm 600]

Without --db, a throwaway server is started (tests/postgres.py: initdb as an unprivileged user,
a Unix socket, fsync on). Prints Markdown tables:
- microseconds per step of a run whose every step makes one effect (its `effect.done` and the
  held `transition`, one transaction), beside a raw psycopg transaction of the same statements
  (lock the run's row, insert the two events, update the row, commit), at each durability:
  `normal` (a commit outlives the process; the server's WAL writer syncs it within a fraction
  of a second: `synchronous_commit = off`) and `full` (each commit synced before it returns);
- the triage pipeline submitted as `--runs` runs of 10 tickets and executed by 1, 2 and 4
  `journal worker --rpm RPM` processes (8 runs at a time each) sharing one key of a fake API
  that allows `--rpm` requests a minute (a bucket of a minute's worth, as the API's) and answers
  in 0.2 s, the workers pacing their requests together through the journal: requests answered
  per minute from the first answer to the last (the journal's `model_calls`), as a share of the
  limit, the 429s the fake sent, and whether every run ended done (no breaker opened).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import psycopg

from runjournal.journal import Durability, events, open_store
from runjournal.machine import Context, Machine, Transition, runner
from runjournal.machine.testing import FakeModel, serve

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = str(ROOT / "fixtures" / "triage.py")


@attrs.frozen
class Count:
    n: int = 0
    limit: int = 0


def counting() -> Machine[Count]:
    m = Machine("bench", state=Count, start="step")

    @m.step
    def step(ctx: Context, s: Count) -> Transition:
        if s.n == s.limit:
            return ctx.finish(s)
        ctx.effect("tick", lambda: s.n)
        return ctx.goto("step", attrs.evolve(s, n=s.n + 1))

    return m


def step_us(url: str, steps: int, durability: Durability) -> float:
    with open_store(url, create=True, durability=durability) as journal:
        prepared = runner.prepare(counting(), {"limit": steps})
        t0 = time.perf_counter()
        outcome = runner.start(journal, prepared, target="bench", code_hash="0")
        elapsed = time.perf_counter() - t0
    assert outcome.run.status == "done" and outcome.run.effects == steps
    return elapsed / steps * 1e6


def raw_us(url: str, steps: int, durability: Durability) -> float:
    """The statements of a step's append, as one psycopg transaction each: synced at `full`,
    left to the server's WAL writer at `normal` (`synchronous_commit = off`), as the store."""
    with psycopg.connect(url, autocommit=True) as conn:
        if durability == "normal":
            conn.execute("SET synchronous_commit = off")
        conn.execute(
            "CREATE TABLE raw_events (run_id text, seq integer, at timestamptz, kind text, "
            "step text, data json, hash text, PRIMARY KEY (run_id, seq))"
        )
        conn.execute(
            "CREATE TABLE raw_runs (run_id text PRIMARY KEY, steps bigint, last_seq "
            "bigint, status text, updated_at timestamptz)"
        )
        conn.execute("INSERT INTO raw_runs VALUES ('r', 0, 0, 'running', now())")
        effect = json.dumps({"name": "tick", "call": "#0", "result": 1})
        move = json.dumps(
            {"to_step": "step", "delta": [{"op": "replace", "path": "/n", "value": 1}]}
        )
        at = events.timestamp(time.time())
        t0 = time.perf_counter()
        for n in range(steps):
            with conn.transaction():
                conn.execute("SELECT status FROM raw_runs WHERE run_id = 'r' FOR UPDATE")
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO raw_events VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [
                            ("r", 2 * n, at, "transition", "step", move, "h" * 64),
                            ("r", 2 * n + 1, at, "effect.done", "step", effect, "h" * 64),
                        ],
                    )
                conn.execute(
                    "UPDATE raw_runs SET steps = steps + 1, last_seq = %s, updated_at = %s "
                    "WHERE run_id = 'r' AND status != 'done'",
                    (2 * n + 1, at),
                )
        return (time.perf_counter() - t0) / steps * 1e6


def tickets(folder: Path, runs: int, per_run: int) -> list[Path]:
    source = (ROOT / "fixtures" / "tickets.jsonl").read_text().splitlines()
    made = []
    for n in range(runs):
        rows = [json.loads(line) for line in source[(n * per_run) % 50 :][:per_run]]
        for row in rows:
            row["id"] = f"B{n:03d}-{row['id']}"
        path = folder / f"tickets-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        made.append(path)
    return made


def throughput(url: str, workers: int, runs: int, rpm: int, folder: Path) -> dict[str, object]:
    journal = [str(Path(sys.executable).parent / "journal")]
    log = folder / f"requests-{workers}.jsonl"
    for path in tickets(folder, runs, 10):
        subprocess.run(
            [*journal, "submit", TRIAGE, "--input", str(path), "--db", url],
            check=True,
            capture_output=True,
            cwd=folder,
        )
    with serve(FakeModel(rpm=rpm, latency=0.2, retry_after=1.0), log=log) as server:
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "bench"}
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [
                    *journal,
                    "worker",
                    "--concurrency",
                    "8",
                    "--rpm",
                    str(rpm),
                    "--exit-when-idle",
                    "--db",
                    url,
                ],
                env=env,
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        for p in processes:
            p.wait()
        wall = time.perf_counter() - started
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    with open_store(url, readonly=True) as store:
        statuses = {r.status for r in store.runs()}
        span = store.query(
            "SELECT extract(epoch FROM max(at) - min(at)), count(*) FROM model_calls"
        )
        ((seconds, calls),) = list(span.rows)
    # From the first answer to the last: the workers' start and their last run's end aside.
    per_minute = (int(calls) - 1) / float(seconds) * 60
    return {
        "workers": workers,
        "requests": len(lines),
        "answered/min": round(per_minute),
        "of limit": f"{per_minute / rpm:.0%}",
        "429s": sum(1 for line in lines if line["status"] == 429),
        "all done": statuses == {"done"},
        "seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", help="A PostgreSQL server's URL (its databases are made here).")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rpm", type=int, default=600)
    args = parser.parse_args()
    cluster = None
    if args.db is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres import Cluster, find_bindir  # the suite's own throwaway server

        bindir = find_bindir()
        if isinstance(bindir, str):
            raise SystemExit(bindir)
        cluster = Cluster(bindir, fsync=True)
        cluster.start()
        new: Callable[[], str] = cluster.create_database
    else:
        base = args.db

        def new() -> str:
            name = f"bench_{os.getpid()}_{time.monotonic_ns()}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            return str(psycopg.conninfo.make_conninfo(base, dbname=name))

    try:
        print(f"PostgreSQL on {platform.node()}, Python {platform.python_version()}\n")
        print("| durability | runjournal µs per step | raw psycopg µs | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for durability in ("normal", "full"):
            ours = min(step_us(new(), args.steps, durability) for _ in range(3))
            raw = min(raw_us(new(), args.steps, durability) for _ in range(3))
            print(f"| {durability} | {ours:.0f} | {raw:.0f} | {ours / raw:.2f}x |")
        print()
        with tempfile.TemporaryDirectory() as folder:
            rows = [throughput(new(), n, args.runs, args.rpm, Path(folder)) for n in (1, 2, 4)]
        print("| " + " | ".join(str(k) for k in rows[0]) + " |")
        print("| " + " | ".join("---" for _ in rows[0]) + " |")
        for row in rows:
            print("| " + " | ".join(str(v) for v in row.values()) + " |")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
