"""Batch 2-D cross-correlation and pooling in pure NumPy, with PyTorch/TensorFlow semantics.

This module validates arguments and picks how to compute; the computing happens in
:mod:`convcli.convpaths` (convolution: GEMM, depthwise tap loop, separable, FFT) and below
(pooling). Everything runs in NHWC, in bands of output rows so that scratch memory stays
bounded whatever the batch size: each band is padded on the fly (:mod:`convcli.blocks`, no
padded copy of the whole input). Python loops run over bands and kernel taps only, never over
pixels; bands that need no BLAS run on worker threads (:mod:`convcli.threads`).

Output size, per spatial axis, for input size ``n``, padding ``before + after``, kernel ``k``,
dilation ``d`` and stride ``s``::

    out = floor((n + before + after - d * (k - 1) - 1) / s) + 1

``padding="same"`` follows TensorFlow: ``out = ceil(n / s)`` and the total padding
``max((out - 1) * s + d * (k - 1) + 1 - n, 0)`` is split with the extra pixel after.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli.blocks import AxisPlan, axis_plan, bands, padded_block
from convcli.convpaths import (
    FFT_SCRATCH_BYTES,
    PATHS,
    ConvGeometry,
    fft_cost,
    fft_plan,
)
from convcli.errors import ConvcliError, LimitError
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.threads import THREADS_ENV, resolve_threads, run_blocks
from convcli.validate import no_empty_dimension, one_of

__all__ = [
    "CONV_PATHS",
    "DEFAULT_MAX_BYTES",
    "KERNEL_LAYOUTS",
    "LAYOUTS",
    "PAD_MODES",
    "THREADS_ENV",
    "Tuning",
    "applicable_conv_paths",
    "avg_pool2d",
    "choose_conv_path",
    "conv2d",
    "conv2d_path",
    "max_pool2d",
    "resolve_padding",
    "tuned",
    "tuning",
]

#: Input/output layouts of arrays: batch, height, width, channels in either order.
LAYOUTS = ("NHWC", "NCHW")
#: Layouts of 4-D filter banks: convcli's default, PyTorch's weight, TensorFlow's filter.
KERNEL_LAYOUTS = ("OHWI", "OIHW", "HWIO")
#: Padding modes, with PyTorch's names and meanings.
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
#: Bytes of unfolded patches (or padded rows, for pooling) one block aims for.
BLOCK_BYTES = 4 * 1024**2
#: Ways conv2d can compute (convcli.convpaths); ``choose_conv_path`` picks one.
CONV_PATHS = tuple(PATHS)
#: Padded-input bytes per band of pooling: a band and its partial maxima stay in L2.
POOL_BAND_BYTES = 512 * 1024

Array: TypeAlias = npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
IntPair: TypeAlias = tuple[int, int]
Padding4: TypeAlias = tuple[int, int, int, int]
PaddingArg: TypeAlias = int | str | Sequence[int]
PairArg: TypeAlias = int | Sequence[int]


# --------------------------------------------------------------------------- argument checks


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _pair(value: PairArg, name: str, *, minimum: int = 1) -> IntPair:
    """``value`` as (height, width), each an int >= ``minimum``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConvcliError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ConvcliError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _compute_dtype(x: Array, name: str = "input") -> np.dtype[Any]:
    """float64 stays float64; every other real dtype computes in float32."""
    kind = x.dtype.kind
    if kind not in "iuf":
        what = {"b": "bool", "c": "complex", "U": "string", "S": "bytes", "O": "object"}
        raise ConvcliError(
            f"{name} dtype {what.get(kind, str(x.dtype))} ({x.dtype}) is not supported; "
            "expected integers or floats"
        )
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _check_layout(layout: str) -> None:
    one_of(layout, LAYOUTS, "layout")


def _to_nhwc(x: Array, layout: str) -> Array:
    """View an input of rank 2, 3 or 4 in ``layout`` as an (N, H, W, C) batch."""
    _check_layout(layout)
    if x.ndim == 2:
        return x[None, :, :, None]
    if x.ndim == 3:
        return x[None] if layout == "NHWC" else x.transpose(1, 2, 0)[None]
    if x.ndim == 4:
        return x if layout == "NHWC" else x.transpose(0, 2, 3, 1)
    raise ConvcliError(
        f"input must be 2-D (H,W), 3-D (H,W,C) or 4-D (N,H,W,C) in layout {layout}, "
        f"got {x.ndim}-D shape {x.shape}"
    )


def _from_nhwc(out: Array, rank: int, layout: str) -> Array:
    """Return an (N, H, W, C) result in the input's rank and layout.

    A 2-D input keeps rank 2 when the result has one channel; with several output channels
    the result gains a channel axis ((H, W, C) or (C, H, W)).
    """
    if rank == 2 and out.shape[3] == 1:
        return out[0, :, :, 0]
    if rank in (2, 3):
        single = out[0]
        return single if layout == "NHWC" else np.ascontiguousarray(single.transpose(2, 0, 1))
    return out if layout == "NHWC" else np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def resolve_padding(
    padding: PaddingArg,
    size: IntPair,
    extent: IntPair,
    stride: IntPair,
) -> Padding4:
    """Padding as (top, bottom, left, right) pixels.

    Args:
        padding: int, (ph, pw), (top, bottom, left, right), ``"valid"`` or ``"same"``.
        size: input (height, width).
        extent: effective kernel size ``dilation * (k - 1) + 1`` per axis.
        stride: stride per axis.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            sides: list[int] = []
            for n, k, s in zip(size, extent, stride, strict=True):
                out = -(-n // s)
                total = max((out - 1) * s + k - n, 0)
                sides += [total // 2, total - total // 2]
            return (sides[0], sides[1], sides[2], sides[3])
        raise ConvcliError(f'padding must be "same", "valid" or ints, got {padding!r}')
    if _is_int(padding):
        p = int(padding)  # type: ignore[arg-type]
        values: tuple[int, ...] = (p, p, p, p)
    elif isinstance(padding, Sequence) and all(_is_int(v) for v in padding):
        if len(padding) == 2:
            values = (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
        elif len(padding) == 4:
            values = tuple(int(v) for v in padding)
        else:
            raise ConvcliError(
                f"padding must have 1, 2 (ph, pw) or 4 (top, bottom, left, right) values, "
                f"got {len(padding)}"
            )
    else:
        raise ConvcliError(
            f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}"
        )
    if min(values) < 0:
        raise ConvcliError(f"padding must be >= 0, got {padding!r}")
    return (values[0], values[1], values[2], values[3])


def _output_length(n: int, before: int, after: int, extent: int, stride: int) -> int:
    return (n + before + after - extent) // stride + 1


def _check_bytes(nbytes: int, what: str, max_bytes: int) -> None:
    if nbytes > max_bytes:
        raise LimitError(
            f"{what} would need {nbytes:,} bytes, over the limit of {max_bytes:,} (max_bytes)"
        )


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
