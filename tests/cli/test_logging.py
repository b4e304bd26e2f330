"""Tests for the live log (`cli.live`) and `journal logs`: one logfmt line per event, every
field under its own name; with `--log all` the lines a run writes on stderr as it executes are
the lines `journal logs` prints later; a logfmt parser reads each back into the event's fields.
By default a run writes brief lines instead: one per outcome (`BRIEF_KINDS`), bookkeeping
fields left out, long values cut with `…(N more)`, floats rounded.

Lines are read back with `logfmtkv` in strict mode (go-logfmt's rules), not with the `logfmt`
package: that one drops every backslash of a quoted value and then misses its closing quote.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import attrs
import logfmtkv
import pytest
from conftest import FIXTURES, journal_command
from hypothesis import given
from hypothesis import strategies as st

from runjournal.cli.live import BRIEF_KINDS, LOGGER, log_records
from runjournal.cli.output import (
    BRIEF_VALUE,
    MAX_VALUE,
    brief_line,
    event_line,
    pairs,
    rounded_float,
)
from runjournal.journal import Event, Journal
from runjournal.machine import Context, Machine, Options, Transition, runner

TRIAGE = str(FIXTURES / "triage.py")
TICKETS = FIXTURES / "tickets.jsonl"
LINES = str(FIXTURES / "lines.py")
KEY = "sk-ant-api03-LIVE-do-not-log-0123456789abcdef"
# What a model might answer: newlines, quotes, text that looks like more fields, an ESC.
ANSWER = 'line one\nline "two" a=b \x1b[31mred'
FIXED = ("at", "run_id", "seq", "step", "kind")

# Stops (fails) at an item while a file `stop-ITEM` exists; resumed, it goes on from there.
STOPPING = """
import os

import attrs
from runjournal.machine import Context, Machine, Transition


@attrs.frozen
class S:
    items: tuple[str, ...]
    next: int = 0


stopping = Machine("stopping", state=S, start="go", progress=lambda s: (s.next, len(s.items)))


@stopping.step
def go(ctx: Context, s: S) -> Transition:
    if s.next == len(s.items):
        return ctx.finish(s)
    item = s.items[s.next]
    ctx.effect("look", lambda: item)
    if os.path.exists("stop-" + item):
        raise RuntimeError("stopped at " + item)
    ctx.decide(item=item, outcome="done")
    return ctx.goto("go", attrs.evolve(s, next=s.next + 1))
"""

ANSWERS = """
import attrs
from runjournal.machine import Context, Machine, Transition

ANSWER = {answer!r}


@attrs.frozen
class S:
    n: int = 0


answers = Machine("answers", state=S, start="go")


@answers.step
def go(ctx: Context, s: S) -> Transition:
    said = ctx.effect("answer", lambda: ANSWER)
    ctx.decide(
        item="T-1 a=b",
        outcome="seen",
        reason=said,
        quote='"',
        empty="",
        nothing=None,
        nested={{"deep": {{"er": said}}, "list": [said, 1, None, True], "none": {{}}}},
    )
    ctx.effect("long", lambda: "x" * 1000 + ANSWER)
    return ctx.finish(attrs.evolve(s, n=s.n + 1))
"""


def journal(
    *args: str, db: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`journal ARGS --db DB`, read as bytes and decoded: a text pipe would turn CR into LF."""
    done = subprocess.run(
        [*journal_command(), *args, "--db", str(db)],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def logs(run_id: str, *args: str, db: Path) -> list[str]:
    done = journal("logs", run_id, *args, db=db)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def count(db: Path, where: str) -> int:
    done = journal("sql", f"select count(*) as n from events where {where}", "--json", db=db)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["n"])


