"""What a step costs as runs grow: 1,000 to 100,000 items, each row in a process of its own.

    python bench/scale_bench.py [--sizes 1000,10000,100000] [--only lines,triage,growing,map]

Four pipelines, offline:
- `lines` (fixtures/lines.py): two steps an item, one effect each; the state holds the input
  tuple and a `next` index, the README's own pattern.
- `triage` (fixtures/triage.py): a step a ticket, one model call each against the fake Messages
  API in the process (no latency, no faults), a decision, a page for the urgent ones.
- `growing` (below): a step an item whose result tuple grows by one item a step.
- `map` (below): one step scoring every item with `ctx.map` at concurrency 16, one model call an
  item, against the same fake.

Each row is a new process: `whole` is `journal run` from start to exit (imports, reading the
input, the run, closing the journal); `in-process` times `runner.start` alone, in a process
that has already read its input. Prints a Markdown table: µs a step (an item for `map`), peak
RSS of that process, the journal's size; then, per pipeline and way, the ratio of the largest
size's µs a step to the smallest's.
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
from pathlib import Path
from typing import Any

import attrs

from runjournal.machine import Context, Machine, Transition

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
HERE = Path(__file__).resolve()
MODEL = "claude-haiku-4-5"


@attrs.frozen
class Items:
    items: tuple[str, ...]
    next: int = 0
    results: tuple[int, ...] = ()


growing = Machine("growing", state=Items, start="measure")


@growing.step
def measure(ctx: Context, s: Items) -> Transition:
    if s.next == len(s.items):
        return ctx.finish(s)
    n = ctx.effect("measure", lambda: len(s.items[s.next]))
    return ctx.goto("measure", attrs.evolve(s, next=s.next + 1, results=(*s.results, n)))


@attrs.frozen
class Score:
    score: int
    reason: str


mapped = Machine("mapped", state=Items, start="score", model=MODEL)


@mapped.step(to=())
def score(ctx: Context, s: Items) -> Transition:
    def one(ctx: Context, item: str) -> int:
        return ctx.ask(Score, system="Score the urgency, 1 to 5.", prompt=item, max_tokens=64).score

    results = ctx.map(one, s.items, key=lambda item: item, concurrency=16)
    return ctx.finish(attrs.evolve(s, results=tuple(results)))


def write_input(pipeline: str, n: int, folder: Path) -> Path:
    """The input of `n` items for `pipeline`, as a file `journal run --input` reads."""
    if pipeline == "triage":
        lines = (FIXTURES / "tickets.jsonl").read_text().splitlines()
        tickets = [json.loads(line) for line in lines]
        path = folder / "tickets.jsonl"
        with path.open("w") as f:
            for i in range(n):
                ticket = dict(tickets[i % len(tickets)], id=f"T-{i:07d}")
                f.write(json.dumps(ticket) + "\n")
        return path
    path = folder / "input.json"
    value: dict[str, Any] = {"items": [f"item number {i}" for i in range(n)]}
    if pipeline == "lines":
        value["out"] = str(folder / "out.txt")
    path.write_text(json.dumps(value))
    return path


TARGETS = {
    "lines": str(FIXTURES / "lines.py"),
    "triage": str(FIXTURES / "triage.py"),
    "growing": f"{HERE}:growing",
    "map": f"{HERE}:mapped",
}
MODELS = {"triage", "map"}


def steps_of(pipeline: str, n: int) -> int:
    """What a row's time is divided by: steps, or items for the one step of `map`."""
    return {"lines": 2 * n + 1, "triage": n + 1, "growing": n + 1, "map": n}[pipeline]


def whole(pipeline: str, n: int, folder: Path) -> tuple[float, int]:
    """`journal run` of the pipeline over `n` items: its wall time and peak RSS (KiB)."""
    source = write_input(pipeline, n, folder)
    args = [str(Path(sys.executable).parent / "journal"), "run", TARGETS[pipeline]]
    args += ["--input", str(source), "--db", str(folder / "journal.db"), "--quiet"]
    if pipeline in MODELS:
        args += ["--fake-model", "none", "--max-calls", str(4 * n), "--max-cost", "1000000"]
    return measured(args, folder)


def in_process(pipeline: str, n: int, folder: Path) -> tuple[float, int]:
    """The run alone, timed inside a process of its own: its wall time and peak RSS (KiB)."""
    source = write_input(pipeline, n, folder)
    args = [sys.executable, str(HERE), "--one", pipeline, str(source), str(folder)]
    return measured(args, folder)


def measured(args: list[str], folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, _, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out, err = process.communicate()
    process.returncode = 0 if process.returncode is None else process.returncode
    if b"done" not in out + err:
        raise SystemExit(f"{args[1:3]} did not end done:\n{(out + err).decode()[-2000:]}")
    timed = out.decode().strip().splitlines()[-1]
    if timed.startswith("timed "):
        wall = float(timed.split()[1])
    return wall, usage.ru_maxrss


def one(pipeline: str, source: Path, folder: Path) -> None:
    """Run `pipeline` in this process over `source`, and print the run's time alone."""
    from runjournal.journal import Journal
    from runjournal.machine import Options, loader, offline, runner

    machine = loader.load(TARGETS[pipeline]).machine
    if source.suffix == ".jsonl":
        value: Any = [json.loads(line) for line in source.read_text().splitlines()]
    else:
        value = json.loads(source.read_text())
    prepared = runner.prepare(machine, value)
    options = Options()
    if pipeline in MODELS:
        n = len(value) if isinstance(value, list) else len(value["items"])
        limits = {"max_model_calls": 4 * n, "max_cost_usd": 1_000_000}
        options = Options(models=offline("none"), limits=limits)
    with Journal.open(folder / "journal.db", create=True) as journal:
        start = time.perf_counter()
        outcome = runner.start(journal, prepared, target=pipeline, code_hash="", options=options)
        wall = time.perf_counter() - start
    print(f"run {outcome.run.run_id} {outcome.run.status}")
    print(f"timed {wall}")


def journal_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("journal.db*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--only", default="lines,triage,growing,map")
    parser.add_argument("--one", nargs=3, metavar=("PIPELINE", "INPUT", "FOLDER"))
    args = parser.parse_args()
    if args.one:
        pipeline, source, folder = args.one
        one(pipeline, Path(source), Path(folder))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    pipelines = args.only.split(",")
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    print()
    print("| pipeline | items | way | steps | wall s | µs a step | peak RSS MB | journal MB |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    per_step: dict[tuple[str, str], list[float]] = {}
    for pipeline in pipelines:
        for way, measure_with in (("whole", whole), ("in-process", in_process)):
            for n in sizes:
                with tempfile.TemporaryDirectory() as tmp:
                    wall, rss = measure_with(pipeline, n, Path(tmp))
                    size = journal_size(Path(tmp))
                steps = steps_of(pipeline, n)
                micros = wall / steps * 1e6
                per_step.setdefault((pipeline, way), []).append(micros)
                print(
                    f"| {pipeline} | {n:,} | {way} | {steps:,} | {wall:.1f} | {micros:.0f} "
                    f"| {rss / 1024:.0f} | {size / 1e6:.1f} |",
                    flush=True,
                )
    print()
    for (pipeline, way), figures in per_step.items():
        ratio = figures[-1] / figures[0]
        print(f"{pipeline} {way}: {sizes[-1]:,} items / {sizes[0]:,} items = {ratio:.2f}")


if __name__ == "__main__":
    main()
