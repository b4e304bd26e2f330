"""Tests for `cli.output.printable` and `json_line`, and for every command that prints what a
pipeline, its input or a model wrote: terminal controls in it are escaped, `journal logs` and
table rows stay one line each, and JSON output reads back to exactly the strings journaled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import journal_command
from hypothesis import given
from hypothesis import strategies as st

from runjournal.cli.output import json_line, pairs, printable, short
from runjournal.machine.testing import FakeModel, serve

# Sets the terminal's title, clears the screen, a C1 CSI, DEL, NUL, CR, backspace, a bidi
# override and isolate, a line separator, tab and newline; and a backslash escape as text.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\x00\r\x08\u202e\u2066\u2028\u0085\t\nend \\u001b"
NAME = "hostile" + HOSTILE
# What must never reach a terminal raw. Tab and newline are checked apart, per output.
CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)

MACHINE = """
import attrs
from runjournal.machine import Context, Machine, Transition

HOSTILE = {hostile!r}


@attrs.frozen
class S:
    text: str
    tags: dict[str, str] = attrs.Factory(dict)
    answer: str = ""
    fail: bool = False


hostile = Machine("hostile" + HOSTILE, state=S, start="go")


@hostile.step
def go(ctx: Context, s: S) -> Transition:
    # Everything a pipeline writes holds the input's text: effect, decision, action, error.
    got = ctx.effect("echo" + s.text, lambda: s.text)
    ctx.decide(item=s.text, outcome="seen" + s.text, reason=s.text, note=s.text)
    ctx.act("notify", "key" + s.text, lambda key: {{"sent": key}}, idempotent=True)
    if s.fail:
        raise RuntimeError(s.text)
    answer = ctx.ask(str, prompt="say something", model="claude-haiku-4-5")
    return ctx.finish(attrs.evolve(s, tags={{got: got}}, answer=answer))
"""


def journal(*args: str, db: Path) -> tuple[int, str, str]:
    """`journal ARGS --db DB`, its output read as bytes: a text pipe would turn CR into LF."""
    done = subprocess.run(
        [*journal_command(), *args, "--db", str(db)], capture_output=True, timeout=120
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A journal with two runs whose input, effect, decision, action and model answer hold
    HOSTILE: one done, one failed with it as its error. Returns the journal and both run ids."""
    folder = tmp_path_factory.mktemp("hostile")
    db = folder / "journal.db"
    (folder / "hostile.py").write_text(MACHINE.format(hostile=HOSTILE))
    ids = []
    with serve(FakeModel(responder=lambda body: HOSTILE)) as server:
        env = {**os.environ, "ANTHROPIC_API_KEY": "k" * 40, "ANTHROPIC_BASE_URL": server.url}
        for fail in (False, True):
            input_path = folder / f"input-{fail}.json"
            input_path.write_text(json.dumps({"text": HOSTILE, "fail": fail}))
            command = ["run", "hostile.py", "--input", str(input_path), "--db", str(db)]
            done = subprocess.run(
                [*journal_command(), *command],
                capture_output=True,
                text=True,
                cwd=folder,
                env=env,
                timeout=120,
            )
            assert done.returncode == (1 if fail else 0), done.stderr
            ids.append(done.stderr.split()[1])
    return db, ids[0], ids[1]


def output(*args: str, db: Path) -> str:
    """What a reading command prints, asserting it succeeded and printed no control."""
    code, out, err = journal(*args, db=db)
    assert code == 0, (args, err)
    assert not CONTROLS.search(out), (args, CONTROLS.findall(out))
    assert not CONTROLS.search(err), (args, err)
    return out


READERS = [
    ("logs", "{done}"),
    ("logs", "{failed}"),
    ("logs", "{done}", "--json"),
    ("show", "{done}"),
    ("show", "{failed}"),
    ("show", "{failed}", "--json"),
    ("runs",),
    ("runs", "--json"),
    ("replay", "{done}"),
    ("replay", "{done}", "--json"),
    ("replay", "{done}", "--at", "2"),
    ("replay", "{done}", "--at", "9", "--json"),
    ("actions",),
    ("actions", "--json"),
    ("cost", "--by", "machine"),
    ("cost", "--by", "machine", "--json"),
    ("sql", "select * from events"),
    ("sql", "select * from events", "--csv"),
    ("sql", "select * from events", "--json"),
    ("sql", "select * from decisions"),
    ("sql", "select * from actions", "--csv"),
]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_no_command_prints_a_control(hostile: tuple[Path, str, str], args: tuple[str, ...]) -> None:
    """Whatever a reading command prints of a hostile journal, no control reaches the terminal."""
    db, done, failed = hostile
    out = output(*(a.format(done=done, failed=failed) for a in args), db=db)
    assert "\\u001b" in out  # the hostile text is there, escaped
    if args[0] != "show" and "--csv" not in args:
        assert "\t" not in out


