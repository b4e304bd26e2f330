"""Tests for `journal run --input` (`cli.running.read_input`) on input Python's json cannot hold.

Each is refused before the journal is opened: one line on stderr naming the line and, where
there is one, the field; exit 2; no journal file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, cli

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
