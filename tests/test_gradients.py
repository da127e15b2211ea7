"""Backward passes and conv_transpose2d against plain loops, finite differences and adjoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convcli import (
    ConvcliError,
    LimitError,
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    engine,
    max_pool2d,
    max_pool2d_backward,
)
from tests.reference_grad import (
    conv2d_backward_loop,
    conv_transpose2d_loop,
    padding4,
    pair,
    pool2d_backward_loop,
)

NAN, INF = float("nan"), float("inf")
#: conv2d's keywords that a conv case draws.
CONV_OPTIONS = ("stride", "padding", "dilation", "groups", "pad_mode", "flip", "layout")
CONV_OPTIONS += ("kernel_layout",)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """An NHWC-ordered array (rank 3 or 4) in ``layout``."""
    if layout == "NCHW" and x.ndim >= 3:
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))
    return x


def close(actual: Any, expected: Any, rtol: float = 1e-10) -> None:
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected), initial=1.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------- strategies


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Every conv2d parameter family on tiny shapes, as keyword arguments."""
    groups = draw(st.sampled_from([1, 1, 2]))
    per_group = draw(st.integers(1, 2))
    channels = groups * per_group
    filters = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rank = draw(st.sampled_from([2, 3, 4, 4]))
    weight_rank = draw(st.sampled_from([2, 3, 4, 4]))
    if rank == 2:
        channels, groups, per_group = 1, 1, 1
        filters = draw(st.integers(1, 2))
    if weight_rank in (2, 3):
        groups = 1
    height, width = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    batch = draw(st.integers(1, 2))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    kernel_layout = draw(st.sampled_from(["OHWI", "OIHW", "HWIO"]))
    pad_mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 2),
            st.tuples(st.integers(0, 2), st.integers(0, 2)),
            st.tuples(*[st.integers(0, 2)] * 4),
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = {2: (height, width), 3: (height, width, channels), 4: (batch, height, width, channels)}
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.uint8]))
    x = rng.standard_normal(shape[rank])
    x = (rng.integers(0, 8, shape[rank]) if dtype == np.uint8 else x).astype(dtype)
    if weight_rank == 2:
        weights = rng.standard_normal((kh, kw))
    elif weight_rank == 3:
        weights = rng.standard_normal((kh, kw, channels))
    else:
        ohwi = rng.standard_normal((filters, kh, kw, per_group))
        axes = {"OHWI": (0, 1, 2, 3), "OIHW": (0, 3, 1, 2), "HWIO": (1, 2, 3, 0)}
        weights = ohwi.transpose(axes[kernel_layout])
    bias = draw(st.sampled_from([None, "scalar", "vector"]))
    out_channels = {2: channels, 3: 1, 4: filters}[weight_rank]
    return {
        "x": to_layout(x, layout) if rank > 2 else x,
        "weights": weights,
        "bias": None
        if bias is None
        else (np.float64(0.5) if bias == "scalar" else rng.standard_normal(out_channels)),
        "stride": draw(st.sampled_from([1, 2, (1, 2), (3, 1)])),
        "padding": padding,
        "dilation": draw(st.sampled_from([1, 2, (2, 1)])),
        "groups": groups,
        "pad_mode": pad_mode,
        "flip": draw(st.booleans()),
        "layout": layout,
        "kernel_layout": kernel_layout,
        "rng": rng,
    }


def forward_or_reject(case: dict[str, Any]) -> np.ndarray:
    """conv2d's output for a case; cases the forward refuses are not interesting here."""
    options = {key: value for key, value in case.items() if key not in ("x", "weights", "rng")}
    options.pop("bias")
    try:
        return conv2d(case["x"], case["weights"], case["bias"], **options)
    except ConvcliError:
        assume(False)
        raise


# --------------------------------------------------------------------------- conv2d_backward


