"""conv_transpose2d, the adjoint of conv2d, and the transposed convolution that conv2d's
input gradient is: a strided scatter-add over the kernel taps, folded back onto the pixels
that reflect, replicate or circular padding copied.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

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
from convcli.engine.blocks import AxisPlan
from convcli.engine.conv import _cast_finite, _filters_ohwi, conv2d
from convcli.engine.paths import ConvGeometry
from convcli.engine.threads import resolve_threads
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES

__all__ = ["conv_transpose2d"]

Array: TypeAlias = npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

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
