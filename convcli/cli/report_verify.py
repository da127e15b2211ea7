"""Rich rendering of ``convcli verify`` results.

The report is verify's main output, so the command prints it on stdout (like diff and
h5diff); with ``--json`` stdout holds only the JSON and notes go to stderr.

Layout: one pair gets a detailed two-column table (shapes, dtypes, tolerances, max |diff|
and where, max relative diff, mismatched count and %, verdict). Several pairs (an .npz, a
folder) get one table with a row per pair and a summary line ("3 of 120 pairs differ"); past
:data:`MAX_ROWS` pairs only the differing rows are listed. ``--show N`` adds a table of the N
worst elements: for a single pair always, for several pairs for each pair that differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from convcli.verify.compare import Comparison, Element
from convcli.verify.run import HeatMap

__all__ = [
    "MAX_ROWS",
    "comparison_table",
    "heatmap_note",
    "pairs_table",
    "problem_lines",
    "render_comparisons",
    "summary_line",
    "worst_heading",
    "worst_table",
]

#: Most rows of the per-pair table before matching pairs are left out of it.
MAX_ROWS = 50


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _index(index: tuple[int, ...] | None) -> str:
    if index is None:
        return "-"
    return "(" + ", ".join(str(i) for i in index) + ")"


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    return "x".join(str(n) for n in shape) if shape else "scalar"


def _pair_text(actual: str, expected: str) -> str:
    return actual if actual == expected else f"{actual} vs {expected}"


def _mismatched(comparison: Comparison) -> str:
    if comparison.total == 0:
        return f"{comparison.mismatched:,}"
    percent = 100.0 * comparison.mismatched / comparison.total
    return f"{comparison.mismatched:,} of {comparison.total:,} ({percent:.3g}%)"


def _mismatched_short(comparison: Comparison) -> str:
    if comparison.total == 0:
        return f"{comparison.mismatched:,}"
    percent = 100.0 * comparison.mismatched / comparison.total
    return f"{comparison.mismatched:,} ({percent:.3g}%)"


def _verdict(comparison: Comparison, *, with_problem: bool = True) -> Text:
    if comparison.match:
        return Text("MATCH", style="bold green")
    text = Text("DIFFER", style="bold red")
    if comparison.problem and with_problem:
        text.append(f" ({comparison.problem})", style="red")
    return text


def comparison_table(comparison: Comparison) -> Table:
    """A two-column table describing one pair in full."""
    table = Table(show_header=False, show_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("name", comparison.name)
    table.add_row(
        "shape",
        _pair_text(_shape(comparison.shape_actual), _shape(comparison.shape_expected)),
    )
    table.add_row(
        "dtype", _pair_text(comparison.dtype_actual or "-", comparison.dtype_expected or "-")
    )
    table.add_row("tolerance", f"rtol {_number(comparison.rtol)}, atol {_number(comparison.atol)}")
    where = f" at {_index(comparison.max_abs_index)}" if comparison.max_abs_index else ""
    table.add_row("max |diff|", _number(comparison.max_abs_diff) + where)
    table.add_row("max rel diff", _number(comparison.max_rel_diff))
    table.add_row("mismatched", _mismatched(comparison))
    table.add_row("verdict", _verdict(comparison))
    return table


def pairs_table(comparisons: Sequence[Comparison], *, max_rows: int = MAX_ROWS) -> Table:
    """One row per pair; past ``max_rows`` pairs, only the differing ones are listed.

    Why a pair is not comparable ("shape mismatch", "missing in expected", ...) is not in
    the table but in :func:`problem_lines`, to keep the table narrow.
    """
    listed = list(comparisons)
    caption = None
    if len(listed) > max_rows:
        listed = [comparison for comparison in comparisons if not comparison.match]
        hidden = len(comparisons) - len(listed)
        caption = f"{hidden:,} matching pairs not listed"
    table = Table(
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("name", overflow="fold", min_width=8)
    table.add_column("shape", overflow="fold")
    table.add_column("dtype", overflow="fold")
    table.add_column("max |diff|", justify="right", no_wrap=True)
    table.add_column("at", no_wrap=True)
    table.add_column("max rel", justify="right", no_wrap=True)
    table.add_column("mismatched", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for comparison in listed:
        table.add_row(
            comparison.name,
            _pair_text(_shape(comparison.shape_actual), _shape(comparison.shape_expected)),
            _pair_text(comparison.dtype_actual or "-", comparison.dtype_expected or "-"),
            _number(comparison.max_abs_diff),
            _index(comparison.max_abs_index),
            _number(comparison.max_rel_diff),
            _mismatched_short(comparison),
            _verdict(comparison, with_problem=False),
        )
    return table


def problem_lines(comparisons: Sequence[Comparison]) -> list[Text]:
    """``"NAME: missing in expected"`` for each pair that is not comparable."""
    return [
        Text.assemble((comparison.name, "bold"), ": ", (comparison.problem, "red"))
        for comparison in comparisons
        if comparison.problem
    ]


def worst_table(comparison: Comparison) -> Table:
    """The worst elements of a pair, worst first, each marked if outside the tolerance."""
    table = Table(show_edge=False)
    table.add_column("index")
    table.add_column("actual", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("|diff|", justify="right")
    table.add_column("")
    for element in comparison.worst:
        table.add_row(
            _index(element.position),
            _number(element.actual),
            _number(element.expected),
            _number(element.diff),
            Text("ok", style="green") if _within(element, comparison) else Text("x", "red"),
        )
    return table


def worst_heading(comparison: Comparison) -> Text:
    """The line printed above :func:`worst_table`."""
    count = len(comparison.worst)
    return Text(f"{comparison.name}: {count} largest difference{'s' * (count != 1)}", "bold")


def _within(element: Element, comparison: Comparison) -> bool:
    """Whether one element passes the pair's tolerance test (same rule as the library)."""
    actual, expected = float(element.actual), float(element.expected)
    if math.isnan(actual) or math.isnan(expected):
        return math.isnan(actual) and math.isnan(expected)
    if actual == expected:
        return True
    if math.isinf(expected):
        return False
    return element.diff <= comparison.atol + comparison.rtol * abs(expected)


