"""Message Batches through crashes: runs SIGKILLed in each window of a batch's life, 20 times,
resumed each time by a new process, against one fake API that outlives them all.

The windows: after the intent is journaled and before the create is sent; after the create is
answered and before its id is journaled; while the batch runs (the run has looked at it and is
about to wait); and in the middle of its results (some journaled, some not). Each process
resumes the last one's crash, finishes that round and is killed in the same window of the next
round; the last one finishes the run. Then the fake's own log must show exactly one batch per
intent, no item in two batches, and the journal every item answered and decided once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from runjournal.journal import Journal
from runjournal.journal import events as k
from runjournal.machine.testing import FakeModel, serve

ROUNDS = 20
CRASH = str(ROOT / "tests" / "pipelines" / "batch_crash.py")
ROUNDS_PIPELINE = str(ROOT / "tests" / "pipelines" / "batch_rounds.py")

WINDOWS = {
    # point: (items per round, seconds a batch runs)
    "batch.intended": (8, 0.0),
    "batch.create_sent": (8, 0.0),
    "batch.polled": (8, 0.4),
    # Results are journaled 50 at a time: 120 items make a crash with some on disk.
    "batch.results": (120, 0.0),
}


class Runs:
    """The forking process of tests/pipelines/batch_crash.py: each run process it makes for us
    is killed, or runs to its end."""

    def __init__(self, url: str) -> None:
        env = {**os.environ, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "test-key"}
        self.parent = subprocess.Popen(
            [sys.executable, CRASH], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def start(self, *args: str) -> int:
        assert self.parent.stdin is not None and self.parent.stdout is not None
        self.parent.stdin.write(json.dumps(args) + "\n")
        self.parent.stdin.flush()
        return int(self.parent.stdout.readline())

    def ended(self) -> int:
        """The exit status (as os.waitpid gives it) of the last process started."""
        assert self.parent.stdout is not None
        return int(self.parent.stdout.readline().split()[2])

    def kill_there(self, marker: Path, *args: str) -> None:
        """Start a process and SIGKILL it once it has written `marker` (it then waits)."""
        pid = self.start(*args)
        deadline = time.monotonic() + 120
        while not marker.exists():
            if self.parent.poll() is not None:
                pytest.fail(f"the forking process ended: {self.parent.returncode}")
            assert time.monotonic() < deadline, "never reached its point"
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        status = self.ended()
        assert os.WIFSIGNALED(status), Path(f"{marker}.err").read_text()
        marker.unlink()

    def close(self) -> None:
        assert self.parent.stdin is not None
        self.parent.stdin.close()
        self.parent.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(WINDOWS))
def test_a_batch_killed_in_each_window_20_times_is_made_once_and_read_once(
    tmp_path: Path, point: str
) -> None:
    per, processing = WINDOWS[point]
    db, marker, spec = tmp_path / "j.db", tmp_path / "there", tmp_path / "in.json"
    spec.write_text(json.dumps({"rounds": ROUNDS, "per": per, "poll": 0.05}))
    fake = FakeModel(processing_time=processing)
    log = tmp_path / "fake.jsonl"
    with serve(fake, port=0, log=log) as server:
        runs = Runs(server.url)
        try:
            how = (ROUNDS_PIPELINE, str(db), point, str(marker))
            runs.kill_there(marker, *how, "--input", str(spec))
            with Journal.open(db, readonly=True) as journal:
                (run,) = journal.runs()
            for _ in range(ROUNDS - 1):
                runs.kill_there(marker, *how, "--run", run.run_id)
            runs.start(ROUNDS_PIPELINE, str(db), "none", str(marker), "--run", run.run_id)
            status = runs.ended()
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, Path(
                f"{marker}.err"
            ).read_text()
        finally:
            runs.close()
        batches = fake.batches

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    creates = [c for c in calls if c["endpoint"] == "create"]
    with Journal.open(db, readonly=True) as journal:
        assert journal.run(run.run_id).status == "done"
        intents = list(journal.events(run.run_id, kinds=(k.BATCH_INTENDED,)))
        created = list(journal.events(run.run_id, kinds=(k.BATCH_CREATED,)))
        answered = list(journal.events(run.run_id, kinds=(k.MODEL_ANSWERED,)))
        decisions = list(journal.events(run.run_id, kinds=(k.DECISION,)))
        resumes = list(journal.events(run.run_id, kinds=(k.RUN_RESUMED,)))

    # One batch per intent: the create of each intent's custom_ids, once, and no other.
    assert len(intents) == ROUNDS
    assert len(creates) == len(batches) == ROUNDS, [c["custom_ids"][:1] for c in creates]
    for intent in intents:
        ids = [f"{intent.data['custom_id_prefix']}{i}" for i in range(per)]
        assert [c["custom_ids"] for c in creates].count(ids) == 1
    assert sorted(e.data["batch_id"] for e in created) == sorted(b.id for b in batches)
    if point == "batch.create_sent":
        assert sum(e.data["adopted"] for e in created) == ROUNDS  # each found by listing
    # No item asked twice, and every item answered and decided once.
    every = [i for c in creates for i in c["custom_ids"]]
    assert len(every) == len(set(every)) == ROUNDS * per
    assert sorted(e.data["custom_id"] for e in answered) == sorted(every)
    items = [e.data["item"] for e in decisions]
    assert sorted(items) == sorted(f"r{r}-{i}" for r in range(ROUNDS) for i in range(per))
    assert len(resumes) >= ROUNDS
