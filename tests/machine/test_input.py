"""Tests for `journal run --input` (`machine.inputs`, through `machine.api.prepare`) on input
Python's json cannot hold.

Each is refused before the journal is opened: one line on stderr naming the line and, where
there is one, the field; exit 2; no journal file. And on input fields the state does not have:
one warning line per field however many items have it, or refused with `strict_input`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, cli
from pipelines.holding import Holder, holding

from runjournal import machine
from runjournal.machine import InputUnreadable

LINES = str(FIXTURES / "lines.py")
BIG = "9" * 5000
DEEP = 100_000
GOOD = '{"items": ["a"], "out": "o"}'


def assert_refused(result: object, db: Path, says: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert says in lines[0], lines[0]
    assert not db.exists()


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        (
            "big.json",
            f'{{"items": ["a"], "out": "o", "n": {BIG}}}',
            "big.json: an integer of 5,000 digits is too long (at most 4,300) @ $.n",
        ),
        (
            "big.jsonl",
            f'{GOOD}\n{{"n": [1, -{BIG}]}}\n',
            "big.jsonl: line 2: an integer of 5,000 digits is too long (at most 4,300) @ $.n[1]",
        ),
        (
            "deep.json",
            "[" * DEEP + "]" * DEEP,
            "deep.json: nested deeper than 200 levels at line 1 column 201",
        ),
        (
            "deep.jsonl",
            f"{GOOD}\n\n" + '{"x": ' + "[" * DEEP + "]" * DEEP + "}\n",
            "deep.jsonl: line 3: nested deeper than 200 levels at column 206",
        ),
        (
            # Deep enough to refuse, not so deep that json fails: the walk finds it.
            "nested.json",
            '{"items": ["a"],\n "out": ' + "[" * 300 + "]" * 300 + "}",
            "nested.json: nested deeper than 200 levels at line 2 column 208",
        ),
        (
            "surrogate.json",
            json.dumps({"tickets": [{"body": "ok"}] * 3 + [{"body": "fine \ud800"}]}),
            "surrogate.json: a string holds a lone surrogate (\\ud800), which is not text "
            "@ $.tickets[3].body",
        ),
        (
            "key.jsonl",
            GOOD + "\n" + json.dumps({"a b": {"x\udc00": 1}}) + "\n",
            "key.jsonl: line 2: a key holds a lone surrogate (\\udc00), which is not text "
            '@ $["a b"]["x\\udc00"]',
        ),
        ("nan.json", '{"items": ["a"], "out": "o", "x": NaN}', "nan.json: NaN is not JSON @ $.x"),
        ("inf.json", '{"x": [Infinity]}', "inf.json: Infinity is not JSON @ $.x[0]"),
        ("minus.jsonl", '{"x": -Infinity}', "minus.jsonl: line 1: -Infinity is not JSON @ $.x"),
        ("huge.json", '{"x": 1e400}', "huge.json: a number too large for a float @ $.x"),
        (
            # A raw U+2028 is legal in a JSON string, and does not end a JSON Lines line.
            "separator.jsonl",
            '{"text": "a\u2028b"}\n{"x": NaN}\n',
            "separator.jsonl: line 2: NaN is not JSON @ $.x",
        ),
    ],
)
def test_input_python_cannot_hold_is_refused(
    tmp_path: Path, db: Path, name: str, content: str, says: str
) -> None:
    """Each is one line naming the line and the field, exit 2, and no journal file."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", "surrogatepass"))
    assert_refused(cli("run", LINES, "--input", str(path), db=db), db, says)


def test_input_that_is_not_utf8(tmp_path: Path, db: Path) -> None:
    """Invalid UTF-8 is named by its byte and line."""
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"items": ["a"],\n "out": "caf\xe9"}')
    result = cli("run", LINES, "--input", str(path), db=db)
    assert_refused(result, db, "latin1.json is not UTF-8 text: byte 0xe9 on line 2")


def test_a_lone_surrogate_from_standard_input(db: Path) -> None:
    """Standard input gets the same checks as a file."""
    result = cli("run", LINES, "--input", "-", db=db, input='{"items": ["\\ud800"], "out": "o"}')
    assert_refused(result, db, "-: a string holds a lone surrogate (\\ud800)")


def test_a_byte_order_mark_is_skipped(tmp_path: Path, db: Path) -> None:
    """A UTF-8 BOM at the start, as Windows editors write it, is not part of the input."""
    path = tmp_path / "bom.json"
    out = tmp_path / "o"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"items": ["kiwi"], "out": str(out)}).encode())
    result = cli("run", LINES, "--input", str(path), db=db)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "item-0 kiwi 4\n"


