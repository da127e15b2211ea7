"""The engine against the plain-loop reference, over random shapes and every parameter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convcli import ConvcliError, LimitError, avg_pool2d, conv2d, engine, max_pool2d
from tests.reference import conv2d_loop, pair, pool2d_loop, pool_size

SEED_IMAGE = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
SEED_KERNEL = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]


@contextmanager
def block_bytes(value: int) -> Iterator[None]:
    """Force small blocks so row bands and image groups split at awkward places."""
    saved = engine.BLOCK_BYTES
    engine.BLOCK_BYTES = value
    try:
        yield
    finally:
        engine.BLOCK_BYTES = saved


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHW" and x.ndim >= 3:
        return np.moveaxis(x, -1, -3).copy()
    return x


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    per_group = draw(st.integers(1, 2))
    channels = groups * per_group
    filters = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rank = draw(st.sampled_from([2, 3, 4, 4]))
    weight_rank = draw(st.sampled_from([2, 3, 4, 4, 4]))
    if rank == 2:
        channels, groups, per_group = 1, 1, 1
        filters = draw(st.integers(1, 2))
    if weight_rank in (2, 3):
        groups = 1
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    batch = draw(st.integers(1, 3))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    kernel_layout = draw(st.sampled_from(["OHWI", "OIHW", "HWIO"]))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 3),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
            st.tuples(*[st.integers(0, 3)] * 4),
        )
    )
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    shape = {2: (height, width), 3: (height, width, channels), 4: (batch, height, width, channels)}
    x = rng.standard_normal(shape[rank])
    dtype = draw(st.sampled_from([np.float64, np.float32, np.uint8]))
    x = (rng.integers(0, 256, shape[rank]) if dtype == np.uint8 else x).astype(dtype)
    if weight_rank == 2:
        weights = rng.standard_normal((kh, kw))
        out_channels = channels
    elif weight_rank == 3:
        weights = rng.standard_normal((kh, kw, channels))
        out_channels = 1
    else:
        ohwi = rng.standard_normal((filters, kh, kw, per_group))
        weights = {
            "OHWI": ohwi,
            "OIHW": ohwi.transpose(0, 3, 1, 2),
            "HWIO": ohwi.transpose(1, 2, 3, 0),
        }[kernel_layout]
        out_channels = filters
    bias = draw(st.sampled_from([None, "scalar", "vector"]))
    return {
        "x": to_layout(x, layout) if rank > 2 else x,
        "w": weights,
        "bias": None
        if bias is None
        else (0.5 if bias == "scalar" else rng.standard_normal(out_channels)),
        "stride": draw(
            st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
        ),
        "padding": padding,
        "dilation": draw(
            st.one_of(st.integers(1, 2), st.tuples(st.integers(1, 2), st.integers(1, 2)))
        ),
        "groups": groups,
        "pad_mode": draw(st.sampled_from(engine.PAD_MODES)),
        "flip": draw(st.booleans()),
        "layout": layout,
        "kernel_layout": kernel_layout,
    }


def conv_is_valid(case: dict[str, Any]) -> bool:
    """Whether PyTorch would accept the case: output non-empty, reflect/circular pad in range."""
    x = case["x"]
    hw = (
        x.shape[:2]
        if x.ndim == 2
        else (x.shape[-3:-1] if case["layout"] == "NHWC" else x.shape[-2:])
    )
    w = np.asarray(case["w"])
    if w.ndim == 4:
        k = {"OHWI": w.shape[1:3], "OIHW": w.shape[2:4], "HWIO": w.shape[0:2]}[
            case["kernel_layout"]
        ]
    else:
        k = w.shape[:2]
    s, d = pair(case["stride"]), pair(case["dilation"])
    from tests.reference import padding4

    top, bottom, left, right = padding4(case["padding"], hw, k, s, d)
    for n, pads, kk, dd in ((hw[0], (top, bottom), k[0], d[0]), (hw[1], (left, right), k[1], d[1])):
        if n + sum(pads) < dd * (kk - 1) + 1:
            return False
        if case["pad_mode"] == "reflect" and max(pads) >= n:
            return False
        if case["pad_mode"] == "circular" and max(pads) > n:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(case=conv_cases(), block=st.sampled_from([1, 200, 5000, engine.BLOCK_BYTES]))
def test_conv2d_matches_plain_loop(case: dict[str, Any], block: int) -> None:
    """Every conv2d parameter, in small blocks too, agrees with the loop reference."""
    with block_bytes(block):
        event(f"valid: {conv_is_valid(case)}")
        if not conv_is_valid(case):
            with pytest.raises(ConvcliError):
                conv2d(case.pop("x"), case.pop("w"), case.pop("bias"), **case)
            return
        expected = conv2d_loop(
            case["x"],
            case["w"],
            case["bias"],
            **{k: v for k, v in case.items() if k not in ("x", "w", "bias")},
        )
        actual = conv2d(
            case["x"],
            case["w"],
            case["bias"],
            **{k: v for k, v in case.items() if k not in ("x", "w", "bias")},
        )
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    tolerance = 1e-10 if actual.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * 100)


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    use_same = draw(st.booleans())
    if use_same:
        padding: Any = "same"
    else:
        padding = draw(
            st.one_of(
                st.just("valid"),
                st.integers(0, min(kh, kw) // 2),
                st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2)),
                st.tuples(
                    st.integers(0, kh // 2),
                    st.integers(0, kh // 2),
                    st.integers(0, kw // 2),
                    st.integers(0, kw // 2),
                ),
            )
        )
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    rank = draw(st.sampled_from([2, 3, 4]))
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = {2: (height, width), 3: (height, width, 2), 4: (2, height, width, 3)}[rank]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int16]))
    x = (rng.standard_normal(shape) * 10 - 5).astype(dtype)
    return {
        "x": to_layout(x, layout) if rank > 2 else x,
        "size": (kh, kw) if draw(st.booleans()) else max(kh, kw),
        "stride": draw(
            st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
        ),
        "padding": padding,
        "ceil_mode": draw(st.booleans()),
        "layout": layout,
    }


def pool_is_valid(case: dict[str, Any], dilation: Any = 1) -> bool:
    x = case["x"]
    hw = x.shape if x.ndim == 2 else (x.shape[-3:-1] if case["layout"] == "NHWC" else x.shape[-2:])
    k = pair(case["size"])
    s = pair(case["size"] if case["stride"] is None else case["stride"])
    d = pair(dilation)
    from tests.reference import padding4

    pads = padding4(case["padding"], hw, k, s, d)
    if case["padding"] not in ("same", "valid"):
        if max(pads[:2]) > k[0] // 2 or max(pads[2:]) > k[1] // 2:
            return False
    return all(
        n + before + after >= dd * (kk - 1) + 1
        and pool_size(n, kk, ss, dd, before, after, case["ceil_mode"]) >= 1
        for n, kk, ss, dd, before, after in (
            (hw[0], k[0], s[0], d[0], pads[0], pads[1]),
            (hw[1], k[1], s[1], d[1], pads[2], pads[3]),
        )
    )


@settings(max_examples=250, deadline=None)
@given(
    case=pool_cases(),
    dilation=st.sampled_from([1, 2, (1, 2)]),
    block=st.sampled_from([1, 300, engine.BLOCK_BYTES]),
)
def test_max_pool2d_matches_plain_loop(case: dict[str, Any], dilation: Any, block: int) -> None:
    """max_pool2d: padding acts as -inf, ceil_mode follows PyTorch, dilation and blocks."""
    with block_bytes(block):
        event(f"valid: {pool_is_valid(case, dilation)}")
        if not pool_is_valid(case, dilation):
            with pytest.raises(ConvcliError):
                max_pool2d(dilation=dilation, **case)
            return
        actual = max_pool2d(dilation=dilation, **case)
    expected = pool2d_loop(dilation=dilation, op="max", **case)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=250, deadline=None)
@given(
    case=pool_cases(), include=st.booleans(), block=st.sampled_from([1, 300, engine.BLOCK_BYTES])
)
def test_avg_pool2d_matches_plain_loop(case: dict[str, Any], include: bool, block: int) -> None:
    """avg_pool2d: divisor with and without padding, ceil-mode overhang never counted."""
    with block_bytes(block):
        if not pool_is_valid(case):
            with pytest.raises(ConvcliError):
                avg_pool2d(count_include_pad=include, **case)
            return
        actual = avg_pool2d(count_include_pad=include, **case)
    expected = pool2d_loop(count_include_pad=include, op="avg", **case)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_seed_case_gives_the_seed_numbers() -> None:
    """The seed repository's 5x5 example, stride 1, no padding."""
    out = conv2d(np.array(SEED_IMAGE), np.array(SEED_KERNEL), padding=0)
    np.testing.assert_array_equal(out, [[12, 12, 17], [10, 17, 19], [9, 6, 14]])
    assert out.dtype == np.float32


