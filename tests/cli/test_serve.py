"""`journal serve` over HTTP, without a browser: where it listens, what it refuses, what it
never writes, and its one-line errors. The browser tests are tests/end_to_end/test_page.py."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, cli, digest, one_line_error
from serving import Served, serving

from runjournal.journal import Journal
from runjournal.journal.stores import open_store
from runjournal.machine import Options, loader, offline, runner

pytest.importorskip("starlette", reason="the web extra is not installed")


def build(db: Path | str, folder: Path) -> str:
    """A triage run over three tickets (their pages written in `folder`)."""
    triage = loader.load(str(FIXTURES / "triage.py")).machine
    tickets = [
        {"id": f"T-{i}", "customer": "c", "subject": "s", "body": "b", "created_at": "2026-01-01"}
        for i in range(3)
    ]
    prepared = runner.prepare(triage, tickets)
    with open_store(db, create=True) as journal, contextlib.chdir(folder):
        done = runner.start(
            journal,
            prepared,
            target="triage.py",
            code_hash="t1",
            options=Options(models=offline("none")),
        )
    return done.run.run_id


@pytest.fixture(scope="module")
def journal_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("serve")
    db = folder / "journal.db"
    return db, build(db, folder)


@pytest.fixture(scope="module")
def served(journal_file: tuple[Path, str]) -> Iterator[Served]:
    with serving(journal_file[0], "--as", "tester") as s:
        yield s


def request(
    served: Served,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    body = urllib.parse.urlencode(form) if form is not None else None
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    conn.request(method, path, body=body, headers={**sent, **(headers or {})})
    answer = conn.getresponse()
    text = answer.read().decode()
    conn.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port`, from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_it_listens_on_loopback_alone_and_answers_only_its_own_names(served: Served) -> None:
    assert served.url.startswith("http://127.0.0.1:")
    assert listening_addresses(served.port) == {"0100007F"}  # 127.0.0.1, nothing else
    status, headers, _ = request(served, "GET", "/")
    assert status == 200
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["server-timing"].startswith("app;dur=")
    # A page of another site, reaching this port by a name of its own (DNS rebinding).
    status, _, _ = request(served, "GET", "/", headers={"Host": "evil.example"})
    assert status == 400


def test_acts_need_the_token_and_leave_the_journal_unchanged_without_it(
    served: Served, journal_file: tuple[Path, str]
) -> None:
    db, run_id = journal_file
    before = digest(db)
    for path, form in (
        (f"/runs/{run_id}/kill", {"reason": "no token"}),
        (f"/runs/{run_id}/resolve", {"key": "T-1", "outcome": "done", "reason": "r"}),
        (f"/runs/{run_id}/resume", {}),
    ):
        status, _, text = request(served, "POST", path, form=form)
        assert status == 403, (path, text)
        assert "needs the token" in text
        wrong = {"Cookie": "runjournal_token=guess"}
        status, _, _ = request(served, "POST", path, form=form, headers=wrong)
        assert status == 403
    status, _, text = request(served, "GET", "/login?token=guess")
    assert status == 403 and "not the token" in text
    assert digest(db) == before


def test_a_signed_in_form_from_another_site_is_refused(
    served: Served, journal_file: tuple[Path, str]
) -> None:
    db, run_id = journal_file
    before = digest(db)
    status, headers, _ = request(served, "GET", f"/login?token={served.token}")
    assert status == 303
    cookie = headers["set-cookie"].split(";")[0]
    assert "httponly" in headers["set-cookie"].lower()
    assert "samesite=strict" in headers["set-cookie"].lower()
    elsewhere = {"Cookie": cookie, "Origin": "http://evil.example"}
    status, _, text = request(
        served, "POST", f"/runs/{run_id}/kill", form={"reason": "x"}, headers=elsewhere
    )
    assert status == 403 and "another site" in text
    # Signed in, from the page itself, but without a reason: refused, nothing recorded.
    here = {"Cookie": cookie, "Origin": served.url}
    status, _, text = request(served, "POST", f"/runs/{run_id}/kill", form={}, headers=here)
    assert status == 400 and "reason" in text
    # The run is done: there is nothing to kill, said as such.
    status, _, text = request(
        served, "POST", f"/runs/{run_id}/kill", form={"reason": "x"}, headers=here
    )
    assert status == 409 and "nothing to kill" in text
    assert digest(db) == before


def test_read_only_offers_no_acts_and_prints_no_token(journal_file: tuple[Path, str]) -> None:
    db, run_id = journal_file
    with serving(db, "--read-only") as served:
        assert served.token is None
        status, _, text = request(served, "GET", f"/runs/{run_id}")
        assert status == 200 and 'id="acts"' not in text and "read-only" in text
        status, _, text = request(served, "POST", f"/runs/{run_id}/kill", form={"reason": "x"})
        assert status == 403 and "read-only" in text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/runs/ffffffffffff", 404, "no run"),
        ("/runs/zz", 404, "no run"),
        ("/?before=abc", 400, "before must be a whole number"),
        ("/?status=sleeping", 400, "status must be one of"),
        ("/?day=yesterday", 400, "day must be a date"),
        ("/runs/{run}/state?seq=-1", 400, "seq must be a whole number"),
        ("/runs/{run}?after=1e9", 400, "after must be a whole number"),
        ("/nowhere", 404, ""),
    ],
)
def test_bad_addresses_get_a_page_that_says_why(
    served: Served, journal_file: tuple[Path, str], path: str, status: int, says: str
) -> None:
    got, _, text = request(served, "GET", path.format(run=journal_file[1]))
    assert got == status
    assert says in text
    assert "Traceback" not in text


def test_every_page_reads_without_writing(served: Served, journal_file: tuple[Path, str]) -> None:
    db, run_id = journal_file
    before = digest(db)
    for path in (
        "/",
        "/?status=done",
        "/?q=T-1",
        "/money",
        f"/runs/{run_id}",
        f"/runs/{run_id}?verify=1",
        f"/runs/{run_id}/state",
        f"/runs/{run_id}/state?seq=2",
        f"/runs/{run_id}/live?after=0",
    ):
        status, _, text = request(served, "GET", path)
        assert status == 200, (path, text[:300])
    status, _, text = request(served, "GET", f"/runs/{run_id}?verify=1")
    assert 'class="badge done">verified' in text
    assert digest(db) == before


def test_the_live_feed_sends_the_events_then_ends(
    served: Served, journal_file: tuple[Path, str]
) -> None:
    run_id = journal_file[1]
    status, headers, text = request(served, "GET", f"/runs/{run_id}/live?after=3")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert "event: events\nid: " in text
    assert 'data-seq="4"' in text and 'data-seq="3"' not in text
    assert text.rstrip().endswith("data: done")


def test_bad_journals_and_addresses_are_one_line(tmp_path: Path) -> None:
    not_a_journal = tmp_path / "notes.txt"
    not_a_journal.write_text("just notes\n" * 100)
    before = not_a_journal.read_bytes()
    one_line_error(cli("serve", db=not_a_journal), 2, "is not a journal")
    assert not_a_journal.read_bytes() == before
    missing = tmp_path / "missing.db"
    one_line_error(cli("serve", db=missing), 2, "no journal at")
    assert not missing.exists()
    db = tmp_path / "j.db"
    Journal.open(db, create=True).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(cli("serve", "--port", str(port), db=db), 2, "cannot listen")


def test_a_postgresql_journal_is_served(pg_url: str, tmp_path: Path) -> None:
    run_id = build(pg_url, tmp_path)
    with serving(pg_url) as served:
        for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/state?seq=2", "/money"):
            status, _, text = request(served, "GET", path)
            assert status == 200, (path, text[:300])
        status, _, text = request(served, "GET", f"/runs/{run_id}")
        assert 'data-kind="decision"' in text
        status, _, text = request(served, "GET", "/?q=T-1")
        assert run_id in text


def test_a_big_state_is_shown_in_part(tmp_path: Path) -> None:
    """A state of 20,000 items is 2,000 members on the page and a line saying how many more,
    not megabytes of HTML."""
    holding = loader.load(str(Path(__file__).parent.parent / "pipelines" / "holding.py")).machine
    db = tmp_path / "big.db"
    items = [f"item {i} <b>" for i in range(20_000)]
    with open_store(db, create=True) as journal:
        prepared = runner.prepare(holding, {"items": items})
        run_id = runner.start(journal, prepared, target="holding.py", code_hash="h").run.run_id
    with serving(db) as served:
        status, _, text = request(served, "GET", f"/runs/{run_id}/state?seq=1")
    assert status == 200
    assert "item 1998 &lt;b&gt;" in text and "item 1999 &lt;b&gt;" not in text
    assert "… 18,001 more" in text
    assert len(text) < 500_000


def test_a_waiting_run_is_answered_from_the_page(tmp_path: Path) -> None:
    db = tmp_path / "wait.db"
    spec = tmp_path / "refund.json"
    spec.write_text(json.dumps({"id": "RF-7", "customer": "c", "amount_usd": 5.0}))
    started = cli("run", str(FIXTURES / "approval.py"), "--input", str(spec), cwd=tmp_path, db=db)
    assert started.returncode == 8, started.stderr
    with open_store(db) as journal:
        (run,) = journal.runs()
    with serving(db, "--as", "lead@page") as served:
        status, _, text = request(served, "GET", f"/runs/{run.run_id}")
        assert 'id="waits"' in text and "Refund $5.00 to c (RF-7)?" in text
        status, headers, _ = request(served, "GET", f"/login?token={served.token}")
        here = {"Cookie": headers["set-cookie"].split(";")[0], "Origin": served.url}
        form = {"name": "approval", "value": '{"approve": "yes"}', "reason": "r"}
        status, _, text = request(
            served, "POST", f"/runs/{run.run_id}/answer", form=form, headers=here
        )
        assert status == 400 and "is not of type" in text and "boolean" in text
        form["value"] = '{"approve": true}'
        status, _, _ = request(
            served, "POST", f"/runs/{run.run_id}/answer", form=form, headers=here
        )
        assert status == 303
    with open_store(db) as journal:
        (answered,) = journal.events(run.run_id, kinds=("wait.answered",))
        assert answered.data["by"] == "lead@page" and answered.data["value"] == {"approve": True}
        assert journal.run(run.run_id).status == "resolved"
