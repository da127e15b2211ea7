"""One input through one operation to the bytes of one output: the work behind conv and pool.

A :class:`~convcli.sources.Source` is what was read (an array, the members of an ``.npz``, or
an image); an :class:`Operation` is a resolved convolution or pooling; :func:`process` turns a
source into output bytes plus the rows of the report. Nothing here prints, parses flags,
reads or writes files.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convcli import arrays, engine, images
from convcli.errors import ConvcliError, LimitError
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.sources import Source

#: What to do when the machine runs out of memory or threads within the limits.
RESOURCE_ADVICE = "try fewer --threads or --jobs, or a smaller --max-bytes"


def is_thread_failure(error: BaseException) -> bool:
    """Whether ``error`` is Python's RuntimeError for a thread the OS would not start."""
    return isinstance(error, RuntimeError) and "can't start new thread" in str(error)


Array = npt.NDArray[Any]

# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Convolution:
    """conv2d with every argument resolved (kernel file defaults, then flags, then spec)."""

    weights: Array
    bias: Array | None
    kernel_layout: str
    kernel_name: str
    stride: engine.PairArg = 1
    padding: engine.PaddingArg = "same"
    dilation: engine.PairArg = 1
    groups: int = 1
    pad_mode: str = "zeros"
    flip: bool = False

    def apply(self, x: Array, *, layout: str, max_bytes: int, threads: int | None = None) -> Array:
        return engine.conv2d(
            x,
            self.weights,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            pad_mode=self.pad_mode,
            flip=self.flip,
            layout=layout,
            kernel_layout=self.kernel_layout,
            max_bytes=max_bytes,
            threads=threads,
        )

    def carry_alpha(self, alpha: Array, *, max_bytes: int, threads: int | None = None) -> Array:
        """Move an alpha plane through the same geometry without filtering it.

        Uses the identity kernel of the same size (1 at the centre tap), so with "same"
        padding and stride 1 the alpha comes back unchanged.
        """
        kernel_h, kernel_w = self.kernel_size
        identity = np.zeros((kernel_h, kernel_w))
        identity[kernel_h // 2, kernel_w // 2] = 1.0
        return engine.conv2d(
            alpha,
            identity,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            pad_mode="replicate" if self.pad_mode == "zeros" else self.pad_mode,
            max_bytes=max_bytes,
            threads=threads,
        )

    @property
    def kernel_size(self) -> tuple[int, int]:
        shape = self.weights.shape
        if self.weights.ndim == 4:
            return {"OHWI": shape[1:3], "OIHW": shape[2:4], "HWIO": shape[0:2]}[self.kernel_layout]
        return (shape[0], shape[1])

    def out_channels(self, channels: int) -> int:
        """Channels of the result for an input with ``channels`` channels."""
        if self.weights.ndim == 2:
            return channels
        if self.weights.ndim == 3:
            return 1
        return int(self.weights.shape[3 if self.kernel_layout == "HWIO" else 0])

    def describe(self) -> str:
        kernel_h, kernel_w = self.kernel_size
        return f"{self.kernel_name} {kernel_h}x{kernel_w}"


@dataclass(frozen=True)
class Pooling:
    """max_pool2d or avg_pool2d with every argument resolved."""

    op: Literal["max", "avg"]
    size: engine.PairArg
    stride: engine.PairArg | None = None
    padding: engine.PaddingArg = 0
    dilation: engine.PairArg = 1
    ceil_mode: bool = False
    count_include_pad: bool = True

    def apply(self, x: Array, *, layout: str, max_bytes: int, threads: int | None = None) -> Array:
        if self.op == "max":
            return engine.max_pool2d(
                x,
                self.size,
                self.stride,
                self.padding,
                self.dilation,
                self.ceil_mode,
                layout,
                max_bytes=max_bytes,
                threads=threads,
            )
        if self.dilation not in (1, (1, 1)):
            raise ConvcliError(
                "--dilation applies to max pooling only (PyTorch's avg_pool2d has none)"
            )
        return engine.avg_pool2d(
            x,
            self.size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            layout,
            max_bytes=max_bytes,
            threads=threads,
        )

    def carry_alpha(self, alpha: Array, *, max_bytes: int, threads: int | None = None) -> Array:
        """Alpha is pooled with the same operation, so it stays aligned with the colour."""
        return self.apply(alpha, layout="NHWC", max_bytes=max_bytes, threads=threads)

    def out_channels(self, channels: int) -> int:
        return channels

    def describe(self) -> str:
        size = self.size if isinstance(self.size, int) else "x".join(map(str, self.size))
        return f"{self.op} pool {size}"


Operation = Convolution | Pooling


# --------------------------------------------------------------------------- processing


@dataclass(frozen=True)
class OutputOptions:
    """How inputs are computed and written (``--range``, ``--out-dtype``, ``--layout``, ...).

    ``threads`` is the engine's thread count for one computation (None: every core).
    """

    format: str
    layout: str = "NHWC"
    range_mode: str = "clip"
    out_dtype: str | None = None
    quality: int | None = None
    filter_alpha: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    threads: int | None = None


@dataclass
class Row:
    """One line of the report: one array or image processed."""

    name: str
    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]
    dtype_in: str
    dtype_out: str
    operation: str
    seconds: float
    clipped: int = 0


