"""The engine against the plain-loop reference, over random shapes and every parameter."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convcli import ConvcliError, LimitError, avg_pool2d, conv2d, engine, max_pool2d
from tests.conftest import SEED_IMAGE, SEED_KERNEL, SEED_OUTPUT
from tests.reference import conv2d_loop, pair, pool2d_loop, pool_size


def block_bytes(value: int) -> AbstractContextManager[engine.Tuning]:
    """Force small blocks so row bands and image groups split at awkward places."""
    return engine.tuned(block_bytes=value)


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
    if draw(st.booleans()):  # zero taps, as in a sharpen (skipped on integer inputs)
        weights = np.where(rng.random(weights.shape) < 0.5, 0.0, weights)
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
    np.testing.assert_array_equal(out, SEED_OUTPUT)
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


# --------------------------------------------------------------------------- engine paths


def forced_path(path: str | None) -> AbstractContextManager[engine.Tuning]:
    """Make conv2d take ``path`` wherever that path applies."""
    return engine.tuned(conv_path=path)


@st.composite
def depthwise_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Each output channel from its own input channel: 2-D weights or groups == C banks.

    Kernels are up to 7x7 (large enough for the FFT tiles to overlap) and, when drawn so,
    exact outer products (rank 1), which the separable path needs.
    """
    channels = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    rank_one = draw(st.booleans())
    per_channel = draw(st.booleans())
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    kernel_layout = draw(st.sampled_from(["OHWI", "OIHW", "HWIO"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(3, 14)), draw(st.integers(3, 14)), channels)
    dtype = draw(st.sampled_from([np.float64, np.float32, np.uint8]))
    x = rng.integers(0, 256, shape) if dtype == np.uint8 else rng.standard_normal(shape)
    kernels = rng.standard_normal((channels if per_channel else 1, kh, kw))
    if rank_one:
        kernels = rng.standard_normal((len(kernels), kh, 1)) * rng.standard_normal(
            (len(kernels), 1, kw)
        )
    if per_channel:
        ohwi = kernels[:, :, :, None]
        weights = {
            "OHWI": ohwi,
            "OIHW": ohwi.transpose(0, 3, 1, 2),
            "HWIO": ohwi.transpose(1, 2, 3, 0),
        }[kernel_layout]
        groups = channels
    else:
        weights, groups = kernels[0], 1
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 4),
            st.tuples(*[st.integers(0, 4)] * 4),
        )
    )
    bias = draw(st.sampled_from([None, "scalar", "vector"]))
    return {
        "x": to_layout(x.astype(dtype), layout),
        "w": weights,
        "bias": None
        if bias is None
        else (0.5 if bias == "scalar" else rng.standard_normal(channels)),
        "stride": draw(
            st.one_of(
                st.just(1), st.integers(1, 3), st.tuples(st.integers(1, 2), st.integers(1, 2))
            )
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
        "rank_one": rank_one,
    }


def expected_path(path: str, case: dict[str, Any]) -> str:
    """The path a depthwise case must take when ``path`` is forced (derived independently)."""
    unit_stride = pair(case["stride"]) == (1, 1)
    if path == "separable" and not case["rank_one"]:
        path = "none"
    if path == "fft" and not unit_stride:
        path = "none"
    return path


@settings(max_examples=500, deadline=None)
@given(
    case=depthwise_cases(),
    path=st.sampled_from(engine.CONV_PATHS),
    block=st.sampled_from([1, 300, 5000, engine.BLOCK_BYTES]),
    threads=st.sampled_from([1, 2]),
)
def test_every_conv_path_matches_plain_loop(
    case: dict[str, Any], path: str, block: int, threads: int
) -> None:
    """gemm, depthwise, separable and fft, each forced where it applies, agree with the loop."""
    rank_one = case.pop("rank_one")
    x, w, bias = case.pop("x"), case.pop("w"), case.pop("bias")
    if not conv_is_valid({"x": x, "w": w, **case}):
        with pytest.raises(ConvcliError):
            conv2d(x, w, bias, **case)
        return
    with block_bytes(block), forced_path(path):
        chosen = engine.conv2d_path(x, w, **case)
        actual = conv2d(x, w, bias, threads=threads, **case)
    wanted = expected_path(path, {**case, "rank_one": rank_one})
    event(f"path {chosen}")
    if wanted != "none":
        assert chosen == wanted
    expected = conv2d_loop(x, w, bias, **case)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    tolerance = 1e-10 if actual.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * 100)


@settings(max_examples=100, deadline=None)
@given(case=conv_cases(), block=st.sampled_from([1, 200, engine.BLOCK_BYTES]))
def test_gemm_path_takes_any_case(case: dict[str, Any], block: int) -> None:
    """The general path, forced even where a faster one applies, agrees with the loop."""
    if not conv_is_valid(case):
        return
    x, w, bias = case.pop("x"), case.pop("w"), case.pop("bias")
    with block_bytes(block), forced_path("gemm"):
        assert engine.conv2d_path(x, w, **case) == "gemm"
        actual = conv2d(x, w, bias, **case)
    expected = conv2d_loop(x, w, bias, **case)
    tolerance = 1e-10 if actual.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * 100)


