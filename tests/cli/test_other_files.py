"""Journals this process does not own, databases that are not journals, and a disk too small.

Another user's journal is read as it is; another program's database, open in that program, is
refused without a byte of its three files changing; a read leaves the journal's file as it was;
a disk that fills up leaves room for the journal's own log. Each test drives the real `journal`
command in a subprocess, on real files.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    FIXTURES,
    cli,
    journal_command,
    one_line_error,
    reading_commands,
    small_disk,
)

LINES = str(FIXTURES / "lines.py")
NOBODY = 65534
_PR_CAPBSET_DROP = 24
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: what lets root past the mode
# bits of a file it does not own.
_PAST_PERMISSIONS = (0, 1, 2, 3)


def files_of(db: Path) -> dict[str, tuple[str, int] | None]:
    """The sha256 and mtime of the file, its -wal and its -shm (None: absent)."""
    found: dict[str, tuple[str, int] | None] = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            found[suffix] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            found[suffix] = None
    return found


def make_journal(folder: Path, items: int = 2) -> tuple[Path, str]:
    """A journal with one done run of the lines pipeline, closed cleanly; and its run id."""
    folder.mkdir(exist_ok=True)
    db = folder / "j.db"
    input_path = folder.parent / "in.json"
    out = folder.parent / "out.txt"
    input_path.write_text(json.dumps({"items": [f"i{n}" for n in range(items)], "out": str(out)}))
    done = cli("run", LINES, "--input", str(input_path), "--quiet", db=db)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["j.db"]  # the writer folded its log
    return db, done.stdout.split()[1]


# Another user


def _drop_permissions() -> None:
    """In the child: root no more past the mode bits of files it does not own."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _PAST_PERMISSIONS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_another_user(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    """`journal ARGS --db DB` as a user who does not own DB's folder.

    Root keeps its uid but loses the capabilities that let it past the mode bits: the project's
    interpreter may live where only root may go (/root/.pyenv), so `nobody` could not start it.
    For files owned by `nobody`, mode 644 in a folder of mode 755, this is any other user.
    """
    return subprocess.run(
        [*journal_command(), *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_drop_permissions,
    )


@pytest.fixture
def another_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to give a folder to another user and to drop root's reach")
    probe = subprocess.run(
        [sys.executable, "-c", "pass"], capture_output=True, preexec_fn=_drop_permissions
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot drop root's capabilities here: {probe.stderr.decode().strip()}")


def give_away(folder: Path) -> None:
    """`folder` and its files to `nobody`: folder 755, files 644."""
    for path in [folder, *folder.iterdir()]:
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.slow
@pytest.mark.usefixtures("another_user")
def test_another_users_journal_is_read_by_every_reading_command(tmp_path: Path) -> None:
    """A journal closed cleanly, in a folder another user owns: every reading command gives
    what it gives its owner, nothing appears beside it, and a writer says it cannot write."""
    db, run_id = make_journal(tmp_path / "shared")
    copy = tmp_path / "mine"
    copy.mkdir()
    shutil.copy(db, copy / "j.db")
    expected = {args: cli(*args, db=copy / "j.db").stdout for args in reading_commands(run_id)}
    give_away(db.parent)
    denied = as_another_user("sql", "select 1", db=db.parent / "probe" / "x.db")
    assert denied.returncode != 0  # the setup is real: that user cannot write the folder
    for args in reading_commands(run_id):
        result = as_another_user(*args, db=db)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout == expected[args], args
    assert sorted(p.name for p in db.parent.iterdir()) == ["j.db"]
    one_line_error(as_another_user("resume", run_id, db=db), 5, "cannot be written")


CRASHED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")
conn.execute("INSERT INTO leases VALUES ('zzz', 'o', 1, 'h', NULL, 'now', 0)")
os._exit(0)  # no close: the commit stays in the log, and the -wal and -shm stay
"""


@pytest.mark.usefixtures("another_user")
def test_another_users_journal_with_commits_in_its_log(tmp_path: Path) -> None:
    """With its -shm beside it, the log is read too; without one (which that user cannot
    create), the reader says why and what to do instead of reading the file without it."""
    db, _ = make_journal(tmp_path / "shared")
    leases = ("sql", "select run_id from leases")
    crashed = subprocess.run([sys.executable, "-c", CRASHED_WRITER, str(db)], capture_output=True)
    assert crashed.returncode == 0, crashed.stderr
    assert Path(f"{db}-wal").stat().st_size > 0
    give_away(db.parent)
    read = as_another_user(*leases, db=db)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["run_id", "zzz"]  # the commit that is only in the log
    Path(f"{db}-shm").unlink()
    before = files_of(db)
    for args in (leases, ("runs",)):
        result = as_another_user(*args, db=db)
        one_line_error(result, 5, "cannot be read here")
        assert "copy j.db and j.db-wal into a folder you can write" in result.stderr
        assert "cannot be written" not in result.stderr
    assert files_of(db) == before


