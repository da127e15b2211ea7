"""The operations behind conv and pool, and the options every input is processed with.

An :class:`Operation` is a resolved convolution or pooling; :class:`OutputOptions` says how
a result is computed and written; a :class:`Row` is one line of the report. The processing
itself is :mod:`convcli.batch.process`. Nothing here prints, parses flags, reads or writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convcli import engine
from convcli.errors import ConvcliError, LimitError
from convcli.limits import DEFAULT_MAX_BYTES

#: Pad mode of a convolution whose kernel and flags name none: by the input's kind.
IMAGE_PAD_MODE = "replicate"
ARRAY_PAD_MODE = "zeros"
#: What to do when the machine runs out of memory or threads within the limits.
RESOURCE_ADVICE = "try fewer --threads or --jobs, or a smaller --max-bytes"


def is_thread_failure(error: BaseException) -> bool:
    """Whether ``error`` is Python's RuntimeError for a thread the OS would not start."""
    return isinstance(error, RuntimeError) and "can't start new thread" in str(error)


Array = npt.NDArray[Any]

# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Convolution:
    """conv2d with every argument resolved (kernel file defaults, then flags, then spec).

    ``pad_mode`` None pads by the input's kind: images replicate their edge (what
    ImageMagick and libvips do: no dark or bright frame on a photo), arrays pad with zeros
    (PyTorch's default); see :meth:`for_input`.
    """

    weights: Array
    bias: Array | None
    kernel_layout: str
    kernel_name: str
    stride: engine.PairArg = 1
    padding: engine.PaddingArg = "same"
    dilation: engine.PairArg = 1
    groups: int = 1
    pad_mode: str | None = None
    flip: bool = False

    def for_input(self, *, image: bool) -> Convolution:
        """This convolution with the pad mode for an image or an array resolved."""
        if self.pad_mode is not None:
            return self
        return dataclasses.replace(self, pad_mode=IMAGE_PAD_MODE if image else ARRAY_PAD_MODE)

    def apply(self, x: Array, *, layout: str, max_bytes: int, threads: int | None = None) -> Array:
        return engine.conv2d(
            x,
            self.weights,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            pad_mode=self.pad_mode or ARRAY_PAD_MODE,
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
            pad_mode="replicate" if self.pad_mode in (None, "zeros") else self.pad_mode,
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

    def for_input(self, *, image: bool) -> Pooling:
        """Pooling pads the same way for every input."""
        return self

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

    ``alpha`` is ``pass`` (carried through unfiltered), ``filter`` (filtered like colour) or
    ``premultiply`` (colour filtered weighted by alpha, alpha filtered too); ``background``
    (RGB in [0, 1]) flattens alpha away; ``linear`` filters sRGB images in linear light;
    ``strip`` drops metadata; ``frames`` chooses the frames of multi-frame images.
    ``threads`` is the engine's thread count for one computation (None: every core).
    ``tile`` puts a convolution on the output tile grid of that side, the one a streamed
    run uses (:mod:`convcli.batch.tiling`; set for TIFF and .npy in and out), or None.
    """

    format: str
    layout: str = "NHWC"
    range_mode: str = "clip"
    out_dtype: str | None = None
    quality: int | None = None
    alpha: str = "pass"
    background: tuple[float, float, float] | None = None
    linear: bool = False
    strip: bool = False
    frames: str | tuple[int, ...] = "all"
    max_bytes: int = DEFAULT_MAX_BYTES
    threads: int | None = None
    tile: int | None = None


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
