"""The audit page (`journal serve`) in a real browser: Debian's chromium driven by Playwright.

Each test serves a real journal with a real `journal serve` process and acts as a person
would: filters the runs, opens one, expands a model call, steps the state back, kills a live
run, answers an action in doubt and resumes, follows a running run, and reads hostile text.
The screenshots in the README are taken here: with RUNJOURNAL_SCREENSHOTS=FOLDER they are
written there (`RUNJOURNAL_SCREENSHOTS=docs/screenshots pytest tests/end_to_end/test_page.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, digest, spawn
from pipelines.hostile import IMAGE, SCRIPT, TERMINAL
from serving import Served, serving

from runjournal.journal import Journal
from runjournal.machine import Options, loader, offline, runner

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

PIPELINES = Path(__file__).parent.parent / "pipelines"
CHROMIUM = shutil.which("chromium")
# As root, without a sandbox; and no calls home, which this machine's closed network refuses.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LABEL = "auditor@example"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield opened
    context.close()
    assert dialogs == [], f"a page opened a dialog: {dialogs}"


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("RUNJOURNAL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


def build(db: Path, folder: Path) -> dict[str, str]:
    """A journal with a triage run (faults and all), two lines runs, a hostile one, a budget."""
    triage = loader.load(str(FIXTURES / "triage.py")).machine
    lines = loader.load(str(FIXTURES / "lines.py")).machine
    hostile = loader.load(str(PIPELINES / "hostile.py")).machine
    tickets = [json.loads(t) for t in (FIXTURES / "tickets.jsonl").read_text().splitlines()]
    ids = {}
    with Journal.open(db, create=True) as journal, contextlib.chdir(folder):
        journal.set_budget("triage", per_day_nusd=5 * 10**7, per_run_nusd=None, by=LABEL)
        for name, words, key in (
            ("lines", ["apple", "blackberry pie"], None),
            ("keyed", ["fig"], "batch-7"),
        ):
            prepared = runner.prepare(lines, {"items": words, "out": str(folder / "out")})
            done = runner.start(journal, prepared, target="lines.py", code_hash="l1", run_key=key)
            ids[name] = done.run.run_id
        prepared = runner.prepare(triage, tickets[:12])
        options = Options(models=offline("chaos,seed=5"))
        done = runner.start(journal, prepared, target="triage.py", code_hash="t1", options=options)
        ids["triage"] = done.run.run_id
        prepared = runner.prepare(hostile, {"text": SCRIPT, "html": IMAGE, "terminal": TERMINAL})
        options = Options(models=offline("none"))
        done = runner.start(journal, prepared, target="hostile.py", code_hash="h1", options=options)
        assert done.run.status == "done", done.run.error
        ids["hostile"] = done.run.run_id
    return ids


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("audited")
    db = folder / "journal.db"
    return db, build(db, folder)


@pytest.fixture(scope="module")
def served(audited: tuple[Path, dict[str, str]]) -> Iterator[Served]:
    with serving(audited[0], "--as", LABEL) as s:
        yield s


def rows(page: Any) -> list[str]:
    return [r.get_attribute("data-run") for r in page.locator("#runs tbody tr").all()]


def test_runs_filter_open_a_run_expand_a_call_and_step_the_state_back(
    page: Any, served: Served, audited: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    db, ids = audited
    before = digest(db)
    page.goto(served.url + "/")
    assert set(rows(page)) == set(ids.values())
    screenshot(page, "runs", tmp_path)

    page.select_option("select[name=machine]", "lines")
    page.click("#filters button[type=submit]")
    assert set(rows(page)) == {ids["lines"], ids["keyed"]}
    page.fill("input[name=key]", "batch-7")
    page.click("#filters button[type=submit]")
    assert rows(page) == [ids["keyed"]]
    page.goto(served.url + "/?q=T-1003")  # an item a decision judged
    assert rows(page) == [ids["triage"]]
    page.goto(served.url + f"/?q={ids['triage'][:6]}")
    assert rows(page) == [ids["triage"]]

    page.click(f"a[href='/runs/{ids['triage']}']")
    assert page.locator("#run-id").inner_text() == ids["triage"]
    call = page.locator("li.call").first
    assert not call.locator("pre.request").is_visible()
    call.locator("summary").click()
    assert "Ticket T-1001" in call.locator("pre.request").inner_text()
    assert call.locator("pre.answer").first.is_visible()
    failed = page.locator("li.call:has(p.failure)").first
    failed.locator("summary").click()
    assert "failed" in failed.locator("p.failure").first.inner_text()
    screenshot(page, "run", tmp_path)

    page.locator("a.state-link").nth(2).click()
    later = int(page.locator("#seq").inner_text().lstrip("#"))
    assert page.locator("#delta code.path").first.inner_text() == "/next"
    assert page.locator(".changed[data-path='/next']").inner_text() == "3"
    page.click("#earlier")
    earlier = int(page.locator("#seq").inner_text().lstrip("#"))
    assert earlier < later
    assert page.locator(".changed[data-path='/next']").inner_text() == "2"
    screenshot(page, "state", tmp_path)

    page.goto(served.url + "/money")
    assert page.locator("svg.chart").count() == 2
    budget = page.locator("#budgets tbody tr").first.inner_text()
    assert "triage" in budget and "$0.05" in budget
    machines = page.locator("#by-machine tbody tr").all_inner_texts()
    assert any(line.startswith("triage") for line in machines)
    screenshot(page, "money", tmp_path)
    assert digest(db) == before, "reading the page wrote to the journal"


def test_hostile_text_is_shown_as_text_on_every_page(
    page: Any, served: Served, audited: tuple[Path, dict[str, str]]
) -> None:
    run = audited[1]["hostile"]
    for path in ("/", f"/runs/{run}", f"/runs/{run}/state", f"/runs/{run}/state?seq=1", "/money"):
        page.goto(served.url + path)
        for summary in page.locator("summary").all():
            summary.click()
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("script:not([src])").count() == 0, path
        assert page.locator("img").count() == 0, path
    page.goto(served.url + f"/runs/{run}")
    page.locator("li.call summary").first.click()
    shown = page.locator("main").inner_text()
    assert "<script>window.__pwned = 1</script>" in shown  # the prompt
    assert '<img src=x onerror="window.__pwned = 2">' in shown  # the decision's item
    assert "\\u001b[2J\\u001b[31mred\\u001b[0m\\u202eevil" in shown  # visible, not obeyed
    assert "window.__pwned = 3" in shown or "window.__pwned=4" in shown  # the answer


def _status(db: Path, run_id: str) -> tuple[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        status, last = conn.execute(
            "SELECT status, last_seq FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return str(status), int(last)
    finally:
        conn.close()


def _wait(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


def _newer(db: Path, run_id: str, seen: int) -> int | None:
    last = _status(db, run_id)[1]
    return last if last > seen else None


def _only_run(db: Path) -> str:
    def found() -> str | None:
        if not db.exists():
            return None
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT run_id FROM runs").fetchone()
                return None if row is None else str(row[0])
            finally:
                conn.close()
        return None

    return str(_wait(found, "the run to exist"))


def test_a_live_run_is_followed_within_a_second_and_killed_only_with_the_token(
    page: Any, tmp_path: Path
) -> None:
    db = tmp_path / "live.db"
    spec = tmp_path / "slow.json"
    items = [f"item {i}" for i in range(400)]
    spec.write_text(json.dumps({"items": items, "out": str(tmp_path / "out"), "pause": 0.05}))
    process = spawn("run", str(FIXTURES / "lines.py"), "--input", str(spec), db=db)
    try:
        run = _only_run(db)
        with serving(db, "--as", LABEL) as served:
            page.goto(served.url + f"/runs/{run}")
            assert page.locator("#timeline[data-live]").count() == 1
            # Each new event, as soon as the journal has it, is on the page within a second.
            delays = []
            for _ in range(3):
                seen = _status(db, run)[1]
                newer = _wait(lambda seen=seen: _newer(db, run, seen), "new events")
                appended = time.monotonic()
                page.wait_for_selector(f"#timeline [data-seq='{newer}']", timeout=5000)
                delays.append(time.monotonic() - appended)
            assert max(delays) < 1.0, delays

            # Without the token the button is disabled, and the form refused if sent anyway.
            assert page.locator("#kill").is_disabled()
            refused = page.request.post(served.url + f"/runs/{run}/kill", form={"reason": "x"})
            assert refused.status == 403
            assert "token" in refused.text()
            assert _status(db, run)[0] == "running"

            page.goto(served.url + f"/login?token={served.token}")
            assert LABEL in page.locator("header .who").inner_text()
            page.goto(served.url + f"/runs/{run}")
            page.fill("form.kill input[name=reason]", "looping <on> \x1b[31m purpose")
            page.click("#kill")
            assert "kill requested" in page.locator(".said").inner_text()
            _wait(lambda: _status(db, run)[0] == "killed", "the run to be killed", 10)
            page.wait_for_selector("#timeline [data-kind='run.killed']", timeout=5000)
            assert page.locator("#status").inner_text() == "killed"
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (data,) = conn.execute("SELECT data FROM events WHERE kind = 'run.killed'").fetchone()
    conn.close()
    killed = json.loads(data)
    assert killed["who"] == LABEL
    assert killed["reason"] == "looping <on> \x1b[31m purpose"


def test_an_action_in_doubt_is_answered_and_the_run_resumed_from_the_page(
    page: Any, tmp_path: Path
) -> None:
    db, store = tmp_path / "doubt.db", tmp_path / "store"
    store.mkdir()
    spec = tmp_path / "keys.json"
    keys = {"keys": ["K-1"], "store": str(store), "idempotent": False, "pause": 60}
    spec.write_text(json.dumps(keys))
    process = spawn("run", str(PIPELINES / "acting.py"), "--input", str(spec), db=db)
    calls = store / "calls.log"
    _wait(lambda: calls.exists() and "K-1" in calls.read_text(), "the action to start")
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = _only_run(db)

    with serving(db, "--as", LABEL) as served:
        page.goto(served.url + f"/runs/{run}")
        form = page.locator("#in-doubt form[data-key='K-1']")
        assert form.locator("button").is_disabled()
        refused = page.request.post(
            served.url + f"/runs/{run}/resolve",
            form={"key": "K-1", "outcome": "done", "reason": "no token"},
        )
        assert refused.status == 403
        page.goto(served.url + f"/login?token={served.token}")
        page.goto(served.url + f"/runs/{run}")
        form = page.locator("#in-doubt form[data-key='K-1']")
        form.locator("input[value=done]").check()
        form.locator("input[name=result]").fill('{"sent": "K-1"}')
        form.locator("input[name=reason]").fill("found K-1 in sent.log")
        form.locator("button").click()
        assert "answer recorded" in page.locator(".said").inner_text()
        assert page.locator("#in-doubt").count() == 0
        page.click("#resume")
        assert "resume started" in page.locator(".said").inner_text()
        _wait(lambda: _status(db, run)[0] == "done", "the resumed run to end", 60)
        page.goto(served.url + f"/runs/{run}")
        resolved = page.locator("[data-kind='action.resolved']").inner_text()
        assert LABEL in resolved and "found K-1 in sent.log" in resolved
        assert page.locator("#status").inner_text() == "done"
    # K-1 was answered done: the resume went on without calling it again.
    assert calls.read_text().split() == ["K-1"]
