"""Resume a run, holding still at a named point until told to go on.

    python resume_at.py TARGET DB RUN POINT MARKER GO

At POINT (see `machine.Checkpoint`) the process writes MARKER, then waits until the file GO
exists and goes on. Prints how the resume ended: `executed` or `already done`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from runjournal import Options
from runjournal.journal import Journal
from runjournal.machine import loader, runner


def main() -> None:
    target, db, run_id, point, marker, go = sys.argv[1:]

    def checkpoint(name: str) -> None:
        if name == point:
            Path(marker).write_text(name)
            while not Path(go).exists():
                time.sleep(0.01)

    loaded = loader.load(target)
    with Journal.open(db) as journal:
        outcome = runner.resume(
            journal,
            run_id,
            loaded.machine,
            target=loaded.location,
            code_hash=loaded.code_hash,
            options=Options(checkpoint=checkpoint),
        )
    print("executed" if outcome.executed else "already done")


if __name__ == "__main__":
    main()
