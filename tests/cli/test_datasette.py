"""Tests for `journal datasette` (cli/datasette.py): its metadata describes the journal as it is,
every canned query runs read-only on a real journal, Datasette serves them without writing a
byte to it, and the command says in one line where it cannot serve."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import FIXTURES, cli, journal_command, one_line_error

import runjournal
from runjournal.cli.datasette import PLUGIN, QUERIES, metadata, read_only_plugin
from runjournal.journal import Holder, Journal
from runjournal.machine import loader
from runjournal.machine.model import Models
from runjournal.machine.model.pricing import PriceTable
from runjournal.machine.stopping import kill
from runjournal.machine.testing import FakeModel, parse_spec

SENDING = '''
"""Mail that is sent once per recipient; to `lost-*` the server never answers, so whether the
mail went is unknown, and the run stops for a person to say."""

import attrs

from runjournal import Context, Machine, Transition


@attrs.frozen
class Outbox:
    to: tuple[str, ...]
    next: int = 0


sending = Machine("sending", state=Outbox, start="send")


def deliver(key: str) -> dict[str, str]:
    if key.startswith("lost"):
        raise TimeoutError("the mail server did not answer")
    return {"sent": key}


@sending.step
def send(ctx: Context, s: Outbox) -> Transition:
    if s.next == len(s.to):
        return ctx.finish(s)
    ctx.act("mail", s.to[s.next], deliver, idempotent=False)
    return ctx.goto("send", attrs.evolve(s, next=s.next + 1))
'''


@attrs.frozen
class Served:
    """A journal of four runs, and the ids of three."""

    path: Path
    done: str
    """A triage run of 8 tickets, done, with failed and rejected model calls."""
    killed_by_limit: str
    waiting: str
    """A run stopped for a person: an action in doubt (another one's, killed, is too)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The triage example, offline, in this process (backoff waits skipped); again with a cost
    cap that kills it; and a machine whose actions end in doubt, one run of which a person
    kills. The journal is `ops.db`: Datasette calls it `ops`."""
    folder = tmp_path_factory.mktemp("datasette")
    tickets = folder / "tickets.jsonl"
    tickets.write_text("".join((FIXTURES / "tickets.jsonl").read_text().splitlines(True)[:8]))
    (folder / "sending.py").write_text(SENDING)
    db = folder / "ops.db"
    triage = loader.load(str(FIXTURES / "triage.py")).machine
    sending = loader.load(str(folder / "sending.py")).machine
    spec = parse_spec("errors=0.1,reset=0.1,garbage=0.15,seed=2")
    models = Models(FakeModel(faults=spec, retry_after=0.0).client, PriceTable.load())
    options = runjournal.Options(models=models, sleep=lambda seconds: None)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # the pager writes to ./outbox
        done = runjournal.run(triage, tickets, db=db, options=options)
        capped = attrs.evolve(options, limits={"max_cost_usd": 0.0001})
        killed = runjournal.run(triage, tickets, db=db, options=capped)
        first = runjournal.run(sending, {"to": ["ana", "lost-bo"]}, db=db)
        second = runjournal.run(sending, {"to": ["ana", "lost-cy"]}, db=db)
    assert (done.run.status, killed.run.status) == ("done", "killed")
    assert first.run.status == second.run.status == "needs_attention"
    with Journal.open(db) as journal:
        kill(journal, first.run.run_id, by="ana", reason="wrong recipients")
    return Served(db, done.run.run_id, killed.run.run_id, second.run.run_id)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA query_only = ON")
        yield conn
    finally:
        conn.close()


def rows(conn: sqlite3.Connection, name: str, **given: str) -> tuple[list[str], list[Any]]:
    """The canned query's columns and rows, its parameters '' unless given, as Datasette does."""
    query = QUERIES[name]
    cursor = conn.execute(query["sql"], {p: given.get(p, "") for p in query["params"]})
    return [d[0] for d in cursor.description], cursor.fetchall()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_metadata_describes_each_table_view_and_column_there_is(served: Served) -> None:
    """Every table and view of a journal is described; every column, facet, sort and label
    column named exists; every named parameter of a query is declared."""
    described = metadata("ops")["databases"]["ops"]
    with read_only(served.path) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        ]
        columns = {n: {r[1] for r in conn.execute(f'PRAGMA table_xinfo("{n}")')} for n in names}
    assert set(described["tables"]) == set(names)
    for name, table in described["tables"].items():
        assert table["description"], name
        named = {*table["columns"], *table.get("facets", ())}
        named |= {table[k] for k in ("sort_desc", "label_column") if k in table}
        assert named <= columns[name], (name, named - columns[name])
    model_calls = described["tables"]["model_calls"]["columns"]
    assert model_calls["cost_usd"] == "what it cost, exactly"  # the kind's own words
    for name, query in described["queries"].items():
        assert query["title"] and query["description"], name
        assert set(re.findall(r":(\w+)", query["sql"])) == set(query["params"]), name
    assert json.loads(json.dumps(metadata("ops"))) == metadata("ops")


