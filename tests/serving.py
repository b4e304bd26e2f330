"""`journal serve` started for a test: a real process on a free port, its URL and token read
from what it prints."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
from conftest import journal_command


@attrs.frozen
class Served:
    url: str
    """`http://127.0.0.1:PORT` (no trailing slash)."""
    token: str | None
    process: subprocess.Popen[str]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def serving(db: Path | str, *args: str, cwd: Path | None = None) -> Iterator[Served]:
    """`journal serve --db DB --port 0 ARGS` until the block ends."""
    process = subprocess.Popen(
        [*journal_command(), "serve", "--db", str(db), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r" at (http://\S+?)/?$", first.strip())
        if found is None:
            _, err = process.communicate(timeout=30)
            raise AssertionError(f"journal serve did not start: {first!r} {err!r}")
        second = process.stdout.readline()
        token = re.search(r"login\?token=(\S+)", second)
        yield Served(found.group(1), token.group(1) if token else None, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
