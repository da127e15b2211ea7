"""The ways conv2d can compute a correlation, each exact up to float rounding.

:func:`convcli.engine.conv2d` validates its arguments, describes the problem as a
:class:`ConvGeometry` and picks one of these paths (see ``engine.choose_conv_path``):

- ``gemm``: unfold patches and reduce them with one matrix product per row band. With few
  channels, each patch row covers ``tile`` neighbouring outputs (a banded weight matrix), so
  the product is wider and the unfolded copy several times smaller than plain im2col.
- ``depthwise``: each output channel reads one input channel (2-D weights, groups == C):
  in-place multiply-adds, one per kernel tap, over cache-sized row bands.
- ``separable``: depthwise with rank-1 kernels (box, Gaussian, Sobel, ...): a pass along the
  width, then one along the height, each a product with a small banded (Toeplitz) matrix.
- ``fft``: depthwise, stride 1, large non-separable kernels: overlap-save tiles through
  ``numpy.fft.rfft2``.

Every path fills a preallocated (N, H', W', F) result band by band, so scratch memory is
bounded by the band size, never by the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from convcli.engine.blocks import AxisPlan, bands, padded_block
from convcli.engine.threads import run_blocks, run_blocks_one_blas_thread

Array: TypeAlias = npt.NDArray[Any]

#: Output bytes per band of the tap loop: small enough that the accumulator, the product of
#: one tap and the input rows they read stay in a core's L2 cache.
TAP_BAND_BYTES = 512 * 1024
#: Padded-input bytes per band of the separable path (measured best on 2048x2048, 31 taps).
SEPARABLE_BAND_BYTES = 512 * 1024
#: Outputs per column tile of the separable width pass (the Toeplitz matrix is tile wide).
SEPARABLE_TILE = 32
#: Most output rows one band of the separable path's height pass holds.
SEPARABLE_BAND_ROWS = 16  # measured: 16 beat 8, 32 and 64 on 6000x4000 RGB and 512x512 tiles
#: Largest tiled weight vector kept per tap (beyond it, a (C,) vector is broadcast instead).
TILED_WEIGHTS_BYTES = 8 * 1024**2
#: Widest patch-row product the gemm path aims for: OpenBLAS runs products with 16 columns
#: at a fraction of its peak, 64 columns near it.
GEMM_TARGET_COLUMNS = 64
#: Most Python threads over gemm bands (each holds a band's patches, about ``block_bytes``).
#: With more cores than this, the bands run one at a time on the BLAS library's threads.
GEMM_MAX_WORKERS = 4


@dataclass(frozen=True)
class ConvGeometry:
    """A validated correlation: input, filter bank, and the padding plan of each axis."""

    #: (N, H, W, C) input, any real dtype (cast band by band).
    batch: Array
    #: (F, kh, kw, C/groups) filters in the compute dtype, already flipped if asked.
    bank: Array
    groups: int
    rows: AxisPlan
    cols: AxisPlan
    dtype: np.dtype[Any]

    @property
    def filters(self) -> int:
        return int(self.bank.shape[0])

    @property
    def channels(self) -> int:
        return int(self.batch.shape[3])

    @property
    def taps(self) -> int:
        return int(self.bank.shape[1] * self.bank.shape[2])

    @property
    def depthwise(self) -> bool:
        """Each output channel reads only the input channel of the same index."""
        return self.bank.shape[3] == 1 and self.filters == self.groups == self.channels

    @property
    def unit_stride(self) -> bool:
        return self.rows.stride == 1 and self.cols.stride == 1

    @cached_property
    def rank_one(self) -> tuple[Array, Array] | None:
        """Per-channel (kh,) and (kw,) factors of a depthwise bank of rank-1 kernels, or None."""
        if not self.depthwise:
            return None
        return rank_one_factors(self.bank[:, :, :, 0], self.dtype)


Path: TypeAlias = Callable[[ConvGeometry, Array, int, int], None]


def rank_one_factors(kernels: Array, dtype: np.dtype[Any]) -> tuple[Array, Array] | None:
    """(C, kh) and (C, kw) vectors whose outer products are ``kernels`` (C, kh, kw), or None.

    Accepted only when the rank-1 reconstruction is off by at most one float32 rounding unit
    of the largest weight (float32 compute) or 16 float64 units (float64 compute: the SVD
    itself is that exact): the separable result then differs from the direct one by no
    more than rounding the weights does. A float32 Gaussian is rank 1 to float32 precision
    but not to float64's, so a float64 input gets the direct sum.
    """
    stack = np.asarray(kernels, dtype=np.float64)
    if not np.isfinite(stack).all():
        return None
    scale = float(np.abs(stack).max())
    if scale == 0.0:
        return None
    left, singular, right = np.linalg.svd(stack)
    root = np.sqrt(singular[:, 0])
    columns = left[:, :, 0] * root[:, None]
    rows = right[:, 0, :] * root[:, None]
    error = float(np.abs(stack - columns[:, :, None] * rows[:, None, :]).max())
    units = 16.0 if dtype == np.float64 else 1.0
    if error > units * float(np.finfo(dtype).eps) * scale:
        return None
    return columns.astype(dtype), rows.astype(dtype)


# --------------------------------------------------------------------------- gemm


def gemm_tile(geometry: ConvGeometry) -> int:
    """Outputs per patch row: widen a narrow product, unless the band overhead gets large.

    A tile of T outputs reads ``(T-1)*stride + extent`` columns; the banded weight matrix
    does that many multiply-adds per output instead of ``kw``, so T stays where that
    overhead is at most 2x.
    """
    cols = geometry.cols
    if geometry.groups != 1 or geometry.batch.shape[0] * geometry.rows.out * cols.out < 4096:
        # Small problems: building the banded matrix costs more than the product saves.
        return 1
    tile = 1
    while (
        tile * 2 * geometry.filters <= GEMM_TARGET_COLUMNS
        and tile * 2 <= cols.out
        and ((tile * 2 - 1) * cols.stride + cols.extent) <= 2 * cols.kernel
    ):
        tile *= 2
    return tile


def conv_gemm(geometry: ConvGeometry, result: Array, block_bytes: int, threads: int) -> None:
    """Patches times filters, one matrix product per band, the bands spread over threads."""
    if geometry.groups == 1:
        _gemm_tiled(geometry, result, block_bytes, threads)
    else:
        _gemm_grouped(geometry, result, block_bytes)


def _gemm_tiled(geometry: ConvGeometry, result: Array, block_bytes: int, threads: int) -> None:
    rows, cols, bank, dtype = geometry.rows, geometry.cols, geometry.bank, geometry.dtype
    filters, kernel_h, kernel_w, channels = bank.shape
    tile = gemm_tile(geometry)
    tiles = -(-cols.out // tile)
    span = (tile - 1) * cols.stride + cols.extent
    width = (tiles - 1) * tile * cols.stride + span
    per_tap = bank.transpose(1, 2, 3, 0)  # (kh, kw, C, F)
    depth = kernel_h * span * channels
    banded = span != kernel_w
    if not banded:  # one output per row, no dilation: plain im2col
        matrix = np.ascontiguousarray(per_tap).reshape(depth, filters)
    else:
        # Banded weights: row (a, u, c) of a tile's patch meets output t of the tile through
        # kernel column b where u = t*stride + b*dilation.
        weights = np.zeros((kernel_h, span, channels, tile, filters), dtype=dtype)
        outputs, taps = np.divmod(np.arange(tile * kernel_w), kernel_w)
        positions = outputs * cols.stride + taps * cols.dilation
        weights[:, positions, :, outputs, :] = per_tap[:, taps].transpose(1, 0, 2, 3)
        matrix = weights.reshape(depth, tile * filters)
    im2col = Im2col(geometry) if banded else None
    row_bytes = tiles * depth * dtype.itemsize
    exact = tiles * tile == cols.out

    def band(task: tuple[slice, int, int]) -> None:
        images, first, stop = task
        block = padded_block(
            geometry.batch,
            images,
            rows,
            rows.padded_span(first, stop),
            cols,
            dtype,
            0.0,
            width=width,
        )
        count, band_rows = block.shape[0], stop - first
        target = result[images, first:stop]
        if im2col is not None and not all_finite(geometry, block):
            im2col(block, target)
            return
        s_n, s_h, s_w, s_c = block.strides
        shape = (count, band_rows, tiles, kernel_h)
        strides = (s_n, rows.stride * s_h, tile * cols.stride * s_w, rows.dilation * s_h)
        if s_w == channels * s_c and block.flags.c_contiguous:
            # One run of span*C numbers per kernel row: the copy's inner loop is long. (The
            # ndarray constructor is as_strided without its microseconds of overhead.)
            windows = np.ndarray((*shape, span * channels), dtype, block, 0, (*strides, s_c))
        else:
            windows = as_strided(
                block, (*shape, span, channels), (*strides, s_w, s_c), writeable=False
            )
        patches = windows.reshape(count * band_rows * tiles, depth)
        if exact and target.flags.c_contiguous:
            np.matmul(patches, matrix, out=target.reshape(patches.shape[0], tile * filters))
        else:
            product = (patches @ matrix).reshape(count, band_rows, tiles * tile, filters)
            target[...] = product[:, :, : cols.out]

    tasks = bands(geometry.batch.shape[0], rows.out, row_bytes, block_bytes)
    # OpenBLAS's own threads synchronise after every product and drift by 2x when the VM
    # deschedules one: one BLAS thread per band, the bands on Python threads
    run_blocks_one_blas_thread(tasks, band, threads, GEMM_MAX_WORKERS)


class Im2col:
    """Plain im2col of one padded band, one batched product over the groups.

    Windows are strided views (dilation included), so every product term is a real
    weight times a real pixel: the reference for NaN and infinity.
    """

    def __init__(self, geometry: ConvGeometry) -> None:
        self.geometry = geometry
        bank, groups = geometry.bank, geometry.groups
        filters, kernel_h, kernel_w, per_group = bank.shape
        matrix = bank.reshape(groups, filters // groups, kernel_h * kernel_w * per_group)
        self.matrix = np.ascontiguousarray(matrix.transpose(0, 2, 1))  # (G, K, F/G)

    def __call__(self, block: Array, target: Array) -> None:
        """Fill ``target`` (n, band rows, W', F) from the padded ``block`` of its rows."""
        rows, cols, groups = self.geometry.rows, self.geometry.cols, self.geometry.groups
        filters, kernel_h, kernel_w, per_group = self.geometry.bank.shape
        windows = sliding_window_view(block, (rows.extent, cols.extent), axis=(1, 2))
        windows = windows[:, :: rows.stride, :: cols.stride, :, :: rows.dilation, :: cols.dilation]
        count, band_rows = target.shape[:2]
        positions = count * band_rows * cols.out
        grouped = windows[:, :band_rows, : cols.out].reshape(
            count, band_rows, cols.out, groups, per_group, kernel_h, kernel_w
        )
        patches = grouped.transpose(3, 0, 1, 2, 5, 6, 4).reshape(groups, positions, -1)
        product = np.matmul(patches, self.matrix).transpose(1, 0, 2)
        target[...] = product.reshape(count, band_rows, cols.out, filters)


def _gemm_grouped(geometry: ConvGeometry, result: Array, block_bytes: int) -> None:
    rows, cols, dtype = geometry.rows, geometry.cols, geometry.dtype
    im2col = Im2col(geometry)
    row_bytes = cols.out * geometry.taps * geometry.channels * dtype.itemsize
    for images, first, stop in bands(geometry.batch.shape[0], rows.out, row_bytes, block_bytes):
        block = padded_block(
            geometry.batch, images, rows, rows.padded_span(first, stop), cols, dtype, 0.0
        )
        im2col(block, result[images, first:stop])


# --------------------------------------------------------------------------- depthwise taps


class TapLoop:
    """Depthwise correlation of one padded band: one multiply-add per kernel tap.

    With stride 1 along the width, a band is viewed as rows of W*C numbers; a tap's factor
    is then a scalar (one filter for every channel) or its C weights tiled to that length,
    so NumPy's inner loop runs over a whole row instead of over C (broadcasting a (C,)
    vector measured 4-5x slower). On float inputs every tap is applied, zero weights
    included, so NaN and infinity propagate exactly as in the direct sum; an integer input
    holds neither, and its all-zero taps (four of a 3x3 sharpen's nine) are skipped.
    """

    def __init__(self, geometry: ConvGeometry) -> None:
        rows, cols, dtype = geometry.rows, geometry.cols, geometry.dtype
        self.rows, self.cols, self.channels = rows, cols, geometry.channels
        weights = geometry.bank[:, :, :, 0]  # (C, kh, kw)
        kernel_h, kernel_w = weights.shape[1:]
        self.row_length = cols.out * self.channels
        shared = bool((weights == weights[:1]).all())
        self.flat = cols.stride == 1 and (
            shared or kernel_h * kernel_w * self.row_length * dtype.itemsize <= TILED_WEIGHTS_BYTES
        )
        #: (row offset, column offset, factor for flat rows, factor for (W, C) windows)
        self.taps: list[tuple[int, int, Array | Any, Array | Any]] = []
        finite_input = geometry.batch.dtype.kind in "iub"
        zero: Array = ~np.any(weights, axis=0)  # (kh, kw): taps 0 for every channel
        skip = finite_input and not zero.all()
        for a in range(kernel_h):
            for b in range(kernel_w):
                if skip and zero[a, b]:
                    continue  # x * 0 adds nothing to a finite sum
                vector = np.ascontiguousarray(weights[:, a, b])
                flat_factor: Array | Any = vector[0] if shared else vector
                if self.flat and not shared:
                    flat_factor = np.tile(vector, cols.out)
                self.taps.append((a * rows.dilation, b * cols.dilation, flat_factor, vector))

    def __call__(self, block: Array, target: Array) -> None:
        """Fill ``target`` (n, band rows, W', C) from the padded ``block`` of its rows."""
        rows, cols, channels = self.rows, self.cols, self.channels
        count, band_rows = target.shape[:2]
        last_row = (band_rows - 1) * rows.stride + 1
        flat = self.flat and target.flags.c_contiguous
        if flat:
            source = block.reshape(count, block.shape[1], -1)
            accumulator = target.reshape(count, band_rows, self.row_length)
        else:
            source, accumulator = block, target
        scratch = np.empty_like(accumulator)
        for index, (row, col, flat_factor, vector) in enumerate(self.taps):
            if flat:
                start = col * channels
                window = source[
                    :, row : row + last_row : rows.stride, start : start + self.row_length
                ]
                factor = flat_factor
            else:
                stop_col = col + (cols.out - 1) * cols.stride + 1
                window = source[:, row : row + last_row : rows.stride, col : stop_col : cols.stride]
                factor = vector
            if index == 0:
                np.multiply(window, factor, out=accumulator)
            else:
                np.multiply(window, factor, out=scratch)
                accumulator += scratch


def all_finite(geometry: ConvGeometry, block: Array) -> bool:
    """Whether a padded band holds no NaN or infinity (integer inputs never do).

    Paths whose matrices hold structural zeros (banded GEMM, Toeplitz passes, FFT) would
    turn one infinite pixel into NaN far outside its window (0 * inf); such bands take the
    direct route instead. A sum is one cache-hot pass; a finite band whose sum overflows
    only costs that band the slower route.
    """
    if geometry.batch.dtype.kind in "iub":
        return True
    return bool(np.isfinite(block.sum()))


def conv_depthwise(geometry: ConvGeometry, result: Array, block_bytes: int, threads: int) -> None:
    """The tap loop over cache-sized bands, the bands spread over threads."""
    rows, cols, dtype = geometry.rows, geometry.cols, geometry.dtype
    loop = TapLoop(geometry)
    row_bytes = loop.row_length * dtype.itemsize

    def band(task: tuple[slice, int, int]) -> None:
        images, first, stop = task
        block = padded_block(
            geometry.batch, images, rows, rows.padded_span(first, stop), cols, dtype, 0.0
        )
        loop(block, result[images, first:stop])

    tasks = bands(geometry.batch.shape[0], rows.out, row_bytes, min(block_bytes, TAP_BAND_BYTES))
    run_blocks(tasks, band, threads)
