"""What a big input costs: peak memory and journal size for 100 MB of input, against the input.

    python bench/big_input_bench.py [--mb 100] [--only tickets,lines]

Two inputs, each written to a file of about `--mb` megabytes and given to `journal run` in a
process of its own, stopped by `--max-steps 2` once the run has started (what follows the start
costs what any run's steps cost, measured by scale_bench.py):
- `tickets`: JSON Lines of support tickets (fixtures/tickets.jsonl's, renumbered) for
  fixtures/triage.py, whose first state holds them all as a tuple of attrs instances;
- `lines`: one JSON document `{"items": [...], "out": ...}` of short strings for
  fixtures/lines.py, whose first state holds the strings.

Prints a Markdown table: the input's size, the process's peak RSS, the journal's size (the
database and its log), each also as a multiple of the input's size, and the targets: peak RSS at
most twice the input + 100 MB, the journal at most 1.1 times the input + its events.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def write_tickets(path: Path, size: int) -> None:
    tickets = [json.loads(line) for line in (FIXTURES / "tickets.jsonl").read_text().splitlines()]
    with path.open("w") as f:
        i = 0
        while f.tell() < size:
            f.write(json.dumps(dict(tickets[i % len(tickets)], id=f"T-{i:08d}")) + "\n")
            i += 1


def write_lines(path: Path, size: int) -> None:
    items, total, i = [], 0, 0
    while total < size:
        item = f"item number {i} of a big input, long enough to be a line of text"
        items.append(item)
        total += len(item) + 4
        i += 1
    path.write_text(json.dumps({"items": items, "out": str(path.parent / "out.txt")}))


CASES = {
    "tickets": ("tickets.jsonl", write_tickets, FIXTURES / "triage.py"),
    "lines": ("input.json", write_lines, FIXTURES / "lines.py"),
}


def measure(case: str, size: int, folder: Path) -> tuple[int, int, int]:
    """The input's size, the run's peak RSS and the journal's size, in bytes."""
    name, _, target = CASES[case]
    source = folder / name
    # Written by a process of its own: what this one holds would count in the run's peak RSS.
    subprocess.run([sys.executable, __file__, "--write", case, str(source), str(size)], check=True)
    db = folder / "journal.db"
    journal = str(Path(sys.executable).parent / "journal")
    args = [journal, "run", str(target), "--input", str(source), "--db", str(db), "--quiet"]
    args += ["--max-steps", "2", "--fake-model", "none"]
    process = subprocess.Popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    _, err = process.communicate()
    if os.waitstatus_to_exitcode(status) != 3:  # killed by its step limit, as asked
        raise SystemExit(f"{case}: journal run did not stop at its step limit:\n{err.decode()}")
    journal_size = sum(p.stat().st_size for p in folder.glob("journal.db*"))
    return source.stat().st_size, usage.ru_maxrss * 1024, journal_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--only", default="tickets,lines")
    parser.add_argument("--write", nargs=3, metavar=("CASE", "PATH", "BYTES"))
    args = parser.parse_args()
    if args.write:
        case, path, size = args.write
        CASES[case][1](Path(path), int(size))
        return
    print("| input | input MB | peak RSS MB | x input | journal MB | x input | targets MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in args.only.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            size, rss, journal = measure(case, args.mb * 1_000_000, Path(tmp))
        mb = 1e6
        print(
            f"| {case} | {size / mb:.0f} | {rss / mb:.0f} | {rss / size:.2f} "
            f"| {journal / mb:.0f} | {journal / size:.2f} "
            f"| RSS ≤ {(2 * size + 100 * mb) / mb:.0f}, journal ≤ {1.1 * size / mb:.0f} + events |"
        )


if __name__ == "__main__":
    main()
