"""`python -m broker.cli …` is the `escrow` command."""

from broker.cli import main

main()
