"""Keeping what C libraries print on file descriptor 2 off the terminal.

libtiff (inside Pillow) reports problems through its warning and error handlers, which write
lines such as "LZWDecode: Not enough data at scanline 0" straight to file descriptor 2, where
Python's warning filters and log handlers (:mod:`convcli.io.quiet`) cannot reach. convcli reports
the failure itself, as one ``Error:`` line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Final

__all__ = ["c_stderr_silenced"]


class _Fd2Silencer:
    """Points file descriptor 2 at the null device while any thread is inside :meth:`held`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = self._redirect()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._saved is not None:
                    os.dup2(self._saved, 2)
                    os.close(self._saved)
                    self._saved = None

    @staticmethod
    def _redirect() -> int | None:
        """Save fd 2 and point it at the null device; None if there is no fd 2 to silence."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()  # what Python wrote so far still goes to the real stderr
        try:
            saved = os.dup(2)
        except OSError:  # stderr closed: nothing can reach a terminal
            return None
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        return saved


_SILENCER: Final = _Fd2Silencer()


def c_stderr_silenced() -> contextlib.AbstractContextManager[None]:
    """Keep what C libraries (libtiff's warning and error handlers) print off the terminal.

    libtiff writes lines such as "LZWDecode: Not enough data at scanline 0" straight to file
    descriptor 2, where Python's warning filters and log handlers cannot reach; convcli reports
    the failure itself as one ``Error:`` line. Threads share one redirection: fd 2 is restored
    when the last of them leaves.
    """
    return _SILENCER.held()
