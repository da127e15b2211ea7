"""The command line: the only place click and rich live.

:mod:`~convcli.cli.main` is the group and its error boundary, :mod:`~convcli.cli.run` the
conv and pool commands (their shared flags in :mod:`~convcli.cli.options`),
:mod:`~convcli.cli.verify` the verify command, :mod:`~convcli.cli.params` the click parameter
types, :mod:`~convcli.cli.report` and :mod:`~convcli.cli.report_verify` the rich tables.
"""

from convcli.cli.main import main

__all__ = ["main"]