@settings(max_examples=400, deadline=None)
@given(
    case=conv_cases(),
    block=st.sampled_from([1, 3000, engine.BLOCK_BYTES]),
    threads=st.sampled_from([1, 2]),
)
def test_conv2d_backward_matches_loop_reference(
    case: dict[str, Any], block: int, threads: int
) -> None:
    """Every parameter family: input, weight and bias gradients equal the plain loop's."""
    out = forward_or_reject(case)
    grad_output = case["rng"].standard_normal(out.shape)
    options = {key: case[key] for key in CONV_OPTIONS}
    with engine.tuned(block_bytes=block):
        grads = conv2d_backward(
            grad_output, case["x"], case["weights"], case["bias"], threads=threads, **options
        )
    expected = conv2d_backward_loop(
        grad_output, case["x"], case["weights"], case["bias"], **options
    )
    dtype = np.float64 if case["x"].dtype == np.float64 else np.float32
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    assert grads.input is not None and grads.weight is not None
    assert grads.input.shape == case["x"].shape and grads.input.dtype == dtype
    assert grads.weight.shape == np.shape(case["weights"]) and grads.weight.dtype == dtype
    close(grads.input, expected.input, rtol)
    close(grads.weight, expected.weight, rtol)
    if case["bias"] is None:
        assert grads.bias is None
    else:
        assert grads.bias is not None and grads.bias.shape == np.shape(case["bias"])
        close(grads.bias, expected.bias, rtol)


