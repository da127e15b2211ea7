"""The engine's arguments: layouts, pad modes, pairs, paddings, dtypes, and size checks.

Every operation validates here first, with messages that name the argument and the shapes,
before anything is allocated. ``padding="same"`` follows TensorFlow: ``out = ceil(n / s)``
and the total padding ``max((out - 1) * s + d * (k - 1) + 1 - n, 0)`` is split with the
extra pixel after. Output size per axis, for input ``n``, padding ``before + after``,
kernel ``k``, dilation ``d`` and stride ``s``::

    out = floor((n + before + after - d * (k - 1) - 1) / s) + 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli.engine.large_kernels import PATHS
from convcli.errors import ConvcliError, LimitError
from convcli.validate import one_of

#: Input/output layouts of arrays: batch, height, width, channels in either order.
LAYOUTS = ("NHWC", "NCHW")
#: Layouts of 4-D filter banks: convcli's default, PyTorch's weight, TensorFlow's filter.
KERNEL_LAYOUTS = ("OHWI", "OIHW", "HWIO")
#: Padding modes, with PyTorch's names and meanings.
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
#: Bytes of unfolded patches (or padded rows, for pooling) one block aims for.
BLOCK_BYTES = 4 * 1024**2
#: Ways conv2d can compute (convcli.engine.large_kernels); ``choose_conv_path`` picks one.
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
