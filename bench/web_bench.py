"""How long the audit page's pages take on a journal of 1,000,000 events, server-side.

    python bench/web_bench.py [--runs 1000] [--items 215] [--db PATH] [--repeat 20]

Builds the journal as bench/big_journal_bench.py does (unless `--db` names one built already):
1,000 runs, 90% of them fixtures/lines.py over `--items` items (about five events an item),
10% the triage pipeline against the fake Messages API, about 1,070,000 events in all. Then
starts `journal serve --read-only` on it and asks each page `--repeat` times over HTTP,
reading the time the server took from its `Server-Timing` header (the time to the answer's
first byte, inside the process: what a slow page costs, without the network or the browser).
Beside each page, the raw engine's time (`sqlite3`, in this process) for the statements the
page cannot do without: the runs' rows, the run's range of events, the fold's events. Prints
a Markdown table of the best and median of each.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from big_journal_bench import build

JOURNAL = str(Path(sys.executable).parent / "journal")


def served(db: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [JOURNAL, "serve", "--db", str(db), "--port", "0", "--read-only"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    found = re.search(r":(\d+)/", process.stdout.readline())
    if found is None:
        process.kill()
        raise SystemExit("journal serve did not start")
    return process, int(found.group(1))


def page_times(port: int, path: str, repeat: int) -> list[float]:
    """Seconds the server took for `path`, each of `repeat` asks, after one to warm up."""
    times = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(repeat + 1):
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"{path}: HTTP {answer.status}")
        took = re.search(r"dur=([\d.]+)", answer.getheader("server-timing") or "")
        if i and took is not None:
            times.append(float(took.group(1)) / 1000)
    conn.close()
    return times


def raw_times(run: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--items", type=int, default=215)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
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
            "SELECT run_id, last_seq FROM runs WHERE machine = 'lines' "
            "ORDER BY last_seq DESC, ordinal DESC"
        ).fetchone()
        (triage,) = conn.execute("SELECT run_id FROM runs WHERE machine = 'triage'").fetchone()
        (middle,) = conn.execute("SELECT ordinal FROM runs ORDER BY ordinal").fetchall()[runs // 2]
        (at,) = conn.execute(
            "SELECT max(seq) FROM events WHERE run_id = ? AND kind = 'transition' AND seq <= ?",
            (run_id, last // 2),
        ).fetchone()
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        print(f"Python {platform.python_version()}, {os.cpu_count()} cores")
        print(f"{events:,} events over {runs:,} runs, {size / 1e6:.0f} MB; run {run_id}: {last}")
        print()

        def rows_of_runs() -> object:
            found = conn.execute(
                "SELECT run_id FROM runs ORDER BY ordinal DESC LIMIT 51"
            ).fetchall()
            one = "SELECT * FROM runs WHERE run_id = ?"
            return [conn.execute(one, r).fetchone() for r in found]

        def events_of(run: str, after: int) -> Callable[[], object]:
            sql = "SELECT * FROM events WHERE run_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
            return lambda: conn.execute(sql, (run, after, after + 200)).fetchall()

        def fold() -> object:
            (snap,) = conn.execute(
                "SELECT max(seq) FROM events WHERE run_id = ? AND seq <= ? "
                "AND kind IN ('run.started', 'snapshot')",
                (run_id, at),
            ).fetchone()
            return conn.execute(
                "SELECT * FROM events WHERE run_id = ? AND seq >= ? AND seq <= ?",
                (run_id, snap, at),
            ).fetchall()

        process, port = served(db)
        half = last // 2
        pages: list[tuple[str, str, Callable[[], object] | None]] = [
            ("runs list", "/", rows_of_runs),
            ("runs list, 10th page", f"/?before={middle}", None),
            ("runs list, status done", "/?status=done", None),
            ("runs list, machine lines", "/?machine=lines", None),
            ("search by run id prefix", f"/?q={run_id[:6]}", None),
            ("a run's first page", f"/runs/{run_id}", events_of(run_id, 0)),
            ("a run's middle page", f"/runs/{run_id}?after={half}", events_of(run_id, half)),
            ("a triage run's first page", f"/runs/{triage}", events_of(triage, 0)),
            (f"state at event {at}", f"/runs/{run_id}/state?seq={at}", fold),
            ("money", "/money", None),
        ]
        try:
            print("| page | server best | server median | raw sqlite3 median |")
            print("| --- | ---: | ---: | ---: |")
            for name, path, raw in pages:
                times = page_times(port, path, args.repeat)
                raw_median = (
                    f"{statistics.median(raw_times(raw, args.repeat)) * 1000:.1f} ms" if raw else ""
                )
                print(
                    f"| {name} | {min(times) * 1000:.1f} ms | "
                    f"{statistics.median(times) * 1000:.1f} ms | {raw_median} |",
                    flush=True,
                )
        finally:
            process.terminate()
            process.wait()
            conn.close()


if __name__ == "__main__":
    main()
