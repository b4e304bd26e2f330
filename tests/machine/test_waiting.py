"""A person in the loop (`ctx.wait_for`, `journal answer`): the README's approval example,
through the command line in real processes, killed where a wait is recorded, answered from
another process, refused when the answer does not fit, and defaulted at its deadline."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FIXTURES, cli, digest, journal_command, kill_at, one_line_error

from runjournal.journal import Journal, JournalError
from runjournal.journal import events as k

APPROVAL = str(FIXTURES / "approval.py")
WAITING = 8


def refund(tmp_path: Path, **changed: object) -> Path:
    spec = json.loads((FIXTURES / "refund.json").read_text())
    spec |= {"outbox": str(tmp_path / "refunds"), **changed}
    path = tmp_path / "refund.json"
    path.write_text(json.dumps(spec))
    return path


def only_run(db: Path) -> str:
    with Journal.open(db) as journal:
        (run,) = journal.runs()
        return run.run_id


def kinds_of(db: Path, run_id: str) -> list[str]:
    with Journal.open(db) as journal:
        return [e.kind for e in journal.events(run_id)]


def test_a_run_waits_is_answered_from_another_process_and_goes_on(tmp_path: Path, db: Path) -> None:
    started = cli("run", APPROVAL, "--input", str(refund(tmp_path)), db=db)
    assert started.returncode == WAITING, started.stderr
    run_id = only_run(db)
    assert f"journal answer {run_id} approval" in started.stderr
    waiting = cli("runs", "--status", "waiting", db=db)
    assert run_id in waiting.stdout and "billing lead" in waiting.stdout

    # A wrong answer, an unknown wait, bad JSON: each refused in one line, nothing recorded.
    before = digest(db)
    wrong = cli("answer", run_id, "approval", "--value", '{"approve": "yes"}', db=db)
    one_line_error(wrong, 2, "approve: 'yes' is not of type 'boolean'")
    extra = cli("answer", run_id, "approval", "--value", '{"approve": true, "x": 1}', db=db)
    one_line_error(extra, 2, "Additional properties are not allowed")
    unknown = cli("answer", run_id, "sign-off", "--value", "true", db=db)
    one_line_error(unknown, 2, "waits for no 'sign-off'")
    bad = cli("answer", run_id, "approval", "--value", "{nope", db=db)
    one_line_error(bad, 2, "--value is not JSON")
    assert digest(db) == before

    value = '{"approve": true, "note": "invoice checked"}'
    answered = cli(
        "answer", run_id, "approval", "--value", value, "--by", "lead@example",
        "--reason", "matches invoice 4411", db=db,
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert "resolved" in cli("runs", db=db).stdout
    again = cli("answer", run_id, "approval", "--value", value, db=db)
    one_line_error(again, 2, "waits for no 'approval'")

    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    shown = cli("show", run_id, db=db).stdout
    assert "answered by lead@example" in shown and "matches invoice 4411" in shown
    assert [p.name for p in (tmp_path / "refunds").iterdir()] == ["RF-1001.json"]
    with Journal.open(db) as journal:
        (decision,) = journal.events(run_id, kinds=(k.DECISION,))
        assert decision.data["outcome"] == "send"
        assert decision.data["reason"] == "invoice checked"
        assert journal.verify() == []


def start_and_kill_at(tmp_path: Path, db: Path, point: str) -> str:
    kill_at(APPROVAL, refund(tmp_path), db, point, tmp_path / "reached")
    return only_run(db)


def test_killed_once_the_wait_is_recorded_it_is_answered_and_goes_on(
    tmp_path: Path, db: Path
) -> None:
    """SIGKILL between `wait.started` and `run.waiting`: the run is interrupted, and the
    wait it recorded can be answered all the same, from another process; the resume reads it."""
    run_id = start_and_kill_at(tmp_path, db, "wait.started")
    assert kinds_of(db, run_id)[-1] == k.WAIT_STARTED
    value = '{"approve": false, "note": "duplicate of RF-0999"}'
    answered = cli("answer", run_id, "approval", "--value", value, "--by", "lead", db=db)
    assert answered.returncode == 0, answered.stderr
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    kinds = kinds_of(db, run_id)
    assert kinds.count(k.WAIT_STARTED) == 1 and kinds.count(k.WAIT_ANSWERED) == 1
    assert k.RUN_WAITING not in kinds
    assert not (tmp_path / "refunds").exists()  # declined: never sent
    with Journal.open(db) as journal:
        (decision,) = journal.events(run_id, kinds=(k.DECISION,))
        assert decision.data["outcome"] == "decline"


def test_killed_before_the_wait_is_recorded_the_resume_waits(tmp_path: Path, db: Path) -> None:
    run_id = start_and_kill_at(tmp_path, db, "wait.before")
    assert k.WAIT_STARTED not in kinds_of(db, run_id)
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode == WAITING, resumed.stderr
    assert kinds_of(db, run_id).count(k.WAIT_STARTED) == 1


def test_a_passed_deadline_takes_the_default_and_resume_all_finds_it(
    tmp_path: Path, db: Path
) -> None:
    started = cli("run", APPROVAL, "--input", str(refund(tmp_path, deadline_s=0)), db=db)
    assert started.returncode == WAITING, started.stderr
    run_id = only_run(db)
    resumed = cli("resume", "--all", db=db)
    assert resumed.returncode == 0, resumed.stderr
    with Journal.open(db) as journal:
        assert journal.run(run_id).status == "done"
        (expired,) = journal.events(run_id, kinds=(k.WAIT_EXPIRED,))
        assert expired.data["value"] == {"approve": False, "note": "no answer by the deadline"}
        (decision,) = journal.events(run_id, kinds=(k.DECISION,))
        assert decision.data["outcome"] == "decline"
    assert "the default" in cli("show", run_id, db=db).stdout
    late = cli("answer", run_id, "approval", "--value", '{"approve": true}', db=db)
    one_line_error(late, 2, "is done")


def test_resume_all_leaves_a_wait_before_its_deadline(tmp_path: Path, db: Path) -> None:
    assert cli("run", APPROVAL, "--input", str(refund(tmp_path)), db=db).returncode == WAITING
    resumed = cli("resume", "--all", db=db)
    assert resumed.returncode == 0 and "no run to resume" in resumed.stdout
    run_id = only_run(db)
    killed = cli("kill", run_id, "--reason", "customer withdrew", db=db)
    assert killed.returncode == 0, killed.stderr
    with Journal.open(db) as journal:
        assert journal.run(run_id).status == "killed"


def test_the_python_api_answers_and_checks_as_the_command_does(tmp_path: Path, db: Path) -> None:
    from runjournal import AnswerRefused, answer, resume
    from runjournal.machine import loader

    assert cli("run", APPROVAL, "--input", str(refund(tmp_path)), db=db).returncode == WAITING
    run_id = only_run(db)
    with Journal.open(db) as journal:
        with pytest.raises(AnswerRefused, match="'approve' is a required property"):
            answer(journal, run_id, "approval", {"note": "no verdict"}, by="api")
        answer(journal, run_id, "approval", {"approve": True}, by="api", reason="ok")
    machine = loader.load(APPROVAL).machine
    outcome = resume(machine, run_id, db=db)
    assert outcome.run.status == "done" and outcome.state.approved is True


def test_wait_keeps_the_process_until_an_answer_from_another_process(
    tmp_path: Path, db: Path
) -> None:
    """`--wait`: the process stays while the run waits; SIGKILLed there, the run still waits;
    a second `--wait` goes on once another process answers."""
    command = [*journal_command(), "run", APPROVAL, "--input", str(refund(tmp_path)), "--wait"]
    first = subprocess.Popen([*command, "--db", str(db)], stderr=subprocess.PIPE, text=True)
    run_id = _wait_status(db, "waiting")
    assert first.poll() is None  # still here, waiting
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _status(db, run_id) == "waiting"

    second = subprocess.Popen(
        [*journal_command(), "resume", run_id, "--wait", "--db", str(db)],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: kinds_of(db, run_id).count(k.RUN_WAITING) == 2, "the resume to wait")
    value = '{"approve": true, "note": "ok"}'
    answered = cli("answer", run_id, "approval", "--value", value, "--by", "lead", db=db)
    assert answered.returncode == 0, answered.stderr
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert _status(db, run_id) == "done"
    assert [p.name for p in (tmp_path / "refunds").iterdir()] == ["RF-1001.json"]


def test_wait_ends_at_a_signal_and_the_run_still_waits(tmp_path: Path, db: Path) -> None:
    command = [*journal_command(), "run", APPROVAL, "--input", str(refund(tmp_path)), "--wait"]
    said = tmp_path / "stderr"
    with said.open("w") as err:
        held = subprocess.Popen([*command, "--db", str(db)], stderr=err, text=True)
        _wait_for(lambda: "--wait: waiting here" in said.read_text(), "the process to wait")
        held.send_signal(signal.SIGTERM)
        held.wait(timeout=30)
    assert held.returncode == 143, said.read_text()
    assert _status(db, only_run(db)) == "waiting"


def _status(db: Path, run_id: str) -> str:
    with Journal.open(db) as journal:
        return journal.run(run_id).status


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def _wait_status(db: Path, status: str) -> str:
    def found() -> bool:
        if not db.exists():
            return False
        try:
            with Journal.open(db) as journal:
                runs = journal.runs()
                return bool(runs) and runs[0].status == status
        except JournalError:
            return False

    _wait_for(found, f"a run {status}")
    return only_run(db)
