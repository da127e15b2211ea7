"""The engine: batch convolution, pooling and their gradients in pure NumPy.

It imports nothing above it: no files, no command line. :mod:`convcli.engine.args` checks
arguments and holds the shared constants, :mod:`~convcli.engine.conv` and
:mod:`~convcli.engine.pool` are the forward operations, :mod:`~convcli.engine.gemm` and
:mod:`~convcli.engine.paths` the ways a convolution is computed, :mod:`~convcli.engine.blocks`
the padded row blocks every path reads, :mod:`~convcli.engine.threads` the worker threads,
and :mod:`~convcli.engine.grad_conv` / :mod:`~convcli.engine.grad_pool` the backward passes.

The forward operations are imported with the package; the backward passes and the transposed
convolution (and their modules, as attributes) are imported on first use, so that a command
that only convolves does not load them (see ``tests/test_startup.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from convcli.engine.args import (
    BLOCK_BYTES,
    CONV_PATHS,
    KERNEL_LAYOUTS,
    LAYOUTS,
    PAD_MODES,
    POOL_BAND_BYTES,
    PaddingArg,
    PairArg,
    resolve_padding,
)
from convcli.engine.conv import (
    FFT_MIN_TAPS,
    SEPARABLE_MIN_TAPS,
    Tuning,
    applicable_conv_paths,
    choose_conv_path,
    conv2d,
    conv2d_path,
    tuned,
    tuning,
)
from convcli.engine.pool import avg_pool2d, max_pool2d
from convcli.engine.threads import THREADS_ENV
from convcli.limits import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from convcli.engine.grad_conv import ConvGradients, conv2d_backward
    from convcli.engine.grad_pool import avg_pool2d_backward, max_pool2d_backward
    from convcli.engine.transpose import conv_transpose2d

__all__ = [
    "BLOCK_BYTES",
    "CONV_PATHS",
    "DEFAULT_MAX_BYTES",
    "FFT_MIN_TAPS",
    "KERNEL_LAYOUTS",
    "LAYOUTS",
    "PAD_MODES",
    "POOL_BAND_BYTES",
    "SEPARABLE_MIN_TAPS",
    "THREADS_ENV",
    "ConvGradients",
    "PaddingArg",
    "PairArg",
    "Tuning",
    "applicable_conv_paths",
    "avg_pool2d",
    "avg_pool2d_backward",
    "choose_conv_path",
    "conv2d",
    "conv2d_backward",
    "conv2d_path",
    "conv_transpose2d",
    "max_pool2d",
    "max_pool2d_backward",
    "resolve_padding",
    "tuned",
    "tuning",
]

#: Exported names imported on first use, and the module defining each.
_LAZY = {
    "ConvGradients": "convcli.engine.grad_conv",
    "conv2d_backward": "convcli.engine.grad_conv",
    "avg_pool2d_backward": "convcli.engine.grad_pool",
    "max_pool2d_backward": "convcli.engine.grad_pool",
    "conv_transpose2d": "convcli.engine.transpose",
}
#: Submodules the package used to import eagerly, still reachable as attributes.
_LAZY_MODULES = ("grad_conv", "grad_pool", "transpose")


def __getattr__(name: str) -> Any:
    """Import a lazily exported name or submodule (PEP 562) and keep it as an attribute."""
    if name in _LAZY:
        value: Any = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_LAZY_MODULES})
