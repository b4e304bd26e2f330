"""runjournal's face: the `journal` command (`runjournal.cli.main`). Nothing imports this package.

Each command parses its arguments, calls `runjournal.journal` or `runjournal.machine`, and
prints; the commands live in modules by what they do and are attached in `cli/main.py`,
explicitly.
"""

from runjournal.cli.main import main

__all__ = ["main"]
