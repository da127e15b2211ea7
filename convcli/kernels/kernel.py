"""The :class:`Kernel` value: validated float64 weights, an optional bias, and the operation
defaults a kernel file or preset sets. Parsing files is :mod:`convcli.kernels`' job, building
presets :mod:`convcli.kernels.presets`'; both produce this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.engine.args import KERNEL_LAYOUTS
from convcli.errors import KernelError
from convcli.validate import one_of

__all__ = ["OPTION_KEYS", "RANKS", "FloatArray", "Kernel", "format_number", "read_only"]

FloatArray = npt.NDArray[np.float64]

#: Operation keys a kernel may set as defaults; command-line flags override them.
OPTION_KEYS = ("stride", "padding", "dilation", "groups", "pad_mode", "flip")
#: What a kernel's rank may be, for messages.
RANKS = "weights must be 2-D (kh,kw), 3-D (kh,kw,C) or 4-D (a filter bank)"


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, so compare by identity
class Kernel:
    """A validated kernel: float64 weights with scale/normalize applied, plus defaults.

    Attributes
    ----------
    weights : ndarray of float64, read-only
        (kh, kw) one filter per channel, (kh, kw, C) one filter over all channels, or a 4-D
        filter bank in ``layout``.
    layout : str
        Layout of 4-D weights, one of :data:`convcli.engine.KERNEL_LAYOUTS`.
    bias : ndarray of float64 or None
        0-d (the same for every output channel) or 1-D (one per output channel).
    name, description, source : str
        Preset name or file stem; free text; the file path or preset spec it came from.
    options : Mapping
        Only the operation keys the file or preset set (:data:`OPTION_KEYS`): stride and
        dilation as int or (h, w); padding "same", "valid", int, or a tuple of 2 or 4 ints;
        groups int; pad_mode one of :data:`convcli.engine.PAD_MODES`; flip bool.
    """

    weights: FloatArray
    layout: str = "OHWI"
    bias: FloatArray | None = None
    name: str = ""
    description: str = ""
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = read_only(np.array(self.weights, dtype=np.float64))
        if not 2 <= weights.ndim <= 4:
            raise KernelError(f"{RANKS}, got shape {weights.shape}")
        one_of(self.layout, KERNEL_LAYOUTS, "layout", error=KernelError)
        unknown = sorted(set(self.options) - set(OPTION_KEYS))
        if unknown:
            raise KernelError(f"unknown kernel options {unknown} (expected {OPTION_KEYS})")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.bias is not None:
            bias = read_only(np.array(self.bias, dtype=np.float64))
            if bias.ndim > 1:
                raise KernelError(f"bias must be a number or 1-D, got shape {bias.shape}")
            object.__setattr__(self, "bias", bias)

    def to_json(self) -> str:
        """Return this kernel as a JSON kernel file (object form, no trailing newline).

        The weights are written final (scale and normalize already applied) and exactly:
        :func:`parse_kernel_json` reads back the same weights, bias and options.
        """
        import json  # here, not at the top: the command line loads kernels without it

        fields: list[tuple[str, str]] = []
        if self.name:
            fields.append(("name", json.dumps(self.name)))
        if self.description:
            fields.append(("description", json.dumps(self.description)))
        fields.append(("weights", _format_nested(self.weights, level=1)))
        if self.weights.ndim == 4:
            fields.append(("layout", json.dumps(self.layout)))
        if self.bias is not None:
            fields.append(("bias", _format_nested(self.bias, level=1)))
        for key in OPTION_KEYS:
            if key in self.options:
                value = self.options[key]
                fields.append((key, json.dumps(list(value) if isinstance(value, tuple) else value)))
        return "{\n" + ",\n".join(f'  "{key}": {text}' for key, text in fields) + "\n}"


def read_only(array: FloatArray) -> FloatArray:
    array.flags.writeable = False
    return array


def format_number(value: float) -> str:
    # Integral weights print as integers for readability; repr() is the shortest exact form.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _format_nested(array: FloatArray, level: int) -> str:
    if array.ndim == 0:
        return format_number(float(array))
    if array.ndim == 1:
        return "[" + ", ".join(format_number(float(value)) for value in array) + "]"
    inner = "  " * (level + 1)
    rows = ",\n".join(inner + _format_nested(row, level + 1) for row in array)
    return "[\n" + rows + "\n" + "  " * level + "]"
