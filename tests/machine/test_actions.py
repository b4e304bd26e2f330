"""Tests for irreversible actions (`ctx.act`): intent before effect, never twice, in-doubt handling.

The crash matrix kills real processes with SIGKILL at each window of an action, then resumes
them with `journal resume` (and `journal resolve` where a person must answer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import ROOT, cli, kill_at, spawn

from runjournal.journal import ActionBusy, Holder, Journal, RunWriter, kinds, state_at
from runjournal.journal import events as k
from runjournal.machine import Context, Machine, Options, Outcome, Retryable, Transition, runner

ACTING = str(ROOT / "tests" / "pipelines" / "acting.py")

WINDOWS = ["action.before", "action.intended", "action.ran", "action.done"]


def write_input(tmp_path: Path, keys: list[str], *, idempotent: bool, pause: float = 0.0) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    path = tmp_path / "in.json"
    path.write_text(
        json.dumps({"keys": keys, "store": str(store), "idempotent": idempotent, "pause": pause})
    )
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def start_and_kill_at(tmp_path: Path, db: Path, input_path: Path, point: str) -> str:
    """Start a run in another process, SIGKILL it at `point`, return the run id."""
    kill_at(ACTING, input_path, db, point, tmp_path / "reached")
    with Journal.open(db) as journal:
        (run,) = journal.runs()
        return run.run_id


@pytest.mark.parametrize("point", WINDOWS)
def test_idempotent_action_killed_at_each_window(tmp_path: Path, db: Path, point: str) -> None:
    """The outside system dedupes by key: after the resume it holds exactly one effect."""
    input_path = write_input(tmp_path, ["K-1"], idempotent=True)
    run_id = start_and_kill_at(tmp_path, db, input_path, point)
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    store = tmp_path / "store"
    assert (store / "K-1").read_text() == "K-1"
    assert [p.name for p in store.iterdir() if p.name.startswith("K-")] == ["K-1"]
    calls = len(lines(store / "calls.log"))
    # In doubt (killed between intent and outcome), it was called again with the same key.
    assert (
        calls
        == {"action.before": 1, "action.intended": 1, "action.ran": 2, "action.done": 1}[point]
    )
    with Journal.open(db) as journal:
        (action,) = journal.actions(run_id)
        assert action.status == "done"


@pytest.mark.parametrize("point", ["action.before", "action.done"])
def test_non_idempotent_action_with_a_known_outcome_resumes(
    tmp_path: Path, db: Path, point: str
) -> None:
    """Killed before the intent, or after the outcome: the resume needs no one, sends once."""
    input_path = write_input(tmp_path, ["K-1"], idempotent=False)
    run_id = start_and_kill_at(tmp_path, db, input_path, point)
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert lines(tmp_path / "store" / "sent.log") == ["K-1"]


@pytest.mark.parametrize(
    ("point", "answer", "sent_before"),
    [("action.intended", "--not-done", 0), ("action.ran", "--done", 1)],
)
def test_non_idempotent_action_in_doubt_waits_for_a_person(
    tmp_path: Path, db: Path, point: str, answer: str, sent_before: int
) -> None:
    """In doubt and not safe to repeat: the run stops until `journal resolve`, never sends twice."""
    input_path = write_input(tmp_path, ["K-1"], idempotent=False)
    run_id = start_and_kill_at(tmp_path, db, input_path, point)
    sent = tmp_path / "store" / "sent.log"
    for _ in range(2):  # resuming again without an answer changes nothing outside
        stopped = cli("resume", run_id, db=db)
        assert stopped.returncode == 1
        assert (
            "needs attention" in stopped.stderr
            and f"journal resolve {run_id} K-1" in stopped.stderr
        )
        assert len(lines(sent)) == sent_before
    shown = cli("show", run_id, db=db)
    assert "needs_attention" in shown.stdout and "K-1" in shown.stdout
    in_doubt = cli("actions", "--in-doubt", "--json", db=db)
    assert [json.loads(line)["key"] for line in in_doubt.stdout.splitlines()] == ["K-1"]

    why = "checked the outbox"
    resolved = cli("resolve", run_id, "K-1", answer, "--by", "tester", "--reason", why, db=db)
    assert resolved.returncode == 0, resolved.stderr
    done = cli("resume", run_id, db=db)
    assert done.returncode == 0, done.stderr
    assert lines(sent) == ["K-1"]
    with Journal.open(db) as journal:
        (resolution,) = journal.events(run_id, kinds=(k.ACTION_RESOLVED,))
        assert resolution.data["by"] == "tester"
        assert resolution.data["reason"] == why
        assert journal.run(run_id).status == "done"


def test_two_runs_on_the_same_keys_act_once(tmp_path: Path, db: Path) -> None:
    """Different run keys, same action keys: the second run skips each, naming the first."""
    input_path = write_input(tmp_path, ["K-1", "K-2", "K-3"], idempotent=False)
    first = cli("run", ACTING, "--input", str(input_path), "--key", "2026-11-26", db=db)
    second = cli("run", ACTING, "--input", str(input_path), "--key", "2026-11-26-again", db=db)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    first_id, second_id = first.stdout.split()[1], second.stdout.split()[1]
    assert first_id != second_id
    assert lines(tmp_path / "store" / "sent.log") == ["K-1", "K-2", "K-3"]
    with Journal.open(db) as journal:
        skipped = list(journal.events(second_id, kinds=(k.ACTION_SKIPPED,)))
        assert [e.data["key"] for e in skipped] == ["K-1", "K-2", "K-3"]
        assert {e.data["done_in_run"] for e in skipped} == {first_id}
        assert {a.status for a in journal.actions(second_id)} == {"skipped"}


def test_two_runs_at_once_on_the_same_keys_act_once(tmp_path: Path, db: Path) -> None:
    """Started together, the runs race for each key: the journal lets one act, the other skips."""
    keys = [f"K-{i}" for i in range(8)]
    input_path = write_input(tmp_path, keys, idempotent=False, pause=0.05)
    cli("runs", db=db)  # create the journal first, so both processes find it
    first = spawn("run", ACTING, "--input", str(input_path), "--key", "a", db=db)
    second = spawn("run", ACTING, "--input", str(input_path), "--key", "b", db=db)
    for process in (first, second):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert Counter(lines(tmp_path / "store" / "sent.log")) == Counter(keys)


def test_the_intent_is_synced_before_the_action_even_at_normal_durability(db: Path) -> None:
    """Traced statements: the intent's transaction runs under synchronous=FULL, then the action."""
    statements: list[str] = []
    journal = Journal.open(db, create=True, tracer=statements.append)
    marker = "-- the action runs"
    run_one(journal, one_action(lambda key: statements.append(marker) or key))
    journal.close()
    before = [s.strip() for s in statements[: statements.index(marker)]]
    begin = max(i for i, s in enumerate(before) if s == "BEGIN IMMEDIATE")
    assert before[begin - 1] == "PRAGMA synchronous = FULL"
    assert any("INSERT INTO events" in s and "action.intended" in s for s in before[begin:])
    assert before[-2:] == ["COMMIT", "PRAGMA synchronous = NORMAL"]
    # And the durability the journal was opened with is back for everything else.
    assert statements[-1].strip() != "PRAGMA synchronous = FULL"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to count fsyncs")
