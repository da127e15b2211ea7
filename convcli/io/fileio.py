"""Byte-level output: atomic file writes and writes to stdout that survive short writes and pipes.

Every output convcli produces goes through :func:`atomic_write` (files) or :func:`write_stdout`
(``-o -``), so an interrupted or failed run never leaves a partial file behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
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


class OutputAppearedError(ConvcliError):
    """The output did not exist when the run was planned but does now (another process)."""


#: The token of the run (and job) whose files this thread is writing; "" outside such a block.
_RUN_TOKEN: ContextVar[str] = ContextVar("convcli_run_token", default="")


@contextmanager
def run_token(token: str) -> Iterator[None]:
    """Temporary files created in this thread inside the block carry ``token`` in their name.

    A job on a Dask cluster runs in a worker on any host, where its pid means nothing to the
    run; the token (the run's, and the job's index) lets the run find and remove what a
    worker that died left, whichever module of convcli was writing. "" changes nothing.
    """
    reset = _RUN_TOKEN.set(token)
    try:
        yield
    finally:
        _RUN_TOKEN.reset(reset)


def temp_prefix(pid: int | None = None, token: str | None = None) -> str:
    """Temporary names carry their writer's pid, so a dead process's leftovers can be found.

    Inside :func:`run_token` (or given ``token``) they carry the token too:
    ``.convcli-tmp-<pid>-<token>-...``.
    """
    writer = os.getpid() if pid is None else pid
    token = _RUN_TOKEN.get() if token is None else token
    return f"{TEMP_PREFIX}{writer}-{token}-" if token else f"{TEMP_PREFIX}{writer}-"


#: Names :func:`_create_temporary` tries before giving up (``tempfile.TMP_MAX``).
_TEMP_ATTEMPTS = 10_000
#: How :func:`_create_temporary` opens: a new file only, never through a symlink.
_TEMP_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def _create_temporary(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp(suffix, prefix, folder)``: a new file readable by its owner only.

    The same steps as the standard library's (an exclusive create, mode 0o600, no symlink
    followed, a new random name on a collision), without importing :mod:`tempfile`, which
    brings shutil, random and the compression modules: about 7 ms of a one-image run's
    start-up. Returns the open descriptor and the file's absolute name.
    """
    directory = os.path.abspath(folder)
    for _ in range(_TEMP_ATTEMPTS):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(name, _TEMP_FLAGS, 0o600), name
        except FileExistsError:
            continue
        except PermissionError:
            # Windows reports a directory of that name this way (as mkstemp allows for)
            if os.name == "nt" and os.path.isdir(directory) and os.access(directory, os.W_OK):
                continue
            raise
    raise FileExistsError(errno.EEXIST, "no usable temporary file name found", directory)


def _commit(temp_name: str, path: Path, *, replace: bool) -> None:
    """Rename the finished temporary file onto ``path``; without ``replace``, never clobber.

    A hard link refuses an existing name atomically, so a file that appeared after the run
    was planned is left alone. File systems without hard links get a check, then a rename.
    """
    if replace:
        os.replace(temp_name, path)
        return
    try:
        os.link(temp_name, path)
    except FileExistsError:
        raise OutputAppearedError(
            f"{path}: appeared while the run was going; not replaced (use --overwrite)"
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise OutputAppearedError(
                f"{path}: appeared while the run was going; not replaced (use --overwrite)"
            ) from None
        os.replace(temp_name, path)
        return
    os.unlink(temp_name)


@contextmanager
def replacing(path: Path, *, replace: bool = True) -> Iterator[BinaryIO]:
    """An open temporary file beside ``path``, renamed onto it when the block succeeds.

    The data is flushed to disk (fsync) and the file made readable (0o644) before the rename.
    On any failure, KeyboardInterrupt and termination signals included, the temporary file is
    removed, so either the complete new file exists or the old state is untouched. The
    temporary name is ``.convcli-tmp-<pid>-...``, or ``.convcli-tmp-<pid>-<token>-...``
    inside :func:`run_token` (see :func:`remove_stale_temporary_files` and
    :func:`remove_run_temporary_files`).
    Without ``replace`` an existing ``path`` is never replaced (:class:`OutputAppearedError`).
    The folder must exist; OSErrors are raised as they are.
    """
    fd, temp_name = _create_temporary(path.parent, temp_prefix(), path.suffix)
    try:
        # reopened by name: writers such as tifffile's want the file's name, not its fd
        os.close(fd)
        with open(temp_name, "r+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        _commit(temp_name, path, replace=replace)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def make_folder(path: Path) -> None:
    """Create the folder ``path`` will be written in.

    Raises:
        OutputError: it cannot be created (the message names ``path`` and the reason, e.g. a
            file standing where a folder is needed).
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


@contextmanager
def writing(path: Path, *, replace: bool = True) -> Iterator[BinaryIO]:
    """:func:`replacing`, with the folder made and OSErrors reported as :class:`OutputError`."""
    make_folder(path)
    try:
        with replacing(path, replace=replace) as handle:
            yield handle
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from exc


def atomic_write(path: Path, data: bytes | bytearray | memoryview, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The folder is created if needed. Either the complete new file exists or the old state is
    untouched (see :func:`replacing`).

    Raises:
        OutputError: the folder cannot be created or written, the disk is full, ... (the
            message names ``path`` and the reason).
        OutputAppearedError: ``replace`` is false and ``path`` exists.
    """
    with writing(path, replace=replace) as handle:
        handle.write(data)


def remove_temporary_files(folder: Path, pid: int) -> None:
    """Remove the temporary files process ``pid`` left in ``folder`` (it died or was stopped)."""
    prefix = temp_prefix(pid)
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)


def remove_run_temporary_files(folder: Path, token: str) -> int:
    """Remove the temporary files carrying ``token`` in ``folder``, whichever process wrote
    them (a Dask worker that died, on any host); return how many.

    ``token`` is a run's, or a run's and one job's (``<run>-i<index>``): the files of the
    run, or of that job only.
    """
    if not token:
        raise ValueError("remove_run_temporary_files needs a run's token")
    removed = 0
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            pid_text, _, rest = entry.name[len(TEMP_PREFIX) :].partition("-")
            if pid_text.isdigit() and rest.startswith(f"{token}-"):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporary_files(folder: Path) -> int:
    """Remove temporary files in ``folder`` whose writer process is gone; return how many.

    A run stopped by SIGKILL or a power cut cannot clean up after itself; a resumed run
    (``--skip-existing``) does it for the folders it writes to. Files of live processes
    (another convcli run) are left alone.
    """
    removed = 0
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            pid_text = entry.name[len(TEMP_PREFIX) :].partition("-")[0]
            if pid_text.isdigit() and _alive(int(pid_text)):
                continue
            with suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


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