def test_every_canned_query_runs_read_only_on_a_real_journal(served: Served) -> None:
    """Each query, through a read-only connection, gives its columns and the rows the runs
    left: their kills, their actions in doubt, a run's every event and model attempt."""
    with read_only(served.path) as conn:
        columns, found = rows(conn, "decision_outcomes")
        assert columns == ["machine", "outcome", "decisions", "runs", "items"]
        assert sum(r[2] for r in found) == 8 and {r[1] for r in found} <= {"page", "skip"}
        assert rows(conn, "decision_outcomes", run_id=served.killed_by_limit[:6])[1] == []

        columns, found = rows(conn, "in_doubt_actions")
        assert columns[:7] == ["run_id", "machine", "run_status", "step", "name", "key", "status"]
        assert columns[-1] == "held_by"
        assert sorted((r[2], r[5], r[6], r[-1]) for r in found) == [
            ("killed", "lost-bo", "in_doubt", None),
            ("needs_attention", "lost-cy", "in_doubt", None),
        ]
        assert rows(conn, "in_doubt_actions", machine="triage")[1] == []

        columns, found = rows(conn, "kills_and_requests")
        assert columns[:6] == ["run_id", "machine", "run_status", "state", "killed_by", "who"]
        assert [(r[3], r[4], r[5], r[6], r[7]) for r in found] == [
            ("killed", "person", "ana", "wrong recipients", None),
            ("killed", "limit", None, None, "max_cost_usd"),
        ]
        assert found[1][0] == served.killed_by_limit

        columns, found = rows(conn, "run_timeline", run_id=served.done[:4])
        assert columns == ["run_id", "seq", "at", "step", "kind", "call", "detail", "data"]
        events = conn.execute("SELECT count(*) FROM events WHERE run_id = ?", (served.done,))
        assert [r[1] for r in found] == list(range(1, events.fetchone()[0] + 1))
        assert (found[0][4], found[-1][4], found[-1][6]) == ("run.started", "run.done", "9 steps")
        assert all(r[6] for r in found if r[4] != "run.resumed"), "a kind without a detail"
        assert rows(conn, "run_timeline")[1] == []  # no run named, no rows

        columns, found = rows(conn, "run_model_calls", run_id=served.done)
        assert columns[8:10] == ["outcome", "detail"] and "cost_usd" in columns
        answered = [r for r in found if r[8] == "answered"]
        (calls,) = conn.execute("SELECT model_calls FROM runs WHERE run_id = ?", (served.done,))
        assert len(answered) == calls[0]
        assert {r[8] for r in found} == {"answered", "failed", "rejected"}
        assert sorted(r[1] for r in found) == [r[1] for r in found]


def test_a_pending_kill_and_a_held_lease_show(served: Served, tmp_path: Path) -> None:
    """A kill asked for and not yet carried out shows as `requested`; an action whose run a
    live lease holds names its holder."""
    copy = tmp_path / "ops.db"
    shutil.copy(served.path, copy)
    with Journal.open(copy) as journal:
        journal.request_kill(served.waiting, by="bo", reason="stuck")
        journal.acquire_lease(served.waiting, Holder.this_process(), 30)
    with read_only(copy) as conn:
        found = rows(conn, "kills_and_requests", machine="sending")[1]
        doubt = rows(conn, "in_doubt_actions", machine="sending")[1]
    assert (found[0][0], found[0][3], found[0][5], found[0][6]) == (
        served.waiting,
        "requested",
        "bo",
        "stuck",
    )
    held = {r[5]: r[-1] for r in doubt}
    assert held["lost-bo"] is None and held["lost-cy"].endswith(f"@{Holder.this_process().host}")


def test_cost_per_run_and_per_day_are_what_journal_cost_says(served: Served) -> None:
    """Billed, possibly billed and total of each run and each day, to the last digit."""
    money = ("cost_usd", "possibly_billed_usd", "total_usd")
    for by, query, key in (("run", "cost_per_run", "run_id"), ("day", "cost_per_day", "day")):
        said = cli("cost", "--by", by, "--json", db=served.path)
        assert said.returncode == 0, said.stderr
        expected = {}
        for line in said.stdout.splitlines():
            row = json.loads(line)
            expected[row["run" if by == "run" else "day"]] = [row[m] for m in money]
        with read_only(served.path) as conn:
            columns, found = rows(conn, query)
        at = [columns.index(m) for m in money]
        got = {r[columns.index(key)]: [r[i] for i in at] for r in found}
        assert got == expected
    assert expected[next(iter(expected))][1] > 0  # the resets left something possibly billed


