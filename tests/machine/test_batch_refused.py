"""A batch the API refuses to create: nothing exists and nothing is billed, so each item's
failure releases its reserved worst case; the run fails naming the API's error, and a resume
fails the same way without asking again."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conftest import ROOT

from runjournal import Options
from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine import api, loader
from runjournal.machine.model import Models
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.testing import FakeModel
from runjournal.machine.testing._fake_server import error

sys.path.insert(0, str(ROOT / "tests" / "pipelines"))


class Refusing(FakeModel):
    """A fake whose batch creates are all refused, as for a body over the API's 256 MB."""

    creates = 0

    def _batch_request(self, method: str, url: str, raw: bytes, headers: Mapping[str, str]) -> Any:
        if method == "POST" and url.rstrip("/").endswith("/v1/messages/batches"):
            self.creates += 1
            call, _ = super()._batch_request("GET", url, b"", headers)
            reply = error(413, "request_too_large", "Request exceeds the maximum size", "req_x")
            return call, reply
        return super()._batch_request(method, url, raw, headers)


def test_a_refused_create_releases_the_reservation_and_fails_the_run(tmp_path: Path) -> None:
    fake = Refusing()
    models = Models(fake.client, PriceTable.load(), (), Capabilities.load())
    options = Options(models=models, sleep=lambda s: None)
    machine = loader.load(str(ROOT / "tests" / "pipelines" / "batched.py")).machine
    items = {"a": "the site is down", "b": "a typo"}
    db = tmp_path / "j.db"
    outcome = api.run(machine, {"items": items, "poll": 0.05}, db=db, options=options)
    assert outcome.run.status == "failed"
    assert "creating batch 0: 413 request_too_large" in str(outcome.run.error)
    again = api.resume(machine, outcome.run.run_id, db=db, options=options)
    assert again.run.status == "failed" and "request_too_large" in str(again.run.error)
    assert fake.creates == 1 and fake.batches == []
    with Journal.open(db, readonly=True) as journal:
        run = journal.run(outcome.run.run_id)
        assert run.model_requests == 2 and run.total_nusd == run.cost_nusd == 0
        failed = list(journal.events(run.run_id, kinds=(k.MODEL_FAILED,)))
        assert sorted(e.data["call"] for e in failed) == ["#0/a", "#0/b"]
        assert {e.data["status"] for e in failed} == {413}
        (ended,) = journal.events(run.run_id, kinds=(k.BATCH_ENDED,))
        assert ended.data["batch_id"] == "" and ended.data["errored"] == 2
