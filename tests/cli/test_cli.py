"""Tests for the `journal` command, run as a real subprocess.

Bad input of every kind gets one line on stderr, a non-zero exit (2), no traceback, and leaves
the journal exactly as it was.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, cli, digest, journal_command

from runjournal.cli.executing import Given, execution_options
from runjournal.cli.main import cli as group
from runjournal.journal import schema

LINES = str(FIXTURES / "lines.py")


@pytest.fixture
def done_run(tmp_path: Path, db: Path) -> str:
    """A journal holding one finished run of the lines fixture; returns its run id."""
    input_path = tmp_path / "in.json"
    input_path.write_text(
        json.dumps({"items": ["apple", "blackberry"], "out": str(tmp_path / "o")})
    )
    result = cli("run", LINES, "--input", str(input_path), db=db)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1]


def assert_one_line_error(result: object, code: int = 2, *, says: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert says in lines[0], lines[0]


def test_run_prints_the_run_and_exits_0(done_run: str, db: Path) -> None:
    shown = cli("show", done_run[:5], db=db)
    assert shown.returncode == 0
    assert "status   done" in shown.stdout
    assert "steps    5" in shown.stdout


def test_runs_lists_and_sql_queries(done_run: str, db: Path) -> None:
    listed = cli("runs", db=db)
    assert done_run in listed.stdout and "done" in listed.stdout
    rows = cli(
        "sql", "select kind, count(*) as n from events group by kind order by kind", "--json", db=db
    )
    counts = {row["kind"]: row["n"] for row in map(json.loads, rows.stdout.splitlines())}
    assert counts["effect.done"] == 4
    assert counts["run.done"] == 1
    as_csv = cli("sql", "select item, outcome from decisions", "--csv", db=db)
    assert as_csv.stdout.splitlines() == ["item,outcome", "item-1,long"]


def test_logs_are_one_greppable_line_per_event(done_run: str, db: Path) -> None:
    logs = cli("logs", done_run, db=db)
    lines = logs.stdout.splitlines()
    assert len(lines) == 12
    assert [line for line in lines if " kind=decision " in line] == [
        next(line for line in lines if "outcome=long" in line)
    ]
    assert all(done_run in line for line in lines)
    as_json = [
        json.loads(line) for line in cli("logs", done_run, "--json", db=db).stdout.splitlines()
    ]
    assert [e["seq"] for e in as_json] == list(range(1, 13))


def test_replay_shows_each_state_without_the_code(done_run: str, db: Path, tmp_path: Path) -> None:
    states = [
        json.loads(line) for line in cli("replay", done_run, "--json", db=db).stdout.splitlines()
    ]
    assert [s["state"]["next"] for s in states] == [0, 0, 1, 1, 2, 2]
    at = cli("replay", done_run, "--at", "5", "--json", db=db)
    assert json.loads(at.stdout)["state"]["total"] == 5
    # The pipeline's file is not needed: replay folds the journal alone.
    moved = tmp_path / "moved.db"
    moved.write_bytes(db.read_bytes())
    text = cli("replay", done_run, db=moved)
    assert "replace /next = 1" in text.stdout


def test_resume_of_a_done_run_does_nothing(done_run: str, db: Path) -> None:
    before = digest(db)
    result = cli("resume", done_run, db=db)
    assert result.returncode == 0
    assert "already done" in result.stdout
    assert digest(db) == before


def test_a_failed_run_exits_1(tmp_path: Path, db: Path) -> None:
    pipeline = tmp_path / "broken.py"
    pipeline.write_text(
        "import attrs\nfrom runjournal import Machine\n"
        "@attrs.frozen\nclass S:\n    n: int = 0\n"
        "m = Machine('broken', state=S, start='go')\n"
        "@m.step\ndef go(ctx, s):\n    raise ValueError('no luck')\n"
    )
    result = cli("run", str(pipeline), db=db)
    assert result.returncode == 1
    assert "failed at step go: ValueError: no luck" in result.stderr
    assert "journal resume" in result.stderr


def test_the_same_key_twice_reports_the_done_run(tmp_path: Path, db: Path) -> None:
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["a"], "out": str(tmp_path / "o")}))
    first = cli("run", LINES, "--input", str(input_path), "--key", "2026-11-26", db=db)
    second = cli("run", LINES, "--input", str(input_path), "--key", "2026-11-26", db=db)
    assert first.returncode == 0 and second.returncode == 0
    assert "already done" in second.stdout
    assert (tmp_path / "o").read_text().count("\n") == 1


# Bad input: one line, exit 2, the journal unchanged.


def test_unknown_run_id(done_run: str, db: Path) -> None:
    before = digest(db)
    other = "0" if not done_run.startswith("0") else "1"
    for command in ("show", "resume", "logs", "replay"):
        assert_one_line_error(cli(command, other * 8, db=db), says="no run")
    assert_one_line_error(cli("show", "zz-top", db=db), says="run ids are hex")
    assert digest(db) == before


def test_ambiguous_prefix(tmp_path: Path, db: Path) -> None:
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": [], "out": str(tmp_path / "o")}))
    ids: list[str] = []
    while len({i[0] for i in ids}) == len(ids):
        result = cli("run", LINES, "--input", str(input_path), db=db)
        ids.append(result.stdout.split()[1])
    prefix = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    before = digest(db)
    result = cli("show", prefix, db=db)
    assert_one_line_error(result, says="is ambiguous")
    matching = [i for i in ids if i.startswith(prefix)]
    assert all(i in result.stderr for i in matching)
    assert digest(db) == before


def test_a_journal_that_is_not_sqlite(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00not a database at all\xff" * 500)
    before = garbage.read_bytes()
    for args in (("runs",), ("show", "ab"), ("sql", "select 1")):
        assert_one_line_error(cli(*args, db=garbage), says="is not a journal")
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["a"], "out": str(tmp_path / "o")}))
    result = cli("run", LINES, "--input", str(input_path), db=garbage)
    assert_one_line_error(result, says="is not a journal")
    assert garbage.read_bytes() == before
    assert not (tmp_path / "o").exists()


def test_a_journal_from_a_newer_schema(done_run: str, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('runjournal', '0999_next_year', '2027-11-26')"
    )
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")  # as a newer one does
    conn.commit()
    conn.close()
    before = digest(db)
    for args in (("runs",), ("show", done_run), ("sql", "select 1"), ("resume", done_run)):
        assert_one_line_error(cli(*args, db=db), says="written by a newer runjournal")
    assert digest(db) == before


def test_a_missing_journal_is_not_created_by_reading(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    for args in (("runs",), ("show", "ab"), ("sql", "select 1")):
        assert_one_line_error(cli(*args, db=db), says="no journal at")
    assert not db.exists()


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("nowhere/pipeline.py", "no file nowhere/pipeline.py"),
        ("no_such_module_anywhere", "no module no_such_module_anywhere"),
        (f"{LINES}:missing", "'missing' is not a Machine"),
    ],
)
def test_a_target_that_does_not_exist(db: Path, tmp_path: Path, target: str, says: str) -> None:
    assert_one_line_error(cli("run", target, db=db, cwd=tmp_path), says=says)
    assert not db.exists()


def test_a_target_with_no_machine(tmp_path: Path, db: Path) -> None:
    plain = tmp_path / "plain.py"
    plain.write_text("x = 1\n")
    assert_one_line_error(cli("run", str(plain), db=db), says="defines no Machine")
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    assert_one_line_error(cli("run", str(broken), db=db), says="cannot import")
    assert not db.exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"items": "apple", "out": "o"}', "expected an array, got a string @ $.items"),
        ('{"items": [1, 2], "out": "o"}', "expected a string, got an integer @ $.items[0]"),
        ('{"items": []}', "required field missing @ $.out"),
        ("[1, 2, 3]", "takes as input an object of Batch, and the input is an array"),
        ('{"items": [', "not JSON"),
        ("", "is empty"),
    ],
)
def test_an_input_that_does_not_fit(
    done_run: str, db: Path, tmp_path: Path, content: str, says: str
) -> None:
    before = digest(db)
    input_path = tmp_path / "bad.json"
    input_path.write_text(content)
    assert_one_line_error(cli("run", LINES, "--input", str(input_path), db=db), says=says)
    assert digest(db) == before


def test_an_input_file_that_does_not_exist(done_run: str, db: Path, tmp_path: Path) -> None:
    before = digest(db)
    result = cli("run", LINES, "--input", str(tmp_path / "nope.json"), db=db)
    assert_one_line_error(result, says="no input file")
    assert digest(db) == before


def test_input_from_standard_input(db: Path, tmp_path: Path) -> None:
    data = json.dumps({"items": ["kiwi"], "out": str(tmp_path / "o")})
    result = cli("run", LINES, "--input", "-", db=db, input=data)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o").read_text() == "item-0 kiwi 4\n"


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("INSERT INTO runs (run_id) VALUES ('x')", "INSERT is not allowed"),
        ("DELETE FROM events", "DELETE is not allowed"),
        ("UPDATE runs SET status = 'done'", "UPDATE is not allowed"),
        ("DROP TABLE events", "DROP TABLE is not allowed"),
        ("DROP VIEW decisions", "DROP VIEW is not allowed"),
        ("CREATE TABLE x (a)", "CREATE TABLE is not allowed"),
        ("ATTACH DATABASE 'other.db' AS other", "ATTACH is not allowed"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA is not allowed"),
        ("WITH x AS (SELECT 1) DELETE FROM events", "DELETE is not allowed"),
        ("select * from nowhere", "no such table: nowhere"),
        ("select 1; select 2", "one statement at a time"),
    ],
)
def test_sql_is_read_only(
    done_run: str, db: Path, tmp_path: Path, statement: str, says: str
) -> None:
    before = digest(db)
    result = cli("sql", statement, db=db, cwd=tmp_path)
    assert_one_line_error(result, says=says)
    assert digest(db) == before
    assert not (tmp_path / "other.db").exists()


def test_a_usage_error_is_one_line_with_exit_2(db: Path) -> None:
    assert_one_line_error(cli("runs", "--no-such-flag", db=db), says="No such option")
    assert_one_line_error(cli("sql", "select 1", "--json", "--csv", db=db), says="one of --json")
    assert_one_line_error(cli("replay", "ab", "--at", "0", db=db), says="--at")


TRIAGE = str(FIXTURES / "triage.py")
TICKETS = str(FIXTURES / "tickets.jsonl")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--fake-model", "bogus"), "'bogus' is not name=rate"),
        (("--fake-model", "429=2"), "outside [0, 1]"),
        (("--fake-model", "chaos", "--prices", "absent.json"), "cannot read the price file"),
        (("--fake-model", "chaos", "--prices", "bad.json"), "model 'x'"),
    ],
)
def test_bad_model_flags(
    done_run: str, db: Path, tmp_path: Path, flags: tuple[str, ...], says: str
) -> None:
    (tmp_path / "bad.json").write_text('{"models": {"x": []}}')
    before = digest(db)
    assert_one_line_error(
        cli("run", TRIAGE, "--input", TICKETS, *flags, db=db, cwd=tmp_path), says=says
    )
    assert digest(db) == before


def test_no_api_key_is_refused_before_the_run_starts(tmp_path: Path, db: Path) -> None:
    """A machine that asks a model, no ANTHROPIC_API_KEY and no --fake-model: one line naming
    both, exit 2, and no journal made (not a run failing at its first ask)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    result = subprocess.run(
        [*journal_command(), "run", TRIAGE, "--input", TICKETS, "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: machine 'triage' asks a model; ANTHROPIC_API_KEY is not set")
    assert "--fake-model" in line
    assert not db.exists()


def test_logs_follow_prints_events_until_the_run_ends(tmp_path: Path, db: Path) -> None:
    """`journal logs --follow` started mid-run keeps printing, and exits when the run is done."""
    from conftest import spawn

    input_path = tmp_path / "in.json"
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    input_path.write_text(json.dumps({"items": words, "out": str(tmp_path / "o"), "pause": 0.1}))
    running = spawn("run", LINES, "--input", str(input_path), db=db)
    while not (tmp_path / "o").exists():
        assert running.poll() is None
        time.sleep(0.02)
    run_id = json.loads(cli("runs", "--json", db=db).stdout.splitlines()[0])["run_id"]
    follower = spawn("logs", run_id, "--follow", db=db)
    out, _ = follower.communicate(timeout=60)
    running.wait(timeout=60)
    assert follower.returncode == 0
    lines = out.splitlines()
    assert " kind=run.started " in lines[0]
    assert " kind=run.done " in lines[-1]
    assert len(lines) == len({line.split()[2] for line in lines})  # no event twice


def test_a_journal_in_a_folder_that_does_not_exist_is_refused_naming_the_folder(
    tmp_path: Path,
) -> None:
    """Not "cannot be written ... the reading commands work on it": the folder is missing."""
    db = tmp_path / "no" / "such" / "journal.db"
    result = cli("run", str(FIXTURES / "lines.py"), "--input", str(FIXTURES / "lines.json"), db=db)
    assert result.returncode == 2, result.stderr
    assert f"its folder {db.parent} does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "no").exists()


def test_the_commands_that_execute_a_run_share_one_set_of_options() -> None:
    """`run`, `resume` and `fork` take the options of one decorator, `execution_options` (run
    and resume with the live view's too), and are handed their values as one `Given`."""

    def flags(command: click.Command) -> set[str]:
        return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}

    handed: list[Given] = []

    def command(given: Given) -> None:
        handed.append(given)

    for live_view in (True, False):
        made = click.command()(execution_options(live_view=live_view)(command))
        shared = flags(made)
        assert ("--log" in shared) == live_view
        for name in ("run", "resume") if live_view else ("fork",):
            assert flags(group.commands[name]) - {"--help"} >= shared, name
        CliRunner().invoke(
            made, ["--fake-model", "none", "--max-steps", "3"], catch_exceptions=False
        )
    assert handed[-1].fake_model == "none" and handed[-1].limits["max_steps"] == 3
