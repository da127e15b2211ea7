"""``python -m convcli`` runs the command line."""

from convcli.cli import main

main()
