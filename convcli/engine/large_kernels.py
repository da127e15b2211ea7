"""Paths for large depthwise kernels: separable (rank-1, as two banded matrix products) and
FFT; and :data:`PATHS`, every path by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convcli.engine.blocks import bands, padded_block
from convcli.engine.paths import (
    SEPARABLE_BAND_BYTES,
    SEPARABLE_BAND_ROWS,
    SEPARABLE_TILE,
    Array,
    ConvGeometry,
    Path,
    TapLoop,
    all_finite,
    conv_depthwise,
    conv_gemm,
)
from convcli.engine.threads import run_blocks, run_blocks_one_blas_thread

# --------------------------------------------------------------------------- separable


def _toeplitz(vectors: Array, outputs: int, stride: int, dilation: int) -> Array:
    """(C, span, outputs) banded matrices: column t holds vector c at rows t*stride + b*dilation."""
    channels, kernel = vectors.shape
    span = (outputs - 1) * stride + dilation * (kernel - 1) + 1
    matrix = np.zeros((channels, span, outputs), dtype=vectors.dtype)
    for t in range(outputs):
        matrix[:, t * stride : t * stride + dilation * (kernel - 1) + 1 : dilation, t] = vectors
    return matrix


def conv_separable(geometry: ConvGeometry, result: Array, block_bytes: int, threads: int) -> None:
    """Rank-1 kernels as a width pass then a height pass, each a banded matrix product.

    The width pass multiplies tiles of SEPARABLE_TILE outputs by one small Toeplitz matrix
    (a stacked product over strided views, no copy); the height pass multiplies a band's
    rows by a (band rows x padded band rows) Toeplitz matrix. Both are BLAS products, too
    small for OpenBLAS to thread: the bands go on ``threads`` Python threads instead.
    """
    factors = geometry.rank_one
    if factors is None:
        raise RuntimeError("conv_separable needs a depthwise bank of rank-1 kernels")
    column_vectors, row_vectors = factors
    rows, cols, dtype = geometry.rows, geometry.cols, geometry.dtype
    channels = geometry.channels
    tile = min(SEPARABLE_TILE, cols.out)
    tiles = -(-cols.out // tile)
    across = _toeplitz(row_vectors, tile, cols.stride, cols.dilation)[None, :, None]
    span_w = across.shape[3]
    width = (tiles - 1) * tile * cols.stride + span_w
    row_bytes = width * channels * dtype.itemsize * rows.stride
    # The height pass multiplies by a (band rows x padded band rows) Toeplitz matrix: taller
    # bands waste products on its zeros, so a band holds at most SEPARABLE_BAND_ROWS rows.
    band_limit = min(block_bytes, SEPARABLE_BAND_BYTES, SEPARABLE_BAND_ROWS * row_bytes)
    tasks = bands(geometry.batch.shape[0], rows.out, row_bytes, max(band_limit, 1))
    band_rows = max(stop - first for _, first, stop in tasks)
    down = _toeplitz(column_vectors, band_rows, rows.stride, rows.dilation).transpose(0, 2, 1)
    direct = TapLoop(geometry)

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
        if not all_finite(geometry, block):
            direct(block, result[images, first:stop])
            return
        count, span_h = block.shape[:2]
        planar = np.ascontiguousarray(block.transpose(0, 3, 1, 2))  # (n, C, span_h, width)
        s_n, s_c, s_h, s_w = planar.strides
        windows = as_strided(
            planar,
            (count, channels, tiles, span_h, span_w),
            (s_n, s_c, tile * cols.stride * s_w, s_h, s_w),
            writeable=False,
        )
        horizontal = np.empty((count, channels, span_h, tiles, tile), dtype=dtype)
        np.matmul(windows, across, out=horizontal.transpose(0, 1, 3, 2, 4))
        flat = horizontal.reshape(count, channels, span_h, tiles * tile)
        height = stop - first
        vertical = np.matmul(down[None, :, :height, :span_h], flat)  # (n, C, rows, tiles*tile)
        result[images, first:stop] = vertical[..., : cols.out].transpose(0, 2, 3, 1)

    # these products are too small for OpenBLAS to spread over cores itself
    run_blocks_one_blas_thread(tasks, band, threads)


# --------------------------------------------------------------------------- fft


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: the sizes pocketfft transforms fastest."""
    best = 1 << max(n - 1, 0).bit_length()
    power3 = 1
    while power3 < best:
        power5 = power3
        while power5 < best:
            candidate = power5
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power5 *= 5
        power3 *= 3
    return best


