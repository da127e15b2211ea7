"""convcli: batch convolution and pooling in pure NumPy, with PyTorch/TensorFlow semantics.

The library API does no I/O and prints nothing::

    from convcli import conv2d, max_pool2d, avg_pool2d

Importing convcli loads the engine and the errors; the other names (and ``__version__``,
which reads the package metadata) are imported on first use, so that the command line starts
without the modules a command does not need (see docs/performance.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from convcli.engine.conv import conv2d
from convcli.engine.pool import avg_pool2d, max_pool2d
from convcli.errors import ConvcliError, InputError, KernelError, LimitError

if TYPE_CHECKING:
    from convcli.engine.grad_conv import conv2d_backward
    from convcli.engine.grad_pool import avg_pool2d_backward, max_pool2d_backward
    from convcli.engine.transpose import conv_transpose2d
    from convcli.kernels.files import load_kernel
    from convcli.kernels.kernel import Kernel
    from convcli.verify.compare import Comparison, compare_arrays
    from convcli.verify.dumps import write_reference
    from convcli.verify.pairs import compare_paths
    from convcli.verify.replay import verify_dump

    __version__: str

__all__ = [
    "Comparison",
    "ConvcliError",
    "InputError",
    "Kernel",
    "KernelError",
    "LimitError",
    "__version__",
    "avg_pool2d",
    "avg_pool2d_backward",
    "compare_arrays",
    "compare_paths",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "load_kernel",
    "max_pool2d",
    "max_pool2d_backward",
    "verify_dump",
    "write_reference",
]

#: Exported names imported on first use, and the module defining each.
_LAZY = {
    "Comparison": "convcli.verify.compare",
    "compare_arrays": "convcli.verify.compare",
    "compare_paths": "convcli.verify.pairs",
    "verify_dump": "convcli.verify.replay",
    "write_reference": "convcli.verify.dumps",
    "Kernel": "convcli.kernels.kernel",
    "conv2d_backward": "convcli.engine.grad_conv",
    "conv_transpose2d": "convcli.engine.transpose",
    "max_pool2d_backward": "convcli.engine.grad_pool",
    "avg_pool2d_backward": "convcli.engine.grad_pool",
    "load_kernel": "convcli.kernels",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported name (PEP 562) and keep it as a module attribute."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("convcli")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0+unknown"
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