@pytest.mark.parametrize("path", ["gemm", "depthwise", "separable", "fft"])
def test_input_gradient_agrees_on_every_forward_path(path: str) -> None:
    """The input gradient runs conv2d's paths; each gives the loop's result (depthwise 7x7)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 10, 3))
    column, row = rng.standard_normal(7), rng.standard_normal(7)
    weights = np.outer(column, row)  # rank 1: the separable path applies too
    grad_output = rng.standard_normal((2, 9, 10, 3))
    with engine.tuned(conv_path=path):
        grads = conv2d_backward(grad_output, x, weights, padding=3, needs=("input",))
    expected = conv2d_backward_loop(grad_output, x, weights, padding=3)
    close(grads.input, expected.input, 1e-9)


def test_needs_selects_the_gradients() -> None:
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((1, 5, 5, 2)), rng.standard_normal((3, 3, 3, 2)), np.zeros(3)
    g = rng.standard_normal((1, 3, 3, 3))
    only_weight = conv2d_backward(g, x, w, b, needs=("weight",))
    assert only_weight.input is None and only_weight.bias is None
    assert only_weight.weight is not None
    no_bias = conv2d_backward(g, x, w)
    assert no_bias.bias is None and no_bias.input is not None
    with pytest.raises(ConvcliError, match="needs"):
        conv2d_backward(g, x, w, needs=("inputs",))


def test_2d_weights_gradient_is_summed_over_channels() -> None:
    """A (kh, kw) filter applied to each of C channels: its gradient adds the C gradients."""
    rng = np.random.default_rng(1)
    x, k = rng.standard_normal((2, 6, 7, 3)), rng.standard_normal((3, 3))
    g = rng.standard_normal((2, 6, 7, 3))
    grads = conv2d_backward(g, x, k, padding=1)
    per_channel = np.repeat(k[None, :, :, None], 3, axis=0)  # (3, 3, 3, 1) depthwise bank
    bank = conv2d_backward(g, x, per_channel, padding=1, groups=3)
    assert grads.weight is not None and bank.weight is not None
    assert grads.weight.shape == (3, 3)
    close(grads.weight, bank.weight[:, :, :, 0].sum(axis=0))
    close(grads.input, bank.input)


def test_float32_and_integer_inputs_give_float32() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 3, 3, 1))
    for x in (rng.integers(0, 255, (5, 6), dtype=np.uint8), rng.random((5, 6), dtype=np.float32)):
        grads = conv2d_backward(np.ones((5, 6, 2)), x, w, 0.5, padding=1)
        assert grads.input is not None and grads.weight is not None and grads.bias is not None
        assert {grads.input.dtype, grads.weight.dtype, grads.bias.dtype} == {np.dtype(np.float32)}
        assert grads.input.shape == (5, 6) and grads.bias.shape == ()


def test_gradients_do_not_depend_on_threads_or_blocks() -> None:
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 20, 17, 4)), rng.standard_normal((5, 3, 3, 4))
    g = rng.standard_normal((3, 10, 9, 5))
    reference = conv2d_backward(g, x, w, np.zeros(5), stride=2, padding=1, threads=1)
    for threads, block in ((2, 1), (2, 5000), (3, engine.BLOCK_BYTES)):
        with engine.tuned(block_bytes=block):
            other = conv2d_backward(g, x, w, np.zeros(5), stride=2, padding=1, threads=threads)
        for mine, theirs in zip(other, reference, strict=True):
            close(mine, theirs, 1e-12)


# --------------------------------------------------------------------------- finite differences


def central_differences(loss: Any, value: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """d loss / d value, element by element, by central differences (float64)."""
    grad = np.zeros_like(value)
    flat, out = value.reshape(-1), grad.reshape(-1)
    for index in range(flat.size):
        saved = flat[index]
        flat[index] = saved + step
        above = loss()
        flat[index] = saved - step
        below = loss()
        flat[index] = saved
        out[index] = (above - below) / (2 * step)
    return grad


@pytest.mark.parametrize(
    "options",
    [
        {"padding": 1},
        {"stride": 2, "padding": (0, 2, 1, 1), "dilation": (1, 2)},
        {
            "padding": 2,
            "pad_mode": "reflect",
            "groups": 2,
            "layout": "NCHW",
            "kernel_layout": "OIHW",
        },
        {"padding": (1, 2), "pad_mode": "replicate", "stride": (2, 1)},
        {"padding": "same", "pad_mode": "circular", "flip": True, "kernel_layout": "HWIO"},
    ],
)
def test_conv_gradients_match_finite_differences(options: dict[str, Any]) -> None:
    """sum(conv2d(x, w, b) * g) differentiated numerically in float64, for x, w and b."""
    rng = np.random.default_rng(5)
    groups = options.get("groups", 1)
    layout, kernel_layout = options.get("layout", "NHWC"), options.get("kernel_layout", "OHWI")
    x = to_layout(rng.standard_normal((2, 5, 6, 2)), layout)
    ohwi = rng.standard_normal((4, 3, 3, 2 // groups))
    axes = {"OHWI": (0, 1, 2, 3), "OIHW": (0, 3, 1, 2), "HWIO": (1, 2, 3, 0)}[kernel_layout]
    w = np.ascontiguousarray(ohwi.transpose(axes))
    b = rng.standard_normal(4)
    g = rng.standard_normal(conv2d(x, w, b, **options).shape)

    def loss() -> float:
        return float(np.sum(conv2d(x, w, b, **options) * g))

    grads = conv2d_backward(g, x, w, b, **options)
    close(grads.input, central_differences(loss, x), 1e-7)
    close(grads.weight, central_differences(loss, w), 1e-7)
    close(grads.bias, central_differences(loss, b), 1e-7)


@pytest.mark.parametrize(
    "options",
    [
        {"size": 2},
        {"size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"size": (3, 2), "stride": 1, "padding": (1, 0), "dilation": (1, 2), "layout": "NCHW"},
        {"size": 3, "stride": 2, "padding": "same"},
    ],
)
def test_max_pool_gradient_matches_finite_differences(options: dict[str, Any]) -> None:
    """Distinct values (no ties): max pooling is linear near x, so differences are exact."""
    rng = np.random.default_rng(6)
    values = rng.permutation(2 * 7 * 6 * 2).reshape(2, 7, 6, 2).astype(np.float64) / 7
    x = to_layout(values, options.get("layout", "NHWC"))
    g = rng.standard_normal(max_pool2d(x, **options).shape)

    def loss() -> float:
        return float(np.sum(max_pool2d(x, **options) * g))

    close(max_pool2d_backward(g, x, **options), central_differences(loss, x, 1e-3), 1e-8)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {"size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"size": (2, 3), "stride": (1, 2), "padding": (1, 1)},
    ],
)
def test_avg_pool_gradient_matches_finite_differences(
    options: dict[str, Any], count_include_pad: bool
) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 7, 6, 2))
    g = rng.standard_normal(avg_pool2d(x, count_include_pad=count_include_pad, **options).shape)

    def loss() -> float:
        return float(np.sum(avg_pool2d(x, count_include_pad=count_include_pad, **options) * g))

    actual = avg_pool2d_backward(g, x.shape, count_include_pad=count_include_pad, **options)
    close(actual, central_differences(loss, x), 1e-8)


# --------------------------------------------------------------------------- transposed conv


@st.composite
def transpose_cases(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 1, 2]))
    filters = groups * draw(st.integers(1, 2))
    per_group = draw(st.integers(1, 2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(
        draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
    )
    kernel_layout = draw(st.sampled_from(["OHWI", "OIHW", "HWIO"]))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    ohwi = rng.standard_normal(
        (filters, draw(st.integers(1, 3)), draw(st.integers(1, 3)), per_group)
    )
    axes = {"OHWI": (0, 1, 2, 3), "OIHW": (0, 3, 1, 2), "HWIO": (1, 2, 3, 0)}[kernel_layout]
    x = rng.standard_normal(
        (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), filters)
    )
    return {
        "x": to_layout(x, layout),
        "weights": np.ascontiguousarray(ohwi.transpose(axes)),
        "bias": draw(st.sampled_from([None, rng.standard_normal(per_group * groups)])),
        "stride": stride,
        "padding": draw(st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * 4))),
        "output_padding": output_padding,
        "groups": groups,
        "dilation": dilation,
        "layout": layout,
        "kernel_layout": kernel_layout,
    }


@settings(max_examples=200, deadline=None)
@given(case=transpose_cases())
def test_conv_transpose2d_matches_loop_reference(case: dict[str, Any]) -> None:
    """PyTorch's definition, output_padding, groups, dilation, every layout."""
    try:
        actual = conv_transpose2d(**case)
    except ConvcliError:
        assume(False)
        raise
    close(actual, conv_transpose2d_loop(**case))


