"""Rich tables on stderr for conv and pool: the only place the filtering commands touch rich.

rich is imported by the functions that draw, not with this module: a run with ``-q`` or
``--json`` never draws, and importing rich takes about 40 ms. The ordinary rows table of a
run is drawn without rich by :mod:`convcli.cli.report_plain`, character for character.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from convcli.batch.pipeline import Row
from convcli.batch.runner import Summary
from convcli.cli.report_plain import row_cells
from convcli.errors import one_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

#: Jobs of a batch whose rows are shown (the first ones); the summary counts the rest.
TABLE_ROWS = 20
#: Failures listed on stderr; --json lists them all.
FAILURES_SHOWN = 50


#: Width of tables written to a file or a pipe (rich would assume 80 columns and wrap paths).
PIPE_WIDTH = 160


def _console(*, stderr: bool) -> Console:
    """A console that keeps the terminal's width, or is wide when writing to a file or pipe."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, highlight=False, width=PIPE_WIDTH if wide else None)


def stderr_console() -> Console:
    """A console on stderr, so that stdout stays clean for ``-o -`` and ``--json``."""
    return _console(stderr=True)


def stdout_console() -> Console:
    """A console on stdout, for reports and listings that are the command's main output."""
    return _console(stderr=False)


def presets_table(rows: Sequence[tuple[str, str, str, str, str]]) -> Table:
    """``convcli kernels``: one line per preset."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("name", "size", "pad mode", "parameters", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def inert(text: str) -> Text:
    """``text`` as plain text: file names may hold ``[markup]``, ANSI escapes or newlines.

    Unprintable characters are shown escaped (``\\n``, ``\\x1b``), so a name cannot forge
    table lines or restyle the terminal.
    """
    from rich.text import Text

    return Text(one_line(text))


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape) if shape else "scalar"


def rows_table(rows: Sequence[Row], title: str | None = None, *, more: int = 0) -> Table:
    """One line per array or image processed: input, shapes, dtypes, operation, time.

    ``more`` counts rows of the same run not given (a batch keeps only its first ones).
    """
    from rich.table import Table

    caption = f"... and {more:,} more (--json lists every item)" if more else None
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("input", overflow="fold", min_width=12)
    table.add_column("shape in -> out", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("operation", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    clipped = any(row.clipped for row in rows)
    if clipped:
        table.add_column("clipped", justify="right")
    for row in rows:
        _, *others = row_cells(row, clipped)  # the cells report_plain draws without rich
        cells: list[str | Text] = [inert(row.name), *others]
        table.add_row(*cells)
    return table


def summary_table(summary: Summary) -> Table:
    from rich.table import Table

    table = Table(title="summary", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("processed", "skipped", "failed", "ignored", "time", "items/s"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{summary.processed:,}",
        f"{summary.skipped:,}",
        f"[red]{len(summary.failed):,}[/red]" if summary.failed else "0",
        f"{summary.ignored:,}",
        f"{summary.seconds:.2f} s",
        f"{summary.rate:.1f}",
    )
    return table


def failures_table(failures: Sequence[tuple[str, str]], limit: int = FAILURES_SHOWN) -> Table:
    """The failed items (input, reason), the first ``limit`` of them."""
    from rich.table import Table

    more = len(failures) - limit
    table = Table(
        title="failed",
        title_justify="left",
        caption=f"... and {more:,} more (--json lists every failure)" if more > 0 else None,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("input", overflow="fold")
    table.add_column("reason", overflow="fold")
    for name, reason in failures[:limit]:
        table.add_row(inert(name), inert(reason))
    return table


@contextmanager
def progress(total: int, *, console: Console | None, enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress bar for ``total`` items (done/total, rate, elapsed, ETA) while the block runs.

    Yields the function to call once per finished item. Nothing is drawn unless ``enabled``
    (callers enable it for a terminal, not for -q or --json); the bar is removed at the end,
    leaving the summary table to tell the outcome.
    """
    if not enabled or console is None:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(*_columns("items"), console=console, transient=True) as bar:
        task = bar.add_task("processing", total=total)
        yield lambda: bar.advance(task)


#: Seconds one image must have been computing before its bar appears: a quick one shows none.
ROW_PROGRESS_DELAY = 0.5


@contextmanager
def row_progress(
    name: str, *, console: Console | None, enabled: bool, delay: float | None = None
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for one long image: output rows done/total, rows/s, elapsed, ETA.

    Yields the listener for :func:`convcli.batch.progress.reporting`, called with (rows
    done, rows in all). The bar appears once the image has taken ``delay`` seconds and is
    not done (default ROW_PROGRESS_DELAY), and is removed at the end; nothing is drawn
    unless ``enabled``. Without a ``console`` one on stderr is made when the bar first
    draws, so a quick image never imports rich.
    """
    if not enabled:
        yield lambda done, total: None
        return
    import time

    wait = ROW_PROGRESS_DELAY if delay is None else delay
    started = time.monotonic()
    shown: list[tuple[Any, Any]] = []  # (rich Progress, its task), once drawn

    def listen(done: int, total: int) -> None:
        if not shown:
            if done >= total or time.monotonic() - started < wait:
                return
            from rich.progress import Progress

            drawn_on = console if console is not None else stderr_console()
            bar = Progress(*_columns("rows"), console=drawn_on, transient=True)
            bar.start()
            shown.append((bar, bar.add_task(name, total=total)))
        bar, task = shown[0]
        bar.update(task, completed=done, total=total)

    try:
        yield listen
    finally:
        if shown:
            shown[0][0].stop()


def _columns(unit: str) -> tuple[Any, ...]:
    """The bar's columns: what, bar, done/total, rate in ``unit``/s, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Units per second, once rich has seen enough to estimate it."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            text = "" if speed is None else f"{speed:,.1f} {unit}/s"
            return Text(text, style="progress.data.speed")

    return (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
