"""`python -m cli ...` runs the `brightrun` command line (the same as the console script)."""

from cli import main

main()