def text(value: Any) -> str:
    """A value as a log line writes it, unquoted: JSON's text for it, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def flattened(event: dict[str, Any]) -> dict[str, Any]:
    """An event of `journal logs --json` as the fields its log line should parse back to:
    nested objects flattened into dotted keys, the other values as they are."""
    out = {name: event[name] for name in FIXED}

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{name}.{key}", inner)
        else:
            out[name] = value

    for key, value in event["data"].items():
        walk(f"data.{key}" if key in FIXED else key, value)
    return out


def parse(line: str) -> dict[str, str | bool]:
    return logfmtkv.parse(line, strict=True, duplicates="error")


def assert_reads_back(line: str, event: dict[str, Any]) -> None:
    """The line parses, strictly, into exactly the event's flattened fields; long values are
    cut at MAX_VALUE characters and say how many more there were."""
    parsed = logfmtkv.parse(line, strict=True, duplicates="error")
    expected = flattened(event)
    assert list(parsed) == list(expected), line
    for key, value in expected.items():
        written = text(value)
        if len(written) > MAX_VALUE and isinstance(value, str):
            cut = f"{written[:MAX_VALUE]}…[+{len(written) - MAX_VALUE} chars]"
            assert parsed[key] == cut, (key, line)
        elif isinstance(value, list | dict):  # JSON text (its escapes may differ), or cut
            got = str(parsed[key])
            assert got.endswith(" chars]") or json.loads(got) == value, (key, line)
        else:
            assert parsed[key] == written, (key, line)


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A journal holding a run of lines.py, then a triage run under the chaos fake with
    `--log all`, whose stderr was not a terminal. Returns the journal, the triage run's id, its
    stderr and the other run's id."""
    folder = tmp_path_factory.mktemp("triage")
    db = folder / "journal.db"
    (folder / "in.json").write_text(json.dumps({"items": ["apple"], "out": str(folder / "o")}))
    other = journal("run", LINES, "--input", str(folder / "in.json"), db=db, cwd=folder)
    assert other.returncode == 0, other.stderr
    done = journal(
        "run",
        TRIAGE,
        "--input",
        str(TICKETS),
        "--fake-model",
        "chaos",
        "--log",
        "all",
        db=db,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return db, done.stdout.split()[1], done.stderr, other.stdout.split()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The README's demo as a new user runs it, stderr to a file: the 60 tickets under the
    chaos fake, default options. Returns the journal, the run's id and its stderr."""
    folder = tmp_path_factory.mktemp("demo")
    db = folder / "x.db"
    args = ("run", TRIAGE, "--input", str(TICKETS), "--fake-model", "chaos")
    done = journal(*args, db=db, cwd=folder)
    assert done.returncode == 0, done.stderr
    return db, done.stdout.split()[1], done.stderr


def test_stderr_has_every_event_of_the_run_and_nothing_else(
    triage: tuple[Path, str, str, str],
) -> None:
    """Not on a terminal, with `--log all`, each committed event is a line on stderr: the same
    lines, in the same order, as `journal logs` prints from the journal; no other run's."""
    db, run_id, err, other = triage
    lines = err.splitlines()
    assert lines[0].startswith(f"run {run_id} started: triage")
    mine = [line for line in lines if f" run_id={run_id} " in line]
    assert mine == lines[1:]
    assert mine == logs(run_id, db=db)
    assert len(mine) == count(db, f"run_id = '{run_id}'") > 60
    assert other not in err
    assert "kind=model.failed" in err and "kind=output.rejected" in err  # chaos did happen


def test_the_log_key_is_the_field_name(triage: tuple[Path, str, str, str]) -> None:
    """No renamed fields: `error_type=`, `delay_s=`, `stop_reason=`, as in the event and the
    SQL views; nested usage with dotted keys."""
    db, run_id, _, _ = triage
    (failed, *_) = logs(run_id, "--kind", "model.failed", db=db)
    assert " error_type=" in failed and " delay_s=" in failed and " error=" not in failed
    (answered, *_) = logs(run_id, "--kind", "model.answered", db=db)
    assert re.search(" stop_reason=(end_turn|max_tokens) ", answered)
    assert " usage.input_tokens=" in answered and " usage.thinking_tokens=" in answered
    assert " mechanism=json_outputs " in answered
    first = logfmtkv.parse(logs(run_id, db=db)[0], strict=True)
    assert first["kind"] == "run.started" and first["step"] == "" and first["to_step"] == "score"


def test_lines_read_back_into_the_events_fields(triage: tuple[Path, str, str, str]) -> None:
    db, run_id, err, _ = triage
    events = [json.loads(line) for line in logs(run_id, "--json", db=db)]
    live = err.splitlines()[1:]
    assert len(live) == len(events)
    for line, event in zip(live, events, strict=True):
        assert_reads_back(line, event)


def test_a_models_answer_stays_on_one_line_and_reads_back(tmp_path: Path) -> None:
    """Newlines, quotes, `key=value` text and an ESC in what a step returns and decides: each
    event is still one line, escaped, and parses back to exactly what was journaled."""
    (tmp_path / "answers.py").write_text(ANSWERS.format(answer=ANSWER))
    db = tmp_path / "journal.db"
    done = journal("run", "answers.py", "-v", db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    live, printed = done.stderr.splitlines()[1:], logs(run_id, db=db)
    assert live == printed
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    events = [json.loads(line) for line in logs(run_id, "--json", db=db)]
    assert len(printed) == len(events) == count(db, f"run_id = '{run_id}'")
    for line, event in zip(printed, events, strict=True):
        assert_reads_back(line, event)
    decision = next(line for line in printed if " kind=decision " in line)
    assert ' reason="line one\\nline \\"two\\" a=b \\u001b[31mred" ' in decision
    assert ' item="T-1 a=b" ' in decision and " inputs.nothing= " in decision
    assert ' inputs.empty="" ' in decision and decision.endswith(" inputs.nested.none={}")
    (long,) = [line for line in printed if "name=long" in line]
    assert long.endswith(f'…[+{1000 + len(ANSWER) - MAX_VALUE} chars]"')


def test_log_format_json_log_file_and_quiet(tmp_path: Path) -> None:
    """--log-format json writes what `journal logs --json` prints; --log-file gets the same
    lines, appended; --quiet leaves stderr without a line."""
    db, log = tmp_path / "journal.db", tmp_path / "live.log"
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "bb"], "out": "o"}))
    args = ("run", LINES, "--input", "in.json", "--log-file", str(log))
    as_json = journal(*args, "--log-format", "json", db=db, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    first = as_json.stdout.split()[1]
    expected = logs(first, "--json", db=db)
    assert as_json.stderr.splitlines()[1:] == expected
    assert [json.loads(line)["seq"] for line in expected] == list(range(1, len(expected) + 1))
    quiet = journal(*args, "--quiet", db=db, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    second = quiet.stdout.split()[1]
    assert quiet.stdout.startswith(f"run {second} done:")
    # The file has the lines stderr would have had: every event whole as JSON, then the
    # brief default, which leaves the steps' transitions out.
    every = [parse(line) for line in logs(second, db=db)]
    told = [e["seq"] for e in every if e["kind"] in BRIEF_KINDS]
    assert 0 < len(told) < len(every)
    written = log.read_text().splitlines()
    assert written[: len(expected)] == expected
    assert [parse(line)["seq"] for line in written[len(expected) :]] == told


@pytest.mark.parametrize("log", [("--log",), ("--log", "all"), ("-v",)], ids=" ".join)
def test_quiet_and_log_together_is_a_usage_error(tmp_path: Path, log: tuple[str, ...]) -> None:
    db = tmp_path / "journal.db"
    done = journal("run", LINES, "--quiet", *log, db=db, cwd=tmp_path)
    assert done.returncode == 2
    assert "--quiet and --log" in done.stderr
    assert not db.exists()


def test_an_unknown_log_level_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    done = journal("run", LINES, "--log", "some", db=db, cwd=tmp_path)
    assert done.returncode == 2
    assert "'some' is not one of 'brief', 'all'" in done.stderr
    assert not db.exists()


def test_a_resume_tells_only_new_events(tmp_path: Path) -> None:
    """A resumed run's stderr has the events from `run.resumed` on, never one read back."""
    (tmp_path / "stopping.py").write_text(STOPPING)
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "b", "c"]}))
    (tmp_path / "stop-b").touch()
    db = tmp_path / "journal.db"
    failed = journal("run", "stopping.py", "--input", "in.json", "-v", db=db, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    run_id = failed.stderr.split()[1]
    first = [line for line in failed.stderr.splitlines() if " run_id=" in line]
    assert first == logs(run_id, db=db)
    (tmp_path / "stop-b").unlink()
    resumed = journal("resume", run_id, "--log", "all", db=db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith(f"run {run_id} resumed: stopping")
    told = resumed.stderr.splitlines()[1:]
    assert first + told == logs(run_id, db=db)
    assert " kind=run.resumed " in told[0] and " kind=run.done " in told[-1]


@attrs.frozen
class Count:
    n: int = 0


counting = Machine("counting", state=Count, start="go")


@counting.step
def go(ctx: Context, s: Count) -> Transition:
    got = ctx.effect("add", lambda: s.n + 1)
    ctx.decide(item=f"n{got}", outcome="counted")
    if got == 2:
        return ctx.fail("two is enough")
    return ctx.goto("go", attrs.evolve(s, n=got))


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_each_event_is_a_logging_record(journal: Journal) -> None:
    """`log_records` as `Options.on_event`: one record of logger `runjournal` per event, the
    logfmt line as its message, the event in `extra` under names that clash with nothing."""
    handler, logger = Records(), logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        outcome = runner.start(
            journal,
            runner.prepare(counting, {}),
            target="tests/cli/test_logging.py:counting",
            code_hash="test",
            options=Options(on_event=log_records),
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert outcome.run.status == "failed"
    events = list(journal.events(outcome.run.run_id))
    assert [r.journal_seq for r in handler.records] == [e.seq for e in events]  # type: ignore[attr-defined]
    for record, event in zip(handler.records, events, strict=True):
        assert record.name == LOGGER
        assert record.getMessage() == event_line(event)
        assert record.journal == {  # type: ignore[attr-defined]
            "run_id": event.run_id,
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "step": event.step,
            "data": event.data,
        }
        assert record.journal_kind == event.kind  # type: ignore[attr-defined]
        assert record.journal_run_id == event.run_id  # type: ignore[attr-defined]
        assert record.journal_step == event.step  # type: ignore[attr-defined]
        expected = logging.WARNING if event.kind == "run.failed" else logging.INFO
        assert record.levelno == expected, event.kind


def test_the_key_never_reaches_the_live_log(tmp_path: Path) -> None:
    """With ANTHROPIC_API_KEY set and the key in the input, stderr and --log-file show
    [redacted] where it was, never the key."""
    tickets = [json.loads(line) for line in TICKETS.read_text().splitlines()][:5]
    tickets[0]["customer"] = f"key {KEY}"
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tickets))
    db, log = tmp_path / "journal.db", tmp_path / "live.log"
    done = journal(
        "run",
        TRIAGE,
        "--input",
        "tickets.jsonl",
        "--fake-model",
        "chaos",
        "--log-file",
        str(log),
        db=db,
        cwd=tmp_path,
        env={**os.environ, "ANTHROPIC_API_KEY": KEY},
    )
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stderr and KEY not in done.stdout
    assert KEY not in log.read_text()
    assert "[redacted]" in done.stderr.splitlines()[1]  # run.started: the state holds the input


def test_logs_filters(triage: tuple[Path, str, str, str]) -> None:
    """--kind (exact, or the kinds under a prefix), --step and --since pick events; with
    --json too."""
    db, run_id, _, _ = triage

    def parsed(*args: str) -> list[dict[str, str | bool]]:
        return [logfmtkv.parse(line, strict=True) for line in logs(run_id, *args, db=db)]

    failed = parsed("--kind", "model.failed")
    assert {e["kind"] for e in failed} == {"model.failed"}
    assert len(failed) == count(db, f"run_id = '{run_id}' and kind = 'model.failed'") > 0
    model = parsed("--kind", "model.")
    assert len(model) == count(db, f"run_id = '{run_id}' and kind like 'model.%'")
    assert {e["kind"] for e in model} == {"model.requested", "model.answered", "model.failed"}
    assert parsed("--kind", "model") == model
    two = parsed("--kind", "decision", "--kind", "run.done")
    assert {e["kind"] for e in two} == {"decision", "run.done"}
    step = parsed("--step", "score")
    assert len(step) == count(db, f"run_id = '{run_id}' and step = 'score'")
    assert {e["step"] for e in step} == {"score"}
    since = parsed("--since", "10")
    assert [int(str(e["seq"])) for e in since] == list(range(11, 11 + len(since)))
    assert len(since) == count(db, f"run_id = '{run_id}' and seq > 10")
    assert [e["kind"] for e in parsed("--since", "10", "--kind", "run.")] == ["run.done"]
    as_json = [
        json.loads(line)
        for line in logs(run_id, "--json", "--since", "10", "--kind", "decision", db=db)
    ]
    assert as_json and all(e["kind"] == "decision" and e["seq"] > 10 for e in as_json)


def test_keys_logfmt_cannot_hold_are_escaped() -> None:
    """A key of a step's own object with a space, `=`, a quote or a control: escaped as
    `\\uXXXX`, so that the pair stays one pair."""
    line = pairs(result={"a key": 1, "k=v": 2, 'q"': 3, "esc\x1b": 4, "": 5})
    assert line == (
        "result.a\\u0020key=1 result.k\\u003dv=2 result.q\\u0022=3 result.esc\\u001b=4 result.\\=5"
    )
    assert list(logfmtkv.parse(line, strict=True)) == [
        "result.a\\u0020key",
        "result.k\\u003dv",
        "result.q\\u0022",
        "result.esc\\u001b",
        "result.\\",
    ]


# What a journal can hold: JSON values, with no lone surrogate in their strings (refused).
TEXT = st.text(st.characters(exclude_categories=("Cs",)))
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), VALUES, max_size=5))
def test_any_event_is_one_safe_line_that_reads_back(data: dict[str, Any]) -> None:
    event = Event("3fa2", 7, "2026-11-29T17:35:52.123Z", "decision", "score", data)
    line = event_line(event)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert_reads_back(line, {**attrs.asdict(event), "data": json.loads(json.dumps(data))})


