"""Backpropagation through max and average pooling, in pure NumPy (PyTorch autograd's results).

Both run over bands of output rows, one vectorized step per window tap (never a loop over
pixels), and scatter each output's gradient onto the input pixels its window read:

- max pooling: every output's gradient goes to one pixel of its window, chosen as PyTorch's
  CPU kernel chooses it (see :func:`max_pool2d_backward`);
- average pooling: every output's gradient, divided by the forward's divisor, goes to each
  in-input pixel of its window.

Overlapping windows (stride smaller than the window) add up. Neighbouring bands of one image
write overlapping input rows, so the bands run in two rounds, even ones then odd ones, each
on the worker threads: no two bands running at once touch the same pixel, and the order of
additions, hence every rounding, is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli.engine.args import (
    POOL_BAND_BYTES,
    PaddingArg,
    PairArg,
    _check_bytes,
    _compute_dtype,
    _from_nhwc,
    _is_int,
    _to_nhwc,
)
from convcli.engine.blocks import AxisPlan, bands, padded_block
from convcli.engine.conv import _cast_finite, tuning
from convcli.engine.pool import _pool_plans, _window_counts_from
from convcli.engine.threads import resolve_threads, run_blocks
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES

__all__ = ["avg_pool2d_backward", "max_pool2d_backward"]

Array: TypeAlias = npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
Band: TypeAlias = tuple[slice, int, int]


def _layout_shape(nhwc: tuple[int, int, int, int], rank: int, layout: str) -> tuple[int, ...]:
    """The shape :func:`convcli.engine._from_nhwc` gives an (N, H, W, C) result."""
    count, height, width, channels = nhwc
    if rank == 2 and channels == 1:
        return (height, width)
    if rank in (2, 3):
        return (height, width, channels) if layout == "NHWC" else (channels, height, width)
    return nhwc if layout == "NHWC" else (count, channels, height, width)


def _grad_output_nhwc(
    grad_output: Array, nhwc: tuple[int, int, int, int], rank: int, layout: str, context: str
) -> Array:
    """``grad_output`` checked against the forward output's shape, as contiguous NHWC."""
    expected = _layout_shape(nhwc, rank, layout)
    if grad_output.shape != expected:
        raise ConvcliError(
            f"grad_output must have the shape of the forward output, {expected} ({context}, "
            f"layout {layout}), got {grad_output.shape}"
        )
    return np.ascontiguousarray(_to_nhwc(grad_output, layout))


