"""How many items a minute the triage pipeline scores against a rate-limited API, in parallel
(`ctx.map`) and one step per ticket, offline.

    python bench/throughput_bench.py [--tickets 1000] [--sequential 1000] [--concurrency 16]

The fake Messages API answers in 200 ms on average (jitter 25%) and allows 600 requests a
minute, refusing more with 429 and `retry-after`, as the API does; every answer carries the
`anthropic-ratelimit-*` headers. Nothing is configured on the run's side: the parallel run
learns the limit from those headers. The tickets are fixtures/tickets.jsonl, repeated with new
ids. A third row runs two parallel runs at once on one fake, as two processes sharing a key
would: neither knows of the other, so they meet 429s and back off. Prints a Markdown table:
items a minute, the share of the limit, 429s received, requests sent, seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from runjournal.journal import Journal
from runjournal.machine import Context, Machine, Models, Options, PriceTable, Transition, runner
from runjournal.machine.testing import FakeModel

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import triage as fixture  # noqa: E402

RPM = 600


@attrs.frozen
class Queue:
    tickets: tuple[fixture.Ticket, ...]
    next: int = 0
    scores: tuple[int, ...] = ()


def score(ctx: Context, ticket: fixture.Ticket) -> int:
    urgency = ctx.ask(
        fixture.Urgency,
        system=fixture.PROMPT,
        prompt=f"Ticket {ticket.id} from {ticket.customer}: {ticket.subject}\n\n{ticket.body}",
        max_tokens=300,
        cache_system=True,
        key=ticket.id,
    )
    outcome = "page" if urgency.score >= 4 else "skip"
    ctx.decide(item=ticket.id, outcome=outcome, reason=urgency.reason, score=urgency.score)
    return urgency.score


def parallel(concurrency: int) -> Machine[Queue]:
    m = Machine("triage-parallel", state=Queue, start="all", model=fixture.MODEL)

    @m.step(to=())
    def all(ctx: Context, s: Queue) -> Transition:
        scores = ctx.map(score, s.tickets, key=lambda t: t.id, concurrency=concurrency)
        return ctx.finish(attrs.evolve(s, scores=tuple(scores)))

    return m


def sequential() -> Machine[Queue]:
    m = Machine("triage-sequential", state=Queue, start="one", model=fixture.MODEL)

    @m.step(to=("one",))
    def one(ctx: Context, s: Queue) -> Transition:
        if s.next == len(s.tickets):
            return ctx.finish(s)
        value = score(ctx, s.tickets[s.next])
        return ctx.goto("one", attrs.evolve(s, next=s.next + 1, scores=(*s.scores, value)))

    return m


def tickets(n: int) -> list[dict[str, Any]]:
    lines = (FIXTURES / "tickets.jsonl").read_text().splitlines()
    base = [json.loads(line) for line in lines if line.strip()]
    return [{**base[i % len(base)], "id": f"T-{i:05d}"} for i in range(n)]


def measure(m: Machine[Queue], n: int, folder: Path, runs: int = 1) -> dict[str, Any]:
    """`runs` runs of `n` tickets each, at once, on one fake: sharing its limit, as processes
    sharing an API key do."""
    fake = FakeModel(latency=0.2, jitter=0.25, rpm=RPM)
    options = Options(models=Models(fake.client, PriceTable.load()))
    outcomes: list[Any] = []

    def one(i: int) -> None:
        prepared = runner.prepare(m, {"tickets": tickets(n)})
        with Journal.open(folder / f"{m.name}-{runs}-{i}.db", create=True) as journal:
            outcome = runner.start(journal, prepared, target="b", code_hash="0", options=options)
        assert outcome.run.status == "done", outcome.run.error
        assert len(outcome.state.scores) == n
        outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    assert len(outcomes) == runs, "a run failed"
    per_minute = n * runs / seconds * 60
    return {
        "items": n * runs,
        "per_minute": per_minute,
        "share": per_minute / RPM,
        "throttled": fake.rate_limited,
        "requests": sum(o.run.model_requests for o in outcomes),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument(
        "--sequential", type=int, default=1000, help="tickets for the one-by-one run"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows.append(
            (
                f"ctx.map, concurrency {args.concurrency}",
                measure(parallel(args.concurrency), args.tickets, Path(folder)),
            )
        )
        two = f"two such runs at once, {args.tickets} tickets each, one limit"
        rows.append((two, measure(parallel(args.concurrency), args.tickets, Path(folder), 2)))
        if args.sequential:
            rows.append(
                ("one ticket per step", measure(sequential(), args.sequential, Path(folder)))
            )
    fake = f"fake: 200 ms ± 25%, {RPM} requests/minute"
    print(f"Python {platform.python_version()}, {platform.machine()}; {fake}")
    print()
    print("| run | items | items/minute | of the limit | 429s | requests | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(
            f"| {name} | {r['items']} | {r['per_minute']:.0f} | {r['share']:.0%} | "
            f"{r['throttled']} | {r['requests']} | {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
