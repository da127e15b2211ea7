"""Keeping third-party warnings and log records off stderr while a command runs.

convcli reports every problem itself, as one ``Error:`` line (or a row of a batch's failure
table). Decoders and numpy would add their own lines: tifffile logs what it recovers from
("invalid offset to first page"), Pillow warns about odd metadata, numpy warns "invalid value
encountered" when NaN inputs propagate (as they do in PyTorch). The command line silences
them for the duration of a run, in its own process and in each worker process, unless
``--debug`` asks to see everything.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

#: Loggers of the libraries convcli decodes with; tifffile's log to stderr by default.
LIBRARY_LOGGERS = ("tifffile", "imageio", "PIL")


@contextlib.contextmanager
def library_noise_silenced(debug: bool = False) -> Iterator[None]:
    """Ignore all warnings and drop the decoders' log records inside the block.

    The warning filters are process-wide, so threads started inside the block are covered
    too; worker processes must enter the block themselves. With ``debug`` nothing changes.
    """
    if debug:
        yield
        return
    silent = logging.NullHandler()  # a handler, so logging's last-resort stderr one is unused
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for logger in loggers:
        logger.addHandler(silent)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger in loggers:
            logger.removeHandler(silent)