# The brief default (issue 17): a line per outcome, bookkeeping left out, values shortened.

# What a person watching a run does not read, left to `--log all` and `journal logs`.
BOOKKEEPING = {
    *("requested_at", "worst_case_usd", "worst_case_tokens", "request_id", "request_hash"),
    *("request", "mechanism", "code_hash", "code_hash_before", "input", "limits"),
    *("limit_overrides", "intent", "traceback", "baseline_code_hashes"),
}


def assert_brief_reads_back(line: str, event: dict[str, Any]) -> None:
    """The brief line parses, strictly, into the event's fields but the bookkeeping and null
    ones, in order; each value is the event's, cut at BRIEF_VALUE characters with how many
    more there were, or, a float, rounded to within 5%."""
    parsed = parse(line)
    expected = flattened(event)
    assert list(parsed)[:5] == list(FIXED), line
    assert set(parsed) <= set(expected), line
    assert [k for k in expected if k in parsed] == list(parsed), line  # the same order
    for key, value in expected.items():
        if key in FIXED:
            continue
        if value is None or key.split(".")[0] in BOOKKEEPING:
            assert key not in parsed, (key, line)
            continue
        if key.startswith("usage.") and value == 0:
            assert key not in parsed, (key, line)
            continue
        got = str(parsed[key])
        if isinstance(value, float):
            assert abs(float(got) - value) <= abs(value) * 0.05, (key, line)
            if 1e-9 <= abs(value) < 1:  # two significant digits, no exponent (0.996: 1)
                digits = got.lstrip("-").replace(".", "").lstrip("0")
                assert "e" not in got and len(digits) <= 2, (key, got)
            elif 1 <= abs(value) < 1e15:  # two decimals at most
                assert re.fullmatch(r"-?[0-9]+(\.[0-9]{1,2})?", got), (key, got)
            continue
        written = text(value)
        if isinstance(value, list | dict):  # JSON text (its escapes may differ), or cut
            assert got.endswith(" more)") or json.loads(got) == value, (key, line)
        elif len(written) > BRIEF_VALUE:
            assert got == f"{written[:BRIEF_VALUE]}…({len(written) - BRIEF_VALUE} more)", key
        else:
            assert got == written, (key, line)


