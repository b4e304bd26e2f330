"""The reading commands say money and runs alike (issue 17): billed, possibly billed and total
under those names everywhere, `journal cost` within 100 columns, a budget for a machine never
run warned about, and `show` and `logs` taking the latest run when given none.

Each test drives the real `journal` command in a subprocess, against a real journal file.
"""

from __future__ import annotations

import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import FIXTURES, cli

from runjournal.journal import Journal

TRIAGE = str(FIXTURES / "triage.py")
LINES = str(FIXTURES / "lines.py")
NUSD = Decimal(1_000_000_000)


def usd(nusd: int) -> str:
    """An amount as the commands print it: exact, in dollars."""
    return f"${Decimal(nusd) / NUSD:f}"


def parse_table(text: str) -> list[dict[str, str]]:
    """A table's rows as {header: cell}: each cell starts where its header does."""
    header, *lines = text.splitlines()
    names = re.findall(r"\S+(?: \S+)*", header)
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [*starts[1:], None]
    return [
        {
            name: line[start:end].strip()
            for name, start, end in zip(names, starts, ends, strict=True)
        }
        for line in lines
    ]


@pytest.fixture(scope="module")
def costly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal with a triage run whose dropped connections left requests possibly billed,
    and one with none, both of machine `triage`, which has a budget."""
    where = tmp_path_factory.mktemp("costly")
    db = where / "journal.db"
    tickets = where / "tickets.jsonl"
    tickets.write_text("".join((FIXTURES / "tickets.jsonl").read_text().splitlines(True)[:10]))
    for faults in ("reset=0.3,seed=7", "none"):
        done = cli("run", TRIAGE, "--input", str(tickets), "--fake-model", faults, db=db, cwd=where)
        assert done.returncode == 0, done.stderr
    assert cli("budget", "set", "triage", "--per-day", "5", db=db).returncode == 0
    return db


def sums(db: Path, sql: str) -> list[tuple[str, int, int]]:
    """(key, billed, billed and possibly billed) in nano-dollars, from the journal's tables."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_every_command_says_billed_possibly_billed_and_total(costly: Path) -> None:
    """budget, cost (each --by), runs and show: the same three amounts, under the same three
    names, in text and JSON; the budget's total today is what `cost --by day` sums."""
    db = costly
    by_run = sums(db, "SELECT run_id, cost_nusd, total_nusd FROM runs")
    assert any(total > billed for _, billed, total in by_run)  # possibly billed, for real
    runs = parse_table(cli("runs", db=db).stdout)
    shown_runs = {r["run"]: (r["billed"], r["possibly billed"], r["total"]) for r in runs}
    costs = parse_table(cli("cost", "--by", "run", db=db).stdout)
    shown_costs = {r["run"]: (r["billed"], r["possibly billed"], r["total"]) for r in costs}
    cost_json = {
        row["run"]: row
        for row in map(json.loads, cli("cost", "--by", "run", "--json", db=db).stdout.splitlines())
    }
    for run_id, billed, total in by_run:
        words = (usd(billed), usd(total - billed), usd(total))
        assert shown_runs[run_id] == words
        assert shown_costs[run_id] == words
        shown = cli("show", run_id, db=db).stdout
        assert f"cost {words[0]} billed, {words[1]} possibly billed, {words[2]} total" in shown
        as_json = json.loads(cli("show", run_id, "--json", db=db).stdout)
        numbers = (as_json["cost_usd"], as_json["possibly_billed_usd"], as_json["total_usd"])
        assert numbers == tuple(float(Decimal(w[1:])) for w in words)
        row = cost_json[run_id]
        assert (row["cost_usd"], row["possibly_billed_usd"], row["total_usd"]) == numbers

    ((day, billed, total),) = sums(
        db, "SELECT day, sum(cost_nusd), sum(total_nusd) FROM spend GROUP BY day"
    )
    words = (usd(billed), usd(total - billed), usd(total))
    (per_day,) = parse_table(cli("cost", "--by", "day", db=db).stdout)
    assert (per_day["day"], per_day["billed"], per_day["possibly billed"]) == (day, *words[:2])
    assert per_day["total"] == words[2]
    (budget,) = parse_table(cli("budget", db=db).stdout)
    assert budget["billed today"] == words[0]
    assert budget["possibly billed today"] == words[1]
    assert budget["total today"] == words[2]
    assert "spent today" not in cli("budget", db=db).stdout
    listed = json.loads(cli("budget", "--json", db=db).stdout)
    assert listed["today"] == {
        "cost_usd": float(Decimal(words[0][1:])),
        "possibly_billed_usd": float(Decimal(words[1][1:])),
        "total_usd": float(Decimal(words[2][1:])),
    }


