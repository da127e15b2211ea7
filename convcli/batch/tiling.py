"""The tile grid of TIFF and .npy convolutions, shared by streamed and in-memory runs.

A large TIFF or .npy is streamed tile by tile (:mod:`convcli.batch.stream`); a small one is
filtered in memory on the same grid of output tiles (``--tile``, default
:data:`~convcli.limits.DEFAULT_TILE`), each tile computed from the same padded block by
the same engine call. So a file gives the same bytes whether it streams or not: the BLAS
and FFT paths round a product differently with its shape, and a grid of their own would
make the result depend on the file's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.batch.pipeline import ARRAY_PAD_MODE, Convolution, OutputOptions, Pooling
from convcli.batch.progress import rows_done
from convcli.engine.args import _check_bytes, _pair, resolve_padding
from convcli.engine.blocks import AxisPlan, axis_plan
from convcli.engine.conv import _check_padded
from convcli.engine.pool import _pool_plans
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_TILE

Array = npt.NDArray[Any]
#: (pixels, has_alpha, operation, options) -> (filtered tile in the output dtype, clipped).
FilterTile = Callable[[Array, bool, Convolution, OutputOptions], tuple[Array, int]]
#: (input row indices, input column indices) -> the (rows, cols, C) block they pick.
Gather = Callable[[Array, Array], Array]
#: (input rows, input columns) a later gather will read: start reading them ahead.
Prefetch = Callable[[slice, slice], None]
#: The formats whose convolutions run on the tile grid (what a streamed run reads and writes).
GRID_FORMATS = ("tiff", "npy")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Output size and the padded axes of a convolution or pooling of one image."""

    out_height: int
    out_width: int
    rows: AxisPlan
    cols: AxisPlan
    pads: tuple[int, int, int, int]


def geometry(shape: tuple[int, int, int], operation: Convolution | Pooling) -> Geometry:
    """The geometry of ``operation`` on an (H, W, C) image.

    Raises:
        ConvcliError: the output would be empty.
    """
    height, width, channels = shape
    if isinstance(operation, Convolution):
        kernel_h, kernel_w = operation.kernel_size
        stride = _pair(operation.stride, "stride")
        dilation = _pair(operation.dilation, "dilation")
        extent = ((kernel_h - 1) * dilation[0] + 1, (kernel_w - 1) * dilation[1] + 1)
        pads = resolve_padding(operation.padding, (height, width), extent, stride)
        mode = operation.pad_mode or ARRAY_PAD_MODE
        out_h = (height + pads[0] + pads[1] - extent[0]) // stride[0] + 1
        out_w = (width + pads[2] + pads[3] - extent[1]) // stride[1] + 1
        if min(out_h, out_w) < 1:
            raise ConvcliError(f"output would be empty: input {height}x{width}")
        rows = axis_plan(height, pads[0], pads[1], kernel=kernel_h, stride=stride[0],
                         dilation=dilation[0], out=out_h, mode=mode)  # fmt: skip
        cols = axis_plan(width, pads[2], pads[3], kernel=kernel_w, stride=stride[1],
                         dilation=dilation[1], out=out_w, mode=mode)  # fmt: skip
        return Geometry(out_h, out_w, rows, cols, pads)
    shell = np.broadcast_to(np.zeros((), np.float32), (1, height, width, channels))
    pool_dilation = 1 if operation.op == "avg" else operation.dilation
    rows, cols, pads = _pool_plans(
        shell, operation.size, operation.stride, operation.padding, pool_dilation,
        operation.ceil_mode, 2**62,
    )  # fmt: skip
    return Geometry(rows.out, cols.out, rows, cols, pads)