# Another program's database, open in that program


HOLD_OPEN = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA wal_autocheckpoint = 0")  # every commit stays in the log
conn.execute("CREATE TABLE users (name TEXT)")
for n in range(50):
    conn.execute("INSERT INTO users VALUES (?)", (f"user {n}",))
print("open", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def held_open(db: Path) -> Iterator[None]:
    """Another program holds its WAL database `db` open, its rows still in the log."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_another_programs_open_wal_database_is_left_byte_for_byte(tmp_path: Path) -> None:
    """Refused by reading and writing commands alike, its file, -wal and -shm unchanged (not
    even their times): whether it is a journal is read from the file alone."""
    db = tmp_path / "app.db"
    input_path = tmp_path / "in.json"
    input_path.write_text(json.dumps({"items": ["a"], "out": str(tmp_path / "o")}))
    with held_open(db):
        before = files_of(db)
        assert before["-wal"] is not None and before["-shm"] is not None
        for args in (
            ("runs",),
            ("sql", "select count(*) from users"),
            ("show", "abc123"),
            ("verify",),
            ("migrate",),
            ("resume", "abc123"),
            ("fork", "abc123", "--at", "2"),
            ("run", LINES, "--input", str(input_path)),
        ):
            one_line_error(cli(*args, db=db), 2, "not a journal")
            assert files_of(db) == before, args
    assert not (tmp_path / "o").exists()


# What a read leaves


def test_a_read_leaves_the_journal_file_as_it_was(tmp_path: Path) -> None:
    """As the README says: the journal's bytes and time unchanged; the reader may leave an
    empty -wal and SQLite's 32 KB -shm beside it, owned and moded as the journal is, which the
    next writer takes up and removes when it closes."""
    db, run_id = make_journal(tmp_path / "j")
    os.chown(db.parent, NOBODY, NOBODY)
    os.chown(db, NOBODY, NOBODY)
    db.chmod(0o640)
    before = files_of(db)[""]
    for args in reading_commands(run_id):
        assert cli(*args, db=db).returncode == 0, args
        assert files_of(db)[""] == before, args
        for suffix, size in (("-wal", 0), ("-shm", 32 * 1024)):
            left = Path(f"{db}{suffix}")
            if left.exists():
                stat = left.stat()
                assert stat.st_size == size, (args, suffix)
                assert (stat.st_uid, stat.st_mode & 0o777) == (NOBODY, 0o640), (args, suffix)
    migrated = cli("migrate", db=db)
    assert migrated.returncode == 0, migrated.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == ["j.db"]


# A small disk


def sizes(db: Path) -> dict[str, int]:
    return {s: Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists()}


def test_a_full_disk_is_the_journal_not_its_log(tmp_path: Path) -> None:
    """On a 2 MB disk the log is folded into the journal before it takes the room folding
    needs: the run stops with the journal's own files named, a resume on the still full disk
    says the same and changes nothing, and with room again the run ends."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        db = disk / "journal.db"
        input_path = tmp_path / "in.json"
        items = [f"{n:05d}" for n in range(3000)]
        input_path.write_text(json.dumps({"items": items, "out": str(tmp_path / "out.txt")}))
        stopped = cli("run", LINES, "--input", str(input_path), "--quiet", db=db)
        assert stopped.returncode == 6, stopped.stderr
        said = stopped.stderr.strip().splitlines()[-1]
        assert "is full" in said and "the journal's own files take 2.0 MB: journal " in said
        held = sizes(db)
        # Unbounded, the log had taken 1.9 MB, and the journal had held 480 KB of the run.
        assert held["-wal"] <= 640 * 1024 and held[""] >= 1024 * 1024, held
        listed = cli("runs", "--json", db=db)
        assert listed.returncode == 0, listed.stderr
        run = json.loads(listed.stdout.splitlines()[0])
        assert run["status"] != "failed" and run["error"] is None
        again = cli("resume", run["run_id"], "--quiet", db=db)
        one_line_error(again, 6, "the journal's own files take")
        assert sizes(db) == held
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = cli("resume", run["run_id"], "--quiet", db=db)
        assert resumed.returncode == 0, resumed.stderr
        assert sorted(p.name for p in disk.iterdir()) == ["journal.db"]  # the log folded in
        assert cli("verify", db=db).returncode == 0
