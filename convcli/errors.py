"""Exceptions, exit codes and message helpers shared by the library and the command line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, as diff(1) and h5diff use them."""

    #: Everything succeeded (verify: all pairs match).
    OK = 0
    #: verify found differences, or some items of a batch failed (the rest were written).
    DIFFERENCES = 1
    #: Usage error, or nothing could be done: bad kernel, unreadable input, unsafe size.
    TROUBLE = 2
    #: The terminal hung up: SIGHUP (128 + 1).
    HANGUP = 129
    #: Interrupted by Ctrl-C (128 + SIGINT).
    INTERRUPTED = 130
    #: The reader of stdout went away (``| head``): 128 + SIGPIPE, what ``cat`` reports.
    BROKEN_PIPE = 141
    #: Stopped by SIGTERM (``timeout``, a job scheduler, ``kill``): 128 + 15.
    TERMINATED = 143


class Terminated(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """SIGTERM or SIGHUP arrived; raised in the main thread so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class ConvcliError(ValueError):
    """Base class of every error convcli raises on bad input; the message is user-facing."""


class KernelError(ConvcliError):
    """A kernel file, array or preset is malformed."""


class InputError(ConvcliError):
    """An input file cannot be read safely (corrupt, unsupported, too large, pickled)."""


class LimitError(ConvcliError):
    """Work was refused because it would exceed a size limit (checked before allocating)."""


def one_line(message: str) -> str:
    """``message`` with control and other unprintable characters shown as escapes (``\\n``).

    File names, JSON keys and member names come from the input: a newline or an ANSI escape
    in them must not forge output lines or restyle the terminal.
    """
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode() for char in message
    )


def join_or(choices: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``, for messages that list the allowed values."""
    return ", ".join(choices[:-1]) + " or " + choices[-1]