def test_datasette_serves_the_journal_as_described_and_writes_nothing(served: Served) -> None:
    """Datasette in this process, with the metadata: the metadata, configured facets, sorted
    runs, canned queries and their pages, and the journal the same to the byte afterwards."""
    from datasette.app import Datasette  # type: ignore[import-untyped]

    before = sha256(served.path)
    meta = metadata("ops")

    async def requests() -> None:
        ds = Datasette([str(served.path)], metadata=meta)
        try:
            got = await ds.client.get("/-/metadata.json")
            assert got.status_code == 200 and got.json() == meta
            got = await ds.client.get("/ops/events.json?_size=1")
            assert got.status_code == 200
            kinds = {f["value"]: f["count"] for f in got.json()["facet_results"]["kind"]["results"]}
            with read_only(served.path) as conn:
                counted = dict(conn.execute("SELECT kind, count(*) FROM events GROUP BY kind"))
            assert kinds == counted
            got = await ds.client.get("/ops/runs.json?_shape=array")
            assert [r["ordinal"] for r in got.json()] == [4, 3, 2, 1]
            for name, given in (
                ("run_timeline", f"?run_id={served.done[:5]}"),
                ("kills_and_requests", ""),
            ):
                got = await ds.client.get(f"/ops/{name}.json{given}")
                assert got.status_code == 200 and got.json()["ok"], got.text
                with read_only(served.path) as conn:
                    assert got.json()["columns"] == rows(conn, name)[0]
                assert got.json()["rows"]
            page = await ds.client.get("/ops/in_doubt_actions")
            assert page.status_code == 200 and "no process executes its run" in page.text
            page = await ds.client.get("/ops/runs")
            assert page.status_code == 200 and "in the order runs were created" in page.text
        finally:
            for database in ds.databases.values():
                database.close()

    asyncio.run(requests())
    assert sha256(served.path) == before


def test_the_plugin_refuses_the_write_a_plugin_could_ask_for(
    served: Served, tmp_path: Path
) -> None:
    """Datasette's writable connection (for a writable canned query or a plugin) writes to a
    journal without the plugin, and is refused with it."""
    from datasette.app import Datasette
    from datasette.plugins import pm  # type: ignore[import-untyped]

    write = "INSERT INTO pace (name, level, stamp) VALUES ('datasette', 0, 0)"

    async def attempt(path: Path) -> None:
        ds = Datasette([str(path)])
        try:
            await ds.databases["ops"].execute_write(write)
        finally:
            for database in ds.databases.values():
                database.close()

    for guarded in (False, True):
        folder = tmp_path / str(guarded)
        folder.mkdir()
        copy = folder / "ops.db"
        shutil.copy(served.path, copy)
        before = sha256(copy)
        if not guarded:
            asyncio.run(attempt(copy))
            assert sha256(copy) != before
            continue
        pm.register(read_only_plugin(), name=PLUGIN)
        try:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                asyncio.run(attempt(copy))
        finally:
            pm.unregister(name=PLUGIN)
        assert sha256(copy) == before


def test_metadata_only_prints_the_metadata_as_json(served: Served) -> None:
    result = cli("datasette", "--metadata-only", db=served.path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == metadata("ops")


def test_where_it_cannot_serve_it_says_so_in_one_line(tmp_path: Path) -> None:
    """A PostgreSQL journal, no file, a file that is not a journal (left as it was), and no
    Datasette installed: one line each, exit 2."""
    one_line_error(cli("datasette", "--db", "postgresql://x/y"), 2, "journal copy")
    one_line_error(cli("datasette", db=tmp_path / "missing.db"), 2, "no journal at")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = sha256(other)
    one_line_error(cli("datasette", db=other), 2, "not a journal")
    assert sha256(other) == before
    hidden = "import sys; sys.modules['datasette'] = None; from runjournal.cli import main; main()"
    missing = subprocess.run(
        [sys.executable, "-c", hidden, "datasette", "--db", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_error(missing, 2, "pip install 'runjournal[datasette]'")


def _serving(process: subprocess.Popen[bytes]) -> str:
    """The URL the server says it runs on, once it says so (within 30 s)."""
    assert process.stderr is not None
    said = b""
    deadline = time.monotonic() + 30
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([process.stderr], [], [], left)[0]:
            break
        line = process.stderr.readline()  # unbuffered: never reads past the line
        if not line:
            break
        said += line
        found = re.search(rb"running on (http://\S+)", line)
        if found:
            return found.group(1).decode()
    raise AssertionError(f"Datasette did not start: {said.decode(errors='replace')}")


@pytest.fixture
def server(served: Served, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`journal datasette --port 0`, its temporary files in tmp_path; killed if left running."""
    process = subprocess.Popen(
        [*journal_command(), "datasette", "--db", str(served.path), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        yield process, _serving(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_the_command_serves_until_sigterm_and_leaves_nothing_behind(
    served: Served, server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    """The real command on a free port: the metadata, a canned query and the plugin served;
    SIGTERM stops it (exit 143), its metadata file is gone and the journal is unchanged."""
    process, url = server
    before = sha256(served.path)
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{url}/-/metadata.json", timeout=10) as got:
        assert json.load(got) == metadata("ops")
    with urllib.request.urlopen(f"{url}/ops/cost_per_run.json?_shape=array", timeout=10) as got:
        assert {r["run_id"] for r in json.load(got)} >= {served.done, served.killed_by_limit}
    with urllib.request.urlopen(f"{url}/-/plugins.json", timeout=10) as got:
        assert PLUGIN in {p["name"] for p in json.load(got)}
    assert list(tmp_path.iterdir())  # the metadata file, while it serves
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []
    assert sha256(served.path) == before
