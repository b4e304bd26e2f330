"""runjournal: an LLM pipeline as a state machine whose every step is journaled in SQLite.

This is the face a pipeline author imports: `from runjournal import Machine, Context, run`.
It lists what `runjournal.machine` offers; the layers underneath are `runjournal.journal` (the
record: the event log, its folds and views), `runjournal.machine` (the behaviour: machines,
the runner, the model) and `runjournal.cli` (the `journal` command).

In the repository the three layers are the top-level folders journal/, machine/ and cli/;
the folder beside this file links to them so that tools see one package while developing,
and the wheel installs them here, under this package, so that nothing named `journal`,
`machine` or `cli` is installed at the top level to collide with a user's own files.
"""

from typing import TYPE_CHECKING

from runjournal.machine import *  # noqa: F403  (the face is machine's list, kept in one place)
from runjournal.machine import __all__ as __all__

if TYPE_CHECKING:
    __version__: str
else:

    def __getattr__(name: str) -> str:
        # The version is read when asked for: importlib.metadata is slow to import.
        if name != "__version__":
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib.metadata import version

        return version("runjournal")