def gaussian(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return np.outer(g, g) / np.outer(g, g).sum()


@pytest.mark.parametrize(
    ("x", "w", "options", "path"),
    [
        (np.ones((1, 16, 16, 3), np.float32), np.ones((8, 3, 3, 3)), {}, "gemm"),
        (np.ones((16, 16, 3), np.float32), np.ones((3, 3, 3)), {}, "gemm"),
        (np.ones((64, 64, 3), np.uint8), np.arange(9.0).reshape(3, 3), {}, "depthwise"),
        (np.ones((64, 64)), np.array(SEED_KERNEL), {}, "depthwise"),
        (np.ones((64, 64, 3), np.float32), gaussian(7, 1.5).astype(np.float32), {}, "separable"),
        (
            np.ones((64, 64)),
            np.outer([1.0, 2, 1], [-1.0, 0, 1, 0, 1]) * np.ones((1, 1)),
            {},
            "depthwise",
        ),
        (np.ones((64, 64)), np.outer(np.arange(1.0, 8), np.arange(1.0, 8)), {}, "separable"),
        (np.ones((64, 64, 3), np.float32), gaussian(5, 1.5).astype(np.float32), {}, "depthwise"),
        (np.ones((256, 256), np.float32), np.random.default_rng(0).random((31, 31)), {}, "fft"),
        (
            np.ones((256, 256), np.float32),
            np.random.default_rng(0).random((31, 31)),
            {"stride": 2},
            "depthwise",
        ),
    ],
)
def test_dispatcher_picks_the_path_for_the_shape(
    x: np.ndarray, w: np.ndarray, options: dict[str, Any], path: str
) -> None:
    assert engine.conv2d_path(x, w, padding="same", **options) == path


def test_rank_one_is_judged_at_the_compute_precision() -> None:
    """A float32-rounded Gaussian is rank 1 to float32 precision only: float64 sums directly."""
    from convcli.engine.paths import rank_one_factors

    kernel = gaussian(7, 1.5).astype(np.float32)[None]
    assert rank_one_factors(kernel, np.dtype(np.float32)) is not None
    assert rank_one_factors(kernel, np.dtype(np.float64)) is None
    assert rank_one_factors(gaussian(7, 1.5)[None], np.dtype(np.float64)) is not None
    assert (
        rank_one_factors(np.random.default_rng(0).random((1, 3, 3)), np.dtype(np.float32)) is None
    )
    assert engine.conv2d_path(np.ones((64, 64)), kernel[0], padding="same") != "separable"
    assert (
        engine.conv2d_path(np.ones((64, 64), np.float32), kernel[0], padding="same") == "separable"
    )


def test_separable_path_is_exact_up_to_rounding_on_a_gaussian() -> None:
    """A 31x31 Gaussian through two 1-D passes matches the direct tap loop to float32 rounding."""
    rng = np.random.default_rng(3)
    x = rng.random((80, 70), dtype=np.float32)
    kernel = gaussian(31, 5.0).astype(np.float32)
    assert engine.conv2d_path(x, kernel, padding="same") == "separable"
    with forced_path("depthwise"):
        direct = conv2d(x.astype(np.float64), kernel.astype(np.float64), padding="same")
    np.testing.assert_allclose(conv2d(x, kernel, padding="same"), direct, rtol=2e-6, atol=1e-6)


def test_threads_do_not_change_results() -> None:
    """Bands are independent: 1 or 3 worker threads give bit-identical results."""
    rng = np.random.default_rng(4)
    x = rng.random((2, 40, 30, 3), dtype=np.float32)
    w = rng.random((9, 9))
    with block_bytes(2000):
        for path in ("depthwise", "fft"):
            with forced_path(path):
                np.testing.assert_array_equal(
                    conv2d(x, w, padding="same", threads=1), conv2d(x, w, padding="same", threads=3)
                )
        np.testing.assert_array_equal(
            max_pool2d(x, 3, 2, threads=1), max_pool2d(x, 3, 2, threads=3)
        )


def test_threads_come_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convcli.engine.threads import available_cores, resolve_threads

    monkeypatch.delenv("CONVCLI_THREADS", raising=False)
    assert resolve_threads(None) == available_cores()
    monkeypatch.setenv("CONVCLI_THREADS", "3")
    assert resolve_threads(None) == 3
    assert resolve_threads(1) == 1
    monkeypatch.setenv("CONVCLI_THREADS", "many")
    with pytest.raises(
        ConvcliError, match="CONVCLI_THREADS must be a positive integer, got 'many'"
    ):
        conv2d(np.ones((4, 4)), np.ones((3, 3)))
    with pytest.raises(ConvcliError, match="threads must be a positive int, got 0"):
        conv2d(np.ones((4, 4)), np.ones((3, 3)), threads=0)
    with pytest.raises(ConvcliError, match="threads must be a positive int, got True"):
        max_pool2d(np.ones((4, 4)), 2, threads=True)


@pytest.mark.parametrize(
    ("x", "w", "path"),
    [
        (np.ones((8, 256, 256, 3), np.float32), np.ones((16, 5, 5, 3)), "gemm"),
        (np.ones((8, 256, 256, 3), np.uint8), np.arange(9.0).reshape(3, 3), "depthwise"),
        (np.ones((8, 256, 256, 3), np.float32), gaussian(9, 2.0).astype(np.float32), "separable"),
        (np.ones((8, 256, 256, 1), np.float32), np.random.default_rng(0).random((15, 15)), "fft"),
    ],
)
def test_scratch_memory_is_bounded_whatever_the_batch(
    x: np.ndarray, w: np.ndarray, path: str
) -> None:
    """Beyond the output, conv2d allocates far less than unfolding the whole batch would."""
    import tracemalloc

    assert engine.conv2d_path(x, w, padding="same") == path
    tracemalloc.start()
    try:
        out = conv2d(x, w, padding="same")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    scratch = peak - out.nbytes
    unfolded = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] * np.asarray(w).size * 4
    assert scratch < 16 * 1024**2 < unfolded


