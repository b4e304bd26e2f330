"""Start a run that stops, for good, at a named point: a test then kills it with SIGKILL.

    python stop_at.py TARGET INPUT DB POINT MARKER

At POINT (see `machine.Checkpoint`) the process writes MARKER and waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runjournal import Options
from runjournal.journal import Journal
from runjournal.machine import loader, runner


def main() -> None:
    target, input_path, db, point, marker = sys.argv[1:]

    def checkpoint(name: str) -> None:
        if name == point:
            Path(marker).write_text(name)
            time.sleep(3600)

    loaded = loader.load(target)
    prepared = runner.prepare(loaded.machine, json.loads(Path(input_path).read_text()))
    with Journal.open(db, create=True) as journal:
        runner.start(
            journal,
            prepared,
            target=loaded.location,
            code_hash=loaded.code_hash,
            options=Options(checkpoint=checkpoint),
        )


if __name__ == "__main__":
    main()
