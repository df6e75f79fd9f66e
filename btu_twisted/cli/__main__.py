"""`python -m btu_twisted.cli`: the `btu` command without its console script."""

from btu_twisted.cli import main

main()