def test_logs_print_one_line_per_event(hostile: tuple[Path, str, str]) -> None:
    """Newlines, separators and CRs in values cannot split an event's line or forge another."""
    db, done, failed = hostile
    for run in (done, failed):
        count = json.loads(
            output("sql", f"select last_seq from runs where run_id = '{run}'", "--json", db=db)
        )
        lines = output("logs", run, db=db).splitlines()
        assert len(lines) == count["last_seq"]
        assert all(line.split()[1] == f"run_id={run}" for line in lines)
    decision = next(
        line for line in output("logs", done, db=db).splitlines() if " kind=decision " in line
    )
    quoted = re.search(r' reason=("(?:[^"\\]|\\.)*")', decision)
    assert quoted is not None, decision
    # A quoted logfmt value is also a JSON string: it reads back to the very text journaled.
    assert json.loads(quoted.group(1)) == HOSTILE


def test_json_outputs_read_back_exactly(hostile: tuple[Path, str, str]) -> None:
    """--json output is exact: every string is the one journaled, controls and all."""
    db, done, failed = hostile
    events = [json.loads(line) for line in output("logs", done, "--json", db=db).splitlines()]
    data = {e["kind"]: e["data"] for e in events}
    assert data["run.started"]["machine"] == NAME
    assert data["effect.done"]["result"] == HOSTILE
    assert data["decision"]["reason"] == HOSTILE
    assert data["decision"]["inputs"] == {"note": HOSTILE}
    assert data["action.done"]["result"] == {"sent": "key" + HOSTILE}
    assert data["model.answered"]["content"] == [{"type": "text", "text": HOSTILE}]
    shown = json.loads(output("show", failed, "--json", db=db))
    assert shown["error"] == f"RuntimeError: {HOSTILE}"
    assert shown["machine"] == NAME
    listed = [json.loads(line) for line in output("runs", "--json", db=db).splitlines()]
    assert [r["machine"] for r in listed] == [NAME, NAME]
    at = json.loads(output("replay", done, "--at", "9", "--json", db=db))
    assert at["state"] == {
        "text": HOSTILE,
        "tags": {HOSTILE: HOSTILE},
        "answer": HOSTILE,
        "fail": False,
    }
    actions = [json.loads(line) for line in output("actions", "--json", db=db).splitlines()]
    assert {a["result"]["sent"] for a in actions} == {"key" + HOSTILE}
    by_machine = json.loads(output("cost", "--by", "machine", "--json", db=db))
    assert by_machine["machine"] == NAME
    # The journal's own JSON, not a view's column: SQLite's json_extract cuts a string at NUL.
    statement = "select data, x'0061' as b from events where kind = 'decision'"
    rows = [json.loads(line) for line in output("sql", statement, "--json", db=db).splitlines()]
    assert [json.loads(r["data"])["reason"] for r in rows] == [HOSTILE, HOSTILE]
    assert [r["b"] for r in rows] == ["0061", "0061"]  # a BLOB, as hex


def test_tables_keep_a_row_per_line(hostile: tuple[Path, str, str]) -> None:
    """Table cells escape newline and tab too: a row is one line, and JSON cells stay JSON."""
    db, _, _ = hostile
    rows = output("sql", "select data from events where kind = 'decision'", db=db).splitlines()
    assert len(rows) == 3
    assert [json.loads(row)["reason"] for row in rows[1:]] == [HOSTILE, HOSTILE]
    assert len(output("runs", db=db).splitlines()) == 3
    assert len(output("actions", db=db).splitlines()) == 3