def test_same_padding_puts_the_odd_pixel_after() -> None:
    """TensorFlow SAME on an even size with stride 2: total 1, all of it bottom/right."""
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = conv2d(x, np.ones((2, 2)), stride=2, padding="same")
    np.testing.assert_array_equal(out, [[10, 18], [42, 50]])
    assert engine.resolve_padding("same", (4, 4), (3, 3), (2, 2)) == (0, 1, 0, 1)


def test_max_pool_padding_never_wins_over_negative_values() -> None:
    """The seed pooled a zeroed buffer; padding must act as -inf."""
    x = -np.ones((1, 4, 4, 1))
    out = max_pool2d(x, 2, padding=1)
    np.testing.assert_array_equal(out, -np.ones((1, 3, 3, 1)))


def test_reflect_pads_without_repeating_the_edge() -> None:
    """PyTorch's reflect: [1,2,3,4] padded by 2 on the left is [3,2,1,2,3,4]."""
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = conv2d(x, np.array([[1.0, 0, 0, 0, 0]]), padding=(0, 0, 2, 2), pad_mode="reflect")
    np.testing.assert_array_equal(out, [[3, 2, 1, 2]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float16, np.float32])
def test_non_float64_inputs_compute_in_float32(dtype: Any) -> None:
    x = np.full((3, 3), 200, dtype=dtype)
    out = conv2d(x, np.ones((3, 3)), padding=0)
    assert out.dtype == np.float32
    assert out[0, 0] == 1800  # no uint8 wraparound or saturation


