"""`journal kill` of a run waiting on a Message Batch cancels the batch; a resume (with a higher
cost cap) sends only the items the canceled batch did not answer, in a new batch. Real
`journal` processes, against a fake API served from this process, whose clock the test moves."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, journal_command

from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine.testing import FakeModel, serve

BATCHED = str(ROOT / "tests" / "pipelines" / "batched.py")
WAITING = 8


def journal(url: str, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "test-key"}
    return subprocess.run(
        [*journal_command(), *args, "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_kill_cancels_the_batch_and_a_resume_asks_only_what_it_left(tmp_path: Path) -> None:
    now = [0.0]
    fake = FakeModel(processing_time=100.0, clock=lambda: now[0])
    db, spec = tmp_path / "j.db", tmp_path / "in.json"
    items = {f"i{n}": f"Item {n}: the nightly export failed." for n in range(10)}
    spec.write_text(json.dumps({"items": items, "poll": 0.05}))
    with serve(fake, port=0) as server:
        started = journal(
            server.url, db, "run", BATCHED, "--input", str(spec), "--max-cost", "0.01"
        )
        assert started.returncode == WAITING, started.stderr
        with Journal.open(db, readonly=True) as j:
            (run,) = j.runs()
        assert run.status == "waiting"
        (first,) = fake.batches

        now[0] = 45.0  # 4 of the 10 items are done (they finish evenly over 100 s)
        killed = journal(server.url, db, "kill", run.run_id, "--reason", "not tonight")
        assert killed.returncode == 0, killed.stderr
        assert f"killed run {run.run_id}" in killed.stdout
        now[0] = 46.0  # the cancel takes effect once the clock has moved past it
        (canceled,) = fake.batches
        assert canceled.status == "ended" and len(canceled.usage) == 4

        resumed = journal(server.url, db, "resume", run.run_id, "--max-cost", "0.02")
        assert resumed.returncode == WAITING, resumed.stderr
        second = fake.batches[1]
        now[0] = 200.0
        done = journal(server.url, db, "resume", run.run_id)
        assert done.returncode == 0, done.stderr
        asked = len(fake.batches)
        # Rerun against the recorded answers: the canceled, the failed and the answered alike.
        rerun = journal(server.url, db, "replay", run.run_id, "--rerun")
        assert rerun.returncode == 0 and "reproduced" in rerun.stdout + rerun.stderr, rerun.stderr
        assert len(fake.batches) == asked == 2
        shown = journal(server.url, db, "show", run.run_id).stdout
        assert (
            f"Verdict (score #0) 0: {first.id}, 10 requests, ended: 4 succeeded, 6 canceled"
            in shown
        )
        assert (
            f"Verdict (score #0) 1: {fake.batches[1].id}, 6 requests, ended: 6 succeeded" in shown
        )

    with Journal.open(db, readonly=True) as j:
        run = j.run(run.run_id)
        assert run.status == "done"
        events = list(j.events(run.run_id))
    kinds = [e.kind for e in events]
    assert kinds.index(k.RUN_KILLED) < kinds.index(k.BATCH_CANCELED)
    (cancel,) = [e for e in events if e.kind == k.BATCH_CANCELED]
    assert cancel.data["batch_id"] == first.id and cancel.data["by"]
    (kill,) = [e for e in events if e.kind == k.RUN_KILLED]
    assert kill.data["reason"] == "not tonight"
    resumes = [e for e in events if e.kind == k.RUN_RESUMED]
    assert resumes[0].data["limits"]["max_cost_usd"] == "0.02"

    # The new batch holds exactly the six items the first did not answer.
    answered_first = set(canceled.usage)
    left = [c for c in first.custom_ids if c not in answered_first]
    intents = [e for e in events if e.kind == k.BATCH_INTENDED]
    assert [e.data["batch"] for e in intents] == [0, 1]
    assert len(second.custom_ids) == len(left) == 6
    keys_left = {intents[0].data["items"][first.custom_ids.index(c)] for c in left}
    assert set(intents[1].data["items"]) == keys_left
    # Every item answered once, billed once; the canceled ones failed unbilled.
    answers = [e for e in events if e.kind == k.MODEL_ANSWERED]
    assert sorted(e.data["call"] for e in answers) == sorted(f"#0/{key}" for key in items)
    failed = [e for e in events if e.kind == k.MODEL_FAILED]
    assert sorted(e.data["error_type"] for e in failed) == ["canceled"] * 6
    assert run.total_nusd == run.cost_nusd
    decisions = [e.data["item"] for e in events if e.kind == k.DECISION]
    assert sorted(decisions) == sorted(items)
