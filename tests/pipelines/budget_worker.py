"""Run the machine `budgeted` against each journal given, in turn, until its budget stops it.

    python budget_worker.py [--connections N] JOURNAL [JOURNAL ...]

A journal is a file or a PostgreSQL URL. With `--connections N`, N threads run the machine at
once against each journal, each on a connection of its own. Several of these processes at once
share each journal: its per-day budget must hold across them.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import attrs

from runjournal import Context, Machine, Models, Options, PriceTable, Transition
from runjournal.journal import open_store
from runjournal.machine import runner
from runjournal.machine.testing import FakeModel


@attrs.frozen
class Answer:
    score: int
    reason: str


@attrs.frozen
class Loop:
    n: int = 0


budgeted = Machine("budgeted", state=Loop, start="ask", anomaly_threshold=None)


@budgeted.step
def ask(ctx: Context, s: Loop) -> Transition:
    ctx.ask(Answer, prompt=f"Score item {s.n}.", model="claude-haiku-4-5", max_tokens=200)
    return ctx.goto("ask", attrs.evolve(s, n=s.n + 1))


def until_stopped(db: str) -> None:
    models = Models(FakeModel(max_output=True).client, PriceTable.load())
    options = Options(models=models, sleep=lambda seconds: None)
    with open_store(db, timeout=60) as journal:
        prepared = runner.prepare(budgeted, {})
        outcome = runner.start(journal, prepared, target="w", code_hash="0", options=options)
        assert outcome.run.status == "killed", outcome.run


def main() -> None:
    args = sys.argv[1:]
    connections = 1
    if args[0] == "--connections":
        connections, args = int(args[1]), args[2:]
    with ThreadPoolExecutor(connections) as pool:
        for db in args:
            list(pool.map(until_stopped, [db] * connections))


if __name__ == "__main__":
    main()