def _image_dtype(source_dtype: np.dtype[Any], requested: str | None) -> str:
    if requested is not None:
        return requested
    if source_dtype in (np.uint8, np.uint16):
        return str(source_dtype)
    return "float32"


def _filter_image(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions
) -> tuple[Array, Array | None]:
    """Filter an (H, W) or (H, W, C) image; return the result and the carried alpha (if any).

    Unless --filter-alpha, the alpha channel is not filtered: it is carried through the same
    geometry (see ``carry_alpha``) and returned in the input's dtype, to be appended after the
    colour has been mapped to the output range.
    """
    if not has_alpha or options.filter_alpha:
        return operation.apply(
            pixels, layout="NHWC", max_bytes=options.max_bytes, threads=options.threads
        ), None
    color, alpha = images.split_alpha(pixels)
    assert alpha is not None
    result = operation.apply(
        color, layout="NHWC", max_bytes=options.max_bytes, threads=options.threads
    )
    carried = operation.carry_alpha(alpha, max_bytes=options.max_bytes, threads=options.threads)
    alpha_dtype = str(alpha.dtype) if alpha.dtype.kind in "ui" else "float32"
    carried, _ = images.to_image_dtype(carried, dtype=alpha_dtype, range_mode="clip")
    return result, carried


def predicted_image_channels(
    pixels: Array, has_alpha: bool, operation: Operation, filter_alpha: bool
) -> int:
    """Channels of the filtered image, known before computing (to refuse early)."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if has_alpha and not filter_alpha:
        return operation.out_channels(channels - 1) + 1
    return operation.out_channels(channels)


def process(
    source: Source, operation: Operation, options: OutputOptions
) -> tuple[bytes, list[Row]]:
    """Apply ``operation`` to every array of ``source``; return the output's bytes and rows.

    Raises:
        ConvcliError: the combination of input, operation and output format cannot work;
            raised before the computation wherever the shapes alone tell.
    """
    fmt = options.format
    if source.format == "npz" and fmt != "npz":
        raise ConvcliError(f"{source.name}: an .npz input is written as .npz, not {fmt}")
    if source.format != "npz" and fmt == "npz":
        raise ConvcliError(f"{source.name}: only an .npz input is written as .npz")
    rows: list[Row] = []
    results: dict[str, Array] = {}
    for member, array in source.arrays.items():
        label = f"{source.name}:{member}" if member else source.name
        with naming_errors(label, source.name, operation):
            result, row = _process_array(array, label, source, operation, options)
        results[member] = result
        rows.append(row)
    return encode(results, fmt, options, name=source.name), rows


@contextlib.contextmanager
def naming_errors(label: str, name: str, operation: Operation) -> Iterator[None]:
    """Make every error of one array's processing name the file (and member) it concerns.

    The engine's own errors name arguments and shapes but not files. Anything else the
    computation raises on a hostile input (numpy refusing an absurd dimension, running out
    of memory) becomes a ConvcliError too, so that one bad item of a batch costs only itself.
    """
    try:
        yield
    except ConvcliError as error:
        if str(error).startswith(name):
            raise
        try:
            renamed = type(error)(f"{label}: {error}")
        except TypeError:  # a subclass with another signature
            renamed = ConvcliError(f"{label}: {error}")
        raise renamed from error
    except MemoryError as error:
        raise LimitError(
            f"{label}: out of memory computing {operation.describe()}; {RESOURCE_ADVICE}"
        ) from error
    except RuntimeError as error:
        if not is_thread_failure(error):
            raise
        raise LimitError(f"{label}: cannot start a thread ({error}); {RESOURCE_ADVICE}") from error
    except (ValueError, ArithmeticError) as error:  # numpy's, e.g. LinAlgError, huge shapes
        reason = str(error).strip() or type(error).__name__
        raise ConvcliError(f"{label}: cannot compute {operation.describe()}: {reason}") from error


def _process_array(
    array: Array,
    label: str,
    source: Source,
    operation: Operation,
    options: OutputOptions,
) -> tuple[Array, Row]:
    """Filter one array of ``source``: the result (in the output's dtype) and its report row."""
    fmt = options.format
    is_image = source.image is not None
    has_alpha = bool(source.image is not None and source.image.has_alpha)
    layout = "NHWC" if is_image else options.layout
    if fmt in images.IMAGE_FORMATS:
        if not is_image and array.ndim not in (2, 3):
            raise ConvcliError(
                f"{label}: a {array.ndim}-D array cannot be written as one {fmt} image; write .npy"
            )
        if not is_image and layout == "NCHW" and array.ndim == 3:
            raise ConvcliError(f"{label}: write NCHW arrays to .npy, not {fmt}")
        channels = predicted_image_channels(array, has_alpha, operation, options.filter_alpha)
        dtype = _image_dtype(array.dtype, options.out_dtype)
        images.check_writable((1, 1, channels), dtype, fmt, name=label)
    started = time.perf_counter()
    alpha: Array | None = None
    if is_image:
        result, alpha = _filter_image(array, has_alpha, operation, options)
    else:
        result = operation.apply(
            array, layout=layout, max_bytes=options.max_bytes, threads=options.threads
        )
    row = Row(
        label,
        array.shape,
        result.shape,
        str(array.dtype),
        str(result.dtype),
        operation.describe(),
        0.0,
    )
    if fmt in images.IMAGE_FORMATS or options.out_dtype is not None:
        dtype = _image_dtype(array.dtype, options.out_dtype)
        result, row.clipped = images.to_image_dtype(
            result, dtype=dtype, range_mode=options.range_mode
        )
    if alpha is not None:
        result = images.merge_alpha(result, alpha)
    if fmt in images.IMAGE_FORMATS and result.ndim == 3 and result.shape[2] == 1:
        result = result[:, :, 0]
    row.shape_out = result.shape
    row.dtype_out = str(result.dtype)
    row.seconds = time.perf_counter() - started
    return result, row


def encode(results: dict[str, Array], fmt: str, options: OutputOptions, *, name: str) -> bytes:
    """The bytes of the output file for ``results`` in ``fmt``."""
    if fmt == "npz":
        return arrays.encode_npz(results)
    (result,) = results.values()
    if fmt == "npy":
        return arrays.encode_npy(result)
    return images.encode_image(result, format=fmt, quality=options.quality, name=name)
