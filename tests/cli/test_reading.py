"""Reading is safe everywhere: read commands never write or wait on writers, files that are not
journals are left alone, and every failure of the file or the disk is one clear line.

Each test drives the real `journal` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils
from conftest import (
    FIXTURES,
    cli,
    damage_pages,
    journal_command,
    one_line_error,
    reading_commands,
    small_disk,
)

from runjournal.journal import chain, schema

LINES = str(FIXTURES / "lines.py")


def raw_digest(db: Path) -> dict[str, str | None]:
    """The bytes of the file and of its -wal and -shm: what "left unchanged" means."""
    found: dict[str, str | None] = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(f"{db}{suffix}")
        found[suffix] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return found


@pytest.fixture
def journal_db(tmp_path: Path) -> tuple[Path, str]:
    """A journal with one done run of the lines pipeline."""
    db = tmp_path / "journal.db"
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["alpha", "beta"], "out": str(tmp_path / "o")}))
    done = cli("run", LINES, "--input", str(input_path), db=db)
    assert done.returncode == 0, done.stderr
    return db, done.stdout.split()[1]


# Files that are not journals, each made by `make(path)`.
def _foreign_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()


def _foreign_rollback(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def _empty_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")  # a header and nothing else
    conn.close()


NOT_JOURNALS = {
    "another app's WAL database": (_foreign_wal, "not a journal"),
    "another app's database with its own application_id": (
        _foreign_rollback,
        "another program's SQLite database",
    ),
    "an empty SQLite database": (_empty_sqlite, "empty SQLite database"),
    "a 0-byte file": (lambda path: path.write_bytes(b""), "empty file"),
    "a text file": (lambda path: path.write_text("hello\n" * 50), "not an SQLite database"),
}


@pytest.mark.parametrize("case", list(NOT_JOURNALS))
def test_a_file_that_is_not_a_journal_is_refused_and_left_byte_for_byte(
    tmp_path: Path, case: str
) -> None:
    make, says = NOT_JOURNALS[case]
    db = tmp_path / "other.db"
    make(db)
    before = raw_digest(db)
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["a"], "out": str(tmp_path / "o")}))
    for args in (
        *reading_commands("abc123"),
        ("run", LINES, "--input", str(input_path)),
        ("resume", "abc123"),
        ("resolve", "abc123", "K-1", "--done"),
        ("migrate",),
    ):
        one_line_error(cli(*args, db=db), 2, says)
        assert raw_digest(db) == before, args
    assert not (tmp_path / "o").exists()


def older_journal(db: Path) -> str:
    """A journal as the schema before the last migration left it, with one run; its run id."""
    old = sqlite_utils.Database(db)
    migrations = sqlite_utils.Migrations(schema.MIGRATION_SET)
    for name, fn in schema.MIGRATIONS[:-1]:
        migrations(name=name)(fn)
    migrations.apply(old)
    old.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) - 1}")
    given = "{}"
    ref = "sha256:" + hashlib.sha256(given.encode()).hexdigest()
    old.execute("INSERT INTO blobs (hash, size, data) VALUES (?, ?, ?)", (ref, len(given), given))
    at, data = (
        "2026-11-01T00:00:00.000Z",
        json.dumps(
            {
                "machine": "m",
                "target": "t",
                "code_hash": "c",
                "step": "a",
                "state": {},
                "input": ref,
            },
            separators=(",", ":"),
        ),
    )
    chained = chain.event_hash(chain.GENESIS, "abc123", 1, at, "run.started", None, data)
    old.execute(
        "INSERT INTO events (run_id, seq, at, kind, step, data, hash) "
        "VALUES (?, 1, ?, ?, NULL, ?, ?)",
        ("abc123", at, "run.started", data, chained),
    )
    old.execute("INSERT INTO runs (run_id, machine) VALUES ('abc123', 'm')")
    old.conn.commit()
    old.close()
    return "abc123"


def test_an_older_journal_is_refused_by_readers_and_upgraded_by_migrate(tmp_path: Path) -> None:
    """A read never migrates: an older schema is refused, naming the command that upgrades."""
    db = tmp_path / "journal.db"
    run_id = older_journal(db)
    before = raw_digest(db)
    for args in reading_commands(run_id):
        one_line_error(cli(*args, db=db), 2, "journal migrate")
    assert raw_digest(db) == before
    migrated = cli("migrate", db=db)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema {len(schema.MIGRATIONS) - 1} -> {len(schema.MIGRATIONS)}" in migrated.stdout
    assert run_id in cli("runs", db=db).stdout
    assert "up to date" in cli("migrate", db=db).stdout


HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO leases VALUES ('zzz', 'o', 1, 'h', NULL, 'now', 0)")
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Another process holds the journal's write lock (an open write transaction)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_readers_never_wait_for_a_writer(journal_db: tuple[Path, str]) -> None:
    """With another process in the middle of a write, every read answers at once, never
    "locked"; a writer waits its busy timeout and then says who holds the journal."""
    db, run_id = journal_db
    alone = {args: cli(*args, db=db).stdout for args in reading_commands(run_id)}
    with write_lock_held(db):
        for args in reading_commands(run_id):
            t0 = time.monotonic()
            result = cli(*args, db=db)
            assert result.returncode == 0, (args, result.stderr)
            assert time.monotonic() - t0 < 10, f"{args} waited for the writer"
            assert result.stdout == alone[args], args
        input_path = db.parent / "in.json"
        blocked = subprocess.run(
            [*journal_command(), "run", LINES, "--input", str(input_path), "--db", str(db)],
            capture_output=True,
            text=True,
            env={**os.environ, "JOURNAL_BUSY_TIMEOUT": "0.5"},
            timeout=60,
        )
        one_line_error(blocked, 4, "is busy")


@contextlib.contextmanager
def read_only_mount(folder: Path) -> Iterator[Path]:
    """`folder` mounted again, read-only, as a copy on read-only media would be."""
    target = folder.parent / f"{folder.name}-ro"
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(folder), str(target)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr.decode().strip()}")
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)], capture_output=True
        )
        assert remounted.returncode == 0, remounted.stderr
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.slow
def test_every_read_command_works_on_read_only_media(journal_db: tuple[Path, str]) -> None:
    """The same output from a read-only mount as from the writable copy; writers say why not."""
    db, run_id = journal_db
    copy = db.parent / "copy"
    copy.mkdir()
    shutil.copy(db, copy / "journal.db")  # closed cleanly: no -wal, no -shm to lean on
    writable = {args: cli(*args, db=db).stdout for args in reading_commands(run_id)}
    with read_only_mount(copy) as mounted:
        ro_db = mounted / "journal.db"
        with pytest.raises(OSError, match="Read-only file system"):
            (mounted / "probe").write_text("x")  # the mount really is read-only, even for root
        for args in reading_commands(run_id):
            result = cli(*args, db=ro_db)
            assert result.returncode == 0, (args, result.stderr)
            assert result.stdout == writable[args], args
        one_line_error(cli("resume", run_id, db=ro_db), 5, "cannot be written")
        assert sorted(p.name for p in mounted.iterdir()) == ["journal.db"]


def test_a_damaged_journal_is_one_line_and_verify_reports_it(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    input_path = tmp_path / "in.json"
    items = [f"item-{i}-" + "x" * 200 for i in range(200)]
    input_path.write_text(json.dumps({"items": items, "out": str(tmp_path / "o")}))
    done = cli("run", LINES, "--input", str(input_path), db=db)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    damage_pages(db)
    verified = cli("verify", db=db)
    assert verified.returncode == 1, verified.stderr
    assert "sqlite:" in verified.stdout and "Traceback" not in verified.stderr
    for args in (
        ("runs",),
        ("replay", run_id),
        ("logs", run_id),
        ("resume", run_id),
        ("run", LINES, "--input", str(input_path)),  # new pages may miss the damage: 0 or 7
    ):
        result = cli(*args, db=db)
        assert result.returncode in (0, 7), (args, result.stderr)
        assert "Traceback" not in result.stderr
        if result.returncode == 7:
            one_line_error(result, 7, "is damaged")


def test_a_full_disk_stops_the_run_without_blaming_a_step(tmp_path: Path) -> None:
    """The disk fills up mid-run: one line, its own exit code, the run not failed and no step
    blamed; once there is room again, `journal resume` finishes it."""
    with small_disk(tmp_path / "disk", "400k") as disk:
        db = disk / "journal.db"
        items = [f"{i:05d}" for i in range(3000)]
        input_path = tmp_path / "in.json"
        input_path.write_text(json.dumps({"items": items, "out": str(tmp_path / "out.txt")}))
        stopped = cli("run", LINES, "--input", str(input_path), db=db)
        assert stopped.returncode == 6, stopped.stderr
        said = stopped.stderr.strip().splitlines()  # the run's start, its live log, one error
        assert said[0].startswith("run ") and [s for s in said if s.startswith("Error")] == [
            said[-1]
        ]
        assert "is full" in said[-1] and "nothing was lost" in said[-1]
        runs = json.loads(cli("runs", "--json", db=db).stdout.splitlines()[0])
        assert runs["status"] != "failed" and runs["error"] is None
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = cli("resume", runs["run_id"], db=db)
        assert resumed.returncode == 0, resumed.stderr
        assert cli("verify", db=db).returncode == 0


def test_a_writer_on_a_read_only_file_says_so(journal_db: tuple[Path, str]) -> None:
    db, run_id = journal_db
    with read_only_mount(db.parent) as mounted:
        input_path = mounted / "in.json"
        one_line_error(
            cli("run", LINES, "--input", str(input_path), db=mounted / "journal.db"),
            5,
            "cannot be written",
        )
        one_line_error(
            cli("resolve", run_id, "K", "--done", db=mounted / "journal.db"), 5, "cannot be written"
        )
