"""Byte-level output: atomic file writes and writes to stdout that survive short writes and pipes.

Every output convcli produces goes through :func:`atomic_write` (files) or :func:`write_stdout`
(``-o -``), so an interrupted or failed run never leaves a partial file behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from convcli.errors import ConvcliError

#: Prefix of temporary files; anything starting with it in an output folder is ours.
TEMP_PREFIX = ".convcli-tmp-"


class OutputExistsError(ConvcliError):
    """The output file exists and neither --overwrite nor --skip-existing was given."""


class OutputError(ConvcliError):
    """An output could not be written (a missing or read-only folder, a full disk, ...)."""


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


@contextmanager
def replacing(path: Path, *, prefix: str = TEMP_PREFIX) -> Iterator[BinaryIO]:
    """An open temporary file beside ``path``, renamed onto it when the block succeeds.

    The data is flushed to disk (fsync) and the file made readable (0o644) before the rename.
    On any failure, KeyboardInterrupt included, the temporary file is removed, so either the
    complete new file exists or the old state is untouched. The temporary name starts with
    ``prefix`` (batch workers add their pid, so a dead worker's leftovers can be found). The
    folder must exist; OSErrors are raised as they are.
    """
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def atomic_write(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The folder is created if needed. Either the complete new file exists or the old state is
    untouched (see :func:`replacing`).

    Raises:
        OutputError: the folder cannot be created or written, the disk is full, ... (the
            message names ``path`` and the reason).
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        files = [p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()]
        blocker = files[0] if files else None
        if blocker is None:
            raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc
        raise OutputError(f"{path}: cannot write: {blocker} is a file, not a folder") from exc
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc
    try:
        with replacing(path) as handle:
            handle.write(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    """strerror, plus the path it concerns unless that is our temporary file."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and not os.path.basename(str(exc.filename)).startswith(TEMP_PREFIX):
        return f"{reason} ({exc.filename})"
    return reason


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
            raise OutputError(f"<stdout>: cannot write: {_reason(exc)}") from exc
        view = view[written:]
