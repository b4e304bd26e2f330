"""The API key never reaches the journal, the logs or an error message (grepped as bytes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, cli, journal_command

from runjournal.machine.testing import FakeModel, Faults, serve

KEY = "sk-ant-api03-SECRET-do-not-journal-0123456789abcdef"

LEAKY = """
import os
import attrs
from runjournal.machine import Machine

@attrs.frozen
class S:
    n: int = 0

leaky = Machine("leaky", state=S, start="go")

@leaky.step
def go(ctx, s):
    # A careless pipeline: the key ends up in an effect's result and a decision's reason.
    key = ctx.effect("read-key", lambda: os.environ["ANTHROPIC_API_KEY"])
    ctx.decide(item="key", outcome="seen", reason=f"the key is {key}")
    raise RuntimeError(f"failed while holding {key}")
"""


def journal_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.slow
def test_the_key_is_nowhere(tmp_path: Path, monkeypatch: object) -> None:
    db = tmp_path / "journal.db"
    log = tmp_path / "requests.jsonl"
    env_before = dict(os.environ)
    with serve(
        FakeModel(faults=Faults({"429": 0.2, "500": 0.1}, seed=3), retry_after=0.01), log=log
    ) as server:
        os.environ.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
        try:
            triage = cli(
                "run",
                str(FIXTURES / "triage.py"),
                "--input",
                str(FIXTURES / "tickets.jsonl"),
                db=db,
                cwd=tmp_path,
            )
            leaky_file = tmp_path / "leaky.py"
            leaky_file.write_text(LEAKY)
            leaky = cli("run", str(leaky_file), db=db, cwd=tmp_path)
        finally:
            os.environ.clear()
            os.environ.update(env_before)
    assert triage.returncode == 0, triage.stderr
    assert leaky.returncode == 1
    run_ids = [triage.stdout.split()[1], leaky.stderr.split()[1]]
    outputs = [triage.stdout, triage.stderr, leaky.stdout, leaky.stderr]
    for run_id in run_ids:
        for args in (
            ("logs", run_id),
            ("logs", run_id, "--json"),
            ("show", run_id),
            ("replay", run_id),
        ):
            result = cli(*args, db=db)
            assert result.returncode == 0
            outputs += [result.stdout, result.stderr]
    outputs.append(cli("sql", "select * from events", "--csv", db=db).stdout)
    assert KEY.encode() not in journal_bytes(db)
    assert KEY.encode() not in log.read_bytes()
    assert all(KEY not in text for text in outputs)
    # The safety net worked where the pipeline leaked it: the place shows [redacted].
    assert "the key is [redacted]" in cli("logs", run_ids[1], db=db).stdout
    assert "failed while holding [redacted]" in cli("show", run_ids[1], db=db).stdout


def read_everything(db: Path, run_id: str) -> list[str]:
    """What every reading command prints about a run and the journal."""
    outputs = []
    for args in (
        ("logs", run_id),
        ("logs", run_id, "--json"),
        ("show", run_id),
        ("show", run_id, "--json"),
        ("replay", run_id),
        ("replay", run_id, "--json"),
        ("actions",),
        ("verify", "--json"),
        ("sql", "select * from events", "--csv"),
        ("sql", "select * from blobs", "--json"),
    ):
        result = cli(*args, db=db)
        assert result.returncode == 0, (args, result.stderr)
        outputs += [result.stdout, result.stderr]
    return outputs


@pytest.mark.slow
def test_offline_the_key_and_named_variables_are_nowhere_even_in_the_input(
    tmp_path: Path,
) -> None:
    """Under --fake-model too, the key in the environment is kept out; so is the value of each
    --redact-env variable; both also when they sit inside the run's input."""
    token = "pager-token-0123456789-abcdef"
    tickets = [json.loads(line) for line in (FIXTURES / "tickets.jsonl").read_text().splitlines()]
    tickets[0]["body"] += f" My key is {KEY} and the pager token {token}."
    tickets[1]["customer"] = KEY
    input_path = tmp_path / "tickets.jsonl"
    input_path.write_text("".join(json.dumps(t) + "\n" for t in tickets))
    db = tmp_path / "journal.db"
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "PAGER_TOKEN": token}
    run = subprocess.run(
        [
            *journal_command(),
            "run",
            str(FIXTURES / "triage.py"),
            "--input",
            str(input_path),
            "--fake-model",
            "chaos",
            "--redact-env",
            "PAGER_TOKEN",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    run_id = run.stdout.split()[1]
    outputs = [run.stdout, run.stderr, *read_everything(db, run_id)]
    for secret in (KEY, token):
        assert secret.encode() not in journal_bytes(db)
        assert all(secret not in text for text in outputs)
    assert "[redacted]" in cli("sql", "select data from blobs", db=db).stdout


@pytest.mark.parametrize(
    ("value", "says"),
    [(None, "PAGER_TOKEN is not set"), ("short", "shorter than 8 characters")],
)
def test_a_variable_that_cannot_be_redacted_is_a_usage_error(
    tmp_path: Path, value: str | None, says: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PAGER_TOKEN"}
    if value is not None:
        env["PAGER_TOKEN"] = value
    db = tmp_path / "journal.db"
    result = subprocess.run(
        [
            *journal_command(),
            "run",
            str(FIXTURES / "lines.py"),
            "--input",
            str(FIXTURES / "lines.json"),
            "--redact-env",
            "PAGER_TOKEN",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()
