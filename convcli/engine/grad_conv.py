"""Backpropagation through conv2d, and the transposed convolution, in pure NumPy.

For ``out = conv2d(x, w) + b`` and the gradient ``g`` of a loss with respect to ``out``
(autograd's ``grad_output``), with ``xp`` the padded input, stride ``s`` and dilation ``d``::

    grad_b[f]          = sum over n, i, j of g[n, i, j, f]
    grad_w[f, a, b, c] = sum over n, i, j of g[n, i, j, f] * xp[n, i*s + a*d, j*s + b*d, c]
    grad_xp[n, i*s + a*d, j*s + b*d, c] += g[n, i, j, f] * w[f, a, b, c]

(``c`` within filter ``f``'s group). ``grad_x`` is ``grad_xp`` cropped to the input, plus,
for reflect/replicate/circular padding, the padded positions folded back onto the pixels
they copied. ``grad_xp`` is the transposed convolution of ``g`` (:func:`conv_transpose2d`).
No Python loop runs over pixels:

- ``grad_w``: per band of output rows, the padded rows unfolded along the width only, and
  one matrix product per kernel row and chunk of outputs; bands on threads.
- ``grad_x``: forward correlations run by :func:`convcli.engine.conv2d` (all its paths,
  bands and threads). With stride ``s``, taps ``a0, a0 + s', ...`` (``s' = s / gcd(s, d)``)
  alone reach padded positions ``a0*d + s*q``; there ``grad_xp`` is a stride-1 correlation
  of ``g`` with those taps rotated 180 degrees and channels swapped, at dilation
  ``d / gcd(s, d)``: every multiply-add once, no zeros inserted into ``g``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from convcli.engine.args import (
    KERNEL_LAYOUTS,
    PaddingArg,
    PairArg,
    _check_bytes,
    _compute_dtype,
    _from_nhwc,
    _is_int,
    _pair,
    _to_nhwc,
    resolve_padding,
)
from convcli.engine.blocks import AxisPlan, bands, padded_block
from convcli.engine.conv import _cast_finite, _conv_geometry, _filters_ohwi, conv2d, tuning
from convcli.engine.paths import GEMM_MAX_WORKERS, ConvGeometry
from convcli.engine.threads import resolve_threads, run_blocks, single_blas_thread
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES

__all__ = ["GRADIENT_NAMES", "ConvGradients", "conv2d_backward", "conv_transpose2d"]

Array: TypeAlias = npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

#: What conv2d_backward can compute, the names of ``needs``.
GRADIENT_NAMES = ("input", "weight", "bias")
#: Axis order that turns an (F, kh, kw, C/groups) bank into each 4-D kernel layout.
_BANK_TO_LAYOUT = {"OHWI": (0, 1, 2, 3), "OIHW": (0, 3, 1, 2), "HWIO": (1, 2, 3, 0)}
#: Output positions per matrix product of the weight gradient. OpenBLAS runs these thin
#: products (a few dozen rows and columns, a long inner dimension) fastest when both
#: operands stay in L2: measured 1.3-2.5x faster than one product over a whole band.
GEMM_CHUNK_ROWS = 4096


class ConvGradients(NamedTuple):
    """Gradients with respect to conv2d's arguments, each shaped as its argument (2-D
    weights: summed over the channels they filtered); None where not computed."""

    input: FloatArray | None
    weight: FloatArray | None
    bias: FloatArray | None


def _layout_shape(nhwc: tuple[int, int, int, int], rank: int, layout: str) -> tuple[int, ...]:
    """The shape :func:`convcli.engine._from_nhwc` gives an (N, H, W, C) result."""
    count, height, width, channels = nhwc
    if rank == 2 and channels == 1:
        return (height, width)
    if rank in (2, 3):
        return (height, width, channels) if layout == "NHWC" else (channels, height, width)
    return nhwc if layout == "NHWC" else (count, channels, height, width)


def _grad_output_nhwc(
    grad_output: npt.ArrayLike,
    nhwc: tuple[int, int, int, int],
    rank: int,
    layout: str,
    dtype: np.dtype[Any],
    context: str,
) -> Array:
    """``grad_output`` checked against the forward output's shape, as contiguous NHWC."""
    array = np.asarray(grad_output)
    _compute_dtype(array, "grad_output")
    expected = _layout_shape(nhwc, rank, layout)
    if array.shape != expected:
        raise ConvcliError(
            f"grad_output must have the shape of the forward output, {expected} ({context}, "
            f"layout {layout}), got {array.shape}"
        )
    if array.dtype != dtype:
        array = _cast_finite(array, dtype, "grad_output")
    return np.ascontiguousarray(_to_nhwc(array, layout))