def summary_line(comparisons: Sequence[Comparison]) -> Text:
    """``"3 of 120 pairs differ"`` (red) or ``"all 120 pairs match"`` (green)."""
    differing = sum(not comparison.match for comparison in comparisons)
    total = len(comparisons)
    if differing:
        return Text(f"{differing:,} of {total:,} pairs differ", style="bold red")
    if total == 0:
        return Text("nothing to compare: no supported files found", style="yellow")
    return Text(f"all {total:,} pairs match", style="bold green")


def render_comparisons(console: Console, comparisons: Sequence[Comparison]) -> None:
    """Print the report (see the module docstring for the layout) to ``console``."""
    if len(comparisons) == 1:
        single = comparisons[0]
        console.print(comparison_table(single))
        if single.worst:
            _print_worst(console, single)
        return
    if comparisons:
        console.print(pairs_table(comparisons))
    for line in problem_lines(comparisons):
        console.print(line, soft_wrap=True)
    for comparison in comparisons:
        if comparison.worst and not comparison.match:
            _print_worst(console, comparison)
    console.print(summary_line(comparisons))


def _print_worst(console: Console, comparison: Comparison) -> None:
    console.print()
    console.print(worst_heading(comparison), soft_wrap=True)
    console.print(worst_table(comparison))


def heatmap_note(path: Path, heatmap: HeatMap) -> Text:
    """One line saying where the heat map went and what its grey levels mean."""
    if heatmap.scale == 0:
        detail = "no differences (all black)"
    else:
        detail = (
            f"white = |diff| {_number(heatmap.scale * 255)}, "
            f"one grey level = {_number(heatmap.scale)}"
        )
    return Text(f"diff image {path} (of {heatmap.name}): {detail}")
