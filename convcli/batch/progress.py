"""Progress within one long image: the library says how many output rows are done, and
whoever runs it (the CLI draws a bar) listens.

The tile and band loops of :mod:`convcli.batch.stream`, :mod:`convcli.batch.tiling` and
:mod:`convcli.batch.process` call :func:`rows_done` as rows complete; :func:`reporting`
sets the listener for the block it wraps. A context variable, so worker processes, Dask
tasks and other threads report nowhere unless they set one.

>>> seen = []
>>> with reporting(lambda done, total: seen.append((done, total))):
...     rows_done(5, 10)
...     rows_done(10, 10)
>>> seen
[(5, 10), (10, 10)]
>>> rows_done(1, 2)  # no listener: nothing happens
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

#: Called with (output rows done, output rows in all) of the image being computed.
Listener = Callable[[int, int], None]

_LISTENER: ContextVar[Listener | None] = ContextVar("convcli_row_progress", default=None)


@contextlib.contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """Send the row progress of every image computed inside the block to ``listener``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def rows_done(done: int, total: int) -> None:
    """Report that ``done`` of ``total`` output rows of the current image are computed."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(done, total)
