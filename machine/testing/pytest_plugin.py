"""A pytest plugin for testing pipelines offline: the fixtures `journal_db`, `fake_model` and
`run_offline`.

Installed with runjournal and found by pytest through its `pytest11` entry point, so a
pipeline's own tests use the fixtures without importing anything:

    def test_triage(run_offline):
        outcome = run_offline(triage, tickets)
        assert outcome.run.status == "done"

Nothing reaches the network; each test gets its own journal file and its own fake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import pytest

from runjournal.machine.api import run
from runjournal.machine.definition import Machine
from runjournal.machine.execution import Options, Outcome
from runjournal.machine.model import Models
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.testing.fake import FakeModel

S = TypeVar("S")


class RunOffline(Protocol):
    """What the `run_offline` fixture is: `machine.run` against the test's fake, in its
    journal, with backoff sleeps skipped."""

    def __call__(
        self,
        machine: Machine[S],
        input: Any,
        *,
        key: str | None = None,
        options: Options | None = None,
    ) -> Outcome[S]: ...


@pytest.fixture
def journal_db(tmp_path: Path) -> Path:
    """Where this test's journal goes: `journal.db` in its own temporary folder (not created:
    the first run creates it)."""
    return tmp_path / "journal.db"


@pytest.fixture
def fake_model() -> FakeModel:
    """A fake Anthropic Messages API for this test, answering every request well; set faults
    with `fake_model.set_faults(parse_spec("chaos"))`, and see what it was asked in
    `fake_model.requests`."""
    return FakeModel(retry_after=0.0)


@pytest.fixture
def run_offline(journal_db: Path, fake_model: FakeModel) -> RunOffline:
    """`machine.run` against `fake_model`, journaled in `journal_db`.

    Backoff waits are skipped (the journal still records them), so a test of retries takes no
    time. Options given are kept, but for the model and the sleep.
    """
    models = Models(fake_model.client, PriceTable.load())

    def run_offline(
        machine: Machine[S],
        input: Any,
        *,
        key: str | None = None,
        options: Options | None = None,
    ) -> Outcome[S]:
        given = options or Options()
        offline = attrs.evolve(given, models=models, sleep=_no_sleep)
        return run(machine, input, db=journal_db, key=key, options=offline)

    return run_offline


def _no_sleep(seconds: float) -> None:
    return None
