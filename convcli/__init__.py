"""convcli: batch convolution and pooling in pure NumPy, with PyTorch/TensorFlow semantics.

The library API does no I/O and prints nothing::

    from convcli import conv2d, max_pool2d, avg_pool2d
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convcli.compare import Comparison, compare_arrays
from convcli.dumps import verify_dump, write_reference
from convcli.engine import avg_pool2d, conv2d, max_pool2d
from convcli.errors import ConvcliError, InputError, KernelError, LimitError
from convcli.kernel import Kernel
from convcli.kernels import load_kernel
from convcli.pairs import compare_paths

try:
    __version__ = version("convcli")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Comparison",
    "ConvcliError",
    "InputError",
    "Kernel",
    "KernelError",
    "LimitError",
    "__version__",
    "avg_pool2d",
    "compare_arrays",
    "compare_paths",
    "conv2d",
    "load_kernel",
    "max_pool2d",
    "verify_dump",
    "write_reference",
]
