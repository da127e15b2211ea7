"""The ``convcli`` command group and its error boundary: the one way a run ends.

:class:`ConvcliGroup` turns library errors into a single ``Error:`` line and exit code 2,
Ctrl-C into exit 130, SIGTERM and SIGHUP into 143 and 129 (after the same cleanup), and a
closed pipe into a quiet 141; ``--debug`` shows the traceback instead. The commands live in
:mod:`convcli.cli.run` (conv, pool), :mod:`convcli.cli.verify` and below (kernels).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

import click

from convcli.cli import report
from convcli.cli.run import conv, pool
from convcli.cli.verify import verify
from convcli.errors import ConvcliError, ExitCode, Terminated, one_line
from convcli.io.fileio import BrokenPipe
from convcli.io.quiet import library_noise_silenced
from convcli.kernels import presets

#: Signals that end a run the way Ctrl-C does (cleanup first), and the exit code of each.
TERMINATING = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGHUP: ExitCode.HANGUP}


class CommandError(click.ClickException):
    """A user-facing failure: ``Error: <message>`` on stderr and exit code 2.

    The message is made one inert line: file names, JSON keys and member names come from
    the input, and a newline or an ANSI escape in them must not forge output lines.
    """

    exit_code = ExitCode.TROUBLE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def _quiet_exit(code: int) -> NoReturn:
    """Exit without Python complaining about a closed stdout at shutdown."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
    raise SystemExit(code)


def _closed_standard_streams() -> set[int]:
    """Put /dev/null on standard descriptors the caller closed (``<&-``, ``>&-``, ``2>&-``).

    Otherwise the next file opened would take descriptor 1 or 2, and a report or an error
    line would be written into an output image. Python leaves ``sys.stdout`` (and the
    others) None for a closed descriptor; a text stream on /dev/null stands in for those,
    so writing a report there is harmless and the commands check the returned set instead.
    """
    closed: set[int] = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            stand_in = os.open(os.devnull, os.O_RDWR)
            if stand_in != fd:
                os.dup2(stand_in, fd)
                os.close(stand_in)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # lives as long as the process
        closed.add(1)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
        closed.add(2)
    if sys.stdin is None:
        closed.add(0)
    return closed


@contextmanager
def _signals_end_the_run() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, as Ctrl-C does.

    So ``timeout``, a job scheduler or a closed terminal unwind the run through the same
    cleanup: temporary files removed, worker processes stopped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = {number: signal.signal(number, raise_terminated) for number in TERMINATING}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


_exit_registered: list[bool] = []


def _quick_exit() -> None:
    """Let the process end without collecting every object it created, one cycle at a time.

    The interpreter's shutdown runs the cyclic garbage collector over all of NumPy's,
    Pillow's, click's and convcli's objects several times: about 40 ms of a one-image run,
    more than its convolution and its PNG writing together. Registered with :mod:`atexit`
    by the first command run in a process, this freezes them instead (``gc.freeze``): the
    other exit handlers still run (convcli's cleanup and multiprocessing's among them, and
    the standard streams are still flushed), and the operating system reclaims the memory.
    Only the finalizers of objects caught in reference cycles are skipped, which Python
    does not promise to run at exit anyway; convcli's files are closed, and its outputs
    renamed into place, before a command returns.
    """
    gc.freeze()


class ConvcliGroup(click.Group):
    """The error boundary: library errors become one ``Error:`` line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        if not _exit_registered:
            _exit_registered.append(True)
            atexit.register(_quick_exit)
        debug = bool(ctx.params.get("debug"))
        ctx.meta["convcli.closed"] = _closed_standard_streams()
        try:
            with _signals_end_the_run(), library_noise_silenced(debug):
                return super().invoke(ctx)
        except (BrokenPipe, BrokenPipeError):
            _quiet_exit(ExitCode.BROKEN_PIPE)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("Interrupted.", err=True)
            raise SystemExit(ExitCode.INTERRUPTED) from None
        except Terminated as stop:
            name = signal.Signals(stop.signum).name
            click.echo(f"Error: stopped by {name}; no partial output left", err=True)
            raise SystemExit(TERMINATING[signal.Signals(stop.signum)]) from None
        except ConvcliError as error:
            if debug:
                raise
            raise CommandError(str(error)) from error
        except (MemoryError, RecursionError) as error:
            if debug:
                raise
            raise CommandError(f"out of resources: {type(error).__name__}") from error
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click reports these itself
        except OSError as error:  # an I/O path the library did not map: still one line
            if debug:
                raise
            where = f"{error.filename}: " if error.filename is not None else ""
            raise CommandError(f"{where}{error.strerror or error}") from error
        except Exception as error:
            # A bug, not bad input; the user still gets one line and exit 2, not a traceback.
            if debug:
                raise
            raise CommandError(
                f"internal error: {type(error).__name__}: {error} "
                "(rerun with --debug for the traceback, and please report it)"
            ) from error


@click.group(cls=ConvcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convcli")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of Error: lines.")
def main(debug: bool) -> None:
    """Convolution and pooling for images and NumPy arrays, exact to PyTorch and TensorFlow.

    \b
    Examples:
      convcli conv photo.jpg -k sharpen -o sharp.jpg
      convcli conv scans/ -k gaussian:sigma=2 -o blurred/
      convcli pool batch.npy --size 2 -o pooled.npy
      convcli verify dump.npz
      convcli kernels
    """


@main.command(name="kernels")
@click.argument("preset", required=False, metavar="[NAME[:key=value,...]]")
def kernels_command(preset: str | None) -> None:
    """List the kernel presets, or print one as a kernel file (JSON).

    \b
    Examples:
      convcli kernels
      convcli kernels gaussian:size=7,sigma=1.5 > blur.json
      convcli conv photo.png -k blur.json -o blurred.png
    """
    if preset is not None:
        click.echo(presets.preset_kernel(preset).to_json())
        return
    report.stdout_console().print(report.presets_table(presets.preset_table()))


main.add_command(conv)
main.add_command(pool)
main.add_command(verify)