def _tiles(out: int, extent: int, largest: int) -> tuple[int, int]:
    """(outputs per tile, transform length) for transforms of about ``largest`` points."""
    count = -(-out // max(largest - extent + 1, 1))
    per_tile = -(-out // count)
    return per_tile, _fast_length(per_tile + extent - 1)


@dataclass(frozen=True)
class FFTPlan:
    """Overlap-save tiles: outputs per tile and transform length along each axis."""

    tile_h: int
    length_h: int
    tile_w: int
    length_w: int
    #: Padded columns of a band: every column tile plus the kernel's overlap.
    width: int
    scratch_bytes: int


def fft_plan(geometry: ConvGeometry, block_bytes: int) -> FFTPlan:
    """Tiles of about 512 x 512 (at the default block size): each transform stays in cache
    and little is wasted on the kernel's overlap. A band of tile rows spans the whole width,
    so on wide or many-channel images the tiles get fewer rows (never fewer than twice the
    kernel's extent) to keep the band under FFT_BAND_BYTES.
    """
    rows, cols = geometry.rows, geometry.cols
    itemsize = geometry.dtype.itemsize
    largest = math.isqrt(max(block_bytes // (4 * itemsize), 1))
    tile_w, length_w = _tiles(cols.out, cols.extent, max(largest, 2 * cols.extent))
    width = -(-cols.out // tile_w) * tile_w + cols.extent - 1
    band_rows = FFT_BAND_BYTES // (width * geometry.channels * itemsize)
    tile_h, length_h = _tiles(rows.out, rows.extent, max(min(largest, band_rows), 2 * rows.extent))
    spectra = geometry.channels * length_h * (length_w // 2 + 1) * 2 * itemsize
    band = (tile_h + rows.extent - 1) * width * geometry.channels * itemsize
    # Per worker: the band, and one tile's input, spectrum and output for every channel.
    tile = geometry.channels * length_h * length_w * itemsize * 3
    return FFTPlan(tile_h, length_h, tile_w, length_w, width, spectra + band + tile)


def fft_cost(geometry: ConvGeometry, block_bytes: int) -> float:
    """Estimated FFT work per output value, in units of one tap's multiply-add."""
    plan = fft_plan(geometry, block_bytes)
    points = plan.length_h * plan.length_w
    # A forward and an inverse real transform (~2.5 N log2 N flops each) and a complex
    # product, against one multiply and one add per tap on the direct path.
    return FFT_TAP_EQUIVALENT * points * math.log2(points) / (plan.tile_h * plan.tile_w)


#: Direct taps that one unit of N log2 N FFT work per output costs: fitted to 2048x2048
#: gray and 1024x1024 RGB images, where overlap-save took 42-60 ms whatever the kernel and
#: the tap loop about 10 ms + 1.3 ms per tap (numpy 2 pocketfft, float32).
FFT_TAP_EQUIVALENT = 1.5
#: Bytes of one padded band of tile rows (all columns, all channels) on the FFT path.
FFT_BAND_BYTES = 16 * 1024**2
#: Most scratch the FFT path may hold per worker. Past it (hundreds of channels with a
#: large kernel) the tap loop, whose bands are small, is used instead.
FFT_SCRATCH_BYTES = 32 * 1024**2


def conv_fft(geometry: ConvGeometry, result: Array, block_bytes: int, threads: int) -> None:
    """Overlap-save: each tile's spectrum times the conjugate kernel spectrum.

    Correlation with w is multiplication by conj(rfft2(w)); with the kernel at the tile's
    top-left corner, the first (L - extent + 1) outputs of each axis never wrap around.
    """
    rows, cols, dtype = geometry.rows, geometry.cols, geometry.dtype
    plan = fft_plan(geometry, block_bytes)
    tile_h, length_h, tile_w, length_w = plan.tile_h, plan.length_h, plan.tile_w, plan.length_w
    weights = geometry.bank[:, :, :, 0]
    dilated = np.zeros((geometry.channels, rows.extent, cols.extent), dtype=dtype)
    dilated[:, :: rows.dilation, :: cols.dilation] = weights
    spectrum = np.conj(np.fft.rfft2(dilated, s=(length_h, length_w)))
    column_starts = range(0, cols.out, tile_w)
    width = plan.width
    direct = TapLoop(geometry)

    def band(task: tuple[int, int]) -> None:
        image, first = task
        stop = min(first + tile_h, rows.out)
        block = padded_block(
            geometry.batch,
            slice(image, image + 1),
            rows,
            rows.padded_span(first, stop),
            cols,
            dtype,
            0.0,
            width=width,
        )
        if not all_finite(geometry, block):
            direct(block, result[image : image + 1, first:stop])
            return
        planar = block[0].transpose(2, 0, 1)  # (C, span_h, width), a view
        for start in column_starts:
            done = min(start + tile_w, cols.out)
            piece = planar[:, :, start : start + tile_w + cols.extent - 1]
            values = np.fft.irfft2(
                np.fft.rfft2(piece, s=(length_h, length_w)) * spectrum, s=(length_h, length_w)
            )
            result[image, first:stop, start:done] = values[
                :, : stop - first, : done - start
            ].transpose(1, 2, 0)

    tasks = [
        (image, first)
        for image in range(geometry.batch.shape[0])
        for first in range(0, rows.out, tile_h)
    ]
    run_blocks(tasks, band, threads)


PATHS: dict[str, Path] = {
    "gemm": conv_gemm,
    "depthwise": conv_depthwise,
    "separable": conv_separable,
    "fft": conv_fft,
}