def _tap_range(plan: AxisPlan, offset: int, first: int, stop: int) -> tuple[slice, slice] | None:
    """Outputs ``first:stop`` whose tap at ``offset`` reads the input itself, not padding.

    Returns (outputs, relative to ``first``; input positions), or None when there are none.
    """
    low = max(first, -(-(plan.before - offset) // plan.stride))
    high = min(stop, -(-(plan.before + plan.size - offset) // plan.stride))
    if low >= high:
        return None
    start = low * plan.stride + offset - plan.before
    return slice(low - first, high - first), slice(
        start, start + (high - low - 1) * plan.stride + 1, plan.stride
    )


def _run_bands(
    count: int, rows: AxisPlan, row_bytes: int, work: Callable[[Band], None], threads: int | None
) -> None:
    """``work`` on every band of output rows, even bands, then odd ones (see the module doc).

    A band holds at least ``ceil(extent / stride) - 1`` rows, so that it and the band after
    the next one never read the same input row.
    """
    least = max(1, -(-rows.extent // rows.stride) - 1)
    band_bytes = min(tuning().block_bytes, POOL_BAND_BYTES)
    tasks = bands(count, rows.out, row_bytes, max(band_bytes, least * row_bytes))
    workers = resolve_threads(threads)
    for parity in (0, 1):
        run_blocks(tasks[parity::2], work, workers)


def _first_taps(plan: AxisPlan) -> npt.NDArray[np.intp]:
    """Per output, the first tap of its window inside the input; ``plan.kernel`` if none."""
    positions = np.arange(plan.out)[:, None] * plan.stride + np.arange(plan.kernel) * plan.dilation
    inside = (positions >= plan.before) & (positions < plan.before + plan.size)
    first: npt.NDArray[np.intp] = np.where(inside.any(axis=1), inside.argmax(axis=1), plan.kernel)
    return first


def max_pool2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    size: PairArg,
    stride: PairArg | None = None,
    padding: PaddingArg = 0,
    dilation: PairArg = 1,
    ceil_mode: bool = False,
    layout: str = "NHWC",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> FloatArray:
    """Gradient of a loss with respect to the input of :func:`convcli.engine.max_pool2d`.

    Each output's gradient goes to the one pixel of its window that PyTorch's CPU kernel
    (``cpu_max_pool`` in ATen's MaxPoolKernel.cpp) records as the maximum: the window's
    in-input taps are scanned row by row, each row left to right (dilation included), and
    a tap replaces the current choice when it is greater, or when it is NaN. So among equal
    maxima the first in that order wins; a window holding NaN sends its gradient to its
    last NaN; a window whose pixels are all -inf sends it to its first in-input pixel.
    Padding (and ceil-mode overhang) never receives gradient. Windows overlap when the
    stride is smaller than the window: a pixel then gets the sum over the windows it wins.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to ``max_pool2d(x, ...)``, shaped as that output:
        (N, H', W', C), (H', W', C) or (H', W'); (N, C, H', W') or (C, H', W') in NCHW.
    x : array_like
        The forward's input.
    size, stride, padding, dilation, ceil_mode, layout
        The forward's arguments, with their meanings and defaults.
    max_bytes : int
        Refuse (LimitError) before allocating a result larger than this.
    threads : int, optional
        Most worker threads; default $CONVCLI_THREADS, else every available core.

    Returns
    -------
    ndarray
        Shaped as ``x``; float64 for a float64 ``x``, else float32.
    """
    source = np.asarray(x)
    batch = _to_nhwc(source, layout)
    dtype = _compute_dtype(source)
    if min(batch.shape) < 1:
        raise ConvcliError(f"input has an empty dimension: shape {source.shape}")
    rows, cols, _ = _pool_plans(batch, size, stride, padding, dilation, ceil_mode, max_bytes)
    count, height, width, channels = batch.shape
    gradient = _as_gradient(grad_output, dtype)
    gradient = _grad_output_nhwc(
        gradient,
        (count, rows.out, cols.out, channels),
        source.ndim,
        layout,
        f"max pooling of {source.shape}",
    )
    _check_bytes(batch.size * dtype.itemsize, f"input gradient {source.shape}", max_bytes)
    result = np.zeros(batch.shape, dtype=dtype)
    taps = [(a, b) for a in range(rows.kernel) for b in range(cols.kernel)]
    index_type = np.uint8 if len(taps) < 255 else np.int32
    # Before any tap is read, each window's choice is its first in-input pixel; a window
    # with none (possible only with "same" padding and dilation) chooses nothing.
    first_rows, first_cols = _first_taps(rows), _first_taps(cols)
    initial = np.where(
        (first_rows[:, None] < rows.kernel) & (first_cols[None, :] < cols.kernel),
        first_rows[:, None] * cols.kernel + first_cols[None, :],
        len(taps),
    ).astype(index_type)
    disjoint = rows.stride >= rows.extent and cols.stride >= cols.extent

    across = [_tap_range(cols, b * cols.dilation, 0, cols.out) for b in range(cols.kernel)]

    def band(task: Band) -> None:
        images, first, stop = task
        block = padded_block(
            batch, images, rows, rows.padded_span(first, stop), cols, dtype, -np.inf
        )
        outputs = gradient[images, first:stop]
        last_row = (stop - first - 1) * rows.stride + 1
        last_col = (cols.out - 1) * cols.stride + 1
        windows = [
            block[
                :,
                a * rows.dilation : a * rows.dilation + last_row : rows.stride,
                b * cols.dilation : b * cols.dilation + last_col : cols.stride,
            ]
            for a, b in taps
        ]
        down = [_tap_range(rows, a * rows.dilation, first, stop) for a in range(rows.kernel)]
        # Where each tap reads the input itself (padding never wins, nor gets gradient):
        # (outputs of the band, input pixels) along each axis.
        regions: list[Region | None] = []
        for a, b in taps:
            row_range, col_range = down[a], across[b]
            regions.append(
                None if row_range is None or col_range is None else (row_range, col_range)
            )
        best = np.array(windows[0])
        for values in windows[1:]:
            np.maximum(best, values, out=best)  # NaN propagates: it shows below
        if dtype.kind == "f" and np.isnan(best).any():
            winners = _last_nan_or_first_maximum(windows, regions, initial[first:stop], best)
        else:
            winners = _first_maximum(windows, regions, best)
        finite = bool(np.isfinite(outputs.sum())) if dtype.kind == "f" else True
        spare = np.empty_like(best)  # each tap's share of the gradient in turn
        for index, won in winners:
            region = regions[index]
            assert region is not None  # winners come from in-input taps only
            (out_rows, in_rows), (out_cols, in_cols) = region
            share = outputs[:, out_rows, out_cols]
            target = result[images, in_rows, in_cols]
            if disjoint and finite:  # each pixel is read by one window: nothing to add up
                np.multiply(share, won, out=target)
            elif finite:
                target += np.multiply(share, won, out=spare[:, out_rows, out_cols])
            else:  # 0 * inf would be NaN: select instead
                target += np.where(won, share, 0)

    row_bytes = cols.length * channels * dtype.itemsize * rows.stride
    _run_bands(count, rows, row_bytes, band, threads)
    return _from_nhwc(result, source.ndim, layout)


#: Along each axis, (outputs of a band, input positions) where a tap reads the input.
Region: TypeAlias = tuple[tuple[slice, slice], tuple[slice, slice]]


def _first_maximum(
    windows: list[Array], regions: list[Region | None], best: Array
) -> Iterator[tuple[int, Array]]:
    """Per tap (in window order), where it holds its window's first maximum.

    ``best`` is each window's maximum (no NaN). The first in-input tap equal to it wins,
    so an all -inf window picks its first in-input pixel, as the kernel does.
    """
    shape = best.shape
    found = np.zeros(shape, dtype=np.bool_)
    equal = np.empty(shape, dtype=np.bool_)
    won = np.empty(shape, dtype=np.bool_)
    last = max((i for i, region in enumerate(regions) if region is not None), default=-1)
    for index, region in enumerate(regions):
        if region is None:
            continue
        part = (slice(None), region[0][0], region[1][0])
        np.equal(windows[index][part], best[part], out=equal[part])
        np.greater(equal[part], found[part], out=won[part])  # equal, and none before
        if index != last:
            np.logical_or(found[part], equal[part], out=found[part])
        yield index, won[part]


def _last_nan_or_first_maximum(
    windows: list[Array], regions: list[Region | None], initial: Array, best: Array
) -> Iterator[tuple[int, Array]]:
    """As :func:`_first_maximum`, for bands where some window holds NaN: the kernel's scan.

    A tap replaces the choice when greater than the running maximum or NaN, starting from
    the first in-input tap (``initial``, per output). No masked copies (np.copyto(where=)
    is several times slower on such random masks): a tap that wins is never padding, so
    never before the initial choice, and the choice is the largest index of a winning tap.
    """
    shape = best.shape
    index_type = initial.dtype
    running = np.full(shape, -np.inf, dtype=best.dtype)
    choice = np.empty(shape, dtype=index_type)
    choice[...] = initial[:, :, None]
    better = np.empty(shape, dtype=np.bool_)
    nan = np.empty(shape, dtype=np.bool_)
    chosen = np.empty(shape, dtype=index_type)
    for index, values in enumerate(windows):
        np.greater(values, running, out=better)
        np.logical_or(better, np.isnan(values, out=nan), out=better)
        np.maximum(running, values, out=running)
        if index:
            np.multiply(better, index_type.type(index), out=chosen)
            np.maximum(choice, chosen, out=choice)
    for index, region in enumerate(regions):
        if region is not None:
            part = (slice(None), region[0][0], region[1][0])
            np.equal(choice[part], index, out=better[part])
            yield index, better[part]


def _as_gradient(grad_output: npt.ArrayLike, dtype: np.dtype[Any]) -> Array:
    array = np.asarray(grad_output)
    _compute_dtype(array, "grad_output")
    return array if array.dtype == dtype else _cast_finite(array, dtype, "grad_output")


def _input_shape(x_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    if (
        not isinstance(x_shape, Sequence)
        or not 2 <= len(x_shape) <= 4
        or not all(_is_int(n) and n >= 1 for n in x_shape)
    ):
        raise ConvcliError(
            f"x_shape must be the forward input's shape, 2 to 4 positive ints in layout "
            f"{layout}, got {x_shape!r}"
        )
    return tuple(int(n) for n in x_shape)


def avg_pool2d_backward(
    grad_output: npt.ArrayLike,
    x_shape: Sequence[int],
    size: PairArg,
    stride: PairArg | None = None,
    padding: PaddingArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    layout: str = "NHWC",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> FloatArray:
    """Gradient of a loss with respect to the input of :func:`convcli.engine.avg_pool2d`.

    Each output's gradient, divided by the forward's divisor (the window's taps inside the
    padded input with ``count_include_pad``, else its in-input pixels), is added to every
    in-input pixel of its window; padding receives nothing.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to ``avg_pool2d(x, ...)``, shaped as that output.
    x_shape : sequence of int
        Shape of the forward's input ``x`` (its values are not needed).
    size, stride, padding, ceil_mode, count_include_pad, layout
        The forward's arguments, with their meanings and defaults.
    max_bytes : int
        Refuse (LimitError) before allocating a result larger than this.
    threads : int, optional
        Most worker threads; default $CONVCLI_THREADS, else every available core.

    Returns
    -------
    ndarray
        Of shape ``x_shape``; float64 for a float64 ``grad_output``, else float32.
    """
    array = np.asarray(grad_output)
    dtype = _compute_dtype(array, "grad_output")
    shape = _input_shape(x_shape, layout)
    _check_bytes(int(np.prod(shape)) * dtype.itemsize, f"input gradient {shape}", max_bytes)
    batch = _to_nhwc(np.broadcast_to(np.zeros((), dtype=dtype), shape), layout)
    rows, cols, pads = _pool_plans(batch, size, stride, padding, 1, ceil_mode, max_bytes)
    count, height, width, channels = batch.shape
    gradient = _grad_output_nhwc(
        _as_gradient(array, dtype),
        (count, rows.out, cols.out, channels),
        len(shape),
        layout,
        f"average pooling of {shape}",
    )
    top, bottom, left, right = pads
    if count_include_pad:
        row_counts = _window_counts_from(rows, top, -top, height + bottom)
        col_counts = _window_counts_from(cols, left, -left, width + right)
    else:
        row_counts = _window_counts_from(rows, top, 0, height)
        col_counts = _window_counts_from(cols, left, 0, width)
    divisor = (row_counts[:, None] * col_counts[None, :]).astype(dtype)[:, :, None]
    result = np.zeros(batch.shape, dtype=dtype)
    disjoint = rows.stride >= rows.extent and cols.stride >= cols.extent

    def band(task: Band) -> None:
        images, first, stop = task
        shares = gradient[images, first:stop] / divisor[first:stop]
        for a in range(rows.kernel):
            down = _tap_range(rows, a * rows.dilation, first, stop)
            if down is None:
                continue
            for b in range(cols.kernel):
                across = _tap_range(cols, b * cols.dilation, 0, cols.out)
                if across is None:
                    continue
                target = result[images, down[1], across[1]]
                if disjoint:
                    target[...] = shares[:, down[0], across[0]]
                else:
                    target += shares[:, down[0], across[0]]

    row_bytes = cols.length * channels * dtype.itemsize * rows.stride
    _run_bands(count, rows, row_bytes, band, threads)
    return _from_nhwc(result, len(shape), layout)
