"""The journal grows with what changes, not with the size of the state times the steps."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import attrs
from conftest import ROOT, cli, one_line_error, spawn
from pipelines import big_lines

from runjournal.journal import Journal, blobs, parts, state_at, verify
from runjournal.journal.events import dumps
from runjournal.machine import Context, Machine, Transition, runner


@attrs.frozen
class Item:
    text: str
    done: bool = False


@attrs.frozen
class Items:
    items: tuple[Item, ...]
    next: int = 0


work = Machine("work", state=Items, start="mark")


@work.step
def mark(ctx: Context, s: Items) -> Transition:
    if s.next == len(s.items):
        return ctx.finish(s)
    items = list(s.items)
    items[s.next] = attrs.evolve(items[s.next], done=True)
    return ctx.goto("mark", Items(tuple(items), s.next + 1))


def test_a_thousand_steps_over_a_500_kb_state_write_under_2_mb(db: Path) -> None:
    state = {"items": [{"text": f"{i:04d}" + "x" * 496} for i in range(1000)]}
    with Journal.open(db, create=True) as journal:
        outcome = runner.start(
            journal, runner.prepare(work, state), target="test:work", code_hash="0"
        )
        assert outcome.run.steps == 1001
        final = state_at(journal, outcome.run.run_id).state
        assert all(item["done"] for item in final["items"])
        journal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    # The first state alone is 0.5 MB (and the input, stored once, as much again); a copy of
    # the state per step would be 500 MB.
    assert size < 2_000_000, f"{size} bytes"


# Big inputs: stored once, however many events hold them (journal/parts.py).


BIG_LINES = str(ROOT / "tests" / "pipelines" / "big_lines.py")
BIG = {"items": [f"line {i:05d} of a big input, long enough to count" for i in range(3000)]}


def stored(journal: Journal) -> tuple[int, int]:
    """The blobs' rows and their characters in all."""
    count, size = journal.conn.execute("SELECT count(*), sum(size) FROM blobs").fetchone()
    return count, size


def test_an_input_the_state_holds_is_stored_once_and_snapshots_share_it(db: Path) -> None:
    text = dumps(BIG["items"])
    assert len(text) > 64 * 1024  # big enough to be a part
    with Journal.open(db, create=True) as journal:
        outcome = runner.start(
            journal, runner.prepare(big_lines.lines, BIG), target="t:lines", code_hash=""
        )
        run_id = outcome.run.run_id
        held = [
            json.loads(data)
            for (data,) in journal.conn.execute(
                "SELECT data FROM events WHERE run_id = ? AND kind IN ('run.started', 'snapshot')",
                (run_id,),
            )
        ]
        assert len(held) >= 3  # run.started and two snapshots at least
        (ref,) = {h["state_parts"]["items"] for h in held}  # one blob for them all
        assert held[0]["input_parts"] == {"items": ref}
        assert all(h["state"]["items"] is None for h in held)
        count, size = stored(journal)
        assert count == 2  # the items, and the input without them
        assert size < len(text) + 100
        assert journal.blob(ref) == text
        # Every reader sees the whole state.
        assert state_at(journal, run_id, 1).state["items"] == BIG["items"]
        final = state_at(journal, run_id).state
        assert (final["next"], final["items"]) == (40, BIG["items"])
        assert journal.latest_snapshot(run_id).data["state"]["items"] == BIG["items"]
        assert verify(journal) == []


@attrs.frozen
class Ticket:
    id: str
    body: str


@attrs.frozen
class Tickets:
    tickets: tuple[Ticket, ...]
    next: int = 0


tickets = Machine("tickets", state=Tickets, start="count")


@tickets.input
def from_tickets(rows: list[Ticket]) -> Tickets:
    return Tickets(tuple(rows))


@tickets.step
def count(ctx: Context, s: Tickets) -> Transition:
    return ctx.finish(attrs.evolve(s, next=len(s.tickets)))


def test_json_lines_kept_whole_by_the_state_are_stored_once(db: Path) -> None:
    rows = [{"id": f"T-{i:05d}", "body": "the dashboard is down " * 4} for i in range(1000)]
    with Journal.open(db, create=True) as journal:
        outcome = runner.start(
            journal, runner.prepare(tickets, rows), target="t:tickets", code_hash=""
        )
        started = next(journal.events(outcome.run.run_id, upto=1)).data
        assert started["state_parts"] == {"tickets": started["input"]}
        count, size = stored(journal)
        assert (count, size) == (1, len(dumps(rows)))
        assert verify(journal) == []


def run_of(result: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"run ([0-9a-f]{12}) ", result.stdout + result.stderr)
    assert found is not None, result.stderr
    return found[1]


def test_a_fork_and_a_resume_read_a_big_input_back_whole(tmp_path: Path) -> None:
    db, source = tmp_path / "journal.db", tmp_path / "input.json"
    source.write_text(json.dumps(BIG))
    target = BIG_LINES
    first = cli("run", target, "--input", str(source), "--max-steps", "5", db=db)
    assert first.returncode == 3, first.stderr  # stopped by its step limit
    run_id = run_of(first)
    resumed = cli("resume", run_id, "--max-steps", "100", db=db)
    assert resumed.returncode == 0, resumed.stderr
    forked = cli("fork", run_id, "--at", "3", db=db)
    assert forked.returncode == 0, forked.stderr
    with Journal.open(db) as journal:
        new = run_of(forked)
        assert state_at(journal, new).state["items"] == BIG["items"]
        count, _ = stored(journal)
        assert count == 2  # the fork's input and first state are the same blobs again
    assert cli("verify", db=db).returncode == 0


