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
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from convcli.engine.args import (
    PaddingArg,
    PairArg,
    _compute_dtype,
    _from_nhwc,
    _to_nhwc,
)
from convcli.engine.blocks import bands, padded_block
from convcli.engine.conv import _cast_finite, _conv_geometry, tuning
from convcli.engine.paths import GEMM_MAX_WORKERS, ConvGeometry
from convcli.engine.threads import resolve_threads, run_blocks, single_blas_thread
from convcli.engine.transpose import _input_gradient
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES

__all__ = ["GRADIENT_NAMES", "ConvGradients", "conv2d_backward"]

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
