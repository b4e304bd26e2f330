"""Runs to kill, forked from one process that has imported everything once.

    python batch_crash.py

reads one JSON list per line from stdin, [TARGET, DB, POINT, MARKER, "--input", FILE] or
[TARGET, DB, POINT, MARKER, "--run", RUN], and for each forks a process that starts (or resumes)
that run and executes it, waiting for its batches as `--wait` does, until it is done or reaches
POINT (a `machine.Checkpoint` name, or "none"), where it writes MARKER and waits to be killed.
It prints the new process's pid, then "exit PID STATUS" once that process has ended (killed or
not). Forking spares each process the second it would take to import the anthropic SDK, so
that a test can kill runs many times over. The API is the environment's (ANTHROPIC_BASE_URL).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anthropic  # noqa: F401  # imported once, here, for every process forked

from runjournal import Options
from runjournal.journal import Journal
from runjournal.machine import loader, runner
from runjournal.machine.waiting import due


def execute(target: str, db: str, point: str, marker: str, how: str, given: str) -> int:
    def checkpoint(name: str) -> None:
        if name == point:
            Path(marker).write_text(name)
            time.sleep(3600)

    loaded = loader.load(target)
    options = Options(checkpoint=checkpoint)
    with Journal.open(db, create=True) as journal:
        if how == "--input":
            prepared = runner.prepare(loaded.machine, json.loads(Path(given).read_text()))
            outcome = runner.start(
                journal, prepared, target=loaded.location, code_hash=loaded.code_hash,
                options=options,
            )  # fmt: skip
        else:
            outcome = runner.resume(
                journal, given, loaded.machine, target=loaded.location,
                code_hash=loaded.code_hash, options=options,
            )  # fmt: skip
        run_id = outcome.run.run_id
        while journal.run(run_id).status == "waiting":
            while not due(journal, run_id):
                time.sleep(0.02)
            runner.resume(
                journal, run_id, loaded.machine, target=loaded.location,
                code_hash=loaded.code_hash, options=options,
            )  # fmt: skip
        return 0 if journal.run(run_id).status == "done" else 1


def main() -> None:
    for line in sys.stdin:
        args = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with open(f"{args[3]}.err", "a") as err:
                    os.dup2(err.fileno(), 2)
                code = execute(*args)
            except BaseException as e:  # told to the test through the exit status and .err
                print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {status}", flush=True)


if __name__ == "__main__":
    main()
