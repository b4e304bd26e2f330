"""One name for each datum: the event kinds (`journal/kinds.py`) against the README, the SQL
views, the log lines, the projections and the action statuses."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import attrs
import logfmtkv
import pytest
from conftest import ROOT

from runjournal.cli.output import event_line
from runjournal.journal import Event, Journal, events, kinds, projection, tables
from runjournal.journal.errors import BadEvent
from runjournal.journal.events import timestamp

README = (ROOT / "README.md").read_text()

# A value of each field's kind, for a sample event; fields whose shape the projections read.
SHAPED: dict[str, Any] = {
    "usage": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 2,
    },
    "delta": [{"op": "replace", "path": "/n", "value": 1}],
    "forked_from": {"run_id": "abc", "seq": 3},
    "limits": {"max_cost_usd": "1"},
    "limit_overrides": {},
    "inputs": {"score": 2},
    "state": {"n": 0},
    "content": [{"type": "text", "text": "hi"}],
    "errors": ["wrong"],
    "baseline_code_hashes": ["c0de"],
    "outcome": "done",
}
BY_TYPE = {"str": "x y", "int": 1, "float": 1.5, "bool": False}


def sample(kind: str) -> dict[str, Any]:
    """Data of `kind` with every field set."""
    cls = kinds.KINDS[kind]
    data = {}
    for field in attrs.fields(cls):
        kind_of = str(field.type).split(" ")[0].split("[")[0]
        data[field.name] = SHAPED.get(field.name, BY_TYPE.get(kind_of, "v"))
    return data


@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_each_kind_is_its_own_data(kind: str) -> None:
    """The class builds exactly the data the writer checks; unknown or missing fields fail."""
    data = sample(kind)
    made = kinds.KINDS[kind](**data).as_json()
    assert made == data
    kinds.check(kind, data)
    with pytest.raises(BadEvent):
        kinds.check(kind, {**data, "extra": 1})
    required = [f.name for f in attrs.fields(kinds.KINDS[kind]) if f.default is attrs.NOTHING]
    if required:
        with pytest.raises(BadEvent):
            kinds.check(kind, {k: v for k, v in data.items() if k != required[0]})


def test_the_readme_table_is_the_kinds() -> None:
    assert kinds.markdown_table() in README


@pytest.mark.parametrize(("view", "kind"), list(tables.KIND_VIEWS.items()))
def test_each_view_has_its_kinds_fields_as_columns(tmp_path: Path, view: str, kind: str) -> None:
    with Journal.open(tmp_path / "j.db", create=True) as journal:
        columns = [row[1] for row in journal.conn.execute(f"PRAGMA table_info({view})")]
    extras = [c for c in tables.VIEW_EXTRAS.get(view, {}) if c not in kinds.fields(kind)]
    assert columns == ["run_id", "seq", "at", "step", *kinds.fields(kind), *extras]


@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_each_log_key_is_a_field_name(kind: str) -> None:
    """`journal logs` names each datum as the data does: a nested object's fields with a
    dotted path under its name; a field named like a fixed one under `data.`."""
    data = sample(kind)
    line = event_line(Event("abc123", 7, timestamp(0), kind, "score", data))
    fixed = ["at", "run_id", "seq", "step", "kind"]
    keys = list(logfmtkv.parse(line, strict=True))
    assert keys[:5] == fixed
    expected = []
    for name, value in data.items():
        shown = f"data.{name}" if name in fixed else name
        if isinstance(value, dict) and value:
            expected += [f"{shown}.{inner}" for inner in value]
        else:
            expected.append(shown)
    assert keys[5:] == expected


@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_the_projections_read_only_fields_the_kind_has(kind: str) -> None:
    """A projector reading a field its kind lacks would fail here, on a sample event."""
    event = Event("abc123", 2, timestamp(0), kind, "score", sample(kind))
    projection.project([event])


def test_actions_take_only_the_statuses_of_the_vocabulary(tmp_path: Path) -> None:
    found = set()
    for kind in ("action.intended", "action.done", "action.failed", "action.skipped"):
        changes = projection.project([Event("r", 2, timestamp(0), kind, "s", sample(kind))])
        found |= {entry["status"] for entry in changes.keys.values()}
    in_doubt = {**sample("action.failed"), "in_doubt": True}
    changes = projection.project([Event("r", 2, timestamp(0), "action.failed", "s", in_doubt)])
    found |= {entry["status"] for entry in changes.keys.values()}
    for outcome in ("done", "not_done"):
        data = {**sample("action.resolved"), "outcome": outcome}
        changes = projection.project([Event("r", 2, timestamp(0), "action.resolved", "s", data)])
        found |= {entry["status"] for entry in changes.keys.values()}
    assert found == set(kinds.ACTION_STATUSES)


def test_one_word_per_thing_no_event_kind_shares_its_name_with_an_exception() -> None:
    """`kinds.RunDone` is what a run.done event holds; an error raised is named otherwise."""
    from runjournal.journal import errors as journal_errors
    from runjournal.machine import errors as machine_errors

    data = {cls.__name__ for cls in kinds.KINDS.values()}
    raised = {
        name
        for module in (journal_errors, machine_errors)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert data & raised == set()
    spelled = {value for value in vars(events).values() if isinstance(value, str)}
    assert {cls.KIND for cls in kinds.KINDS.values()} <= spelled


def machine_names() -> set[str]:
    """Every public name machine/ defines at the top of a module (classes, functions, type
    aliases and constants alike), and the names it offers pipeline authors."""
    import runjournal.machine

    names = set(runjournal.machine.__all__)
    for path in (ROOT / "machine").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_one_word_per_thing_no_event_kind_shares_its_name_with_the_machine() -> None:
    """`kinds.TransitionEvent` is what a transition event holds; `machine.Transition` is what a
    step returns. No class of `kinds` is named like anything machine/ defines or offers."""
    data = {
        name
        for name, value in vars(kinds).items()
        if isinstance(value, type) and issubclass(value, kinds.Data)
    }
    assert "Transition" in machine_names()  # the test sees the alias in machine/transitions.py
    assert data & machine_names() == set()
