"""conv2d: its geometry (every argument checked, both axes planned), the choice of path,
and the engine tuning tests and benchmarks set (:func:`tuned`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.engine.args import (
    BLOCK_BYTES,
    CONV_PATHS,
    KERNEL_LAYOUTS,
    PAD_MODES,
    Array,
    FloatArray,
    PaddingArg,
    PairArg,
    _check_bytes,
    _compute_dtype,
    _from_nhwc,
    _is_int,
    _output_length,
    _pair,
    _to_nhwc,
    resolve_padding,
)
from convcli.engine.blocks import axis_plan
from convcli.engine.large_kernels import FFT_SCRATCH_BYTES, PATHS, fft_cost, fft_plan
from convcli.engine.paths import ConvGeometry
from convcli.engine.threads import resolve_threads
from convcli.errors import ConvcliError
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.validate import no_empty_dimension, one_of

# --------------------------------------------------------------------------- convolution


def _check_padded(height: int, width: int, pixel_bytes: int, max_bytes: int) -> None:
    """Refuse padding so large that one padded row (or the index maps) would not fit."""
    _check_bytes(
        max(width * pixel_bytes, (height + width) * np.dtype(np.intp).itemsize),
        f"the padded input ({height:,}x{width:,})",
        max_bytes,
    )


def _cast_finite(values: Array, dtype: np.dtype[Any], name: str) -> Array:
    """``values`` in ``dtype``, refusing finite numbers that overflow it (1e300 in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = values.astype(dtype)
    if not np.isfinite(cast).all() and np.isfinite(values).all():
        largest = float(np.abs(values.astype(np.float64)).max())
        raise ConvcliError(f"{name} overflow {dtype} (largest magnitude {largest:.3g})")
    return cast


def _filters_ohwi(
    weights: Array, channels: int, groups: int, kernel_layout: str
) -> tuple[Array, int]:
    """The filter bank as (F, kh, kw, C/groups) and the number of groups it implies."""
    if weights.ndim == 2:
        # One filter applied to each channel on its own: depthwise, one output per channel.
        if groups not in (1, channels):
            raise ConvcliError(
                f"2-D weights {weights.shape} filter each of the {channels} channels on its own "
                f"(groups={channels}); groups={groups} does not apply"
            )
        bank = np.broadcast_to(weights[None, :, :, None], (channels, *weights.shape, 1))
        return bank, channels
    if weights.ndim == 3:
        if groups != 1:
            raise ConvcliError(f"3-D weights {weights.shape} take groups=1, got groups={groups}")
        if weights.shape[2] != channels:
            raise ConvcliError(
                f"3-D weights (kh,kw,C) {weights.shape} have {weights.shape[2]} channels but the "
                f"input has {channels}"
            )
        return weights[None], 1
    if weights.ndim != 4:
        raise ConvcliError(
            f"weights must be 2-D (kh,kw), 3-D (kh,kw,C) or 4-D, got {weights.ndim}-D "
            f"shape {weights.shape}"
        )
    if kernel_layout == "OHWI":
        bank = weights
    elif kernel_layout == "OIHW":
        bank = weights.transpose(0, 2, 3, 1)
    elif kernel_layout == "HWIO":
        bank = weights.transpose(3, 0, 1, 2)
    else:
        one_of(kernel_layout, KERNEL_LAYOUTS, "kernel_layout")
    filters, _, _, per_group = bank.shape
    if channels % groups or filters % groups:
        raise ConvcliError(
            f"groups={groups} must divide the input channels ({channels}) and the filters "
            f"({filters}); weights {weights.shape} in {kernel_layout}"
        )
    if per_group * groups != channels:
        raise ConvcliError(
            f"weights {weights.shape} in {kernel_layout} expect {per_group} input channels per "
            f"group (x{groups} groups = {per_group * groups}), but the input has {channels}"
        )
    return bank, groups


def _conv_geometry(
    source: Array,
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
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[ConvGeometry, Array | None]:
    """Validate conv2d's arguments (in its order, with its messages) and plan both axes."""
    dtype = _compute_dtype(source)
    batch = _to_nhwc(source, layout)
    count, height, width, channels = batch.shape
    no_empty_dimension(source.shape, "input")

    kernel = np.asarray(weights)
    _compute_dtype(kernel, "weights")
    if kernel.ndim in (2, 3, 4) and min(kernel.shape) < 1:
        raise ConvcliError(f"weights have an empty dimension: shape {kernel.shape}")
    if not _is_int(groups) or groups < 1:
        raise ConvcliError(f"groups must be a positive int, got {groups!r}")
    bank, groups = _filters_ohwi(kernel, channels, int(groups), kernel_layout)
    filters, kernel_h, kernel_w, per_group = bank.shape
    if flip:
        bank = bank[:, ::-1, ::-1, :]

    bias_vector: Array | None = None
    if bias is not None:
        bias_array = np.asarray(bias)
        _compute_dtype(bias_array, "bias")
        if bias_array.ndim == 0:
            bias_vector = _cast_finite(np.full(filters, bias_array), dtype, "bias")
        elif bias_array.shape == (filters,):
            bias_vector = _cast_finite(bias_array, dtype, "bias")
        else:
            raise ConvcliError(
                f"bias must be a scalar or have one value per output channel ({filters}), "
                f"got shape {bias_array.shape}"
            )

    stride_hw = _pair(stride, "stride")
    dilation_hw = _pair(dilation, "dilation")
    one_of(pad_mode, PAD_MODES, "pad_mode")
    extent = (dilation_hw[0] * (kernel_h - 1) + 1, dilation_hw[1] * (kernel_w - 1) + 1)
    top, bottom, left, right = resolve_padding(padding, (height, width), extent, stride_hw)
    for axis, n, pads in (("height", height, (top, bottom)), ("width", width, (left, right))):
        if pad_mode == "reflect" and max(pads) >= n:
            raise ConvcliError(
                f"reflect padding {max(pads)} must be smaller than the input {axis} {n}"
            )
        if pad_mode == "circular" and max(pads) > n:
            raise ConvcliError(f"circular padding {max(pads)} must not exceed the input {axis} {n}")
    out_h = _output_length(height, top, bottom, extent[0], stride_hw[0])
    out_w = _output_length(width, left, right, extent[1], stride_hw[1])
    if out_h < 1 or out_w < 1:
        raise ConvcliError(
            f"output would be empty: input {height}x{width} padded by "
            f"({top},{bottom},{left},{right}) is smaller than the dilated kernel "
            f"{extent[0]}x{extent[1]}"
        )
    itemsize = dtype.itemsize
    _check_bytes(
        count * out_h * out_w * filters * itemsize,
        f"output {count}x{out_h}x{out_w}x{filters}",
        max_bytes,
    )
    taps = kernel_h * kernel_w
    patch_row_bytes = out_w * taps * channels * itemsize
    _check_bytes(patch_row_bytes, f"one row of {out_w} patches of {taps}x{channels}", max_bytes)
    _check_padded(height + top + bottom, width + left + right, channels * itemsize, max_bytes)

    rows = axis_plan(
        height,
        top,
        bottom,
        kernel=kernel_h,
        stride=stride_hw[0],
        dilation=dilation_hw[0],
        out=out_h,
        mode=pad_mode,
    )
    cols = axis_plan(
        width,
        left,
        right,
        kernel=kernel_w,
        stride=stride_hw[1],
        dilation=dilation_hw[1],
        out=out_w,
        mode=pad_mode,
    )
    geometry = ConvGeometry(batch, _cast_finite(bank, dtype, "weights"), groups, rows, cols, dtype)
    return geometry, bias_vector


def conv2d(
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
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> FloatArray:
    """2-D cross-correlation of a batch of images with a filter bank (PyTorch's conv2d).

    Args:
        x: (N, H, W, C) batch, (H, W, C) image or (H, W) gray image; with ``layout="NCHW"``
            (N, C, H, W) or (C, H, W).
        weights: (kh, kw) one filter for each channel on its own (out channels = C);
            (kh, kw, C) one filter over all channels (one out channel); or a 4-D bank in
            ``kernel_layout``: OHWI (F, kh, kw, C/groups), OIHW (F, C/groups, kh, kw) or
            HWIO (kh, kw, C/groups, F).
        bias: scalar or one value per output channel, added after the correlation.
        stride: int or (sh, sw).
        padding: int, (ph, pw), (top, bottom, left, right), "valid" or "same" (TensorFlow's
            rule, stride and even kernels included).
        dilation: int or (dh, dw).
        groups: input channels and filters are split into this many groups.
        pad_mode: "zeros", "reflect", "replicate" or "circular" (PyTorch's meanings).
        flip: rotate the kernel 180 degrees (true convolution).
        layout: "NHWC" or "NCHW", of the input and the result.
        kernel_layout: layout of 4-D weights.
        max_bytes: refuse (LimitError) before allocating an output or scratch block larger.
        threads: most worker threads to use; default $CONVCLI_THREADS, else every available
            core. Matrix products run on the BLAS library's own threads.

    Returns:
        float64 for a float64 input, otherwise float32, shaped as the input with
        H' = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1 (likewise W') and F channels.
        A 2-D input with several output channels gains a channel axis.

    Raises:
        ConvcliError: a bad argument (a ValueError naming it and the shapes involved).
        LimitError: the output or scratch memory would exceed ``max_bytes``.
    """
    source = np.asarray(x)
    geometry, bias_vector = _conv_geometry(
        source,
        weights,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        pad_mode=pad_mode,
        flip=flip,
        layout=layout,
        kernel_layout=kernel_layout,
        max_bytes=max_bytes,
    )
    workers = resolve_threads(threads)
    path = choose_conv_path(geometry)
    shape = (geometry.batch.shape[0], geometry.rows.out, geometry.cols.out, geometry.filters)
    result = np.empty(shape, dtype=geometry.dtype)
    PATHS[path](geometry, result, tuning().block_bytes, workers)
    if bias_vector is not None:
        result += bias_vector
    return _from_nhwc(result, source.ndim, layout)


# --------------------------------------------------------------------------- dispatch

#: Rank-1 depthwise kernels with at least this many taps take the separable path; smaller
#: ones are as cheap or cheaper as a direct tap loop (measured: 5x5 on gray and RGB
#: images, 36 vs 42 ms and 27 vs 36 ms; 7x7 on gray, 29 vs 58 ms).
SEPARABLE_MIN_TAPS = 49
#: Depthwise kernels with fewer taps never take the FFT path: below it the tap loop is as
#: fast, and it keeps results of small integer kernels on integer images exact.
FFT_MIN_TAPS = 49


@dataclasses.dataclass(frozen=True)
class Tuning:
    """How the engine blocks its work: for tests and benchmarks, never needed for results.

    ``block_bytes`` is the scratch one block aims for (small values split row bands and
    image groups at awkward places); ``conv_path`` forces a path of CONV_PATHS wherever it
    applies. Set with :func:`tuned`; a context variable, so it follows the engine's
    threads and stays out of other tests and threads.
    """

    block_bytes: int = BLOCK_BYTES
    conv_path: str | None = None


_TUNING: ContextVar[Tuning] = ContextVar("convcli_engine_tuning", default=Tuning())  # noqa: B039 - frozen


def tuning() -> Tuning:
    """The tuning in force (the defaults unless inside :func:`tuned`)."""
    return _TUNING.get()


@contextlib.contextmanager
def tuned(**changes: Any) -> Iterator[Tuning]:
    """Run the block with some :class:`Tuning` fields changed, e.g. ``tuned(block_bytes=1)``.

    Raises:
        ConvcliError: an unknown field, a block size below 1 or an unknown path.
    """
    unknown = set(changes) - {field.name for field in dataclasses.fields(Tuning)}
    if unknown:
        raise ConvcliError(f"unknown tuning fields {sorted(unknown)}")
    if changes.get("block_bytes", 1) < 1:
        raise ConvcliError(f"block_bytes must be >= 1, got {changes['block_bytes']!r}")
    if changes.get("conv_path") is not None:
        one_of(changes["conv_path"], CONV_PATHS, "conv_path")
    token = _TUNING.set(dataclasses.replace(_TUNING.get(), **changes))
    try:
        yield _TUNING.get()
    finally:
        _TUNING.reset(token)


def applicable_conv_paths(geometry: ConvGeometry) -> tuple[str, ...]:
    """The paths that compute this correlation (``gemm`` computes every one)."""
    paths = ["gemm"]
    if geometry.depthwise:
        paths.append("depthwise")
        if geometry.rank_one is not None:
            paths.append("separable")
        # An infinite weight makes direct sums inf or NaN window by window, but an FFT
        # NaN everywhere: only finite kernels.
        if (
            geometry.unit_stride
            and bool(np.isfinite(geometry.bank).all())
            and fft_plan(geometry, tuning().block_bytes).scratch_bytes <= FFT_SCRATCH_BYTES
        ):
            paths.append("fft")
    return tuple(paths)


def choose_conv_path(geometry: ConvGeometry) -> str:
    """The fastest applicable path, by shape and dtype.

    - A filter bank that mixes channels: ``gemm`` (BLAS does the work).
    - Depthwise (each output channel reads one input channel): ``separable`` for rank-1
      kernels of SEPARABLE_MIN_TAPS taps or more; else ``fft`` at stride 1 for kernels of
      FFT_MIN_TAPS taps or more when its estimated cost per output is below the tap count;
      else the ``depthwise`` tap loop.
    """
    forced = tuning().conv_path
    if forced is not None and forced in applicable_conv_paths(geometry):
        return forced
    if not geometry.depthwise:
        return "gemm"
    if geometry.taps >= SEPARABLE_MIN_TAPS and geometry.rank_one is not None:
        return "separable"
    taps = geometry.taps
    if (
        taps >= FFT_MIN_TAPS
        and "fft" in applicable_conv_paths(geometry)
        and fft_cost(geometry, tuning().block_bytes) < taps
    ):
        return "fft"
    return "depthwise"


def conv2d_path(x: npt.ArrayLike, weights: npt.ArrayLike, **options: Any) -> str:
    """The path :func:`conv2d` would take for these arguments (for tests and benchmarks)."""
    geometry, _ = _conv_geometry(np.asarray(x), weights, None, **options)
    return choose_conv_path(geometry)