def test_csv_quotes_newlines_and_escapes_the_rest(hostile: tuple[Path, str, str]) -> None:
    """CSV keeps newline and tab, which it quotes; every other control is escaped."""
    db, _, _ = hostile
    made = "'a' || char(10) || 'b' || char(9) || char(27) || char(13) || char(8238)"
    statement = f"select {made} as text, data from events where kind = 'decision'"
    records = list(csv.reader(io.StringIO(output("sql", statement, "--csv", db=db))))
    assert records[0] == ["text", "data"]
    assert [r[0] for r in records[1:]] == ["a\nb\t\\u001b\\r\\u202e"] * 2
    # The journal's JSON, its C1 and bidi controls escaped the JSON way, is still that JSON.
    assert [json.loads(r[1])["reason"] for r in records[1:]] == [HOSTILE, HOSTILE]


def test_show_indents_a_value_of_several_lines(hostile: tuple[Path, str, str]) -> None:
    """A newline in a value goes on under it, indented: it cannot pass for another field."""
    db, _, failed = hostile
    lines = output("show", failed, db=db).splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error "))
    assert lines[error] == "error    RuntimeError: " + printable(
        HOSTILE.split("\n")[0], multiline=True
    )
    assert lines[error + 1] == "         end \\u001b"


class TestPrintable:
    """`printable`: what it escapes, and how."""

    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("\x1b]0;pwned\x07", "\\u001b]0;pwned\\u0007"),
            ("\x1b[2J", "\\u001b[2J"),
            ("\x9b31m", "\\u009b31m"),
            ("\x7f\x00\x85", "\\u007f\\u0000\\u0085"),
            ("a\rb\x08c\x0c", "a\\rb\\bc\\f"),
            (
                "\u202eevil\u202c \u2066x\u2069 \u200f\u061c",
                "\\u202eevil\\u202c \\u2066x\\u2069 \\u200f\\u061c",
            ),
            ("\u2028\u2029", "\\u2028\\u2029"),
            ("a\tb\nc", "a\\tb\\nc"),
            ("\ud800", "\\ud800"),
            (
                "plain, café, 日本, emoji 🙂, \\ and \\u001b as text",
                "plain, café, 日本, emoji 🙂, \\ and \\u001b as text",
            ),
        ],
    )
    def test_escapes(self, text: str, shown: str) -> None:
        assert printable(text) == shown

    def test_multiline_keeps_newline_and_tab(self) -> None:
        assert printable("a\tb\nc\r\x1b", multiline=True) == "a\tb\nc\\r\\u001b"

    @given(st.text())
    def test_output_is_safe_and_stable(self, text: str) -> None:
        """No control is left, and escaping again changes nothing."""
        shown = printable(text)
        assert not CONTROLS.search(shown)
        assert "\n" not in shown and "\t" not in shown
        assert printable(shown) == shown


class TestJsonLine:
    """`json_line`: JSON that is safe to print and means the same."""

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        )
    )
    def test_same_value_no_control(self, value: object) -> None:
        text = json_line(value)
        assert json.loads(text) == value
        assert not CONTROLS.search(text)

    def test_indented(self) -> None:
        text = json_line({"a": ["\x9b\u202e"]}, indent=2)
        assert text == '{\n  "a": [\n    "\\u009b\\u202e"\n  ]\n}'


class TestPairs:
    """`pairs` (logfmt) and `short`: one parseable line, whatever the values hold."""

    def test_a_value_with_controls_is_quoted_and_escaped(self) -> None:
        line = pairs(item="x\x1by", n=3, reason="two\nlines")
        assert line == 'item="x\\u001by" n=3 reason="two\\nlines"'

    def test_a_plain_value_stands_bare(self) -> None:
        assert pairs(outcome="page", n=2.5, ok=True) == "outcome=page n=2.5 ok=true"

    def test_a_backslash_is_quoted_and_doubled(self) -> None:
        assert pairs(path="C:\\x1b") == 'path="C:\\\\x1b"'

    def test_none_is_empty_and_the_empty_string_quoted(self) -> None:
        assert pairs(to=None, name="") == 'to= name=""'

    def test_objects_are_flattened_and_lists_json(self) -> None:
        line = pairs(result={"a": "\x9b", "b": {"c": 1}, "d": {}}, tags=["x"])
        assert line == 'result.a="\\u009b" result.b.c=1 result.d={} tags="[\\"x\\"]"'

    def test_short(self) -> None:
        assert short("a\x1b\nb") == "a\\u001b b"
        assert short({"k": "\u202e"}) == '{"k":"\\u202e"}'