def test_each_intent_costs_an_fsync_at_normal_durability(tmp_path: Path) -> None:
    """Counted by the kernel: 20 actions sync at least 20 times more than 20 plain effects."""

    def syncs(kind: str) -> int:
        script = tmp_path / f"{kind}.py"
        script.write_text(
            SYNC_SCRIPT.format(root=str(ROOT), kind=kind, db=str(tmp_path / f"{kind}.db"))
        )
        traced = subprocess.run(
            ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert traced.returncode == 0, traced.stderr
        counts = [
            int(line.split()[3])
            for line in traced.stderr.splitlines()
            if line.strip().endswith(("fsync", "fdatasync"))
        ]
        return sum(counts)

    # The same run with effects instead of actions: what creating the journal and closing it
    # cost. Each intent adds at least one sync of the WAL on top.
    assert syncs("act") >= syncs("effect") + 20


SYNC_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import attrs
from runjournal.journal import Journal
from runjournal.machine import Machine, runner

@attrs.frozen
class S:
    n: int = 0

m = Machine("syncs", state=S, start="go")

@m.step
def go(ctx, s):
    if s.n == 20:
        return ctx.finish(s)
    if {kind!r} == "act":
        ctx.act("ping", f"P-{{s.n}}", lambda key: key, idempotent=True)
    else:
        ctx.effect("ping", lambda: s.n)
    return ctx.goto("go", S(s.n + 1))

with Journal.open({db!r}, create=True) as journal:
    runner.start(journal, runner.prepare(m, {{}}), target="t", code_hash="0")
"""


@attrs.frozen
class Once:
    n: int = 0


def one_action(fn: Any, *, idempotent: bool = True, repeat: bool = False) -> Machine[Once]:
    m = Machine("one", state=Once, start="go")

    @m.step
    def go(ctx: Context, s: Once) -> Transition:
        ctx.act("ping", "P-1", fn, idempotent=idempotent, repeat=repeat)
        return ctx.finish(s)

    return m


def run_one(journal: Journal, m: Machine[Once], sleeps: list[float] | None = None) -> Outcome:
    options = Options(sleep=(sleeps if sleeps is not None else []).append, seed=0)
    return runner.start(journal, runner.prepare(m, {}), target="t", code_hash="0", options=options)


def test_a_retryable_failure_is_retried_with_the_same_key(journal: Journal) -> None:
    keys: list[str] = []

    def flaky(key: str) -> str:
        keys.append(key)
        if len(keys) == 1:
            raise Retryable("the pager is busy", retry_after=1.5)
        return "paged"

    sleeps: list[float] = []
    outcome = run_one(journal, one_action(flaky), sleeps)
    assert outcome.run.status == "done"
    assert keys == ["P-1", "P-1"]
    assert sleeps == [1.5]
    events = [e.kind for e in journal.events(outcome.run.run_id) if e.kind.startswith("action.")]
    assert events == [k.ACTION_INTENDED, k.ACTION_FAILED, k.ACTION_INTENDED, k.ACTION_DONE]


def test_a_fatal_failure_fails_the_step_once(journal: Journal) -> None:
    calls: list[str] = []

    def broken(key: str) -> str:
        calls.append(key)
        raise ValueError("no such pager")

    outcome = run_one(journal, one_action(broken))
    assert outcome.run.status == "failed"
    assert "action ping 'P-1' failed" in (outcome.run.error or "")
    assert calls == ["P-1"]


def test_an_unknown_outcome_of_a_non_idempotent_action_is_not_retried(journal: Journal) -> None:
    """A timeout may have come after the effect: no blind retry, the run needs a person."""
    calls: list[str] = []

    def times_out(key: str) -> str:
        calls.append(key)
        raise TimeoutError("no answer from the mail server")

    outcome = run_one(journal, one_action(times_out, idempotent=False))
    assert calls == ["P-1"]
    assert outcome.run.status == "needs_attention"
    assert "journal resolve" in (outcome.run.error or "")
    (failed,) = journal.events(outcome.run.run_id, kinds=(k.ACTION_FAILED,))
    assert failed.data["in_doubt"] is True


def test_repeat_opts_out_of_the_seen_store(journal: Journal) -> None:
    calls: list[str] = []
    for _ in range(2):
        run_one(journal, one_action(lambda key: calls.append(key) or len(calls), repeat=True))
    assert calls == ["P-1", "P-1"]
    # Repeatable actions never enter the seen-store: the first plain action on the key acts.
    once: list[str] = []
    for _ in range(2):
        run_one(journal, one_action(lambda key: once.append(key) or 1))
    assert once == ["P-1"]


def test_resolve_refuses_what_it_cannot_do(tmp_path: Path, db: Path) -> None:
    input_path = write_input(tmp_path, ["K-1"], idempotent=False)
    run_id = start_and_kill_at(tmp_path, db, input_path, "action.intended")
    for args, says in (
        (("resolve", run_id, "K-9", "--done"), "no action in doubt with key 'K-9'"),
        (("resolve", run_id, "K-1"), "say --done or --not-done"),
        (("resolve", run_id, "K-1", "--not-done", "--result", "1"), "--result goes with --done"),
        (("resolve", run_id, "K-1", "--done", "--result", "{nope"), "--result is not JSON"),
    ):
        result = cli(*args, db=db)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_resolve_is_refused_while_the_run_executes(tmp_path: Path, db: Path) -> None:
    """A person's answer cannot race the process that holds the run: exit 1, naming it."""
    input_path = write_input(tmp_path, [f"K-{i}" for i in range(50)], idempotent=True, pause=0.05)
    running = spawn("run", ACTING, "--input", str(input_path), db=db)
    calls = tmp_path / "store" / "calls.log"
    deadline = time.monotonic() + 30
    while not calls.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    run_id = json.loads(cli("runs", "--json", db=db).stdout.splitlines()[0])["run_id"]
    refused = cli("resolve", run_id, "K-1", "--done", db=db)
    running.kill()
    running.wait()
    assert refused.returncode == 1
    assert f"is being executed by pid {running.pid}" in refused.stderr


@attrs.frozen
class Charge:
    key: str
    receipt: str | None = None


def charging(sent: list[str]) -> Machine[Charge]:
    """A step that uses what its action returned: a person's answer must carry it."""
    m = Machine("charging", state=Charge, start="charge")

    @m.step
    def charge(ctx: Context, s: Charge) -> Transition:
        if s.receipt is not None:
            return ctx.finish(s)

        def send(key: str) -> dict[str, str]:
            sent.append(key)
            return {"receipt": f"R-{key}"}

        result = ctx.act("charge", s.key, send, idempotent=False)
        return ctx.goto("charge", attrs.evolve(s, receipt=result["receipt"]))

    return m


def test_an_answer_can_be_corrected_until_the_step_that_reads_it_ends(db: Path) -> None:
    """The stop names --result; a resolve without it fails the step that uses the result, and a
    second resolve, with it, puts the run right; once the run went on, no more answers."""
    sent: list[str] = []
    m = charging(sent)

    def ran(point: str) -> None:
        if point == "action.ran":
            raise KeyboardInterrupt  # killed after the action ran, before its outcome

    with Journal.open(db, create=True) as journal:
        prepared = runner.prepare(m, {"key": "C-1"})
        with pytest.raises(KeyboardInterrupt):
            runner.start(
                journal, prepared, target="t", code_hash="h", options=Options(checkpoint=ran)
            )
        (run,) = journal.runs()
        run_id = run.run_id
        stopped = runner.resume(journal, run_id, m, target="t", code_hash="h")
        assert stopped.run.status == "needs_attention"
        assert stopped.run.error is not None and "--done --result JSON" in stopped.run.error
        assert sent == ["C-1"]
    shown = cli("show", run_id, db=db)
    assert "--result JSON" in shown.stdout

    assert cli("resolve", run_id, "C-1", "--done", db=db).returncode == 0
    waiting = cli("show", run_id, "--json", db=db)
    assert json.loads(waiting.stdout)["status"] == "resolved"
    assert f"journal resume {run_id}" in cli("show", run_id, db=db).stdout
    with Journal.open(db) as journal:
        failed = runner.resume(journal, run_id, m, target="t", code_hash="h")
        assert failed.run.status == "failed"  # the step subscripted the missing result
    again = cli("resolve", run_id, "C-1", "--done", "--result", '{"receipt": "R-77"}', db=db)
    assert again.returncode == 0, again.stderr
    with Journal.open(db) as journal:
        done = runner.resume(journal, run_id, m, target="t", code_hash="h")
        assert done.run.status == "done"
        assert state_at(journal, run_id).state["receipt"] == "R-77"
        answers = list(journal.events(run_id, kinds=(k.ACTION_RESOLVED,)))
        assert [a.data["result"] for a in answers] == [None, {"receipt": "R-77"}]
    assert sent == ["C-1"]  # a person's answers never send again
    late = cli("resolve", run_id, "C-1", "--not-done", db=db)
    assert late.returncode == 2 and "is done" in late.stderr


def test_a_refused_claim_never_takes_the_key_over(journal: Journal) -> None:
    """Run b's attempt on a key run a holds is refused and recorded as failed: that record must
    not hand the key to b, whose next claim is refused again (two runs once both sent)."""
    writers = {}
    for name in ("a", "b"):
        run, _ = journal.create_run(
            machine=name,
            target="t",
            code_hash="0",
            step="s",
            state={},
            input={},
            run_key=None,
            holder=Holder.this_process(),
            lease_ttl=30,
        )
        writers[name] = RunWriter(journal, run.run_id, last_seq=1)
    base: dict[str, Any] = {"call": "#0", "name": "send", "key": "K-1", "idempotent": False}
    intent = kinds.ActionIntended(**base, intent="x", attempt=1)
    writers["a"].commit("s", intent, sync=True, claim=("send", "K-1"))
    with pytest.raises(ActionBusy):
        writers["b"].commit("s", intent, sync=True, claim=("send", "K-1"))
    failure = {"status": None, "error_type": "Retryable", "message": "busy", "retryable": True}
    writers["b"].commit("s", kinds.ActionFailed(**base, attempt=1, in_doubt=False, **failure))
    with pytest.raises(ActionBusy):
        writers["b"].commit("s", intent, sync=True, claim=("send", "K-1"))
    owner = journal.conn.execute("SELECT run_id, status FROM action_keys").fetchone()
    assert owner == (writers["a"].run_id, "intended")
