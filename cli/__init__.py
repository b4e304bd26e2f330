"""runjournal's face: the `journal` command (`cli.main`). Nothing imports this package.

Each command parses its arguments, calls `journal` or `machine`, and prints; the commands live
in modules by what they do and are attached in `cli.main`, explicitly.
"""

from runjournal.cli.main import main

__all__ = ["main"]