def _check_needs(needs: Sequence[str]) -> frozenset[str]:
    names = (needs,) if isinstance(needs, str) else tuple(needs)
    unknown = [name for name in names if name not in GRADIENT_NAMES]
    if unknown:
        raise ConvcliError(
            f"needs must name gradients among {', '.join(GRADIENT_NAMES)}, got {unknown[0]!r}"
        )
    return frozenset(names)


# --------------------------------------------------------------------------- transposed conv


class _Phase(NamedTuple):
    """Along one axis, the taps that reach one residue class of padded positions: window
    positions ``target`` get a stride-1 correlation of gradient rows ``source`` (padded
    by ``before``/``after``) with those ``taps`` reversed, at ``dilation``."""

    taps: slice
    source: slice
    before: int
    after: int
    dilation: int
    target: slice
    whole: bool  # ``target`` is the whole window: the correlation is the result


def _phases(
    outputs: int, kernel: int, stride: int, dilation: int, window: tuple[int, int]
) -> list[_Phase]:
    """Phases covering padded positions ``window = (start, length)`` of one axis.

    Output ``i`` and tap ``a`` meet at position ``i*stride + a*dilation``. Taps
    ``a = first + m*step`` (``step = stride / gcd``) meet at ``first*dilation + q*stride``
    with ``q = i + m*(dilation / gcd)``: a correlation over ``q``. Phases no tap reaches,
    and positions no output reaches, are absent (their gradient is zero).
    """
    common = math.gcd(stride, dilation)
    step, sub_dilation = stride // common, dilation // common
    start, length = window
    phases = []
    for first in range(min(step, kernel)):
        count = len(range(first, kernel, step))
        extent = (count - 1) * sub_dilation + 1
        offset = first * dilation
        # q with start <= offset + q*stride < start + length, and reached by some output.
        low = max(-(-(start - offset) // stride), 0)
        high = min(-(-(start + length - offset) // stride), outputs + extent - 1)
        if low >= high:
            continue
        lead = extent - 1 - low  # padding before the gradient rows; negative: skip rows
        source = slice(max(-lead, 0), min(high, outputs))
        begin = offset + low * stride - start
        target = slice(begin, begin + (high - low - 1) * stride + 1, stride)
        whole = stride == 1 and begin == 0 and high - low == length
        phase = (slice(first, kernel, step), source, max(lead, 0), high - source.stop)
        phases.append(_Phase(*phase, sub_dilation, target, whole))
    return phases


def _transpose(
    gradient: Array,
    bank: Array,
    groups: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    window_h: tuple[int, int],
    window_w: tuple[int, int],
    max_bytes: int,
    threads: int,
) -> Array:
    """Positions ``window_h`` x ``window_w`` (start, length) of the transposed convolution.

    ``gradient`` is (N, H', W', F) in the compute dtype, ``bank`` the forward's (F, kh, kw,
    C/groups) filters; the result is (N, rows, columns, C) in the gradient's dtype, with
    position ``p`` of an axis receiving ``gradient[i] * bank[a]`` where ``p = i*s + a*d``.
    """
    count, out_h, out_w, filters = gradient.shape
    _, kernel_h, kernel_w, per_group = bank.shape
    channels = per_group * groups
    shape = (count, window_h[1], window_w[1], channels)
    size = f"transposed convolution {'x'.join(map(str, shape))}"
    _check_bytes(math.prod(shape) * gradient.dtype.itemsize, size, max_bytes)
    result: Array | None = None
    for rows in _phases(out_h, kernel_h, stride[0], dilation[0], window_h):
        for cols in _phases(out_w, kernel_w, stride[1], dilation[1], window_w):
            taps = bank[:, rows.taps, cols.taps, :][:, ::-1, ::-1, :]
            sub_h, sub_w = taps.shape[1:3]
            # Filter f of group k becomes input channel f of group k, and vice versa.
            swapped = (
                taps.reshape(groups, filters // groups, sub_h, sub_w, per_group)
                .transpose(0, 4, 2, 3, 1)
                .reshape(channels, sub_h, sub_w, filters // groups)
            )
            pads = (rows.before, rows.after, cols.before, cols.after)
            options: dict[str, Any] = {"groups": groups, "max_bytes": max_bytes, "threads": threads}
            dilations = (rows.dilation, cols.dilation)
            block = gradient[:, rows.source, cols.source]
            values = conv2d(block, swapped, padding=pads, dilation=dilations, **options)
            if rows.whole and cols.whole:
                return values
            if result is None:
                result = np.zeros(shape, dtype=gradient.dtype)
            result[:, rows.target, cols.target] = values
    if result is None:  # no output reaches the window
        result = np.zeros(shape, dtype=gradient.dtype)
    return result


def _fold(padded: Array, plan: AxisPlan, axis: int) -> Array:
    """Sum the gradient of padded positions onto the input positions they copied."""
    lead = (slice(None),) * axis
    result = np.array(padded[(*lead, slice(plan.before, plan.before + plan.size))])
    positions = np.arange(plan.length)
    outside = positions[
        plan.valid & ((positions < plan.before) | (positions >= plan.before + plan.size))
    ]
    if outside.size:
        copied: tuple[Any, ...] = (*lead, plan.index[outside])
        np.add.at(result, copied, np.take(padded, outside, axis=axis))
    return result


def _input_gradient(geometry: ConvGeometry, gradient: Array, max_bytes: int, threads: int) -> Array:
    """(N, H, W, C): the transposed convolution cropped, or folded, onto the input."""
    rows, cols = geometry.rows, geometry.cols
    zeros = rows.mode == "zeros"
    windows = ((rows.before, rows.size), (cols.before, cols.size))
    if not zeros:
        windows = ((0, rows.length), (0, cols.length))
    strides, dilations = (rows.stride, cols.stride), (rows.dilation, cols.dilation)
    geometric = (geometry.groups, strides, dilations, *windows)
    padded = _transpose(gradient, geometry.bank, *geometric, max_bytes, threads)
    return padded if zeros else _fold(_fold(padded, rows, 1), cols, 2)


def _bank_gradient(geometry: ConvGeometry, gradient: Array, threads: int) -> Array:
    """(F, kh, kw, C/groups), band by band of output rows.

    A band's padded rows are unfolded along the width only, (n, rows, W', groups, kw, Cg):
    kernel row ``a`` reads rows ``a*dh + i*sh`` of that copy, so each product is a plain
    matrix product and the copy is kh times smaller than im2col patches. Each thread sums a
    fixed run of bands into its own partial sum, added in order: the result does not depend
    on thread timing.
    """
    rows, cols, dtype, groups = geometry.rows, geometry.cols, geometry.dtype, geometry.groups
    filters, kernel_h, kernel_w, per_group = geometry.bank.shape
    channels, depth, per_filter_group = groups * per_group, kernel_w * per_group, filters // groups
    row_bytes = cols.out * kernel_w * channels * dtype.itemsize * rows.stride
    tasks = bands(geometry.batch.shape[0], rows.out, row_bytes, tuning().block_bytes)
    workers = min(threads, len(tasks))
    workers = workers if 2 <= workers <= GEMM_MAX_WORKERS else 1
    runs = [
        tasks[k * len(tasks) // workers : (k + 1) * len(tasks) // workers] for k in range(workers)
    ]
    partials = np.zeros((workers, groups, kernel_h, per_filter_group, depth), dtype=dtype)

    def band(task: tuple[slice, int, int], total: Array) -> None:
        images, first, stop = task
        span = rows.padded_span(first, stop)
        block = padded_block(geometry.batch, images, rows, span, cols, dtype, 0.0)
        s_n, s_h, s_w, s_c = block.strides
        shape = (block.shape[0], block.shape[1], cols.out, kernel_w, groups, per_group)
        steps = (s_n, s_h, cols.stride * s_w, cols.dilation * s_w, per_group * s_c, s_c)
        unfolded = np.ascontiguousarray(
            as_strided(block, shape, steps, writeable=False).transpose(0, 1, 2, 4, 3, 5)
        )
        chunk_rows = max(1, GEMM_CHUNK_ROWS // cols.out)
        for image in range(block.shape[0]):
            # (kh, band rows, W', groups, kw*Cg): row i*sh + a*dh of the copy per kernel row.
            plane = unfolded[image]
            # Strides from the item size: a contiguous copy may keep any stride on its
            # length-1 axes (a view of an (H, W) image has stride 0 on C).
            item = plane.itemsize
            s_row = cols.out * groups * depth * item
            view = (kernel_h, stop - first, cols.out, groups, depth)
            moves = (
                rows.dilation * s_row,
                rows.stride * s_row,
                groups * depth * item,
                depth * item,
                item,
            )
            taps = as_strided(plane, view, moves, writeable=False)
            outputs = gradient[images][image, first:stop]
            # A chunk of output rows at a time, every kernel row: it stays in cache. The
            # reshape is a view at unit row stride, else a copy of the chunk.
            for low in range(0, stop - first, chunk_rows):
                part = taps[:, low : low + chunk_rows].reshape(kernel_h, -1, groups, depth)
                chunk = outputs[low : low + chunk_rows].reshape(-1, groups, per_filter_group)
                total += np.matmul(chunk.transpose(1, 2, 0)[:, None], part.transpose(2, 0, 1, 3))

    def run(index: int) -> None:
        for task in runs[index]:
            band(task, partials[index])

    # With several workers, one BLAS thread per band, as the forward's gemm path.
    with single_blas_thread() if workers > 1 else contextlib.nullcontext(False) as single:
        run_blocks(range(workers), run, workers if single else 1)
    total = partials.sum(axis=0) if workers > 1 else partials[0]
    # (groups, kh, F/groups, kw*Cg) -> (F, kh, kw, Cg), filter f = group * F/groups + k.
    shape = (groups, kernel_h, per_filter_group, kernel_w, per_group)
    per_filter = total.reshape(shape).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(per_filter.reshape(filters, kernel_h, kernel_w, per_group))


def _as_weights(bank_gradient: Array, ndim: int, kernel_layout: str) -> Array:
    """The gradient of the (F, kh, kw, C/groups) bank in the shape of the weights given."""
    if ndim == 2:  # one filter applied to every channel: the gradients of each add up
        return np.ascontiguousarray(bank_gradient[:, :, :, 0].sum(axis=0))
    if ndim == 3:
        single: Array = bank_gradient[0]
        return single
    return np.ascontiguousarray(bank_gradient.transpose(_BANK_TO_LAYOUT[kernel_layout]))


def conv2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    weights: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    stride: PairArg = 1,
    padding: PaddingArg = 0,
    dilation: PairArg = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    layout: str = "NHWC",
    kernel_layout: str = "OHWI",
    needs: Sequence[str] = GRADIENT_NAMES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> ConvGradients:
    """Gradients of a loss with respect to conv2d's input, weights and bias (PyTorch autograd).

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to ``conv2d(x, weights, bias, ...)``, shaped as that output:
        (N, H', W', F) or (N, F, H', W'); (H', W', F) or (F, H', W') for a 3-D ``x``;
        (H', W') for a 2-D ``x`` with one output channel.
    x, weights, bias, stride, padding, dilation, groups, pad_mode, flip, layout, kernel_layout
        The forward's arguments, as :func:`convcli.engine.conv2d` takes them.
    needs : sequence of {"input", "weight", "bias"}
        The gradients to compute; the others are None.
    max_bytes, threads
        As conv2d's: refuse (LimitError) larger results or scratch; most worker threads.

    Returns
    -------
    ConvGradients
        ``input`` shaped as ``x``, ``weight`` as ``weights`` (2-D weights: summed over the
        channels they filtered; with ``flip``, of the weights as passed) and ``bias`` as
        ``bias`` (None without one); float64 for a float64 ``x``, else float32.

    Raises
    ------
    ConvcliError
        A bad argument, as conv2d refuses it, or a ``grad_output`` not shaped as the output.
    LimitError
        A result or scratch block would exceed ``max_bytes``.
    """
    wanted = _check_needs(needs)
    source, kernel = np.asarray(x), np.asarray(weights)
    options: dict[str, Any] = {"stride": stride, "padding": padding, "dilation": dilation}
    options |= {"groups": groups, "pad_mode": pad_mode, "flip": flip, "layout": layout}
    geometry, _ = _conv_geometry(
        source, kernel, bias, kernel_layout=kernel_layout, max_bytes=max_bytes, **options
    )
    workers = resolve_threads(threads)
    shape = (geometry.batch.shape[0], geometry.rows.out, geometry.cols.out, geometry.filters)
    context = f"conv2d of input {source.shape} with weights {kernel.shape}"
    gradient = _grad_output_nhwc(grad_output, shape, source.ndim, layout, geometry.dtype, context)
    grad_input = grad_weight = grad_bias = None
    if "input" in wanted:
        grad_input = _from_nhwc(
            _input_gradient(geometry, gradient, max_bytes, workers), source.ndim, layout
        )
    if "weight" in wanted:
        bank_gradient = _bank_gradient(geometry, gradient, workers)
        if flip:
            bank_gradient = bank_gradient[:, ::-1, ::-1, :]
        grad_weight = _as_weights(bank_gradient, kernel.ndim, kernel_layout)
    if "bias" in wanted and bias is not None:
        # A product with ones: BLAS sums in blocks, several times faster than an axis-0
        # reduction, and without its running sum's rounding drift.
        flat = gradient.reshape(-1, geometry.filters)
        sums = np.ones(flat.shape[0], dtype=geometry.dtype) @ flat
        grad_bias = sums if np.ndim(bias) == 1 else np.asarray(sums.sum(), dtype=geometry.dtype)
    return ConvGradients(grad_input, grad_weight, grad_bias)


def conv_transpose2d(
    x: npt.ArrayLike,
    weights: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    stride: PairArg = 1,
    padding: PaddingArg = 0,
    output_padding: PairArg = 0,
    groups: int = 1,
    dilation: PairArg = 1,
    layout: str = "NHWC",
    kernel_layout: str = "OHWI",
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> FloatArray:
    """Transposed convolution, the adjoint of conv2d (PyTorch's conv_transpose2d).

    The gradient of ``<conv2d(z, weights, ...), x>`` with respect to ``z`` (for a ``z`` of the
    result's size), so ``conv2d_backward(x, z, weights, ...).input`` equals it.

    Parameters
    ----------
    x : array_like
        (N, H, W, F), (H, W, F) or (H, W), or NCHW; F is the forward conv's filter count.
    weights : array_like
        The forward conv's filters in ``kernel_layout``: OHWI (F, kh, kw, C/groups), OIHW
        (F, C/groups, kh, kw), which is PyTorch's conv_transpose2d weight, or HWIO
        (kh, kw, C/groups, F), TensorFlow's conv2d_transpose filter; or 2-D / 3-D as conv2d's.
    bias, stride, padding, groups, dilation, layout, kernel_layout, max_bytes, threads
        As conv2d's, the bias per output channel (C); ``padding`` is cropped from the
        result, and "same" gives H * stride rows (TensorFlow's shape for SAME padding).
    output_padding : int or (int, int)
        Rows (columns) added at the bottom (right), each smaller than the stride or the
        dilation of its axis (PyTorch's rule); 0 with ``padding="same"``.

    Returns
    -------
    ndarray
        In ``x``'s rank and layout, C channels, per axis ``(H - 1) * stride - top - bottom
        + dilation * (k - 1) + 1 + output_padding`` rows; float64 for float64 ``x``, else
        float32.

    Raises
    ------
    ConvcliError
        A bad argument, naming it and the shapes (``output_padding`` too large, say).
    LimitError
        The result or a scratch block would exceed ``max_bytes``.
    """
    source = np.asarray(x)
    dtype = _compute_dtype(source)
    batch = _to_nhwc(source, layout)
    count, in_h, in_w, filters = batch.shape
    if min(batch.shape) < 1:
        raise ConvcliError(f"input has an empty dimension: shape {source.shape}")
    kernel = np.asarray(weights)
    _compute_dtype(kernel, "weights")
    if kernel.ndim in (2, 3, 4) and min(kernel.shape) < 1:
        raise ConvcliError(f"weights have an empty dimension: shape {kernel.shape}")
    if not _is_int(groups) or groups < 1:
        raise ConvcliError(f"groups must be a positive int, got {groups!r}")
    # The result's channels are the forward conv's input channels.
    if kernel.ndim == 4 and kernel_layout in KERNEL_LAYOUTS:
        channels = int(kernel.shape[{"OHWI": 3, "OIHW": 1, "HWIO": 2}[kernel_layout]]) * groups
    else:  # 3-D (kh, kw, C); 2-D: each channel on its own; others: refused just below
        channels = int(kernel.shape[2]) if kernel.ndim == 3 else filters
    bank, group_count = _filters_ohwi(kernel, channels, int(groups), kernel_layout)
    if bank.shape[0] != filters:
        raise ConvcliError(
            f"weights {kernel.shape} in {kernel_layout} have {bank.shape[0]} filters, but the "
            f"input {source.shape} ({layout}) has {filters} channels"
        )
    stride_hw, dilation_hw = _pair(stride, "stride"), _pair(dilation, "dilation")
    extra = _pair(output_padding, "output_padding", minimum=0)
    for axis, o, s, d in zip(("height", "width"), extra, stride_hw, dilation_hw, strict=True):
        if o >= max(s, d):
            raise ConvcliError(
                f"output_padding must be smaller than either stride or dilation, got "
                f"output_padding {o} along {axis} with stride {s} and dilation {d}"
            )
    extent = (dilation_hw[0] * (bank.shape[1] - 1) + 1, dilation_hw[1] * (bank.shape[2] - 1) + 1)
    if padding == "same":
        if max(extra) > 0:
            raise ConvcliError(f'output_padding must be 0 with padding="same", got {extra}')
        sizes = (in_h * stride_hw[0], in_w * stride_hw[1])
        top, bottom, left, right = resolve_padding(padding, sizes, extent, stride_hw)
    else:
        top, bottom, left, right = resolve_padding(padding, (in_h, in_w), extent, stride_hw)
        sizes = (
            (in_h - 1) * stride_hw[0] + extent[0] - top - bottom + extra[0],
            (in_w - 1) * stride_hw[1] + extent[1] - left - right + extra[1],
        )
    if min(sizes) < 1:
        raise ConvcliError(
            f"output would be empty: input {in_h}x{in_w} with kernel extent "
            f"{extent[0]}x{extent[1]}, stride {stride_hw} gives {sizes[0]}x{sizes[1]} after "
            f"cropping padding ({top},{bottom},{left},{right})"
        )
    offset = None if bias is None else np.asarray(bias)
    if offset is not None:
        _compute_dtype(offset, "bias")
        if offset.shape not in ((), (channels,)):
            raise ConvcliError(
                f"bias must be a scalar or have one value per output channel ({channels}), "
                f"got shape {offset.shape}"
            )
    values = np.ascontiguousarray(batch if batch.dtype == dtype else batch.astype(dtype))
    geometric = (group_count, stride_hw, dilation_hw, (top, sizes[0]), (left, sizes[1]))
    bank = _cast_finite(bank, dtype, "weights")
    result = _transpose(values, bank, *geometric, max_bytes, resolve_threads(threads))
    if offset is not None:
        result += _cast_finite(offset, dtype, "bias")
    return _from_nhwc(result, source.ndim, layout)
