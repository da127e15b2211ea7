"""Byte-level output: atomic file writes and writes to stdout that survive short writes and pipes.

Every output convcli produces goes through :func:`atomic_write` (files) or :func:`write_stdout`
(``-o -``), so an interrupted or failed run never leaves a partial file behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from convcli.errors import ConvcliError

#: Prefix of temporary files; anything starting with it in an output folder is ours.
TEMP_PREFIX = ".convcli-tmp-"


class OutputExistsError(ConvcliError):
    """The output file exists and neither --overwrite nor --skip-existing was given."""


def check_output_path(
    path: Path, *, inputs: tuple[Path, ...] = (), overwrite: bool = False
) -> None:
    """Refuse to write ``path`` if it is one of ``inputs`` or exists without ``overwrite``.

    Raises:
        ConvcliError: ``path`` resolves to an input file (inputs are never overwritten).
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    resolved = path.resolve()
    for source in inputs:
        if source.exists() and resolved == source.resolve():
            raise ConvcliError(f"{path}: refusing to overwrite an input file")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")
    if path.exists() and path.is_dir():
        raise ConvcliError(f"{path}: output is a folder, expected a file name")


def atomic_write(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is removed on any failure (including KeyboardInterrupt), so either the
    complete new file exists or the old state is untouched.
    """
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


class BrokenPipe(Exception):  # noqa: N818 - a signal-like condition, not an error to report
    """The reader of stdout went away (``| head``); the caller ends quietly."""


def write_stdout(data: bytes | bytearray | memoryview, fd: int = 1) -> None:
    """Write all of ``data`` to file descriptor ``fd``, looping on short writes.

    Raises:
        BrokenPipe: the reading end was closed (EPIPE); callers exit quietly.
    """
    view = memoryview(data).cast("B")
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BrokenPipeError as exc:
            raise BrokenPipe() from exc
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise BrokenPipe() from exc
            raise
        view = view[written:]
