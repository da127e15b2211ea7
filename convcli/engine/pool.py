"""max_pool2d and avg_pool2d: separable max/sum over cache-sized bands on the engine's
threads, with PyTorch's output-size, ceil-mode and divisor rules.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from convcli.engine.args import (
    POOL_BAND_BYTES,
    Array,
    FloatArray,
    Padding4,
    PaddingArg,
    PairArg,
    _check_bytes,
    _compute_dtype,
    _from_nhwc,
    _pair,
    _to_nhwc,
    resolve_padding,
)
from convcli.engine.blocks import AxisPlan, axis_plan, bands, padded_block
from convcli.engine.conv import _check_padded, tuning
from convcli.engine.threads import resolve_threads, run_blocks
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.validate import no_empty_dimension

# --------------------------------------------------------------------------- pooling


def _pool_plans(
    batch: Array,
    size: PairArg,
    stride: PairArg | None,
    padding: PaddingArg,
    dilation: PairArg,
    ceil_mode: bool,
    max_bytes: int,
) -> tuple[AxisPlan, AxisPlan, Padding4]:
    """Validate pooling arguments and plan both axes (PyTorch's output-size rules)."""
    _, height, width, channels = batch.shape
    size_hw = _pair(size, "size")
    stride_hw = size_hw if stride is None else _pair(stride, "stride")
    dilation_hw = _pair(dilation, "dilation")
    extent = (dilation_hw[0] * (size_hw[0] - 1) + 1, dilation_hw[1] * (size_hw[1] - 1) + 1)
    pads = resolve_padding(padding, (height, width), extent, stride_hw)
    if not isinstance(padding, str):
        for axis, k, pair in (("height", size_hw[0], pads[:2]), ("width", size_hw[1], pads[2:])):
            if max(pair) > k // 2:
                raise ConvcliError(
                    f"pooling padding {max(pair)} along {axis} must be at most size // 2 = "
                    f"{k // 2} (size {k})"
                )
    axes = []
    for axis, n, k, s, d, (before, after) in (
        ("height", height, size_hw[0], stride_hw[0], dilation_hw[0], pads[:2]),
        ("width", width, size_hw[1], stride_hw[1], dilation_hw[1], pads[2:]),
    ):
        span = n + before + after - (d * (k - 1) + 1)
        if span < 0:
            raise ConvcliError(
                f"output would be empty: input {axis} {n} padded by ({before},{after}) is "
                f"smaller than the pooling window {d * (k - 1) + 1}"
            )
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= n + before:
            # PyTorch: the last window must start inside the input or the leading padding.
            out -= 1
        axes.append((n, before, after, k, s, d, out))
    # Ceil-mode windows may overhang the padding: the planned axis covers them too.
    lengths = [max(n + b + a, (out - 1) * s + d * (k - 1) + 1) for n, b, a, k, s, d, out in axes]
    _check_padded(lengths[0], lengths[1], channels * _compute_dtype(batch).itemsize, max_bytes)
    plans = [
        axis_plan(n, b, a, kernel=k, stride=s, dilation=d, out=out, mode="zeros")
        for n, b, a, k, s, d, out in axes
    ]
    return plans[0], plans[1], pads


def _pool(
    batch: Array,
    rows: AxisPlan,
    cols: AxisPlan,
    *,
    reduce: Literal["max", "sum"],
    max_bytes: int,
    threads: int | None,
) -> FloatArray:
    """Max or sum over every window, separably: first along width, then along height.

    k strided columns then k strided rows: 2(k-1) operations per output instead of k*k - 1,
    over cache-sized bands spread across threads. The last step of each pass writes
    straight into its destination, so nothing is copied that need not be.
    """
    count, height, width, channels = batch.shape
    dtype = _compute_dtype(batch)
    itemsize = dtype.itemsize
    _check_bytes(
        count * rows.out * cols.out * channels * itemsize,
        f"output {count}x{rows.out}x{cols.out}x{channels}",
        max_bytes,
    )
    padded_row_bytes = cols.length * channels * itemsize * rows.stride
    _check_bytes(padded_row_bytes, f"one padded row of {cols.length}x{channels}", max_bytes)
    workers = resolve_threads(threads)
    fill = -np.inf if reduce == "max" else 0.0
    combine = np.maximum if reduce == "max" else np.add
    result = np.empty((count, rows.out, cols.out, channels), dtype=dtype)

    def reduce_axis(source: Array, axis: int, plan: AxisPlan, outputs: int, out: Array) -> None:
        last = (outputs - 1) * plan.stride + 1
        taps = [
            source[(slice(None),) * axis + (slice(start, start + last, plan.stride),)]
            for start in range(0, plan.extent, plan.dilation)
        ]
        if len(taps) == 1:
            out[...] = taps[0]
            return
        combine(taps[0], taps[1], out=out)
        for tap in taps[2:]:
            combine(out, tap, out=out)

    def band(task: tuple[slice, int, int]) -> None:
        images, first, stop = task
        block = padded_block(batch, images, rows, rows.padded_span(first, stop), cols, dtype, fill)
        across = np.empty((*block.shape[:2], cols.out, channels), dtype=dtype)
        reduce_axis(block, 2, cols, cols.out, across)
        reduce_axis(across, 1, rows, stop - first, result[images, first:stop])

    tasks = bands(count, rows.out, padded_row_bytes, min(tuning().block_bytes, POOL_BAND_BYTES))
    run_blocks(tasks, band, workers)
    return result


def max_pool2d(
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
    """Max over each (dilated) window, like PyTorch's max_pool2d.

    Args:
        x: (N, H, W, C), (H, W, C) or (H, W); (N, C, H, W) or (C, H, W) with layout="NCHW".
        size: window (kh, kw) or an int.
        stride: defaults to ``size``.
        padding: int, (ph, pw) or (top, bottom, left, right), each at most size // 2, padded
            with -inf (padding never wins); or "valid"/"same" (TensorFlow's rule).
        dilation: spacing between window taps.
        ceil_mode: round the output size up; a last window that would start in the trailing
            padding is dropped (PyTorch's rule).
        layout: "NHWC" or "NCHW".
        max_bytes: refuse (LimitError) before allocating more than this for the output.
        threads: most worker threads to use; default $CONVCLI_THREADS, else every core.

    Returns:
        float64 for float64 input, else float32, of shape (N, H', W', C) in ``layout`` with
        H' = floor((H + top + bottom - d*(k-1) - 1) / s) + 1 (ceil with ``ceil_mode``).
    """
    source = np.asarray(x)
    batch = _to_nhwc(source, layout)
    _compute_dtype(source)
    no_empty_dimension(source.shape, "input")
    rows, cols, _ = _pool_plans(batch, size, stride, padding, dilation, ceil_mode, max_bytes)
    result = _pool(batch, rows, cols, reduce="max", max_bytes=max_bytes, threads=threads)
    return _from_nhwc(result, source.ndim, layout)


def avg_pool2d(
    x: npt.ArrayLike,
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
    """Mean over each window, like PyTorch's avg_pool2d.

    ``count_include_pad=True`` (PyTorch's default) divides by the taps inside the padded input
    (ceil-mode overhang excluded); ``False`` divides by the real pixels only, which is what
    TensorFlow's SAME average pooling does. Arguments and shapes as :func:`max_pool2d`, with
    zero padding.
    """
    source = np.asarray(x)
    batch = _to_nhwc(source, layout)
    _compute_dtype(source)
    no_empty_dimension(source.shape, "input")
    rows, cols, pads = _pool_plans(batch, size, stride, padding, 1, ceil_mode, max_bytes)
    _, height, width, _ = batch.shape
    top, bottom, left, right = pads
    if count_include_pad:
        row_counts = _window_counts_from(rows, top, -top, height + bottom)
        col_counts = _window_counts_from(cols, left, -left, width + right)
    else:
        row_counts = _window_counts_from(rows, top, 0, height)
        col_counts = _window_counts_from(cols, left, 0, width)
    sums = _pool(batch, rows, cols, reduce="sum", max_bytes=max_bytes, threads=threads)
    divisor = (row_counts[:, None] * col_counts[None, :]).astype(sums.dtype)
    sums /= divisor[None, :, :, None]
    return _from_nhwc(sums, source.ndim, layout)


def _window_counts_from(plan: AxisPlan, before: int, low: int, high: int) -> FloatArray:
    """Per output, how many window taps fall inside positions [low, high) of the input axis."""
    starts = np.arange(plan.out) * plan.stride - before
    taps = starts[:, None] + np.arange(plan.kernel) * plan.dilation
    inside: npt.NDArray[np.bool_] = (taps >= low) & (taps < high)
    counts: FloatArray = inside.sum(axis=1).astype(np.float64)
    return counts