def test_worker_threads_run_every_band_and_reraise_a_failure() -> None:
    from convcli.engine.threads import run_blocks

    seen: list[int] = []
    run_blocks(list(range(50)), seen.append, 3)
    assert sorted(seen) == list(range(50))

    def fail_on_seven(task: int) -> None:
        if task == 7:
            raise ConvcliError("band 7 failed")

    with pytest.raises(ConvcliError, match="band 7 failed"):
        run_blocks(list(range(50)), fail_on_seven, 3)


@settings(max_examples=200, deadline=None)
@given(
    case=st.one_of(depthwise_cases(), conv_cases()),
    path=st.sampled_from(engine.CONV_PATHS),
    specials=st.lists(st.sampled_from([np.inf, -np.inf, np.nan]), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    block=st.sampled_from([1, 300, engine.BLOCK_BYTES]),
)
def test_nan_and_infinity_stay_in_their_windows(
    case: dict[str, Any], path: str, specials: list[float], seed: int, block: int
) -> None:
    """Every path puts NaN/inf exactly where the direct sum does (0 * inf is NaN there only)."""
    case.pop("rank_one", None)
    x = np.array(case.pop("x"), dtype=np.float64 if seed % 2 else np.float32)
    w, bias = case.pop("w"), case.pop("bias")
    rng = np.random.default_rng(seed)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, len(specials))] = specials
    if not conv_is_valid({"x": x, "w": w, **case}):
        return
    # inf - inf and 0 * inf warn in NumPy, as they would in the reference loop.
    with block_bytes(block), forced_path(path), np.errstate(invalid="ignore"):
        actual = conv2d(x, w, bias, **case)
        expected = conv2d_loop(x, w, bias, **case)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-4, atol=1e-2)


def test_huge_dilation_with_same_padding_is_refused_before_allocating() -> None:
    """'same' padding for a dilated extent of 2e27 would pad by 1e27: refused by size."""
    with pytest.raises(LimitError, match="the padded input"):
        conv2d(np.ones((4, 4)), np.ones((3, 3)), dilation=10**27, padding="same")
    with pytest.raises(LimitError, match="the padded input"):
        max_pool2d(np.ones((4, 4)), 3, dilation=10**27, padding="same")


def test_weights_and_bias_that_overflow_float32_are_refused() -> None:
    with pytest.raises(ConvcliError, match="weights overflow float32"):
        conv2d(np.ones((16, 16), np.float32), np.full((9, 9), 1e300))
    with pytest.raises(ConvcliError, match="bias overflow float32"):
        conv2d(np.ones((16, 16), np.float32), np.ones((3, 3)), bias=1e300)


def test_gemm_bands_leave_the_blas_thread_count_as_they_found_it() -> None:
    """The gemm path holds NumPy's OpenBLAS at one thread only while it runs, even when
    several conv2d calls overlap on different threads."""
    from concurrent.futures import ThreadPoolExecutor

    from convcli.engine import threads

    control = threads._openblas_control()
    if control is None:
        pytest.skip("NumPy here does not bundle OpenBLAS; the gemm path keeps the BLAS threads")
    getter, _ = control
    before = getter()
    with threads.single_blas_thread() as limited:
        assert limited and getter() == 1
    assert getter() == before
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 40, 40, 3)).astype(np.float32)
    w = rng.standard_normal((8, 5, 5, 3)).astype(np.float32)
    expected = conv2d(x, w, padding=2, threads=1)
    with block_bytes(20_000), ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: conv2d(x, w, padding=2, threads=2), range(6)))
    assert getter() == before
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