@settings(max_examples=200, deadline=None)
@given(case=conv_cases())
def test_adjoint_identity(case: dict[str, Any]) -> None:
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>, and conv2d_backward's input equals it."""
    case.update(pad_mode="zeros", flip=False, bias=None, x=case["x"].astype(np.float64))
    out = forward_or_reject(case)
    y = case["rng"].standard_normal(out.shape)
    x = case["x"]
    nhwc = x if case["layout"] == "NHWC" or x.ndim == 2 else np.moveaxis(x, -3, -1)
    height, width = nhwc.shape[-3:-1] if x.ndim > 2 else x.shape
    shape = case["weights"].shape
    if len(shape) == 4:
        kernel = {"OHWI": shape[1:3], "OIHW": shape[2:4], "HWIO": shape[0:2]}[case["kernel_layout"]]
    else:  # (kh, kw) or (kh, kw, C)
        kernel = shape[0:2]
    stride, dilation = pair(case["stride"]), pair(case["dilation"])
    pads = padding4(case["padding"], (height, width), kernel, stride, dilation)
    output_padding = tuple(
        (n + before + after - d * (k - 1) - 1) % s
        for n, before, after, k, s, d in (
            (height, pads[0], pads[1], kernel[0], stride[0], dilation[0]),
            (width, pads[2], pads[3], kernel[1], stride[1], dilation[1]),
        )
    )
    assume(all(o < max(s, d) for o, s, d in zip(output_padding, stride, dilation, strict=True)))
    back = conv_transpose2d(
        y,
        case["weights"],
        stride=stride,
        padding=pads,
        output_padding=output_padding,
        groups=case["groups"],
        dilation=dilation,
        layout=case["layout"],
        kernel_layout=case["kernel_layout"],
    )
    if x.ndim == 2:  # a one-channel result keeps a channel axis when y has several
        back = back.reshape(x.shape)
    assert back.shape == x.shape
    left, right = float(np.sum(out * y)), float(np.sum(x * back))
    scale = float(np.sum(np.abs(out * y))) + float(np.sum(np.abs(x * back)))
    assert abs(left - right) <= 1e-12 * scale
    options = {
        key: case[key]
        for key in ("stride", "padding", "dilation", "groups", "layout", "kernel_layout")
    }
    grads = conv2d_backward(y, x, case["weights"], needs=("input",), **options)
    close(grads.input, back, 1e-12)


