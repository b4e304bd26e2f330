"""The docs match the code: every command has help with an example, and the README shows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import ROOT, cli

from cli import cli as group

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
    start = README.index(f"### {title}")
    ends = [README.find(mark, start + 4) for mark in ("\n## ", "\n### ")]
    return README[start : min(e for e in ends if e != -1)]


def _blocks(title: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", _section(title), re.S)


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
    assert "claude-haiku-4-5  63" in result.stdout  # journal cost --by model, after the main job
    assert "rate_limit_error" in result.stdout
    assert len(list((tmp_path / "outbox").glob("T-*.json"))) > 0
