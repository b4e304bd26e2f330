"""How long the `journal` command takes to start: to read a journal, and to ask its first model.

    python bench/startup_bench.py [--repeat 10]

Every figure is a whole command, a new process, timed from its start; best and median of
--repeat runs, the variants alternated so that a neighbour's burst hits them alike:
- `journal runs`, `journal sql 'select 1'` and `journal --help`, on a small journal holding one
  run of fixtures/lines.py (target: under 0.3 s);
- `journal resume RUN` to its first model request, as a loopback fake Messages API in this
  process receives it, for a run of fixtures/triage.py killed while its first request waited
  (target: under 1 s); the SDK is imported by the first ask;
- `journal run fixtures/lines.py` to its end: a run that asks no model does not import it;
- `import anthropic` alone, for scale.

Importing the SDK in a background thread from the start of `run` and `resume` was tried and
measured here: 9 ms sooner to the first request, 90 ms later to the end of a run that asks
nothing (imports hold the GIL, so the thread mostly takes turns with the main one). Not kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runjournal.journal import Journal
from runjournal.machine.testing.fake import FakeModel, serve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
READ_TARGET = 0.3
FIRST_REQUEST_TARGET = 1.0
# `journal` as the console script runs it.
JOURNAL = "from runjournal import cli; cli.main()"


def journal_command() -> list[str]:
    script = Path(sys.executable).parent / "journal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runjournal.cli"]


def wall(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from starting `command` to its exit; it must succeed."""
    t0 = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def wait_for(seen: Callable[[], bool], process: subprocess.Popen[bytes], limit: float) -> float:
    """Seconds until `seen()` holds; fails if `process` ends first, or after `limit` seconds."""
    t0 = time.perf_counter()
    while not seen():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode} before its request")
        if time.perf_counter() - t0 > limit:
            raise RuntimeError(f"{process.args!r} sent no request in {limit:g} s")
        time.sleep(0.0005)
    return time.perf_counter() - t0


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)  # a crash: no handler runs, the lease is left behind
    process.wait()


def interrupted_triage(folder: Path, env: dict[str, str]) -> tuple[Path, str]:
    """A triage run killed while its first model request waited for an answer."""
    db = folder / "triage.db"
    model = FakeModel(latency=3600)  # the request waits until the process is killed
    with serve(model) as server:
        command = [*journal_command(), "run", str(FIXTURES / "triage.py"), "--db", str(db)]
        command += ["--input", str(FIXTURES / "tickets.jsonl")]
        process = subprocess.Popen(
            command,
            cwd=folder,
            env={**env, "ANTHROPIC_BASE_URL": server.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: model.in_flight > 0, process, limit=60)
        kill(process)
    with Journal.open(db, readonly=True) as journal:
        (run,) = journal.runs()
    return db, run.run_id


def first_request(
    template: Path, run_id: str, code: str, folder: Path, env: dict[str, str]
) -> float:
    """Seconds from starting `journal resume RUN` to the fake receiving its first request."""
    db = folder / "resumed.db"
    for leftover in folder.glob("resumed.db*"):
        leftover.unlink()
    # A copy for each resume: the same interrupted run every time, its WAL folded in.
    with sqlite3.connect(template) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    model = FakeModel(latency=0)
    with serve(model) as server:
        t0 = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code, "resume", run_id, "--db", str(db)],
            cwd=folder,
            env={**env, "ANTHROPIC_BASE_URL": server.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: bool(model.requests or model.in_flight), process, limit=60)
        elapsed = time.perf_counter() - t0
        kill(process)  # the rest of the run is not what is measured
    return elapsed


def measure(repeat: int, variants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """`repeat` timings of each variant, taken in turn."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, timing in variants.items():
            times[name].append(timing())
    return times


def verdict(target: float | None, median: float) -> str:
    if target is None:
        return ""
    return f"under {target:g} s: {'met' if median < target else 'missed'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    # No key of the real API may reach these processes, nor a journal or debug setting.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JOURNAL_"))}
    env["ANTHROPIC_API_KEY"] = "fake-key"
    journal = journal_command()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small = str(folder / "small.db")
        batch = json.loads((FIXTURES / "lines.json").read_text())
        (folder / "lines.json").write_text(json.dumps({**batch, "out": str(folder / "lines.out")}))
        lines = [str(FIXTURES / "lines.py"), "--input", str(folder / "lines.json")]
        wall([*journal, "run", *lines, "--db", small], folder, env)
        template, run_id = interrupted_triage(folder, env)

        def command(*words: str) -> Callable[[], float]:
            return lambda: wall(words, folder, env)

        def resume(code: str) -> Callable[[], float]:
            return lambda: first_request(template, run_id, code, folder, env)

        def run_lines(code: str, db: str) -> Callable[[], float]:
            return command(sys.executable, "-c", code, "run", *lines, "--db", str(folder / db))

        # (target in seconds, or None; the variants timed in turn)
        groups: list[tuple[float | None, dict[str, Callable[[], float]]]] = [
            (
                READ_TARGET,
                {
                    "`journal runs`": command(*journal, "runs", "--db", small),
                    "`journal sql 'select 1'`": command(*journal, "sql", "select 1", "--db", small),
                    "`journal --help`": command(*journal, "--help"),
                },
            ),
            (
                FIRST_REQUEST_TARGET,
                {"`journal resume RUN` to its first request": resume(JOURNAL)},
            ),
            (
                None,
                {
                    "`journal run fixtures/lines.py` (no model)": run_lines(JOURNAL, "lines.db"),
                    "`python -c 'import anthropic'`": command(
                        sys.executable, "-c", "import anthropic"
                    ),
                },
            ),
        ]
        measured = [(target, measure(args.repeat, variants)) for target, variants in groups]

    print(
        f"Python {platform.python_version()}, {platform.machine()}, {platform.system()}, "
        f"{os.cpu_count()} CPUs; best and median of {args.repeat} runs, each a new process\n"
    )
    print("| command | best | median | target |")
    print("| --- | ---: | ---: | --- |")
    for target, times in measured:
        for name, seconds in times.items():
            median = statistics.median(seconds)
            print(f"| {name} | {min(seconds):.3f} s | {median:.3f} s | {verdict(target, median)} |")


if __name__ == "__main__":
    main()