def test_float64_stays_float64() -> None:
    assert conv2d(np.ones((3, 3)), np.ones((1, 1))).dtype == np.float64
    assert max_pool2d(np.ones((2, 2)), 2).dtype == np.float64
    assert avg_pool2d(np.ones((2, 2), dtype=np.uint8), 2).dtype == np.float32


def test_large_integers_do_not_wrap() -> None:
    x = np.full((2, 2), 2**31 - 1, dtype=np.int64)
    assert conv2d(x, np.full((2, 2), 2.0))[0, 0] == pytest.approx(8 * (2**31 - 1), rel=1e-6)


def test_depthwise_2d_weights_filter_each_channel_alone() -> None:
    x = np.zeros((3, 3, 2))
    x[1, 1] = [1, 10]
    out = conv2d(x, np.arange(9.0).reshape(3, 3), padding=1)
    assert out.shape == (3, 3, 2)
    np.testing.assert_array_equal(out[..., 1], 10 * out[..., 0])


def test_gray_input_with_several_filters_gains_a_channel_axis() -> None:
    out = conv2d(np.ones((4, 4)), np.ones((3, 2, 2, 1)))
    assert out.shape == (3, 3, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: conv2d(np.ones((4, 4)), np.ones((3, 3)), stride=0), "stride must be >= 1"),
        (lambda: conv2d(np.ones((4, 4)), np.ones((3, 3)), padding=-1), "padding must be >= 0"),
        (lambda: conv2d(np.ones((4, 4)), np.ones((3, 3)), padding=(1, 2, 3)), "padding must have"),
        (lambda: conv2d(np.ones((4, 4)), np.ones((3, 3)), padding="full"), "padding must be"),
        (lambda: conv2d(np.ones((4, 4)), np.ones((3, 3)), dilation=0), "dilation must be >= 1"),
        (
            lambda: conv2d(np.ones((1, 4, 4, 3)), np.ones((4, 3, 3, 3)), groups=2),
            "groups=2 must divide the input channels (3)",
        ),
        (
            lambda: conv2d(np.ones((1, 4, 4, 3)), np.ones((4, 3, 3, 2))),
            "expect 2 input channels per group",
        ),
        (lambda: conv2d(np.ones((4, 4, 3)), np.ones((3, 3, 2))), "have 2 channels but the input"),
        (lambda: conv2d(np.ones((2, 2)), np.ones((3, 3))), "output would be empty"),
        (
            lambda: conv2d(np.ones((2, 2)), np.ones((3, 3)), padding=2, pad_mode="reflect"),
            "reflect padding 2 must be smaller than the input height 2",
        ),
        (
            lambda: conv2d(np.ones((2, 2)), np.ones((1, 1)), padding=3, pad_mode="circular"),
            "circular padding 3 must not exceed",
        ),
        (lambda: conv2d(np.ones((2, 2)), np.ones((1, 1)), pad_mode="mirror"), "pad_mode must be"),
        (lambda: conv2d(np.ones((2, 2)), np.ones((1, 1)), layout="HWCN"), "layout must be"),
        (
            lambda: conv2d(np.ones((1, 2, 2, 1)), np.ones((1, 1, 1, 1)), kernel_layout="IOHW"),
            "kernel_layout must be",
        ),
        (lambda: conv2d(np.ones((2, 2)), np.ones((1, 1)), bias=[1, 2]), "bias must be a scalar"),
        (lambda: conv2d(np.ones((2, 2, 2, 2, 2)), np.ones((1, 1))), "got 5-D shape"),
        (lambda: conv2d(np.ones((2, 2), dtype=complex), np.ones((1, 1))), "complex"),
        (lambda: conv2d(np.ones((2, 2), dtype=bool), np.ones((1, 1))), "bool"),
        (lambda: conv2d(np.ones((2, 2)), np.ones(3)), "weights must be 2-D"),
        (lambda: max_pool2d(np.ones((4, 4)), 2, padding=2), "must be at most size // 2 = 1"),
        (lambda: max_pool2d(np.ones((4, 4)), 0), "size must be >= 1"),
        (lambda: avg_pool2d(np.ones((2, 2)), 3), "output would be empty"),
        (lambda: max_pool2d(np.ones((4, 4)), 2, stride=(1, 0)), "stride must be >= 1"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert message in str(info.value)


def test_oversized_output_is_refused_before_allocating() -> None:
    """Padding 100000 on a tiny image would need ~1.5 TB: refused by the size formula."""
    with pytest.raises(LimitError, match="output 1x200008x200008x1"):
        conv2d(np.ones((10, 10), dtype=np.float32), np.ones((3, 3)), padding=100000)
    with pytest.raises(LimitError, match="over the limit of 1,000"):
        conv2d(np.ones((1, 20, 20, 3)), np.ones((2, 3, 3, 3)), max_bytes=1000)


def test_bias_is_added_per_output_channel() -> None:
    out = conv2d(np.zeros((1, 3, 3, 1)), np.ones((2, 1, 1, 1)), bias=[1.5, -2.0])
    np.testing.assert_array_equal(out[0, 0, 0], [1.5, -2.0])
