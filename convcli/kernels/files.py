"""Kernel files and specs: .npy kernels (header first, never unpickled) and the front
door :func:`load_kernel` (a .npy file, a JSON file, or a preset, in that order).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from convcli.engine.args import KERNEL_LAYOUTS
from convcli.errors import ConvcliError, KernelError, LimitError
from convcli.io.arrays import HEADER_ERRORS, parse_npy_header
from convcli.kernels.kernel import RANKS, Kernel
from convcli.kernels.parse import parse_kernel_json
from convcli.kernels.presets import is_preset, preset_kernel, suggestion
from convcli.limits import (
    MAX_KERNEL_FILE_BYTES,
    MAX_KERNEL_WEIGHTS,
)
from convcli.validate import one_of

# --- .npy kernels and the front door --------------------------------------------------------


def _check_size_limit(path: str, max_file_bytes: int) -> None:
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise KernelError(f"{path}: cannot read: {error.strerror}") from None
    if size > max_file_bytes:
        raise LimitError(
            f"{path}: kernel file is {size:,} bytes, over the limit {max_file_bytes:,}"
        )


def _check_npy_header(
    name: str, shape: tuple[int, ...], dtype: np.dtype[Any], max_weights: int
) -> None:
    if dtype.hasobject:
        raise KernelError(f"{name}: holds Python objects (dtype {dtype}); convcli never unpickles")
    if dtype.kind not in "iuf":
        raise KernelError(f"{name}: dtype {dtype} is not a real number type (integer or float)")
    if not 2 <= len(shape) <= 4:
        raise KernelError(f"{name}: {RANKS}, got shape {shape}")
    count = math.prod(shape)
    if count == 0:
        raise KernelError(f"{name}: weights are empty, shape {shape}")
    if count > max_weights:
        raise LimitError(
            f"{name}: shape {shape} is {count:,} weights, over the limit {max_weights:,}"
        )


def load_npy_kernel(
    path: str | os.PathLike[str],
    *,
    kernel_layout: str | None = None,
    max_weights: int = MAX_KERNEL_WEIGHTS,
    max_file_bytes: int = MAX_KERNEL_FILE_BYTES,
) -> Kernel:
    """Load a .npy kernel without unpickling; shape and dtype are checked from the header first.

    Integer and floating dtypes are accepted; object (pickled), bool, complex, string and
    structured dtypes, ranks outside 2..4, empty and non-finite arrays are refused. 4-D weights
    are in ``kernel_layout`` (default OHWI).

    Raises
    ------
    KernelError
        The file is unreadable, not a .npy file, or holds an unusable array.
    LimitError
        The file is over ``max_file_bytes`` or the header announces over ``max_weights``.
    """
    name = os.fspath(path)
    layout = kernel_layout or "OHWI"
    one_of(layout, KERNEL_LAYOUTS, "kernel_layout", error=KernelError)
    _check_size_limit(name, max_file_bytes)
    try:
        with open(name, "rb") as handle:
            shape, _, dtype = parse_npy_header(handle, name)
            _check_npy_header(name, shape, dtype, max_weights)
            handle.seek(0)
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except (KernelError, LimitError):
        raise
    except ConvcliError as error:  # the shared .npy header reader's complaint
        raise KernelError(str(error)) from None
    except OSError as error:
        raise KernelError(f"{name}: cannot read: {error.strerror or error}") from None
    except HEADER_ERRORS as error:  # numpy's complaints about a corrupt header or short data
        reason = " ".join(str(error).split()) or type(error).__name__
        raise KernelError(f"{name}: not a valid .npy file ({reason})") from None
    with np.errstate(invalid="ignore"):  # a signaling NaN warns when cast; refused below
        weights = array.astype(np.float64)
    if not np.isfinite(weights).all():
        raise KernelError(f"{name}: weights contain NaN or infinity")
    return Kernel(weights=weights, layout=layout, name=Path(name).stem, source=name)


def load_kernel(
    spec: str | os.PathLike[str],
    *,
    kernel_layout: str | None = None,
    max_file_bytes: int = MAX_KERNEL_FILE_BYTES,
    max_weights: int = MAX_KERNEL_WEIGHTS,
) -> Kernel:
    """Load a kernel from a .npy file, a JSON file, or a preset spec (in that order).

    ``kernel_layout`` is the layout of 4-D weights: for .npy files it defaults to OHWI; for
    JSON files it overrides the file's "layout" key only when given. Presets ignore it.

    Raises
    ------
    KernelError
        No such file or preset, or the kernel is malformed (the message names the culprit).
    LimitError
        The file or its weights are over the limits (checked before reading).
    """
    text = os.fspath(spec)
    if not text.strip():
        raise KernelError("empty kernel spec: give a kernel file or a preset name")
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() == ".npy":
            return load_npy_kernel(
                text,
                kernel_layout=kernel_layout,
                max_weights=max_weights,
                max_file_bytes=max_file_bytes,
            )
        _check_size_limit(text, max_file_bytes)
        try:
            with open(text, "rb") as handle:
                data = handle.read(max_file_bytes + 1)
        except OSError as error:
            raise KernelError(f"{text}: cannot read: {error.strerror}") from None
        if len(data) > max_file_bytes:  # the file grew after stat()
            raise LimitError(f"{text}: kernel file is over the limit {max_file_bytes:,} bytes")
        return parse_kernel_json(
            data, name=text, kernel_layout=kernel_layout, max_weights=max_weights
        )
    if path.is_dir():
        raise KernelError(f"{text}: is a folder, expected a kernel file or preset")
    if is_preset(text):
        return preset_kernel(text)
    hint = suggestion(text.partition(":")[0].strip()) if not path.suffix else ""
    raise KernelError(f"{text}: no such kernel file or preset{hint or ' (see `convcli kernels`)'}")
