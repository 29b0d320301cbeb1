"""`python -m memsnap`, the same as the `memsnap` command."""

from memsnap.cli import main

main()
