"""`journal copy` of a 100,000-step journal from SQLite to PostgreSQL and back.

    python bench/copy_bench.py [--db URL] [--items 50000]

The `lines` pipeline of bench/scale_bench.py over `--items` items (two steps an item) is run
into a SQLite journal; `journal copy` moves it to a new PostgreSQL database (without --db, a
throwaway server: tests/postgres.py, fsync on) and from there to a new SQLite file. Prints a
Markdown table: the seconds of each copy and of `journal verify` at each end, the heads each
verify prints (the same everywhere), and whether the final states are equal.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from runjournal.journal import open_store, state_at

ROOT = Path(__file__).resolve().parent.parent
JOURNAL = str(Path(sys.executable).parent / "journal")


def timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([JOURNAL, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"journal {' '.join(args)}: {done.stderr}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", help="A PostgreSQL server's URL (a database is made there).")
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()
    cluster = None
    if args.db is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres import Cluster, find_bindir

        bindir = find_bindir()
        if isinstance(bindir, str):
            raise SystemExit(bindir)
        cluster = Cluster(bindir, fsync=True)
        cluster.start()
        url = cluster.create_database("copied")
    else:
        with psycopg.connect(args.db, autocommit=True) as conn:
            conn.execute("CREATE DATABASE copied_bench")
        url = str(psycopg.conninfo.make_conninfo(args.db, dbname="copied_bench"))
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            source, back = work / "journal.db", work / "back.db"
            items = [f"w{i:06d}" + "x" * (i % 9) for i in range(args.items)]
            (work / "in.json").write_text(json.dumps({"items": items, "out": str(work / "out")}))
            lines = str(ROOT / "fixtures" / "lines.py")
            ran, _ = timed(
                "run", lines, "--input", str(work / "in.json"), "--db", str(source), "--quiet"
            )
            with open_store(source, readonly=True) as journal:
                (run,) = journal.runs()
                steps, events = run.steps, run.last_seq
            rows = [("run into SQLite", ran, "")]
            there, _ = timed("copy", str(source), url)
            back_again, _ = timed("copy", url, str(back))
            rows += [
                ("copy SQLite → PostgreSQL", there, ""),
                ("copy PostgreSQL → SQLite", back_again, ""),
            ]
            heads = []
            for name, where in (
                ("SQLite", str(source)),
                ("PostgreSQL", url),
                ("SQLite, back", str(back)),
            ):
                took, out = timed("verify", "--json", "--db", where)
                report = json.loads(out)
                assert report["ok"], report["problems"][:3]
                heads.append(report["runs"])
                rows.append((f"verify {name}", took, "ok"))
            states = []
            for where in (source, url, back):
                with open_store(where, readonly=True) as journal:
                    states.append(state_at(journal, run.run_id).state)
        print(
            f"{platform.node()}, Python {platform.python_version()}: a run of {steps:,} steps, "
            f"{events:,} events\n"
        )
        print("| what | seconds | |\n| --- | ---: | --- |")
        for what, seconds, note in rows:
            print(f"| {what} | {seconds:.1f} | {note} |")
        same_heads = heads[0] == heads[1] == heads[2]
        print(
            f"\nheads equal at the three ends: {same_heads}; final states equal: "
            f"{states[0] == states[1] == states[2]}"
        )
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
