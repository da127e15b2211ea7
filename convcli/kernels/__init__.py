"""Kernels: strict JSON (:mod:`~convcli.kernels.parse`) and .npy kernel files with the one
front door :func:`load_kernel` (:mod:`~convcli.kernels.files`), the :class:`Kernel` they
become (:mod:`~convcli.kernels.kernel`) and the named presets (:mod:`~convcli.kernels.presets`).
"""

from convcli.kernels.files import load_kernel, load_npy_kernel
from convcli.kernels.kernel import Kernel
from convcli.kernels.parse import parse_kernel_json

__all__ = ["Kernel", "load_kernel", "load_npy_kernel", "parse_kernel_json"]
