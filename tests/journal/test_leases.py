"""Tests for `journal.leases` and the heartbeat: who executes a run, and when a lease is free."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runjournal.journal import Heartbeat, Holder, Journal, LeaseHeld, LeaseLost, RunWriter, kinds
from runjournal.journal.leases import _process_stat


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_run(journal: Journal, holder: Holder) -> str:
    run, _ = journal.create_run(
        machine="m",
        target="t.py:m",
        code_hash="c",
        step="a",
        state={},
        input={},
        run_key=None,
        holder=holder,
        lease_ttl=30,
    )
    return run.run_id


def other(pid: int, host: str | None = None, start: str | None = None) -> Holder:
    me = Holder.this_process()
    return Holder(uuid.uuid4().hex, pid, host or me.host, start)


def test_a_live_holder_is_named_when_refused(journal: Journal) -> None:
    me = Holder.this_process()
    run_id = make_run(journal, me)
    with pytest.raises(LeaseHeld, match=f"pid {me.pid} on {me.host}"):
        journal.acquire_lease(run_id, other(99), 30)


def test_the_same_holder_may_take_its_lease_again(journal: Journal) -> None:
    me = Holder.this_process()
    run_id = make_run(journal, me)
    assert journal.acquire_lease(run_id, me, 30) is None


def test_a_lease_whose_process_is_gone_is_taken_over(journal: Journal) -> None:
    finished = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert finished.returncode == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = other(dead.pid)
    run_id = make_run(journal, ghost)
    taken = journal.acquire_lease(run_id, Holder.this_process(), 30)
    assert taken is not None and taken.pid == dead.pid
    lease = journal.lease(run_id)
    assert lease is not None and lease.owner != ghost.owner


def test_a_killed_but_unreaped_process_does_not_hold_its_lease(journal: Journal) -> None:
    """A zombie still has a pid, but it will never renew: its lease is free."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fields = None
    for _ in range(200):
        fields = _process_stat(child.pid)
        if fields is not None and len(fields) > 19:
            break
        time.sleep(0.01)
    assert fields is not None
    run_id = make_run(journal, other(child.pid, start=fields[19]))
    with pytest.raises(LeaseHeld):
        journal.acquire_lease(run_id, Holder.this_process(), 30)
    child.send_signal(signal.SIGKILL)
    for _ in range(200):
        stat = _process_stat(child.pid)
        if stat is None or stat[0] == "Z":
            break
        time.sleep(0.01)
    assert journal.acquire_lease(run_id, Holder.this_process(), 30) is not None
    child.wait()


def test_a_recycled_pid_does_not_hold_the_lease(journal: Journal) -> None:
    """Our own pid with another start time is another process: the lease is free."""
    me = Holder.this_process()
    run_id = make_run(journal, other(me.pid, start="1"))
    assert journal.acquire_lease(run_id, me, 30) is not None


def test_a_lease_held_on_another_host_lasts_until_it_expires(db: Path) -> None:
    clock = Clock()
    journal = Journal.open(db, create=True, clock=clock)
    run_id = make_run(journal, other(1, host="elsewhere.example"))
    clock.now += 29
    with pytest.raises(LeaseHeld, match=r"on elsewhere\.example"):
        journal.acquire_lease(run_id, Holder.this_process(), 30)
    clock.now += 2
    taken = journal.acquire_lease(run_id, Holder.this_process(), 30)
    assert taken is not None and taken.host == "elsewhere.example"


def test_the_heartbeat_renews_the_lease(journal: Journal) -> None:
    me = Holder.this_process()
    run_id = make_run(journal, me)
    lease = journal.lease(run_id)
    assert lease is not None
    beat = Heartbeat(journal, run_id, me, ttl=0.3).start()
    time.sleep(0.5)
    beat.stop()
    renewed = journal.lease(run_id)
    # Renewed with the heartbeat's 0.3 s: no longer the 30 s the run was created with, and
    # pushed on within the last beat.
    assert renewed is not None and renewed.expires_at < lease.expires_at - 20
    assert renewed.expires_at > time.time()


def test_a_writer_whose_lease_was_taken_writes_nothing(journal: Journal) -> None:
    """Fencing: once the heartbeat sees the lease gone, the writer refuses to append."""
    me = Holder.this_process()
    run_id = make_run(journal, me)
    beat = Heartbeat(journal, run_id, me, ttl=0.15).start()
    writer = RunWriter(journal, run_id, last_seq=1, heartbeat=beat)
    journal.conn.execute("UPDATE leases SET owner = 'someone-else' WHERE run_id = ?", (run_id,))
    time.sleep(0.3)
    beat.stop()
    assert beat.lost
    with pytest.raises(LeaseLost, match="took over"):
        writer.commit("a", kinds.EffectDone(name="x", call="#0", result=1))
    assert journal.run(run_id).last_seq == 1
