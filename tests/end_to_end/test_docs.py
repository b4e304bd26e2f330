"""The docs match the code: every command has help with an example, and the README shows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest
from conftest import ROOT, cli

from runjournal.cli.main import cli as group
from runjournal.journal import Journal
from runjournal.machine import Options, offline, runner

README = (ROOT / "README.md").read_text()
COMMANDS = sorted(group.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = group.commands[name]
    assert command.help, f"journal {name} has no help"
    assert "Example:" in command.help
    assert f"journal {name}" in command.help.split("Example:")[1]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"journal {name}\b", README), f"the README never shows journal {name}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_runs_in_a_real_process(name: str) -> None:
    result = cli(name, "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout


def test_every_readme_option_exists() -> None:
    """Each `journal CMD --flag` in the README is a flag that command takes."""
    for name, rest in re.findall(r"journal (\w+)([^\n`|;&#]*)", README):
        if name not in group.commands:
            continue
        command = group.commands[name]
        words = rest.split()
        if isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words[0]]  # `journal budget set ...`
        flags = {
            opt for param in command.params if isinstance(param, click.Option) for opt in param.opts
        }
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert flag in flags, f"the README gives journal {name} {flag}, which it does not take"


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    head = README[:1500]
    assert ".venv/bin/journal run" in head
    assert ".venv/bin/pytest" in head


def _section(title: str) -> str:
    found = re.search(rf"^###? {re.escape(title)}", README, re.M)
    assert found is not None, f"the README has no section {title!r}"
    start = found.start()
    ends = [README.find(mark, start + 4) for mark in ("\n## ", "\n### ")]
    return README[start : min(e for e in ends if e != -1)]


def _blocks(title: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", _section(title), re.S)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    """The worked example's shell blocks, run in order: run, kill, resume, query, replay, ask."""
    main_job = re.search(r"\.venv/bin/(journal run .*)", README)
    assert main_job is not None
    blocks = [
        b
        for title in ("Run it, kill it, resume it", "Query it with SQL", "Replay it")
        for b in _blocks(title)
    ]
    blocks += [main_job.group(1), *_blocks("Ask a model")]
    script = "set -e\n" + "\n".join(blocks)
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JOURNAL_DB", None)
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "interrupted" in result.stdout
    assert " done: " in result.stdout
    written = (tmp_path / "lines.out").read_text().splitlines()
    assert {line.split()[0] for line in written} == {f"item-{i}" for i in range(10)}
    assert "item-1,long" not in result.stdout  # --json was asked for; rows are objects
    assert '"kind": "decision"' in result.stdout
    assert "claude-haiku-5-5  62" in result.stdout  # journal cost --by model, after the main job
    # `select error_type, count(*) ... group by 1` over a chaos run: the faults it retried.
    assert re.search(r"^(overloaded_error|rate_limit_error|timeout) +[0-9]+$", result.stdout, re.M)
    assert len(list((tmp_path / "outbox").glob("T-*.json"))) > 0


def _python(title: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", _section(title), re.S)


def test_the_first_pipeline_is_the_one_tested() -> None:
    """The README's first pipeline and its test are, to the byte, tests/typing's files: the
    suite runs that test (with the plugin), and mypy checks both files, with no casts."""
    (pipeline,), (test,) = _python("Your first pipeline"), _python("Test it offline")
    assert pipeline == (ROOT / "tests" / "typing" / "tickets.py").read_text()
    assert test == (ROOT / "tests" / "typing" / "test_tickets.py").read_text()


def test_the_first_pipeline_runs_as_written(tmp_path: Path) -> None:
    """Saved from the README into an empty folder: `python tickets.py`, the SQL and `journal
    runs` as the README gives them, then pytest finding the plugin's fixtures there."""
    (pipeline,), (test,) = _python("Your first pipeline"), _python("Test it offline")
    (tmp_path / "tickets.py").write_text(pipeline)
    (tmp_path / "test_tickets.py").write_text(test)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JOURNAL_DB", None)
    (commands,) = re.findall(r"```bash\n(.*?)```", _section("Your first pipeline"), re.S)
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split(maxsplit=2)
    assert first[1] == "done" and first[2].startswith("(")
    assert re.search(rf"^{first[0]}\s+queue\s+done\s", result.stdout, re.M)
    assert "item  outcome  reason" in result.stdout
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tickets.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def _in_order(excerpt: str, source: Path) -> None:
    """Every line of `excerpt` (but imports) is a line of `source`, in the same order."""
    lines = iter(source.read_text().splitlines())
    for line in excerpt.splitlines():
        if not line.strip() or line.startswith(("import ", "from ")):
            continue
        assert any(line == other for other in lines), f"{source.name} has no {line!r} here"


@pytest.mark.parametrize(
    ("title", "fixture"),
    [
        ("Write a machine", "lines.py"),
        ("Ask a model", "triage.py"),
        ("Stop it: limits, budgets, kill", "triage.py"),
        ("Half price: ask in a Message Batch", "triage_batch.py"),
    ],
)
def test_readme_excerpts_are_the_fixtures_code(title: str, fixture: str) -> None:
    (excerpt,) = _python(title)
    _in_order(excerpt, ROOT / "fixtures" / fixture)


def test_the_fake_model_block_runs() -> None:
    (block,) = _python("The fake model")
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["options"].models is not None  # type: ignore[attr-defined]


def test_the_map_block_runs(tmp_path: Path) -> None:
    """The `ctx.map` block, on the first pipeline's types: every ticket scored, in order."""
    (pipeline,), (block,) = _python("Your first pipeline"), _python("Many at once")
    module = types.ModuleType("readme_at_once")  # cattrs reads the annotations in it
    sys.modules[module.__name__] = module
    exec(compile(pipeline + "\n" + block, "README.md", "exec"), module.__dict__)
    scope = module.__dict__

    tickets = [{"id": f"T-{i}", "subject": f"ticket {i}"} for i in range(20)]
    prepared = runner.prepare(scope["at_once"], tickets)
    with Journal.open(tmp_path / "journal.db", create=True) as journal:
        options = Options(models=offline("none"))
        outcome = runner.start(journal, prepared, target="t", code_hash="0", options=options)
        calls = [
            e.data["call"] for e in journal.events(outcome.run.run_id, kinds=("model.answered",))
        ]
    assert outcome.run.status == "done"
    assert sorted(calls) == sorted(f"T-{i}/T-{i}" for i in range(20))
    urgent = outcome.state.urgent
    assert list(urgent) == sorted(urgent, key=lambda t: int(t[2:]))  # in the items' order