def test_cost_fits_100_columns_and_json_keeps_every_figure(costly: Path) -> None:
    """Each `journal cost --by` table fits 100 columns; --wide and --json have every column."""
    every = {
        "calls",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_write_tokens",
        "cache_read_tokens",
        "cost_usd",
        "possibly_billed_usd",
        "total_usd",
        "input_tokens_per_step",
        "output_tokens_per_step",
        "tokens_per_decision",
    }
    for by in ("run", "machine", "version", "model", "day"):
        text = cli("cost", "--by", by, db=costly).stdout
        assert max(len(line) for line in text.splitlines()) <= 100, text
        assert {"billed", "possibly billed", "total"} <= set(parse_table(text)[0]), text
        wide = parse_table(cli("cost", "--by", by, "--wide", db=costly).stdout)
        assert {"requests", "cache read", "cache write", "tokens/decision"} <= set(wide[0])
        rows = [
            json.loads(line)
            for line in cli("cost", "--by", by, "--json", db=costly).stdout.splitlines()
        ]
        assert rows and all(every <= set(row) for row in rows), rows


def test_a_budget_for_a_machine_never_run_is_set_with_a_warning(
    costly: Path, tmp_path: Path
) -> None:
    """Set before a machine's first run, a budget is legitimate; a typo would cap nothing."""
    db = tmp_path / "journal.db"
    with sqlite3.connect(costly) as source, sqlite3.connect(db) as copy:
        source.backup(copy)  # pages and header, WAL or not
    unknown = cli("budget", "set", "triag", "--per-day", "1", db=db)
    assert unknown.returncode == 0, unknown.stderr
    (warning,) = unknown.stderr.splitlines()
    assert warning.startswith("warning: ") and "'triag'" in warning
    assert "triag" in [row["machine"] for row in parse_table(cli("budget", db=db).stdout)]
    known = cli("budget", "set", "triage", "--per-day", "5", db=db)
    assert known.returncode == 0 and known.stderr == ""


def test_show_and_logs_take_the_latest_run(tmp_path: Path) -> None:
    """Given no run, `show` and `logs` read the run created last, and name it on stderr."""
    db = tmp_path / "journal.db"
    made = []
    for _ in range(2):
        done = cli("run", LINES, "--input", str(FIXTURES / "lines.json"), db=db, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.split()[1])
    latest = made[-1]
    shown = cli("show", db=db)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == f"latest run: {latest}\n"
    assert shown.stdout.splitlines()[0] == f"run      {latest}"
    assert json.loads(cli("show", "--json", db=db).stdout)["run_id"] == latest
    logs = cli("logs", db=db)
    assert logs.returncode == 0, logs.stderr
    assert logs.stderr == f"latest run: {latest}\n"
    lines = logs.stdout.splitlines()
    assert lines and all(line.split()[1] == f"run_id={latest}" for line in lines)
    assert cli("logs", made[0], db=db).stderr == ""  # a run named is not announced


@pytest.mark.parametrize("command", ["show", "logs"])
def test_show_and_logs_with_no_run_at_all_fail_in_one_line(tmp_path: Path, command: str) -> None:
    db = tmp_path / "journal.db"
    Journal.open(db, create=True).close()
    result = cli(command, db=db)
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert "no runs in" in line and "journal run" in line
    assert result.stdout == ""


@pytest.mark.parametrize("amount", ["0", "-1", "nan", "inf", "abc", "1e-12", "1e10", "1e400"])
def test_an_amount_that_is_not_dollars_a_journal_can_hold_is_refused(
    costly: Path, tmp_path: Path, amount: str
) -> None:
    """A budget or a cost cap is from a nano-dollar to a billion dollars: the journal keeps
    money as integers of nano-dollars, and 1e10 dollars is past what SQLite's integers hold.
    Refused in one line, exit 2, nothing written."""
    db = tmp_path / "journal.db"
    with sqlite3.connect(costly) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    before = cli("budget", "--json", db=db).stdout
    refused = cli("budget", "set", "triage", "--per-day", amount, db=db)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == (
        f"Error: --per-day must be an amount of dollars from 0.000000001 to 1000000000 (or "
        f"none), not {amount!r}\n"
    )
    assert cli("budget", "--json", db=db).stdout == before
    runs = len(cli("runs", "--json", db=db).stdout.splitlines())
    capped = cli("run", LINES, "--input", str(FIXTURES / "lines.json"), "--max-cost", amount, db=db)
    assert capped.returncode == 2
    (line,) = capped.stderr.splitlines()
    assert "an amount of dollars from 0.000000001 to 1000000000" in line, line
    assert len(cli("runs", "--json", db=db).stdout.splitlines()) == runs