def test_conv_transpose2d_same_padding_gives_stride_times_input() -> None:
    """TensorFlow's conv2d_transpose SAME shape: out = in * stride, the adjoint of SAME conv."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 3, 2, 4))  # HWIO: 2 output channels, 4 input
    y = rng.standard_normal((1, 4, 3, 4))
    out = conv_transpose2d(y, w, stride=2, padding="same", kernel_layout="HWIO")
    assert out.shape == (1, 8, 6, 2)
    x = rng.standard_normal((1, 8, 6, 2))
    forward = conv2d(x, w, stride=2, padding="same", kernel_layout="HWIO")
    assert abs(np.sum(forward * y) - np.sum(x * out)) < 1e-10


@pytest.mark.parametrize(
    ("output_padding", "stride", "dilation"), [(2, 2, 1), ((0, 1), 1, 1), (3, 2, 3)]
)
def test_output_padding_must_be_smaller_than_stride_or_dilation(
    output_padding: Any, stride: int, dilation: int
) -> None:
    w = np.ones((2, 3, 3, 2))
    with pytest.raises(
        ValueError, match="output_padding must be smaller than either stride or dilation"
    ):
        conv_transpose2d(
            np.ones((1, 4, 4, 2)),
            w,
            stride=stride,
            dilation=dilation,
            output_padding=output_padding,
        )


def test_output_padding_below_dilation_is_allowed() -> None:
    out = conv_transpose2d(
        np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1)), dilation=3, output_padding=2
    )
    assert out.shape == (1, 2 + 3 + 2, 7, 1)


def test_conv_transpose2d_rejects_mismatched_weights() -> None:
    with pytest.raises(ConvcliError, match=r"have 3 filters, but the input .* has 2 channels"):
        conv_transpose2d(np.ones((1, 4, 4, 2)), np.ones((3, 3, 3, 1)))
    with pytest.raises(ConvcliError, match="bias"):
        conv_transpose2d(np.ones((1, 4, 4, 3)), np.ones((3, 3, 3, 2)), np.ones(3))
    with pytest.raises(ConvcliError, match="output would be empty"):
        conv_transpose2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), padding=1)


# --------------------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.sampled_from([None, 1, 2, (1, 2), (3, 1)]))
    padding = draw(
        st.one_of(
            st.just("same"),
            st.just("valid"),
            st.tuples(*[st.integers(0, size[0] // 2)] * 2, *[st.integers(0, size[1] // 2)] * 2),
        )
    )
    rank = draw(st.sampled_from([2, 3, 4, 4]))
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(2, 7)),
        draw(st.integers(2, 7)),
        draw(st.integers(1, 3)),
    )
    shape = {2: shape[1:3], 3: shape[1:], 4: shape}[rank]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = draw(st.sampled_from(["ties", "normal", "special"]))
    if values == "ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
    else:
        x = rng.standard_normal(shape)
    if values == "special":
        x[rng.random(shape) < 0.2] = NAN
        x[rng.random(shape) < 0.2] = -INF
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    return {
        "x": to_layout(x, layout),
        "size": size,
        "stride": stride,
        "padding": padding,
        "dilation": draw(st.sampled_from([1, 1, 2, (1, 2)])),
        "ceil_mode": draw(st.booleans()),
        "layout": layout,
        "rng": rng,
    }


@settings(max_examples=300, deadline=None)
@given(
    case=pool_cases(),
    block=st.sampled_from([1, 500, engine.BLOCK_BYTES]),
    threads=st.sampled_from([1, 2]),
)
def test_max_pool_backward_matches_loop_reference(
    case: dict[str, Any], block: int, threads: int
) -> None:
    """Ties, NaN and -inf go where PyTorch's CPU kernel sends them; windows overlap."""
    rng = case.pop("rng")
    try:
        out = max_pool2d(**case)
    except ConvcliError:
        assume(False)
        raise
    g = rng.standard_normal(out.shape)
    with engine.tuned(block_bytes=block):
        actual = max_pool2d_backward(g, threads=threads, **case)
    assert actual.shape == case["x"].shape and actual.dtype == np.float64
    close(actual, pool2d_backward_loop(g, op="max", **case))


@settings(max_examples=100, deadline=None)
@given(
    case=pool_cases(),
    count_include_pad=st.booleans(),
    block=st.sampled_from([1, engine.BLOCK_BYTES]),
)
def test_avg_pool_backward_matches_loop_reference(
    case: dict[str, Any], count_include_pad: bool, block: int
) -> None:
    rng = case.pop("rng")
    case.pop("dilation")
    x = case.pop("x")
    try:
        out = avg_pool2d(x, count_include_pad=count_include_pad, **case)
    except ConvcliError:
        assume(False)
        raise
    g = rng.standard_normal(out.shape)
    with engine.tuned(block_bytes=block):
        actual = avg_pool2d_backward(g, x.shape, count_include_pad=count_include_pad, **case)
    assert actual.shape == x.shape
    close(actual, pool2d_backward_loop(g, x, op="avg", count_include_pad=count_include_pad, **case))