def tile_side(tile: int | None, out_format: str) -> int:
    """Output tile side: ``--tile`` (default DEFAULT_TILE), a multiple of 16 for TIFF out."""
    size = tile or DEFAULT_TILE
    if out_format == "tiff":  # TIFF tiles are multiples of 16 pixels a side
        size = max(16, -(-size // 16) * 16)
    return size


def conv_tiles(
    gather: Gather,
    shape: tuple[int, int, int],
    has_alpha: bool,
    operation: Convolution,
    options: OutputOptions,
    tile: int,
    filter_tile: FilterTile,
    prefetch: Prefetch | None = None,
) -> Iterator[tuple[int, int, Array, int]]:
    """(first row, first column, filtered tile, clipped count) of every output tile, in
    row-major order.

    Each tile's block is gathered with its padding already applied (every pad mode,
    through the axes' index maps) and filtered with none. ``prefetch`` is told the input
    rectangle of the next tile before this one is filtered.
    """
    grid = geometry(shape, operation)
    flat = dataclasses.replace(operation, padding=(0, 0, 0, 0))
    corners = [
        (r0, c0) for r0 in range(0, grid.out_height, tile) for c0 in range(0, grid.out_width, tile)
    ]

    def spans(r0: int, c0: int) -> tuple[slice, slice]:
        r1, c1 = min(r0 + tile, grid.out_height), min(c0 + tile, grid.out_width)
        return grid.rows.padded_span(r0, r1), grid.cols.padded_span(c0, c1)

    for number, (r0, c0) in enumerate(corners):
        r1, c1 = min(r0 + tile, grid.out_height), min(c0 + tile, grid.out_width)
        span_r, span_c = spans(r0, c0)
        if prefetch is not None and number + 1 < len(corners):
            next_r, next_c = spans(*corners[number + 1])
            rows_read, cols_read = grid.rows.index[next_r], grid.cols.index[next_c]
            prefetch(slice(int(rows_read.min()), int(rows_read.max()) + 1),
                     slice(int(cols_read.min()), int(cols_read.max()) + 1))  # fmt: skip
        block = gather(grid.rows.index[span_r], grid.cols.index[span_c])
        if grid.rows.fill_only:
            block[~grid.rows.valid[span_r]] = 0
            block[:, ~grid.cols.valid[span_c]] = 0
        pixels = block[..., 0] if block.shape[2] == 1 else block
        result, clipped = filter_tile(pixels, has_alpha, flat, options)
        expected = (r1 - r0, c1 - c0)
        if result.shape[:2] != expected:
            raise ConvcliError(f"tile {r0},{c0}: {result.shape[:2]} instead of {expected}")
        if c1 == grid.out_width:  # before the yield: a consumer may stop at the last tile
            rows_done(r1, grid.out_height)
        yield r0, c0, result, clipped


def conv_on_grid(
    pixels: Array,
    has_alpha: bool,
    operation: Convolution,
    options: OutputOptions,
    tile: int,
    filter_tile: FilterTile,
) -> tuple[Array, int]:
    """Filter an in-memory (H, W) or (H, W, C) image on the tile grid; (result, clipped).

    Raises:
        LimitError: the output or the padded input would be over ``options.max_bytes``,
            refused as the whole-image engine refuses it, before anything is allocated.
    """
    image = pixels if pixels.ndim == 3 else pixels[..., None]
    grid = geometry(image.shape, operation)
    channels = image.shape[2]
    filters = operation.out_channels(channels)
    itemsize = 8 if image.dtype == np.float64 else 4
    _check_bytes(grid.out_height * grid.out_width * filters * itemsize,
                 f"output 1x{grid.out_height}x{grid.out_width}x{filters}",
                 options.max_bytes)  # fmt: skip
    _check_padded(grid.rows.length, grid.cols.length, channels * itemsize, options.max_bytes)

    def gather(row_index: Array, col_index: Array) -> Array:
        picked: Array = image[np.ix_(row_index, col_index)]
        return picked

    out: Array | None = None
    clipped = 0
    for r0, c0, result, count in conv_tiles(
        gather,
        image.shape,
        has_alpha,
        operation,
        options,
        tile,
        filter_tile,
    ):
        if out is None:
            out = np.empty((grid.out_height, grid.out_width, *result.shape[2:]), result.dtype)
        out[r0 : r0 + result.shape[0], c0 : c0 + result.shape[1]] = result
        clipped += count
    assert out is not None
    return out, clipped
