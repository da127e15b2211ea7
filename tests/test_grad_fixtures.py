"""Replay the autograd dumps in tests/fixtures/gradients through convcli's backward passes.

Made by tests/fixtures/make_fixtures.py from PyTorch autograd (a few from TensorFlow's
GradientTape); see tests/fixtures/README.md. Neither framework is needed here.
float64 dumps must agree to 1e-10, float32 ones to 1e-5, relative to each array's magnitude.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from convcli import (
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    max_pool2d_backward,
)

GRADIENT_DIR = Path(__file__).resolve().parent / "fixtures" / "gradients"
DUMPS = sorted(GRADIENT_DIR.glob("*.npz"))

CONV_KEYS = {"stride", "padding", "dilation", "groups", "pad_mode", "flip", "layout"}
CONV_KEYS |= {"kernel_layout"}
KEYS = {
    "conv": CONV_KEYS,
    "conv_transpose": {"stride", "padding", "output_padding", "groups", "dilation", "layout"}
    | {"kernel_layout"},
    "max_pool": {"size", "stride", "padding", "dilation", "ceil_mode", "layout"},
    "avg_pool": {"size", "stride", "padding", "ceil_mode", "count_include_pad", "layout"},
}
META_KEYS = {"op", "source"}
GRADIENTS = {"grad_input": "input", "grad_weight": "kernel", "grad_bias": "bias"}

Dump = dict[str, npt.NDArray[Any]]


def load(path: Path) -> tuple[Dump, dict[str, Any], dict[str, Any]]:
    """Members, params, and the engine keywords (JSON lists as tuples)."""
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    params = json.loads(members.pop("params").item())
    keywords = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in params.items()
        if key not in META_KEYS
    }
    return members, params, keywords


def assert_agrees(actual: Any, expected: npt.NDArray[Any], what: str) -> None:
    assert isinstance(actual, np.ndarray), what
    assert actual.dtype == expected.dtype, f"{what}: {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: {actual.shape}, expected {expected.shape}"
    tolerance = 1e-10 if expected.dtype == np.float64 else 1e-5
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(
        actual, expected, rtol=tolerance, atol=tolerance * scale + 1e-300, err_msg=what
    )


def channel_axis(array: npt.NDArray[Any], layout: str) -> int:
    if array.ndim == 2:
        return -1
    return -1 if layout == "NHWC" else -3


def test_gradient_dumps_exist() -> None:
    assert len(DUMPS) >= 40, f"expected the autograd dumps in {GRADIENT_DIR}"
    assert sum(path.stat().st_size for path in DUMPS) < 400_000


@pytest.mark.parametrize("path", DUMPS, ids=[p.stem for p in DUMPS])
def test_gradient_dump_is_well_formed(path: Path) -> None:
    members, params, keywords = load(path)
    assert params["op"] in KEYS
    assert set(keywords) <= KEYS[params["op"]], set(keywords) - KEYS[params["op"]]
    assert isinstance(params.get("source"), str) and params["source"]
    assert {"input", "output", "grad_output", "grad_input"} <= set(members)
    assert members["grad_output"].shape == members["output"].shape
    for gradient, argument in GRADIENTS.items():
        if gradient in members:
            assert members[gradient].shape == members[argument].shape, gradient
    assert ("kernel" in members) == (params["op"] in ("conv", "conv_transpose"))
    assert ("grad_bias" in members) == ("bias" in members)


BACKWARD = [path for path in DUMPS if load(path)[1]["op"] != "conv_transpose"]
CONV_TRANSPOSE = [path for path in DUMPS if load(path)[1]["op"] == "conv_transpose"]


@pytest.mark.parametrize("path", BACKWARD, ids=[p.stem for p in BACKWARD])
def test_backward_matches_autograd(path: Path) -> None:
    members, params, keywords = load(path)
    op, source = params["op"], params["source"]
    x, grad_output = members["input"], members["grad_output"]
    if op == "conv":
        grads = conv2d_backward(grad_output, x, members["kernel"], members.get("bias"), **keywords)
        assert_agrees(grads.input, members["grad_input"], f"grad_input; {source}")
        assert_agrees(grads.weight, members["grad_weight"], f"grad_weight; {source}")
        if "bias" in members:
            assert_agrees(grads.bias, members["grad_bias"], f"grad_bias; {source}")
        else:
            assert grads.bias is None
    elif op == "max_pool":
        size = keywords.pop("size")
        actual = max_pool2d_backward(grad_output, x, size, **keywords)
        assert_agrees(actual, members["grad_input"], f"grad_input; {source}")
    else:
        assert op == "avg_pool"
        size = keywords.pop("size")
        actual = avg_pool2d_backward(grad_output, x.shape, size, **keywords)
        assert_agrees(actual, members["grad_input"], f"grad_input; {source}")


@pytest.mark.parametrize("path", CONV_TRANSPOSE, ids=[p.stem for p in CONV_TRANSPOSE])
def test_conv_transpose2d_and_its_gradients_match_autograd(path: Path) -> None:
    """The output of conv_transpose2d; its gradients are the forward conv's passes:
    d/dx <convT(x, w), g> = conv2d(g, w) and d/dw = conv2d_backward(x, g, w).weight."""
    members, params, keywords = load(path)
    x, kernel, bias, g = (
        members["input"],
        members["kernel"],
        members.get("bias"),
        members["grad_output"],
    )
    source = params["source"]
    out = conv_transpose2d(x, kernel, bias, **keywords)
    assert_agrees(out, members["output"], f"output; {source}")
    forward = {key: value for key, value in keywords.items() if key != "output_padding"}
    reached = conv2d(g, kernel, **forward)
    # With output_padding >= stride (allowed below the dilation), conv2d of the result has
    # outputs past x's: x's gradient is the leading part, and x counts as zero beyond.
    spatial = (-3, -2) if keywords.get("layout", "NHWC") == "NHWC" else (-2, -1)
    leading = [slice(None)] * x.ndim
    for axis in spatial:
        leading[axis] = slice(0, x.shape[axis])
    assert_agrees(reached[tuple(leading)], members["grad_input"], f"grad_input; {source}")
    extended = np.zeros_like(reached)
    extended[tuple(leading)] = x
    weight = conv2d_backward(extended, g, kernel, needs=("weight",), **forward).weight
    assert_agrees(weight, members["grad_weight"], f"grad_weight; {source}")
    if bias is not None:
        axis = channel_axis(g, keywords.get("layout", "NHWC"))
        sums = np.moveaxis(g, axis, -1).reshape(-1, g.shape[axis]).sum(axis=0)
        assert_agrees(sums.astype(g.dtype), members["grad_bias"], f"grad_bias; {source}")


@pytest.mark.parametrize("path", DUMPS, ids=[p.stem for p in DUMPS])
def test_dump_forward_output_matches(path: Path) -> None:
    """The forward part of each dump too, so a gradient never passes on a wrong forward."""
    members, params, keywords = load(path)
    from convcli import avg_pool2d, max_pool2d

    op, x = params["op"], members["input"]
    if op == "conv":
        actual = conv2d(x, members["kernel"], members.get("bias"), **keywords)
    elif op == "conv_transpose":
        actual = conv_transpose2d(x, members["kernel"], members.get("bias"), **keywords)
    else:
        size = keywords.pop("size")
        actual = (max_pool2d if op == "max_pool" else avg_pool2d)(x, size, **keywords)
    assert_agrees(actual, members["output"], f"output; {params['source']}")
