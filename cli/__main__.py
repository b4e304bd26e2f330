"""`python -m cli` runs the `journal` command."""

from cli import main

main()