def test_max_pool_tie_rule_examples() -> None:
    """PyTorch 2.13 CPU, checked by hand: first maximum; last NaN; all -inf: first pixel."""
    ties = max_pool2d_backward(np.ones((1, 1)), np.array([[2.0, 3.0, 3.0, 1.0]]), (1, 4))
    np.testing.assert_array_equal(ties, [[0, 1, 0, 0]])
    nans = max_pool2d_backward(np.ones((1, 1)), np.array([[NAN, 5.0, NAN, 9.0]]), (1, 4))
    np.testing.assert_array_equal(nans, [[0, 0, 1, 0]])
    low = np.full((1, 3), -INF)
    grad = max_pool2d_backward(np.ones((1, 3)), low, (1, 3), stride=1, padding=(0, 0, 1, 1))
    np.testing.assert_array_equal(grad, [[2, 1, 0]])
    plateau = max_pool2d_backward(np.ones((2, 2)), np.ones((3, 3)), 2, stride=1)
    np.testing.assert_array_equal(plateau, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_pool_gradient_dtypes() -> None:
    x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert max_pool2d_backward(np.ones((2, 2)), x, 2).dtype == np.float32
    assert avg_pool2d_backward(np.ones((2, 2), np.float32), (4, 4), 2).dtype == np.float32
    assert avg_pool2d_backward(np.ones((2, 2)), (4, 4), 2).dtype == np.float64


# --------------------------------------------------------------------------- errors


def test_grad_output_must_have_the_forward_output_shape() -> None:
    x, w = np.ones((1, 6, 6, 2)), np.ones((3, 3, 3, 2))
    with pytest.raises(
        ConvcliError, match=r"grad_output must have the shape of the forward output, \(1, 4, 4, 3\)"
    ):
        conv2d_backward(np.ones((1, 6, 6, 3)), x, w)
    with pytest.raises(ConvcliError, match=r"\(1, 3, 3, 2\).*got \(1, 2, 2, 2\)"):
        max_pool2d_backward(np.ones((1, 2, 2, 2)), x, 2)
    with pytest.raises(ConvcliError, match="grad_output"):
        avg_pool2d_backward(np.ones((1, 3, 3, 3)), x.shape, 2)
    with pytest.raises(ConvcliError, match="grad_output dtype bool"):
        conv2d_backward(np.ones((1, 4, 4, 3), bool), x, w)


def test_bad_forward_arguments_are_refused_as_the_forward_refuses_them() -> None:
    x, w = np.ones((1, 6, 6, 2)), np.ones((3, 3, 3, 2))
    g = np.ones((1, 4, 4, 3))
    with pytest.raises(ConvcliError, match="groups=2 must divide"):
        conv2d_backward(g, x, np.ones((3, 3, 3, 1)), groups=2)
    with pytest.raises(ConvcliError, match="pad_mode"):
        conv2d_backward(g, x, w, pad_mode="mirror")
    with pytest.raises(ConvcliError, match="x_shape"):
        avg_pool2d_backward(np.ones((3, 3)), (6, -6), 2)
    with pytest.raises(ConvcliError, match="pooling padding"):
        max_pool2d_backward(np.ones((1, 4, 4, 2)), x, 2, padding=2)


def test_limits_refuse_before_allocating() -> None:
    x, w = np.ones((1, 64, 64, 2)), np.ones((3, 3, 3, 2))
    g = np.ones((1, 64, 64, 3))
    with pytest.raises(LimitError, match="max_bytes"):
        conv2d_backward(g, x, w, padding=1, pad_mode="reflect", max_bytes=60_000)
    with pytest.raises(LimitError, match="max_bytes"):
        conv_transpose2d(np.ones((1, 64, 64, 3)), w, stride=8, max_bytes=10**6)
    with pytest.raises(LimitError, match="max_bytes"):
        avg_pool2d_backward(np.ones((2, 2)), (10**5, 10**5), 2)