def test_a_part_gone_is_named_and_nothing_builds_on_it(tmp_path: Path) -> None:
    db, source = tmp_path / "journal.db", tmp_path / "input.json"
    source.write_text(json.dumps(BIG))
    target = BIG_LINES
    first = cli("run", target, "--input", str(source), "--max-steps", "5", db=db)
    run_id = run_of(first)
    with Journal.open(db) as journal:
        ref = next(journal.events(run_id, upto=1)).data["state_parts"]["items"]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM blobs WHERE hash = ?", (ref,))
    conn.close()
    checked = cli("verify", db=db)
    assert checked.returncode != 0
    assert f"the blob {ref} that seq 1 refers to is gone" in checked.stdout + checked.stderr
    one_line_error(cli("replay", run_id, "--at", "1", db=db), 7, f"the blob {ref} is gone")
    resumed = cli("resume", run_id, db=db)
    assert resumed.returncode != 0 and "Traceback" not in resumed.stderr
    assert f"the blob {ref} that seq 1 refers to is gone" in resumed.stderr


def test_a_big_member_in_pieces_is_the_text_of_it_whole_and_its_secrets_are_redacted() -> None:
    secret = "sk-ant-0123456789"
    member = [
        {"n": i, "text": f"item {i} é", "key": secret if i % 997 == 0 else ""} for i in range(5000)
    ]
    redact = lambda text: text.replace(secret, "[redacted]")  # noqa: E731
    for secrets in ([secret], ["a secret, with a comma"]):  # by pieces, then whole
        _, found, payloads, size = parts.split({"items": member, "n": 1}, redact, secrets)
        (payload,) = payloads
        whole = redact(dumps(member))
        assert "".join(payload.pieces()) == whole and secret not in whole
        assert found == {"items": payload.name} and payload.name == blobs.ref(whole)
        assert (payload.size, payload.length) == (len(whole), len(whole.encode()))
        assert size >= len(whole)


def test_the_size_of_a_state_counted_by_pieces_is_its_size() -> None:
    odd = {"items": BIG["items"], 'é"': [1, 2.5, None]}
    for value in ({}, {"a": 1}, odd, BIG["items"], 7):
        assert parts.size(value) == len(dumps(value))


def test_a_blob_of_a_megabyte_is_written_in_pieces_read_back_and_checked(tmp_path: Path) -> None:
    db, source = tmp_path / "journal.db", tmp_path / "input.json"
    items = [f"line {i:06d} of an input of more than a megabyte, é" for i in range(24_000)]
    source.write_text(json.dumps({"items": items}, ensure_ascii=False))
    first = cli("run", BIG_LINES, "--input", str(source), "--max-steps", "2", db=db)
    run_id = run_of(first)
    with Journal.open(db) as journal:
        ref = next(journal.events(run_id, upto=1)).data["state_parts"]["items"]
        assert journal.blob(ref) == dumps(items)
        assert state_at(journal, run_id, 1).state["items"] == items
    sql = (
        "SELECT typeof(data) AS kind, length(CAST(data AS TEXT)) AS chars, "
        f"substr(CAST(data AS TEXT), -40) AS tail FROM blobs WHERE hash = '{ref}'"
    )
    read = cli("sql", sql, "--json", db=db)
    assert read.returncode == 0, read.stderr
    text = dumps(items)
    assert json.loads(read.stdout) == {"kind": "blob", "chars": len(text), "tail": text[-40:]}
    assert cli("verify", db=db).returncode == 0
    with sqlite3.connect(db) as conn:  # one byte changed, in the middle of the blob
        (rowid,) = conn.execute("SELECT rowid FROM blobs WHERE hash = ?", (ref,)).fetchone()
        with conn.blobopen("blobs", "data", rowid) as blob:
            blob.seek(600_000)
            blob.write(b"X")
    conn.close()
    checked = cli("verify", db=db)
    assert checked.returncode != 0
    assert f"the blob {ref} that seq 1 refers to was changed" in checked.stdout + checked.stderr


def test_a_run_over_a_big_input_killed_after_a_snapshot_resumes_to_the_same_end(
    tmp_path: Path,
) -> None:
    """SIGKILL once a snapshot holding the input's blob is on disk, then resume: the fold from
    that snapshot puts the items back, and the run ends as one never killed."""
    db, source = tmp_path / "journal.db", tmp_path / "input.json"
    source.write_text(json.dumps({**BIG, "pause": 0.05}))
    process = spawn("run", BIG_LINES, "--input", str(source), "--quiet", db=db)
    deadline = time.monotonic() + 60
    while snapshots(db) == 0:  # observed progress, never a fixed sleep
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no snapshot in 60 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with Journal.open(db, readonly=True) as journal:
        (run,) = journal.runs()
        assert run.status != "done"
    resumed = cli("resume", run.run_id, "--quiet", db=db)
    assert resumed.returncode == 0, resumed.stderr
    with Journal.open(db, readonly=True) as journal:
        final = state_at(journal, run.run_id).state
    assert (final["next"], final["items"]) == (40, BIG["items"])
    assert cli("verify", db=db).returncode == 0


def snapshots(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = conn.execute("SELECT count(*) FROM events WHERE kind = 'snapshot'").fetchone()
    except sqlite3.OperationalError:
        n = 0  # the schema is not there yet
    finally:
        conn.close()
    return int(n)
