"""The API key never reaches the journal, the logs or an error message (grepped as bytes)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import FIXTURES, cli, journal_command

from machine import FakeModel, Faults, serve

KEY = "sk-ant-api03-SECRET-do-not-journal-0123456789abcdef"

LEAKY = """
import os
import attrs
from machine import Machine

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
    assert journal_command()  # the real console script ran these commands