def test_the_default_log_is_a_brief_line_per_outcome(demo: tuple[Path, str, str]) -> None:
    """The demo off a terminal: after the announcement, one line per run start and end, model
    call outcome, decision and action outcome, in the journal's order; no request, intent or
    transition lines."""
    db, run_id, err = demo
    lines = err.splitlines()
    assert lines[0].startswith(f"run {run_id} started: triage")
    events = [json.loads(line) for line in logs(run_id, "--json", db=db)]
    told = [e for e in events if e["kind"] in BRIEF_KINDS]
    assert [parse(line)["seq"] for line in lines[1:]] == [str(e["seq"]) for e in told]
    kinds = {str(parse(line)["kind"]) for line in lines[1:]}
    assert {"run.started", "model.answered", "decision", "action.done", "run.done"} <= kinds
    assert not kinds & {"model.requested", "action.intended", "transition"}
    assert len(told) < 0.6 * len(events)
    for line, event in zip(lines[1:], told, strict=True):
        assert_brief_reads_back(line, event)


def short(number: str) -> bool:
    """Whether a number is rounded for reading: two decimals from 1 up, else two significant
    digits."""
    if float(number) >= 1:
        return len(number.partition(".")[2]) <= 2
    return len(number.replace(".", "").lstrip("0")) <= 2


