"""What ``convcli verify`` computes: the comparisons of two files or folders, or of a
recomputed reference dump, a heat map of the first differing pair, and the JSON report.

The pieces sit behind this front door: :mod:`convcli.verify.compare` (arrays ->
:class:`Comparison`), :mod:`convcli.verify.pairs` (files and folders -> pairs of arrays),
:mod:`convcli.verify.dumps` and :mod:`convcli.verify.replay` (reference dumps). Nothing
here prints or exits: results are values, trouble is a
:class:`~convcli.errors.ConvcliError` (exit status 2 on the command line).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from convcli.verify.compare import Comparison, as_nhwc
from convcli.verify.dumps import read_reference
from convcli.verify.pairs import Pair, compare_pair, iter_pairs
from convcli.verify.replay import dump_tolerances, recompute_all

__all__ = ["HeatMap", "Verification", "comparisons_to_json", "diff_heatmap", "verify"]


@dataclass(frozen=True)
class HeatMap:
    """A grey image of ``|actual - expected|`` for one pair.

    ``scale`` is the difference one grey level stands for (white = 255 * scale).
    """

    name: str
    pixels: npt.NDArray[np.uint8]
    scale: float


def diff_heatmap(
    actual: npt.ArrayLike, expected: npt.ArrayLike
) -> tuple[npt.NDArray[np.uint8], float]:
    """A uint8 image of ``|actual - expected|``, scaled so the largest difference is 255.

    Parameters
    ----------
    actual, expected : array_like
        Real arrays of the same shape: (H, W), (H, W, C) or (N, H, W, C).

    Returns
    -------
    image : ndarray of uint8
        (H, W) for one image: per pixel, the largest difference over the channels divided
        by ``scale``, rounded. A batch is tiled into a near-square grid of
        ``columns = ceil(sqrt(N))``: image n at rows ``(n // columns) * H``, columns
        ``(n % columns) * W``, giving (ceil(N / columns) * H, columns * W); unused cells are
        black. A NaN against a number, or an infinity against anything else, is white (255)
        and does not set the scale.
    scale : float
        The difference one grey level stands for (white = 255 * scale); 0.0 when the arrays
        are equal.

    Raises
    ------
    ConvcliError
        Different shapes, a rank other than 2-4, an empty array, or a non-real dtype.
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise ConvcliError(f"diff image needs equal shapes, got {a.shape} and {e.shape}")
    if a.ndim not in (2, 3, 4) or a.size == 0:
        raise ConvcliError(f"diff image needs a non-empty 2-, 3- or 4-D array, got {a.shape}")
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf":
        raise ConvcliError(f"diff image needs real numbers, got {a.dtype} and {e.dtype}")
    if a.ndim == 2:
        a, e = a[None, :, :, None], e[None, :, :, None]
    elif a.ndim == 3:
        a, e = a[None], e[None]
    count, height, width, channels = a.shape
    per_pixel = np.zeros((count, height, width), dtype=np.float64)
    saturated = np.zeros((count, height, width), dtype=bool)
    for channel in range(channels):
        ac = a[..., channel].astype(np.float64)
        ec = e[..., channel].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(ac - ec)
            diff[(ac == ec) | (np.isnan(ac) & np.isnan(ec))] = 0.0
        bad = ~np.isfinite(diff)
        saturated |= bad
        diff[bad] = 0.0
        np.maximum(per_pixel, diff, out=per_pixel)
    peak = float(per_pixel.max())
    grey = np.zeros((count, height, width), dtype=np.uint8)
    if peak > 0:
        grey[...] = np.clip(np.rint(per_pixel * (255.0 / peak)), 0, 255)
    grey[saturated] = 255
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width), dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[top : top + height, left : left + width] = grey[index]
    return canvas, peak / 255.0


def _drawable(pair: Pair, comparison: Comparison) -> bool:
    return (
        comparison.problem is None
        and pair.actual is not None
        and pair.actual.ndim in (2, 3, 4)
        and pair.actual.size > 0
        and pair.actual.dtype.kind in "biuf"
        and pair.expected is not None
        and pair.expected.dtype.kind in "biuf"
    )


@dataclass(frozen=True)
class Verification:
    """Everything ``convcli verify`` reports: the comparisons and an optional heat map."""

    comparisons: tuple[Comparison, ...]
    heatmap: HeatMap | None = None

    @property
    def match(self) -> bool:
        """True when every pair matches (exit status 0)."""
        return all(comparison.match for comparison in self.comparisons)


