"""`python -m cli` runs the `journal` command."""

from runjournal.cli import main

main()
