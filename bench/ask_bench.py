"""What `ctx.ask` costs per call beside the SDK alone, against the same in-process fake model.

    python bench/ask_bench.py [--asks 300] [--model claude-haiku-5-5]

Both sides ask the fake Messages API (in this process, no latency) the same questions, one at a
time: the SDK alone sends the request runjournal would build and parses the answer; runjournal's
side is a run of one step per ask, each ask planned from the model's capabilities (mechanism,
thinking, the rules checked before sending), journaled (request, answer, transition), validated
and priced. The difference is what runjournal adds per ask. Prints a Markdown table: milliseconds
per ask on each side, the difference and the ratio, best of three.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import attrs

from runjournal.journal import Journal
from runjournal.machine import (
    Capabilities,
    Context,
    Machine,
    Models,
    Options,
    PriceTable,
    Transition,
    runner,
)
from runjournal.machine.model import request
from runjournal.machine.model.jsonschema import tool_for
from runjournal.machine.testing import FakeModel


@attrs.frozen
class Urgency:
    """How urgent a ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    reason: str


@attrs.frozen
class Asks:
    n: int = 0
    total: int = 0


def machine(model: str) -> Machine[Asks]:
    m = Machine("bench", state=Asks, start="ask", model=model, anomaly_threshold=None)

    @m.step
    def ask(ctx: Context, s: Asks) -> Transition:
        if s.n == s.total:
            return ctx.finish(s)
        ctx.ask(Urgency, prompt=f"How urgent is ticket {s.n}?", key=str(s.n))
        return ctx.goto("ask", attrs.evolve(s, n=s.n + 1))

    return m


def ours(fake: FakeModel, model: str, asks: int) -> float:
    models = Models(fake.client, PriceTable.load())
    options = Options(models=models, sleep=lambda s: None)
    with (
        tempfile.TemporaryDirectory() as folder,
        Journal.open(Path(folder) / "journal.db", create=True) as journal,
    ):
        prepared = runner.prepare(machine(model), {"total": asks})
        started = time.perf_counter()
        runner.start(journal, prepared, target="bench", code_hash="0", options=options)
        return (time.perf_counter() - started) / asks


def sdk_alone(fake: FakeModel, model: str, asks: int) -> float:
    capabilities = Capabilities.load()
    plan = request.plan(
        capabilities,
        capabilities.of(model),
        tool=tool_for(Urgency),
        thinking=None,
        effort=None,
        max_tokens=1024,
    )
    client = fake.client()
    started = time.perf_counter()
    for n in range(asks):
        messages = [{"role": "user", "content": f"How urgent is ticket {n}?"}]
        body = request.build(
            model, plan, system=None, messages=messages, max_tokens=1024, cache_system=False
        )
        client.messages.create(**body)
    return (time.perf_counter() - started) / asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=300)
    parser.add_argument("--model", default="claude-haiku-5-5")
    args = parser.parse_args()
    fake = FakeModel()
    sdk_alone(fake, args.model, 20)  # warm: the SDK's first request imports and builds a lot
    theirs = min(sdk_alone(fake, args.model, args.asks) for _ in range(3)) * 1000
    mine = min(ours(fake, args.model, args.asks) for _ in range(3)) * 1000
    print(
        f"{args.asks} asks of {args.model}, Python {sys.version.split()[0]}, {platform.machine()}"
    )
    print()
    print("| SDK alone, ms per ask | runjournal, ms per ask | added | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {theirs:.2f} | {mine:.2f} | {mine - theirs:.2f} | {mine / theirs:.2f}x |")


if __name__ == "__main__":
    main()
