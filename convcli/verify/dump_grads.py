"""Gradients in reference dumps: which a dump may hold, and recomputing each with the engine.

A dump with ``grad_output`` may hold ``grad_input`` and, for convolutions, ``grad_weight``
and ``grad_bias`` (from autograd). Each is recomputed here: conv2d's and the pools' with
their backward passes; conv_transpose2d's from the forward convolution it is the adjoint
of (the gradient of ``<conv_transpose2d(x, w), g>`` is ``conv2d(g, w)`` for ``x`` and
``conv2d_backward(x, g, w).weight`` for ``w``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli import engine
from convcli.engine.grad_conv import conv2d_backward
from convcli.engine.grad_pool import avg_pool2d_backward, max_pool2d_backward
from convcli.engine.transpose import conv_transpose2d

Array: TypeAlias = npt.NDArray[Any]

#: Gradient members a dump may hold, and the array each is the gradient of.
GRADIENT_MEMBERS: Mapping[str, str] = {
    "grad_input": "input",
    "grad_weight": "kernel",
    "grad_bias": "bias",
}
#: Gradients each operation has (pooling has no weights).
OP_GRADIENTS: Mapping[str, tuple[str, ...]] = {
    "conv": ("grad_input", "grad_weight", "grad_bias"),
    "conv_transpose": ("grad_input", "grad_weight", "grad_bias"),
    "max_pool": ("grad_input",),
    "avg_pool": ("grad_input",),
}


def forward(
    op: str, members: Mapping[str, Array], params: Mapping[str, Any], max_bytes: int
) -> Array:
    """The dump's operation on its input."""
    x = members["input"]
    if op == "conv":
        return engine.conv2d(
            x, members["kernel"], members.get("bias"), max_bytes=max_bytes, **params
        )
    if op == "conv_transpose":
        return conv_transpose2d(x, members["kernel"], members.get("bias"), max_bytes=max_bytes,
                                **params)  # fmt: skip
    if op == "max_pool":
        return engine.max_pool2d(x, max_bytes=max_bytes, **params)
    return engine.avg_pool2d(x, max_bytes=max_bytes, **params)


def gradients(
    op: str, members: Mapping[str, Array], params: Mapping[str, Any], max_bytes: int
) -> dict[str, Array]:
    """Each gradient member the dump holds, recomputed (same names, same shapes)."""
    wanted = [name for name in OP_GRADIENTS[op] if name in members]
    if not wanted or "grad_output" not in members:
        return {}
    g, x = members["grad_output"], members["input"]
    if op == "max_pool":
        return {"grad_input": max_pool2d_backward(g, x, max_bytes=max_bytes, **params)}
    if op == "avg_pool":
        return {"grad_input": avg_pool2d_backward(g, x.shape, max_bytes=max_bytes, **params)}
    kernel, bias = members["kernel"], members.get("bias")
    if op == "conv":
        needs = [GRADIENT_MEMBERS[name].replace("kernel", "weight") for name in wanted]
        grads = conv2d_backward(g, x, kernel, bias, needs=tuple(needs), max_bytes=max_bytes,
                                **params)  # fmt: skip
        found = {"grad_input": grads.input, "grad_weight": grads.weight, "grad_bias": grads.bias}
        result: dict[str, Array] = {}
        for name in wanted:
            value = found[name]
            if value is not None:
                result[name] = value
        return result
    return _transposed_gradients(wanted, x, kernel, g, params, max_bytes)


def _transposed_gradients(
    wanted: list[str],
    x: Array,
    kernel: Array,
    g: Array,
    params: Mapping[str, Any],
    max_bytes: int,
) -> dict[str, Array]:
    conv_params = {key: value for key, value in params.items() if key != "output_padding"}
    layout = str(params.get("layout", "NHWC"))
    reached = engine.conv2d(g, kernel, max_bytes=max_bytes, **conv_params)
    # With output_padding, conv2d(g) can reach past x: x's gradient is its leading part,
    # and x counts as zero beyond it.
    spatial = (-3, -2) if layout == "NHWC" else (-2, -1)
    leading: list[slice] = [slice(None)] * x.ndim
    for axis in spatial:
        leading[axis] = slice(0, x.shape[axis])
    found: dict[str, Array] = {"grad_input": reached[tuple(leading)]}
    if "grad_weight" in wanted:
        extended = np.zeros_like(reached)
        extended[tuple(leading)] = x
        weight = conv2d_backward(extended, g, kernel, needs=("weight",), max_bytes=max_bytes,
                                 **conv_params).weight  # fmt: skip
        assert weight is not None
        found["grad_weight"] = weight
    if "grad_bias" in wanted:
        channel = -1 if layout == "NHWC" or g.ndim == 2 else -3
        dtype = np.float64 if g.dtype == np.float64 else np.float32
        found["grad_bias"] = (
            np.moveaxis(g, channel, -1).reshape(-1, g.shape[channel]).sum(axis=0, dtype=dtype)
        )
    return {name: found[name] for name in wanted}