CARDS = """
from pathlib import Path

import attrs

from runjournal.machine import Context, Machine, Transition


@attrs.frozen
class Card:
    id: str
    subject: str = ""


@attrs.frozen
class Board:
    cards: tuple[Card, ...]
    gate: str = ""  # while this file exists, the step fails: a run to resume


def go(ctx: Context, s: Board) -> Transition:
    if s.gate and Path(s.gate).exists():
        raise RuntimeError("the gate is closed")
    return ctx.finish(s)


lenient = Machine("lenient", state=Board, start="go")
lenient.step(go)
strict = Machine("strict", state=Board, start="go", strict_input=True)
strict.step(go)
"""


def typos(tmp_path: Path, gate: str = "") -> Path:
    """An input of 60 cards, each with `subjet` for `subject`."""
    path = tmp_path / "cards.json"
    cards = [{"id": f"C-{i}", "subjet": f"card {i}"} for i in range(60)]
    path.write_text(json.dumps({"cards": cards, "gate": gate}))
    (tmp_path / "cards.py").write_text(CARDS)
    return path


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_unknown_input_fields_are_said_once(tmp_path: Path, db: Path) -> None:
    """60 cards with the same typo: one warning line naming the path, and the run goes on."""
    result = cli("run", f"{tmp_path / 'cards.py'}:lenient", "--input", str(typos(tmp_path)), db=db)
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == [
        "warning: input fields left out, the state has no place for them: $.cards[*].subjet "
        "(60 times): Card has no field 'subjet', it has id, subject"
    ]
    assert result.stderr.count("no field 'subjet'") == 1


def test_input_that_fits_gives_no_warning(tmp_path: Path, db: Path) -> None:
    """The warning is for fields the state lacks, not for every run."""
    path = tmp_path / "good.json"
    path.write_text(json.dumps({"items": ["a"], "out": str(tmp_path / "o")}))
    result = cli("run", LINES, "--input", str(path), db=db)
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == []


def test_strict_input_refuses_unknown_fields(tmp_path: Path, db: Path) -> None:
    """`strict_input=True`: one line naming the field and the fields the class has, exit 2,
    and no journal."""
    result = cli("run", f"{tmp_path / 'cards.py'}:strict", "--input", str(typos(tmp_path)), db=db)
    assert_refused(
        result,
        db,
        "Error: machine 'strict' takes strict input, and the input has fields its state does "
        "not: $.cards[*].subjet (60 times): Card has no field 'subjet', it has id, subject; "
        "correct them, or make the machine without strict_input",
    )


def test_resume_does_not_warn_again(tmp_path: Path, db: Path) -> None:
    """The warning is said when the input is read; a resume reads none, and says nothing."""
    gate = tmp_path / "gate"
    gate.touch()
    target = f"{tmp_path / 'cards.py'}:lenient"
    first = cli("run", target, "--input", str(typos(tmp_path, str(gate))), db=db)
    assert first.returncode == 1, first.stderr
    assert len(warnings_in(first.stderr)) == 1
    run_id = re.search(r"journal resume (\w+)", first.stderr)
    assert run_id is not None, first.stderr
    gate.unlink()
    resumed = cli("resume", run_id.group(1), db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert "done" in resumed.stderr
    assert "subjet" not in resumed.stderr
    assert warnings_in(resumed.stderr) == []


# `machine.run` goes by the same rules (machine/inputs.py).


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (float("nan"), "input: NaN is not JSON @ $.data"),
        (float("inf"), "input: a number too large for a float @ $.data"),
        ("a\ud800", "input: a string holds a lone surrogate (\\ud800), which is not text @ $.data"),
        ({"deep": nested(205)}, "input: nested deeper than 200 levels @ $.data.deep"),
    ],
)
def test_machine_run_refuses_what_journal_run_refuses(db: Path, data: Any, says: str) -> None:
    with pytest.raises(InputUnreadable) as refused:
        machine.run(holding, {"data": data}, db=db)
    assert str(refused.value).startswith(says)
    assert not db.exists()  # refused before the journal was opened


def test_machine_run_reads_a_file_as_journal_run_does(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_bytes(b'\xef\xbb\xbf{"items": ["a", "b"]}')  # a byte order mark, skipped
    assert machine.run(holding, source, db=db).state == Holder(items=("a", "b"))
    source.write_text('{"items": ["a", NaN]}')
    with pytest.raises(InputUnreadable, match=re.escape("in.json: NaN is not JSON @ $.items[1]")):
        machine.run(holding, source, db=tmp_path / "other.db")
    refused = cli(
        "run", str(ROOT / "tests" / "pipelines" / "holding.py"), "--input", str(source), db=db
    )
    assert refused.returncode == 2
    assert "in.json: NaN is not JSON @ $.items[1]" in refused.stderr