def test_the_default_log_is_short_and_rounded(demo: tuple[Path, str, str]) -> None:
    """No line of the demo's log is a wall: the run's input and a model's answer are cut
    with how much more there was, and seconds and dollars read as short numbers."""
    _, _, err = demo
    lines = err.splitlines()
    assert max(len(line) for line in lines) < 450
    started = parse(lines[1])
    assert str(started["state.tickets"]).endswith(" more)")
    assert "limits.max_model_calls" not in started and "code_hash" not in started
    failed = [parse(line) for line in lines if " kind=model.failed " in line]
    assert failed  # chaos did happen
    delays = [str(f["delay_s"]) for f in failed if f.get("delay_s")]
    # Two decimals from 1 up, two significant digits below (0.2, 0.034, 0.00069).
    assert delays and all(short(d) for d in delays), delays
    costs = [str(parse(line)["cost_usd"]) for line in lines if " kind=model.answered " in line]
    assert all(re.fullmatch(r"0\.0*[1-9][0-9]?", cost) for cost in costs), costs


def test_a_models_answer_in_a_brief_line(tmp_path: Path) -> None:
    """By default the same hostile values stay on one escaped line: a long result is cut
    with how many characters more it had, a null field is left out, an empty one stays."""
    (tmp_path / "answers.py").write_text(ANSWERS.format(answer=ANSWER))
    db = tmp_path / "journal.db"
    done = journal("run", "answers.py", db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    run_id = done.stdout.split()[1]
    events = [json.loads(line) for line in logs(run_id, "--json", db=db)]
    told = [e for e in events if e["kind"] in BRIEF_KINDS]
    lines = done.stderr.splitlines()[1:]
    assert len(lines) == len(told)
    for line, event in zip(lines, told, strict=True):
        assert_brief_reads_back(line, event)
    decision = next(line for line in lines if " kind=decision " in line)
    assert ' reason="line one\\nline \\"two\\" a=b \\u001b[31mred" ' in decision
    assert ' inputs.empty="" ' in decision and " inputs.nothing=" not in decision
    (long,) = [line for line in lines if "name=long" in line]
    assert long.endswith(f'…({1000 + len(ANSWER) - BRIEF_VALUE} more)"')


def test_a_resume_tells_brief_lines_by_default(tmp_path: Path) -> None:
    (tmp_path / "stopping.py").write_text(STOPPING)
    (tmp_path / "in.json").write_text(json.dumps({"items": ["a", "b"]}))
    (tmp_path / "stop-b").touch()
    db = tmp_path / "journal.db"
    failed = journal("run", "stopping.py", "--input", "in.json", db=db, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    run_id = failed.stderr.split()[1]
    assert " kind=run.failed " in failed.stderr and " traceback=" not in failed.stderr
    (tmp_path / "stop-b").unlink()
    resumed = journal("resume", run_id, db=db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    kinds = [parse(line)["kind"] for line in resumed.stderr.splitlines()[1:]]
    # b's effect was done before the step failed: journaled, it is neither redone nor told.
    assert kinds == ["run.resumed", "decision", "run.done"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.02820835754589124, "0.028"),
        (0.2437, "0.24"),
        (19.256, "19.26"),
        (1234.5678, "1234.57"),
        (0.00016644, "0.00017"),
        (1.234e-9, "0.0000000012"),
        (-0.0001234, "-0.00012"),
        (2.5, "2.5"),
        (1.0, "1"),
        (0.0, "0"),
        (1e20, "1e+20"),
        (1.5e-12, "1.5e-12"),
    ],
)
def test_floats_are_rounded_for_reading(value: float, shown: str) -> None:
    assert rounded_float(value) == shown


def test_a_brief_line_leaves_out_bookkeeping_and_keeps_the_fixed_fields() -> None:
    data = {
        "call": "T-1",
        "model": "claude-haiku-5-5",
        "request_id": "req_1",
        "worst_case_usd": 0.000479,
        "stop_details": None,
        "content": [{"type": "text", "text": "x" * 100}],
        "usage": {"input_tokens": 115, "cache_read_tokens": 0},
        "cost_usd": 0.00016644,
    }
    line = brief_line(Event("3fa2", 3, "2026-11-29T17:35:52.123Z", "model.answered", None, data))
    assert line.startswith(
        "at=2026-11-29T17:35:52.123Z run_id=3fa2 seq=3 step= kind=model.answered "
    )
    assert "request_id" not in line and "worst_case" not in line and "stop_details" not in line
    assert " usage.input_tokens=115 " in line and "cache_read" not in line
    assert line.endswith(" cost_usd=0.00017")
    assert '…(67 more)" ' in line  # the content's JSON is 127 characters


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), VALUES, max_size=5))
def test_any_brief_line_is_one_safe_line_that_reads_back(data: dict[str, Any]) -> None:
    event = Event("3fa2", 7, "2026-11-29T17:35:52.123Z", "decision", "score", data)
    line = brief_line(event)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert_brief_reads_back(line, {**attrs.asdict(event), "data": json.loads(json.dumps(data))})
