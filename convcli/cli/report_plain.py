"""The rows table of conv and pool drawn without rich, exactly as rich would draw it.

Importing rich takes about 40 ms, a seventh of a one-image run's wall time, for a table of one
row. :func:`plain_rows_table` writes the characters a :func:`~convcli.cli.report.stderr_console`
printing :func:`~convcli.cli.report.rows_table` writes, for the ordinary case: no caption,
ASCII cells, a table that fits the width, a UTF-8 stream on a POSIX system. For anything
else it returns None and rich draws the table. ``tests/test_startup.py`` checks the text
against rich's, byte for byte, on terminals and pipes.
"""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from convcli.batch.pipeline import Row
from convcli.errors import one_line

__all__ = ["ROW_COLUMNS", "plain_rows_table", "row_cells", "write_plain"]

#: The columns of the rows table: header, justification and the smallest width rich may
#: give the column. "clipped" is shown only when some row clipped values.
ROW_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("input", "left", 12),
    ("shape in -> out", "left", 0),
    ("dtype", "left", 0),
    ("operation", "left", 0),
    ("time", "right", 0),
    ("clipped", "right", 0),
)

#: rich's HEAVY_HEAD box, its default for tables: header separator, rule, rule crossing,
#: row separator (the outer edges are not drawn: ``show_edge=False``).
_HEADER_BAR, _RULE, _RULE_CROSS, _ROW_BAR = "\u2503", "\u2501", "\u2547", "\u2502"
#: How rich starts and ends a bold segment (the header's "table.header" style).
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"
#: Variables rich reads that change what it draws, besides COLUMNS and TERM: with any of
#: them set, rich draws.
RICH_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "JUPYTER_COLUMNS")


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape) if shape else "scalar"


def row_cells(row: Row, clipped: bool) -> list[str]:
    """The cells of ``row`` in the rows table; ``clipped`` adds the clipped count.

    The first cell, the input's name, is :func:`~convcli.errors.one_line`'d; rich shows it
    as inert text, and parses markup in the others.
    """
    dtype = row.dtype_in if row.dtype_in == row.dtype_out else f"{row.dtype_in} -> {row.dtype_out}"
    cells = [
        one_line(row.name),
        f"{_shape(row.shape_in)} -> {_shape(row.shape_out)}",
        dtype,
        row.operation,
        f"{row.seconds * 1000:.1f} ms",
    ]
    if clipped:
        cells.append(f"{row.clipped:,}")
    return cells


def _ascii(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _rich_width(stream: TextIO, environ: Mapping[str, str]) -> int:
    """The width the stderr console has: wide on a pipe, else what rich itself finds."""
    from convcli.cli.report import PIPE_WIDTH

    if not stream.isatty() and "COLUMNS" not in environ:
        return PIPE_WIDTH
    width = 0
    for descriptor in (0, 1, 2):  # rich asks stdin, stdout and stderr in turn
        try:
            width = os.get_terminal_size(descriptor).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = environ.get("COLUMNS", "")
    if columns.isdigit():
        width = int(columns)
    return width or 80


def _drawable(stream: TextIO, environ: Mapping[str, str]) -> bool | None:
    """Whether rich would style the header on ``stream``; None when it might draw otherwise."""
    if sys.platform == "win32" or hasattr(builtins, "get_ipython"):
        return None  # legacy consoles, Jupyter
    if any(name in environ for name in RICH_VARIABLES):
        return None
    if getattr(sys.stdin, "__module__", "").startswith("idlelib"):
        return None
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower()
    if not encoding.startswith("utf"):
        return None  # rich would draw an ASCII box
    try:
        terminal = stream.isatty()
    except ValueError:  # a closed stream
        return None
    if terminal and environ.get("TERM", "").strip().lower() in ("dumb", "unknown"):
        return None
    return terminal


def plain_rows_table(
    rows: Sequence[Row],
    *,
    more: int = 0,
    stream: TextIO,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """What the stderr console writes for ``rows_table(rows, more=more)``, or None.

    None unless the table is the ordinary one: rows and no caption (``more`` 0), ASCII
    cells with no ``[`` or ``:`` where rich would read markup or emoji codes, a table that
    fits the console's width, and a stream rich would draw on plainly or with a bold header
    (see :func:`_drawable`). ``environ`` defaults to ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    if more or not rows:
        return None
    bold = _drawable(stream, environ)
    if bold is None:
        return None
    clipped = any(row.clipped for row in rows)
    columns = ROW_COLUMNS if clipped else ROW_COLUMNS[:-1]
    body = [row_cells(row, clipped) for row in rows]
    for cells in body:
        if not all(_ascii(cell) for cell in cells):
            return None  # rich measures wide and combining characters its own way
        if any("[" in cell or ":" in cell for cell in cells[1:]):
            return None
    widths = [
        max(minimum, len(header), *(len(cells[index]) for cells in body))
        for index, (header, _, minimum) in enumerate(columns)
    ]
    if sum(widths) + 3 * (len(widths) - 1) > _rich_width(stream, environ):
        return None  # rich would fold or shrink columns
    last = len(columns) - 1

    def line(cells: Sequence[str], bar: str, styled: bool) -> str:
        parts = []
        layout = zip(cells, columns, widths, strict=True)
        for index, (cell, (_, justify, _), width) in enumerate(layout):
            pieces = [
                " " if index else "",
                cell.rjust(width) if justify == "right" else cell.ljust(width),
                " " if index < last else "",
            ]
            if styled:  # rich styles the padding apart from the text
                pieces = [_BOLD + piece + _RESET if piece else "" for piece in pieces]
            parts.append("".join(pieces))
        return bar.join(parts)

    rule = _RULE_CROSS.join(
        _RULE * (width + (index > 0) + (index < last)) for index, width in enumerate(widths)
    )
    lines = [
        line([header for header, _, _ in columns], _HEADER_BAR, bold),
        rule,
        *(line(cells, _ROW_BAR, False) for cells in body),
    ]
    return "\n".join(lines) + "\n"


def write_plain(text: str, stream: TextIO) -> None:
    """Write ``text`` to ``stream`` as a rich console writes, a closed pipe included.

    rich ends the process with status 1 (stdout on /dev/null) when the pipe it writes to is
    closed; this does the same, so the outcome does not depend on which of the two drew.
    """
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
