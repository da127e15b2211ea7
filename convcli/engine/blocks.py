"""Padded row blocks: the one place that knows how an input is padded, for every engine path.

No path ever pads a whole batch: each works on bands of output rows and asks for the padded
input rows those need (:func:`padded_block`), so scratch memory is bounded by the band size
whatever the batch or image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[Any]


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis is padded and strided.

    Padded position ``p`` (0 .. length-1) reads input position ``index[p]`` when ``valid[p]``
    and holds the fill value otherwise (zero/-inf padding, ceil-mode overhang). ``before`` is
    the leading padding: padded positions ``before .. before + size - 1`` are the input
    itself. The index maps are computed only when a non-zero pad mode needs them: on small
    inputs, building them costs as much as the convolution.
    """

    size: int
    before: int
    after: int
    length: int
    out: int
    stride: int
    dilation: int
    kernel: int
    mode: str

    @property
    def extent(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    @property
    def fill_only(self) -> bool:
        """No padded position reads the input (zero padding, or -inf for max pooling)."""
        return self.mode == "zeros"

    @cached_property
    def index(self) -> npt.NDArray[np.intp]:
        positions = np.arange(-self.before, self.length - self.before, dtype=np.intp)
        n = self.size
        if self.mode == "circular":
            return positions % n
        if self.mode == "reflect":
            period = max(2 * (n - 1), 1)
            folded = positions % period
            return np.where(folded < n, folded, period - folded)
        clipped: npt.NDArray[np.intp] = np.minimum(np.maximum(positions, 0), n - 1)
        return clipped

    @cached_property
    def valid(self) -> npt.NDArray[np.bool_]:
        positions = np.arange(-self.before, self.length - self.before, dtype=np.intp)
        if self.mode == "zeros":
            inside: npt.NDArray[np.bool_] = (positions >= 0) & (positions < self.size)
            return inside
        # The requested padding reads real pixels; ceil-mode overhang never does.
        padded: npt.NDArray[np.bool_] = positions < self.size + self.after
        return padded

    def padded_span(self, start: int, stop: int) -> slice:
        """Padded positions read by outputs ``start:stop``."""
        return slice(start * self.stride, (stop - 1) * self.stride + self.extent)


def axis_plan(
    n: int,
    before: int,
    after: int,
    *,
    kernel: int,
    stride: int,
    dilation: int,
    out: int,
    mode: str,
) -> AxisPlan:
    """Plan of a padded axis covering every window of ``out`` outputs."""
    extent = dilation * (kernel - 1) + 1
    # Ceil-mode windows may overhang the padded input; they read "invalid" positions.
    length = max(n + before + after, (out - 1) * stride + extent)
    return AxisPlan(n, before, after, length, out, stride, dilation, kernel, mode)


def bands(
    count: int, rows: int, bytes_per_row: int, block_bytes: int
) -> list[tuple[slice, int, int]]:
    """Split ``count`` images of ``rows`` output rows into blocks of about ``block_bytes``.

    Returns (image slice, first row, stop row) triples: either several whole images or row
    bands of one image, so that ``result[images, first:stop]`` is always contiguous.
    """
    per_image = rows * bytes_per_row
    if per_image <= block_bytes:
        step = max(1, block_bytes // max(per_image, 1))
        return [(slice(n, min(n + step, count)), 0, rows) for n in range(0, count, step)]
    band = max(1, block_bytes // max(bytes_per_row, 1))
    return [
        (slice(n, n + 1), r, min(r + band, rows))
        for n in range(count)
        for r in range(0, rows, band)
    ]


def _fill_range(
    block: Array,
    axis: int,
    positions: range,
    plan: AxisPlan,
    offset: int,
    source: Array,
    source_offset: int,
    fill: float,
) -> None:
    """Set padded ``positions`` of ``plan`` (block index ``p - offset`` along ``axis``).

    Valid positions copy ``source`` at ``plan.index[p] + source_offset``; the others get
    ``fill``. One slice or fancy-indexed operation per kind, not a loop over positions:
    large kernels have dozens of padded rows or columns per block.
    """
    if not positions:
        return
    where: list[Any] = [slice(None)] * block.ndim
    valid = plan.valid[positions.start : positions.stop]
    if not valid.any():
        where[axis] = slice(positions.start - offset, positions.stop - offset)
        block[tuple(where)] = fill
        return
    targets = np.arange(positions.start - offset, positions.stop - offset)
    sources = plan.index[positions.start : positions.stop] + source_offset
    where[axis] = targets[valid]
    block[tuple(where)] = np.take(source, sources[valid], axis=axis)
    if not valid.all():
        where[axis] = targets[~valid]
        block[tuple(where)] = fill


def padded_block(
    x: Array,
    images: slice,
    rows: AxisPlan,
    row_span: slice,
    cols: AxisPlan,
    dtype: np.dtype[Any],
    fill: float,
    *,
    width: int = 0,
) -> Array:
    """Rows ``row_span`` of the padded images ``images`` of ``x`` (NHWC), in ``dtype``.

    The block is ``max(width, cols.length)`` columns wide; columns past the padded input
    hold ``fill``. When the span needs no padding and no cast, this is a view of ``x``:
    callers only read it.
    """
    source = x[images]
    first, stop = row_span.start, row_span.stop
    total_cols = max(width, cols.length)
    inner_first = max(first, rows.before)
    inner_stop = min(stop, rows.before + rows.size)
    no_row_padding = inner_first == first and inner_stop == stop
    if no_row_padding and cols.before == 0 and total_cols == cols.size and source.dtype == dtype:
        return source[:, first - rows.before : stop - rows.before]

    count, _, _, channels = source.shape
    block = np.empty((count, stop - first, total_cols, channels), dtype=dtype)
    interior = slice(cols.before, cols.before + cols.size)
    if inner_first < inner_stop:
        block[:, inner_first - first : inner_stop - first, interior] = source[
            :, inner_first - rows.before : inner_stop - rows.before
        ]
    if rows.fill_only and cols.fill_only:
        # Zero (or -inf) padding: four slice fills, whatever the padding width.
        block[:, : inner_first - first] = fill
        block[:, max(inner_stop - first, 0) :] = fill
        block[:, :, : cols.before] = fill
        block[:, :, cols.before + cols.size :] = fill
        return block
    # Padded rows read whole input rows (all columns), then padded columns copy from the
    # block's own interior columns, which by then hold every row of the block.
    inner = block[:, :, interior]
    _fill_range(inner, 1, range(first, min(stop, inner_first)), rows, first, source, 0, fill)
    _fill_range(inner, 1, range(max(first, inner_stop), stop), rows, first, source, 0, fill)
    plan_cols = cols.length
    _fill_range(block, 2, range(0, cols.before), cols, 0, block, cols.before, fill)
    _fill_range(
        block, 2, range(cols.before + cols.size, plan_cols), cols, 0, block, cols.before, fill
    )
    if total_cols > plan_cols:
        block[:, :, plan_cols:] = fill
    return block
