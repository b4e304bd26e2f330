"""How long the reading commands take on a journal of 1,000,000 events over 1,000 runs.

    python bench/big_journal_bench.py [--runs 1000] [--items 200] [--db PATH]

Builds the journal (unless `--db` names one already built by this script): 90% of the runs
are fixtures/lines.py over `--items` items (about five events an item), 10% the triage pipeline
over fixtures/tickets.jsonl against the fake Messages API in the process, so that the cost views
have model calls to sum. Then times each reading command as a user runs it, a new process each,
best and median of five, on the last lines run: `show`, `logs | head`, `replay --at` (the
middle of the run), `cost --by run`, `runs`; and `journal sql` counting the events. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
JOURNAL = str(Path(sys.executable).parent / "journal")


def build(db: Path, runs: int, items: int, folder: Path) -> None:
    from runjournal.journal import Journal
    from runjournal.machine import Options, loader, offline, runner

    lines = loader.load(str(FIXTURES / "lines.py")).machine
    triage = loader.load(str(FIXTURES / "triage.py")).machine
    tickets = [json.loads(t) for t in (FIXTURES / "tickets.jsonl").read_text().splitlines()]
    with Journal.open(db, create=True) as journal:
        for i in range(runs):
            if i % 10 == 5:
                prepared = runner.prepare(triage, tickets)
                options = Options(models=offline("none"))
                target = "fixtures/triage.py:triage"
            else:
                words = [f"item {i} {j}" for j in range(items)]
                prepared = runner.prepare(lines, {"items": words, "out": str(folder / "out")})
                options = Options()
                target = "fixtures/lines.py:lines"
            outcome = runner.start(journal, prepared, target=target, code_hash="", options=options)
            assert outcome.run.status == "done", outcome.run.error
            if i % 100 == 99:
                print(f"  {i + 1} runs", file=sys.stderr, flush=True)


def timed(command: str, repeat: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command, shell=True, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{command}: exit {done.returncode}\n{done.stderr}")
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "journal.db"
        if not db.exists():
            start = time.perf_counter()
            build(db, args.runs, args.items, Path(tmp))
            print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        (runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        run_id, last = conn.execute(
            "SELECT run_id, last_seq FROM runs WHERE machine = 'lines' ORDER BY ordinal DESC"
        ).fetchone()
        conn.close()
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        print(f"Python {platform.python_version()}, {os.cpu_count()} cores")
        print(f"{events:,} events over {runs:,} runs, {size / 1e6:.0f} MB; run {run_id}: {last}")
        print()
        print("| command | best | median |")
        print("| --- | ---: | ---: |")
        at = f"--db {db}"
        for shown, command in (
            ("journal show RUN", f"{JOURNAL} show {run_id} {at}"),
            ("journal logs RUN | head", f"{JOURNAL} logs {run_id} {at} | head"),
            (
                f"journal replay RUN --at {last // 2}",
                f"{JOURNAL} replay {run_id} --at {last // 2} {at}",
            ),
            ("journal cost --by run", f"{JOURNAL} cost --by run {at}"),
            ("journal runs", f"{JOURNAL} runs {at}"),
            (
                "journal sql 'select count(*) from events'",
                f"{JOURNAL} sql 'select count(*) from events' {at}",
            ),
            ("journal --help (start-up alone)", f"{JOURNAL} --help"),
        ):
            best, median = timed(command)
            print(f"| `{shown}` | {best:.3f} s | {median:.3f} s |", flush=True)


if __name__ == "__main__":
    main()
