"""`python -m runjournal.cli` runs the `journal` command."""

from runjournal.cli import main

main()