def verify(
    actual: Path,
    expected: Path | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    expected_layout: str | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    heatmap: bool = False,
) -> Verification:
    """Compare two files or folders, or (``expected`` None) verify a reference dump.

    What ``convcli verify`` runs; see :func:`compare_paths` and :func:`verify_dump` for the
    parameters.

    Parameters
    ----------
    heatmap : bool
        Draw :attr:`Verification.heatmap` (:func:`diff_heatmap`) for the first pair that
        differs and has equal shapes, a rank of 2-4 and real dtypes; when every pair
        matches, for the first such pair. It stays None when no pair qualifies. Arrays in
        NCHW (``expected_layout``, or a dump's ``layout``) are drawn channels-last.

    Raises
    ------
    ConvcliError
        Trouble: unreadable or unsafe input, a malformed dump, ``expected_layout`` given
        with a dump.
    """
    # Layouts the heat map reads each side in: a dump's arrays are both in its own layout.
    draw_actual: str | None = None
    draw_expected = expected_layout
    if expected is None:
        if expected_layout not in (None, "NHWC"):
            raise ConvcliError("a reference dump records its own layout; drop expected_layout")
        dump = read_reference(actual, max_bytes=max_bytes)
        rows = recompute_all(dump, max_bytes=max_bytes)
        rtol, atol = dump_tolerances(dump, rtol, atol)
        pairs: Iterator[Pair] = iter(
            [
                Pair(str(actual) if member == "output" else f"{actual}:{member}", result, expected)
                for member, result, expected in rows
            ]
        )
        draw_actual = draw_expected = str(dump.params.get("layout", "NHWC"))
    else:
        pairs = iter_pairs(actual, expected, max_bytes=max_bytes, max_pixels=max_pixels)
    comparisons: list[Comparison] = []
    drawn: HeatMap | None = None
    drawn_differs = False
    for pair in pairs:
        comparison = compare_pair(
            pair, rtol=rtol, atol=atol, expected_layout=expected_layout, show=show
        )
        comparisons.append(comparison)
        wanted = drawn is None or (not drawn_differs and not comparison.match)
        if heatmap and wanted and _drawable(pair, comparison):
            assert pair.actual is not None and pair.expected is not None
            image, scale = diff_heatmap(
                as_nhwc(pair.actual, draw_actual), as_nhwc(pair.expected, draw_expected)
            )
            drawn = HeatMap(pair.name, image, scale)
            drawn_differs = not comparison.match
    return Verification(tuple(comparisons), drawn)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def comparisons_to_json(comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """The ``--json`` report: ``{"match", "pairs": [{"name", "shape_actual",
    "shape_expected", "max_abs_diff", "max_rel_diff", "mismatched", "total", "match"}]}``,
    and with ``--show N`` each pair's ``"worst"``: ``[{"index", "actual", "expected",
    "abs_diff"}]``, worst first.

    Shapes are lists; a missing side's shape and any difference that is undefined or not
    finite (an infinity against a number) are ``null``, so the output is strict JSON; in
    "worst", non-finite values are the strings "nan", "inf" and "-inf".
    """
    return {
        "match": all(comparison.match for comparison in comparisons),
        "pairs": [
            {
                "name": comparison.name,
                "shape_actual": _shape_list(comparison.shape_actual),
                "shape_expected": _shape_list(comparison.shape_expected),
                "max_abs_diff": _finite_or_none(comparison.max_abs_diff),
                "max_rel_diff": _finite_or_none(comparison.max_rel_diff),
                "mismatched": comparison.mismatched,
                "total": comparison.total,
                "match": comparison.match,
                **_worst_json(comparison),
            }
            for comparison in comparisons
        ],
    }


def _json_number(value: float | int) -> float | int | str:
    """A number as JSON holds it: NaN and infinities as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _worst_json(comparison: Comparison) -> dict[str, Any]:
    """``{"worst": [...]}`` with ``--show N``'s elements, worst first; nothing without it."""
    if not comparison.worst:
        return {}
    return {
        "worst": [
            {
                "index": list(element.position),
                "actual": _json_number(element.actual),
                "expected": _json_number(element.expected),
                "abs_diff": _json_number(element.diff),
            }
            for element in comparison.worst
        ]
    }


def _shape_list(shape: tuple[int, ...] | None) -> list[int] | None:
    return None if shape is None else list(shape)
