"""``python -m convcli`` runs the command line."""

from convcli.cli.main import main

main()
