"""convcli verify: array comparison, files and folders, reference dumps, heat maps, the command."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from convcli.cli.report_verify import render_comparisons
from convcli.cli.verify import verify as verify_command
from convcli.engine.conv import conv2d
from convcli.engine.pool import avg_pool2d, max_pool2d
from convcli.errors import ConvcliError, ExitCode, InputError
from convcli.io.arrays import encode_npy, encode_npz, read_npz
from convcli.io.images import encode_image, read_image
from convcli.verify import compare as compare_module
from convcli.verify import run as verify_module
from convcli.verify.compare import (
    Comparison,
    compare_arrays,
    default_tolerances,
    missing_comparison,
)
from convcli.verify.dumps import is_reference_dump, read_reference, write_reference
from convcli.verify.pairs import compare_paths
from convcli.verify.replay import verify_dump
from convcli.verify.run import comparisons_to_json, diff_heatmap
from tests.conftest import SUBPROCESS_TIMEOUT, convcli_command

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "verify"
PAIR_KEYS = [
    "name",
    "shape_actual",
    "shape_expected",
    "max_abs_diff",
    "max_rel_diff",
    "mismatched",
    "total",
    "match",
]


def random(shape: tuple[int, ...], seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def save_npy(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_npy(array))
    return path


def save_npz(path: Path, members: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_npz(members))
    return path


def save_image(path: Path, pixels: np.ndarray, fmt: str = "png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(pixels, format=fmt, name=str(path)))
    return path


def one_changed(
    shape: tuple[int, ...], index: tuple[int, ...], by: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    expected = random(shape)
    actual = expected.copy()
    actual[index] += by
    return actual, expected


# --------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize(
    ("dtype", "tolerances"),
    [
        (np.float16, (1e-3, 1e-5)),
        (np.float32, (1.3e-6, 1e-5)),
        (np.float64, (1e-7, 1e-7)),
        (np.uint8, (0.0, 0.0)),
        (np.int64, (0.0, 0.0)),
        (np.bool_, (0.0, 0.0)),
    ],
)
def test_default_tolerances_follow_torch_assert_close(
    dtype: Any, tolerances: tuple[float, float]
) -> None:
    assert default_tolerances(dtype) == tolerances


def test_float32_default_tolerance_boundary() -> None:
    """|a - e| <= 1e-5 + 1.3e-6 * |e| passes, a bit more fails (float32 defaults)."""
    expected = np.array([100.0], dtype=np.float32)
    inside = np.array([100.0 + 1.3e-4 + 1e-5 - 1e-5], dtype=np.float32)
    outside = np.array([100.0 + 2e-4], dtype=np.float32)
    assert compare_arrays(inside, expected, name="in").match
    result = compare_arrays(outside, expected, name="out")
    assert not result.match
    assert (result.rtol, result.atol) == (1.3e-6, 1e-5)


def test_relative_tolerance_scales_with_expected_not_actual() -> None:
    """The rule is asymmetric, as torch's: rtol multiplies |expected|."""
    big, small = np.array([10.0]), np.array([5.0])
    assert compare_arrays(big, small, name="x", rtol=0.5, atol=0).mismatched == 1
    assert compare_arrays(small, big, name="x", rtol=0.5, atol=0).match


def test_float64_defaults_and_overrides() -> None:
    expected = np.array([1.0, 2.0])
    actual = expected + np.array([0.0, 1e-6])
    assert not compare_arrays(actual, expected, name="x").match
    assert compare_arrays(actual, expected, name="x", atol=1e-6).match
    assert compare_arrays(actual, expected, name="x", rtol=1e-6).match
    override = compare_arrays(actual, expected, name="x", rtol=0.25)
    assert (override.rtol, override.atol) == (0.25, 1e-7)


def test_tolerance_comes_from_the_expected_dtype() -> None:
    """float64 actual against float32 expected: float32 tolerances, and no problem."""
    expected = np.array([1.0, 2.0], dtype=np.float32)
    result = compare_arrays(expected.astype(np.float64) + 5e-6, expected, name="x")
    assert result.problem is None and result.match
    assert (result.rtol, result.atol) == default_tolerances(np.float32)
    reverse = compare_arrays(expected, expected.astype(np.float64) + 5e-6, name="x")
    assert (reverse.rtol, reverse.atol) == (1e-7, 1e-7) and not reverse.match


def test_negative_or_nan_tolerance_is_refused() -> None:
    with pytest.raises(ConvcliError, match="rtol"):
        compare_arrays(np.zeros(2), np.zeros(2), name="x", rtol=-1)
    with pytest.raises(ConvcliError, match="atol"):
        compare_arrays(np.zeros(2), np.zeros(2), name="x", atol=float("nan"))


# --------------------------------------------------------------------------- compare_arrays


def test_identical_arrays_match() -> None:
    array = random((2, 4, 5, 3))
    result = compare_arrays(array, array.copy(), name="same")
    assert result.match and result.problem is None
    assert (result.mismatched, result.total) == (0, array.size)
    assert result.max_abs_diff == 0.0 and result.max_rel_diff == 0.0
    assert result.shape_actual == result.shape_expected == (2, 4, 5, 3)
    assert result.dtype_actual == result.dtype_expected == "float32"


def test_one_changed_element_is_located() -> None:
    actual, expected = one_changed((2, 4, 5, 3), (1, 2, 3, 0))
    result = compare_arrays(actual, expected, name="x", show=3)
    assert not result.match
    assert result.mismatched == 1
    assert result.max_abs_index == (1, 2, 3, 0)
    assert result.max_abs_diff == pytest.approx(0.5, rel=1e-6)
    assert result.worst[0].position == (1, 2, 3, 0)
    assert result.worst[0].actual == pytest.approx(float(actual[1, 2, 3, 0]))
    assert result.worst[0].expected == pytest.approx(float(expected[1, 2, 3, 0]))


def test_show_lists_worst_first_and_only_n() -> None:
    expected = np.zeros(10)
    actual = np.array([0.0, 3.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.5])
    result = compare_arrays(actual, expected, name="x", show=3)
    assert [element.position for element in result.worst] == [(1,), (5,), (3,)]
    assert [element.diff for element in result.worst] == [3.0, 2.0, 1.0]
    assert compare_arrays(actual, expected, name="x").worst == ()


def test_chunked_scan_agrees_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk boundaries change nothing: counts, maxima, indices and the worst list."""
    expected = random((3, 7, 5, 2), seed=1, dtype=np.float64)
    actual = expected + random((3, 7, 5, 2), seed=2, dtype=np.float64) * 1e-3
    actual[2, 6, 4, 1] = np.nan
    one_pass = compare_arrays(actual, expected, name="x", show=5)
    monkeypatch.setattr(compare_module, "CHUNK_ELEMENTS", 7)
    chunked = compare_arrays(actual, expected, name="x", show=5)
    assert repr(chunked) == repr(one_pass)  # repr: NaN != NaN would fail a plain ==
    assert chunked.worst[0].position == (2, 6, 4, 1)


def test_nan_matches_nan_only_at_the_same_position() -> None:
    nan = np.nan
    same = compare_arrays(np.array([1.0, nan]), np.array([1.0, nan]), name="x")
    assert same.match
    moved = compare_arrays(np.array([nan, 1.0]), np.array([1.0, nan]), name="x")
    assert moved.mismatched == 2
    versus_number = compare_arrays(np.array([nan, 2.0]), np.array([0.0, 2.0]), name="x")
    assert versus_number.mismatched == 1
    assert versus_number.max_abs_diff == 0.0 and versus_number.max_abs_index == (1,)


def test_infinities_match_only_the_same_infinity() -> None:
    inf = np.inf
    assert compare_arrays(np.array([inf, -inf]), np.array([inf, -inf]), name="x").match
    opposite = compare_arrays(np.array([inf]), np.array([-inf]), name="x")
    assert opposite.mismatched == 1 and opposite.max_abs_diff == inf
    against_finite = compare_arrays(np.array([inf]), np.array([1e308]), name="x")
    assert against_finite.mismatched == 1


def test_integers_compare_exactly_without_wraparound() -> None:
    zero, full = np.array([0], dtype=np.uint8), np.array([255], dtype=np.uint8)
    result = compare_arrays(zero, full, name="x")
    assert result.mismatched == 1 and result.max_abs_diff == 255.0
    big = np.array([2**53 + 1], dtype=np.int64)
    assert not compare_arrays(big, np.array([2**53], dtype=np.uint64), name="x").match
    mixed = compare_arrays(np.array([3], dtype=np.int16), np.array([3], dtype=np.uint8), name="x")
    assert mixed.match and mixed.problem is None


def test_integer_tolerance_when_given() -> None:
    actual = np.array([10, 20], dtype=np.uint8)
    expected = np.array([11, 20], dtype=np.uint8)
    assert not compare_arrays(actual, expected, name="x").match
    assert compare_arrays(actual, expected, name="x", atol=1).match


def test_max_rel_diff_ignores_zero_expected() -> None:
    result = compare_arrays(np.array([1e-3, 2.2]), np.array([0.0, 2.0]), name="x", atol=1)
    assert result.max_rel_diff == pytest.approx(0.1)
    assert compare_arrays(np.array([1.0]), np.array([0.0]), name="x").max_rel_diff is None


def test_shape_mismatch_is_a_problem() -> None:
    result = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), name="x")
    assert not result.match and result.problem == "shape mismatch"
    assert result.mismatched == result.total == 6
    assert result.max_abs_diff is None


def test_dtype_kind_mismatch_is_a_problem() -> None:
    result = compare_arrays(np.zeros(3), np.zeros(3, dtype=np.int32), name="x")
    assert not result.match
    assert result.problem == "dtype kind mismatch (float vs int)"


def test_expected_layout_nchw_transposes_the_expected_side() -> None:
    actual = random((2, 4, 5, 3))
    expected = np.ascontiguousarray(actual.transpose(0, 3, 1, 2))
    assert not compare_arrays(actual, expected, name="x").match
    result = compare_arrays(actual, expected, name="x", expected_layout="NCHW")
    assert result.match and result.shape_expected == (2, 4, 5, 3)
    image = actual[0]
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    assert compare_arrays(image, chw, name="x", expected_layout="NCHW").match


def test_expected_layout_index_is_in_the_actual_array() -> None:
    actual, expected_nhwc = one_changed((2, 4, 5, 3), (1, 2, 3, 0))
    expected = np.ascontiguousarray(expected_nhwc.transpose(0, 3, 1, 2))
    result = compare_arrays(actual, expected, name="x", expected_layout="NCHW")
    assert result.max_abs_index == (1, 2, 3, 0)


def test_strings_compare_exactly() -> None:
    assert compare_arrays(np.array("a"), np.array("a"), name="x").match
    assert not compare_arrays(np.array("a"), np.array("b"), name="x").match


def test_empty_arrays_match() -> None:
    result = compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), name="x")
    assert result.match and result.total == 0 and result.max_abs_diff is None


# --------------------------------------------------------------------------- JSON


def test_json_schema_is_exact() -> None:
    actual, expected = one_changed((2, 3), (1, 2))
    comparisons = [
        compare_arrays(actual, expected, name="a"),
        compare_arrays(np.array([np.inf]), np.array([1.0]), name="b"),
        missing_comparison("c", "actual", None, rtol=None, atol=None),
    ]
    document = comparisons_to_json(comparisons)
    assert list(document) == ["match", "pairs"]
    assert document["match"] is False
    assert [list(pair) for pair in document["pairs"]] == [PAIR_KEYS] * 3
    first, second, third = document["pairs"]
    assert first["shape_actual"] == [2, 3] and first["mismatched"] == 1
    assert second["max_abs_diff"] is None  # inf is not JSON
    assert third["shape_actual"] is None and third["match"] is False
    json.loads(json.dumps(document, allow_nan=False))


# --------------------------------------------------------------------------- files and folders


def test_npy_files(tmp_path: Path) -> None:
    actual, expected = one_changed((2, 4, 5, 3), (1, 2, 3, 0))
    a = save_npy(tmp_path / "a.npy", actual)
    e = save_npy(tmp_path / "e.npy", expected)
    (result,) = compare_paths(a, e)
    assert result.name == str(a) and result.max_abs_index == (1, 2, 3, 0)
    (same,) = compare_paths(a, a)
    assert same.match


def test_npz_member_by_member_with_missing_members(tmp_path: Path) -> None:
    x = random((3, 3))
    a = save_npz(tmp_path / "a.npz", {"both": x, "only_actual": x})
    e = save_npz(tmp_path / "e.npz", {"both": x, "only_expected": x[:2]})
    results = {result.name.split(":")[-1]: result for result in compare_paths(a, e)}
    assert set(results) == {"both", "only_actual", "only_expected"}
    assert results["both"].match
    assert results["only_actual"].problem == "missing in expected"
    assert results["only_actual"].shape_actual == (3, 3)
    assert results["only_expected"].problem == "missing in actual"
    assert results["only_expected"].shape_expected == (2, 3)
    assert not results["only_expected"].match


def test_images_of_different_formats(tmp_path: Path) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    png = save_image(tmp_path / "a.png", pixels)
    bmp = save_image(tmp_path / "b.bmp", pixels, "bmp")
    (result,) = compare_paths(png, bmp)
    assert result.match and result.dtype_actual == "uint8"
    changed = pixels.copy()
    changed[2, 3, 1] ^= 0x10
    other = save_image(tmp_path / "c.png", changed)
    (differ,) = compare_paths(png, other)
    assert differ.mismatched == 1 and differ.max_abs_index == (2, 3, 1)


def test_image_against_npy(tmp_path: Path) -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (5, 4), dtype=np.uint8)
    png = save_image(tmp_path / "a.png", pixels)
    (same,) = compare_paths(png, save_npy(tmp_path / "a.npy", pixels))
    assert same.match
    (kind,) = compare_paths(png, save_npy(tmp_path / "f.npy", pixels.astype(np.float32)))
    assert kind.problem == "dtype kind mismatch (int vs float)"


def test_folders_pair_by_relative_path(tmp_path: Path) -> None:
    x = random((4, 4))
    actual, expected = tmp_path / "actual", tmp_path / "expected"
    save_npy(actual / "same.npy", x)
    save_npy(expected / "same.npy", x)
    save_npy(actual / "sub" / "deep.npy", x + 1)
    save_npy(expected / "sub" / "deep.npy", x)
    save_npy(actual / "only_here.npy", x)
    save_npy(expected / "sub" / "only_there.npy", x)
    (actual / "notes.txt").write_text("ignored")
    save_npy(actual / ".hidden.npy", x)
    results = {result.name: result for result in compare_paths(actual, expected)}
    assert list(results) == ["only_here.npy", "same.npy", "sub/deep.npy", "sub/only_there.npy"]
    assert results["same.npy"].match
    assert results["sub/deep.npy"].mismatched == 16
    assert results["only_here.npy"].problem == "missing in expected"
    assert results["sub/only_there.npy"].problem == "missing in actual"


def test_unreadable_inputs_raise_input_errors(tmp_path: Path) -> None:
    good = save_npy(tmp_path / "good.npy", np.zeros(3))
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="corrupt.npy"):
        compare_paths(good, corrupt)
    with pytest.raises(InputError, match="folder"):
        compare_paths(good, tmp_path)
    npz = save_npz(tmp_path / "a.npz", {"a": np.zeros(3)})
    with pytest.raises(InputError, match=r"\.npz"):
        compare_paths(npz, good)
    text = tmp_path / "a.txt"
    text.write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        compare_paths(text, text)
    with pytest.raises(InputError, match="no such"):
        compare_paths(good, tmp_path / "missing.npy")


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="unpickle"):
        compare_paths(pickled, pickled)


# --------------------------------------------------------------------------- heat map


def test_heatmap_marks_the_differing_pixel() -> None:
    actual, expected = one_changed((4, 5, 3), (2, 3, 1), by=2.0)
    actual[0, 0, 0] += 1.0
    image, scale = diff_heatmap(actual, expected)
    assert image.shape == (4, 5) and image.dtype == np.uint8
    assert image[2, 3] == 255 and np.argwhere(image == 255).tolist() == [[2, 3]]
    assert image[0, 0] == 128
    assert scale == pytest.approx(2.0 / 255, rel=1e-6)


def test_heatmap_tiles_a_batch() -> None:
    actual, expected = one_changed((2, 4, 5, 1), (1, 2, 3, 0))
    image, _ = diff_heatmap(actual, expected)
    assert image.shape == (4, 10)
    assert np.argwhere(image == 255).tolist() == [[2, 8]]


def test_heatmap_of_equal_arrays_is_black_and_nan_is_white() -> None:
    x = random((3, 3))
    image, scale = diff_heatmap(x, x)
    assert scale == 0.0 and not image.any()
    y = x.copy()
    y[1, 1] = np.nan
    image, _ = diff_heatmap(y, x)
    assert image[1, 1] == 255 and image.sum() == 255


def test_heatmap_refuses_different_shapes() -> None:
    with pytest.raises(ConvcliError, match="equal shapes"):
        diff_heatmap(np.zeros((2, 2)), np.zeros((2, 3)))


def test_heatmap_of_a_folder_shows_the_first_differing_pair(tmp_path: Path) -> None:
    x = random((3, 4))
    save_npy(tmp_path / "a" / "1.npy", x)
    save_npy(tmp_path / "e" / "1.npy", x)
    changed = x.copy()
    changed[2, 1] += 1
    save_npy(tmp_path / "a" / "2.npy", changed)
    save_npy(tmp_path / "e" / "2.npy", x)
    result = verify_module.verify(tmp_path / "a", tmp_path / "e", heatmap=True)
    assert not result.match and result.heatmap is not None
    assert result.heatmap.name == "2.npy"
    assert np.argwhere(result.heatmap.pixels == 255).tolist() == [[2, 1]]


def test_heatmap_of_an_nchw_dump_is_drawn_channels_last() -> None:
    dump = FIXTURES / "conv_torch_float32_in_float64_out.npz"  # NCHW output (2, 4, 4, 3)
    result = verify_module.verify(dump, heatmap=True)
    assert result.heatmap is not None
    assert result.heatmap.pixels.shape == (4, 6)  # two 4x3 images side by side


def test_heatmap_is_none_when_nothing_can_be_drawn(tmp_path: Path) -> None:
    a = save_npy(tmp_path / "a.npy", np.zeros(5))
    result = verify_module.verify(a, a, heatmap=True)
    assert result.match and result.heatmap is None


# --------------------------------------------------------------------------- reference dumps


def conv_dump(path: Path, **extra: Any) -> Path:
    x = random((2, 6, 7, 3), seed=5)
    kernel = random((4, 3, 3, 3), seed=6)
    bias = random((4,), seed=7)
    output = conv2d(x, kernel, bias, stride=(2, 1), padding="same")
    write_reference(
        path, op="conv", input=x, output=output, kernel=kernel, bias=bias,
        stride=(2, 1), padding="same", source="test", **extra,
    )  # fmt: skip
    return path


def test_write_reference_round_trip_conv(tmp_path: Path) -> None:
    dump = conv_dump(tmp_path / "conv.npz")
    assert is_reference_dump(dump)
    params = json.loads(str(read_npz(dump, name="dump")["params"]))
    assert params == {"op": "conv", "stride": [2, 1], "padding": "same", "source": "test"}
    result = verify_dump(dump)
    assert result.match and result.max_abs_diff == 0.0
    assert read_reference(dump).params["stride"] == (2, 1)


def test_write_reference_round_trip_pools(tmp_path: Path) -> None:
    x = random((1, 3, 7, 7), seed=8, dtype=np.float64)
    pooled = max_pool2d(x, 3, 2, 1, ceil_mode=True, layout="NCHW")
    write_reference(
        tmp_path / "max.npz", op="max_pool", input=x, output=pooled,
        size=3, stride=2, padding=1, ceil_mode=True, layout="NCHW",
    )  # fmt: skip
    averaged = avg_pool2d(x, (2, 3), padding=(1, 1), count_include_pad=False, layout="NCHW")
    write_reference(
        tmp_path / "avg.npz", op="avg_pool", input=x, output=averaged,
        size=(2, 3), padding=(1, 1), count_include_pad=False, layout="NCHW",
    )  # fmt: skip
    for name in ("max.npz", "avg.npz"):
        result = verify_dump(tmp_path / name)
        assert result.match and result.rtol == 1e-7


def test_write_reference_validates_names(tmp_path: Path) -> None:
    x = np.zeros((4, 4))
    with pytest.raises(ConvcliError, match="unknown parameter 'strides'"):
        write_reference(tmp_path / "a.npz", op="conv", input=x, output=x, kernel=x, strides=2)
    with pytest.raises(ConvcliError, match="op must be"):
        write_reference(tmp_path / "a.npz", op="convolve", input=x, output=x)
    with pytest.raises(ConvcliError, match="kernel"):
        write_reference(tmp_path / "a.npz", op="max_pool", input=x, output=x, kernel=x, size=2)
    with pytest.raises(ConvcliError, match="needs a kernel"):
        write_reference(tmp_path / "a.npz", op="conv", input=x, output=x)
    with pytest.raises(ConvcliError, match="dilation"):
        write_reference(tmp_path / "a.npz", op="avg_pool", input=x, output=x, size=2, dilation=2)
    assert not (tmp_path / "a.npz").exists()


def test_dump_tolerances_and_overrides(tmp_path: Path) -> None:
    dump = conv_dump(tmp_path / "conv.npz", rtol=0.5, atol=0.25)
    members = read_npz(dump, name="dump")
    members["output"] = members["output"] + 0.2
    save_npz(dump, members)
    recorded = verify_dump(dump)
    assert (recorded.rtol, recorded.atol) == (0.5, 0.25) and recorded.match
    tight = verify_dump(dump, atol=1e-3, rtol=0)
    assert (tight.rtol, tight.atol) == (0.0, 1e-3) and not tight.match


def test_torch_float64_and_float32_dumps_match() -> None:
    for name in ("conv_torch_float64", "conv_torch_float32", "maxpool_torch_float64"):
        result = verify_dump(FIXTURES / f"{name}.npz")
        assert result.match, name
    assert verify_dump(FIXTURES / "conv_torch_float64.npz").rtol == 1e-7


def test_float64_reference_for_float32_input_uses_float64_tolerances() -> None:
    """The engine computes float32; against a float64 reference the float64 defaults apply."""
    dump = FIXTURES / "conv_torch_float32_in_float64_out.npz"
    strict = verify_dump(dump)
    assert (strict.rtol, strict.atol) == (1e-7, 1e-7)
    assert strict.dtype_actual == "float32" and strict.dtype_expected == "float64"
    assert not strict.match and strict.problem is None
    assert verify_dump(dump, rtol=1e-5, atol=1e-6).match


def corrupt_dump(tmp_path: Path, *, params: Any = None, drop: str | None = None) -> Path:
    members = read_npz(conv_dump(tmp_path / "source.npz"), name="dump")
    if params is not None:
        members["params"] = np.array(params)
    if drop is not None:
        del members[drop]
    return save_npz(tmp_path / "corrupt.npz", members)


@pytest.mark.parametrize(
    ("params", "drop", "message"),
    [
        ("{not json", None, "member 'params' is not valid JSON"),
        ('{"op": "deconv"}', None, "op must be one of"),
        ('{"op": "conv", "strides": 2}', None, "unknown key 'strides'"),
        ('{"op": "conv", "stride": 1, "stride": 2}', None, "duplicate key 'stride'"),
        ('{"op": "conv", "rtol": -1}', None, "rtol must be"),
        ('{"op": "conv", "stride": NaN}', None, "NaN is not allowed"),
        ('["op", "conv"]', None, "must be a JSON object"),
        (None, "kernel", "missing member 'kernel'"),
        (None, "params", "no 'params' member"),
        ('{"op": "max_pool", "size": 2}', None, "unexpected member 'kernel'"),
        ('{"op": "conv", "stride": 0}', None, "cannot recompute conv"),
    ],
)
def test_corrupt_dumps_raise_input_errors(
    tmp_path: Path, params: str | None, drop: str | None, message: str
) -> None:
    dump = corrupt_dump(tmp_path, params=params, drop=drop)
    with pytest.raises(InputError, match=message) as caught:
        verify_dump(dump)
    assert "corrupt.npz" in str(caught.value)


def test_params_must_be_a_0d_string(tmp_path: Path) -> None:
    dump = corrupt_dump(tmp_path, params=[1, 2])
    with pytest.raises(InputError, match="0-d string"):
        verify_dump(dump)


def test_is_reference_dump(tmp_path: Path) -> None:
    assert is_reference_dump(conv_dump(tmp_path / "d.npz"))
    assert not is_reference_dump(save_npz(tmp_path / "plain.npz", {"a": np.zeros(2)}))
    assert not is_reference_dump(save_npy(tmp_path / "a.npy", np.zeros(2)))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK not a zip")
    assert not is_reference_dump(broken)


# --------------------------------------------------------------------------- report


def render(comparisons: list[Comparison]) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_comparisons(console, comparisons)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def test_report_of_one_pair_names_index_and_verdict() -> None:
    actual, expected = one_changed((2, 4, 5, 3), (1, 2, 3, 0))
    text = render([compare_arrays(actual, expected, name="pair", show=2)])
    assert "(1, 2, 3, 0)" in text and "DIFFER" in text
    assert "1 of 120 (0.833%)" in text
    assert "2 largest differences" in text
    assert "MATCH" in render([compare_arrays(expected, expected, name="pair")])


def test_report_of_many_pairs_has_rows_and_summary() -> None:
    x = np.zeros(4)
    comparisons = [compare_arrays(x, x, name=f"p{i}") for i in range(3)]
    comparisons.append(compare_arrays(x + 1, x, name="bad"))
    text = render(comparisons)
    assert "1 of 4 pairs differ" in text
    assert all(name in text for name in ("p0", "p1", "p2", "bad"))


def test_report_of_very_many_pairs_lists_only_differences() -> None:
    x = np.zeros(2)
    comparisons = [compare_arrays(x, x, name=f"same{i:03}") for i in range(60)]
    comparisons.append(compare_arrays(x + 1, x, name="odd-one"))
    text = render(comparisons)
    assert "odd-one" in text and "same000" not in text
    assert "60 matching pairs not listed" in text and "1 of 61 pairs differ" in text


# --------------------------------------------------------------------------- command line


class Trouble(click.ClickException):
    """What the top-level group makes of a ConvcliError: one Error: line, exit status 2."""

    exit_code = int(ExitCode.TROUBLE)


class Boundary(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConvcliError as error:
            raise Trouble(str(error)) from error


def run(*args: str | Path) -> Result:
    group = Boundary("convcli")
    group.add_command(verify_command)
    return CliRunner().invoke(group, ["verify", *map(str, args)])


@pytest.fixture
def differing(tmp_path: Path) -> tuple[Path, Path]:
    actual, expected = one_changed((2, 4, 5, 3), (1, 2, 3, 0))
    return save_npy(tmp_path / "a.npy", actual), save_npy(tmp_path / "e.npy", expected)


def test_cli_match_exits_0_with_table_on_stdout(tmp_path: Path) -> None:
    a = save_npy(tmp_path / "a.npy", random((3, 3)))
    result = run(a, a)
    assert result.exit_code == 0
    assert "MATCH" in result.stdout and result.stderr == ""


def test_cli_difference_exits_1_and_names_the_index(differing: tuple[Path, Path]) -> None:
    result = run(*differing, "--show", "2")
    assert result.exit_code == 1
    assert "(1, 2, 3, 0)" in result.stdout and "DIFFER" in result.stdout
    assert "largest differences" in result.stdout


def test_cli_json_is_alone_on_stdout(differing: tuple[Path, Path]) -> None:
    result = run(*differing, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["match"] is False
    (pair,) = document["pairs"]
    assert list(pair) == PAIR_KEYS
    assert pair["shape_actual"] == [2, 4, 5, 3] and pair["mismatched"] == 1


def test_cli_quiet_prints_nothing(differing: tuple[Path, Path]) -> None:
    result = run(*differing, "-q", "--show", "3")
    assert result.exit_code == 1
    assert result.stdout == "" and result.stderr == ""


def test_cli_tolerances_change_the_verdict(differing: tuple[Path, Path]) -> None:
    assert run(*differing, "--atol", "0.6", "-q").exit_code == 0
    assert run(*differing, "--rtol", "0", "--atol", "0.1", "-q").exit_code == 1


def test_cli_expected_layout(tmp_path: Path) -> None:
    actual = random((2, 4, 5, 3))
    a = save_npy(tmp_path / "a.npy", actual)
    e = save_npy(tmp_path / "e.npy", np.ascontiguousarray(actual.transpose(0, 3, 1, 2)))
    assert run(a, e, "-q").exit_code == 1
    assert run(a, e, "--expected-layout", "NCHW", "-q").exit_code == 0


def test_cli_diff_image(tmp_path: Path, differing: tuple[Path, Path]) -> None:
    heat = tmp_path / "heat.png"
    result = run(*differing, "--diff-image", heat)
    assert result.exit_code == 1
    assert "one grey level" in result.stdout
    pixels = read_image(heat, name="heat").pixels
    assert pixels.shape == (4, 10) and pixels.max() == 255
    assert np.argwhere(pixels == 255).tolist() == [[2, 8]]  # image 1 sits in column 2 of 2
    refused = run(*differing, "--diff-image", heat)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert run(*differing, "--diff-image", heat, "--overwrite", "-q").exit_code == 1
    wrong = run(*differing, "--diff-image", tmp_path / "heat.jpg")
    assert wrong.exit_code == 2 and not (tmp_path / "heat.jpg").exists()


def test_cli_diff_image_note_goes_to_stderr_with_json(
    tmp_path: Path, differing: tuple[Path, Path]
) -> None:
    result = run(*differing, "--diff-image", tmp_path / "heat.png", "--json")
    assert json.loads(result.stdout)["match"] is False
    assert "diff image" in result.stderr


def test_cli_folders_summary(tmp_path: Path) -> None:
    x = random((2, 2))
    for name in ("a", "b", "c"):
        save_npy(tmp_path / "actual" / f"{name}.npy", x)
        save_npy(tmp_path / "expected" / f"{name}.npy", x if name != "b" else x + 1)
    save_npy(tmp_path / "actual" / "extra.npy", x)
    result = run(tmp_path / "actual", tmp_path / "expected")
    assert result.exit_code == 1
    assert "2 of 4 pairs differ" in result.stdout
    assert "missing in expected" in result.stdout


def test_cli_dump(tmp_path: Path) -> None:
    dump = conv_dump(tmp_path / "conv.npz")
    assert run(dump).exit_code == 0
    document = json.loads(run(dump, "--json").stdout)
    assert document["pairs"][0]["name"] == str(dump) and document["match"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtol", "-1"], "finite number >= 0"),
        (["--atol", "nan"], "finite number >= 0"),
        (["--show", "-1"], "--show"),
    ],
)
def test_cli_bad_options_exit_2(
    differing: tuple[Path, Path], args: list[str], message: str
) -> None:
    result = run(*differing, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_cli_single_argument_must_be_a_dump(tmp_path: Path, differing: tuple[Path, Path]) -> None:
    result = run(differing[0])
    assert result.exit_code == 2 and "reference dump" in result.stderr
    plain = save_npz(tmp_path / "plain.npz", {"a": np.zeros(2)})
    result = run(plain)
    assert result.exit_code == 2 and "no 'params' member" in result.stderr
    layout = run(conv_dump(tmp_path / "d.npz"), "--expected-layout", "NCHW")
    assert layout.exit_code == 2


def test_cli_corrupt_dump_exits_2(tmp_path: Path) -> None:
    dump = corrupt_dump(tmp_path, params='{"op": "conv", "bogus": 1}')
    result = run(dump)
    assert result.exit_code == 2
    assert "corrupt.npz" in result.stderr and "unknown key 'bogus'" in result.stderr
    assert result.stdout == ""


def test_cli_limits_exit_2(tmp_path: Path) -> None:
    a = save_npy(tmp_path / "a.npy", np.zeros(100))
    result = run(a, a, "--max-bytes", "100")
    assert result.exit_code == 2 and "max-bytes" in result.stderr
    png = save_image(tmp_path / "a.png", np.zeros((10, 10), dtype=np.uint8))
    assert run(png, png, "--max-pixels", "99").exit_code == 2


def test_cli_diff_image_not_drawable_is_noted(tmp_path: Path) -> None:
    a = save_npy(tmp_path / "a.npy", np.zeros(5))
    result = run(a, a, "--diff-image", tmp_path / "heat.png")
    assert result.exit_code == 0 and "not written" in result.stdout
    assert not (tmp_path / "heat.png").exists()


def test_cli_help_has_examples() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "convcli verify out.npy expected.npy" in result.stdout
    assert "--diff-image" in result.stdout and "Exit status" in result.stdout


# --------------------------------------------------------------------------- real processes


def convcli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        convcli_command("verify", *args),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SUBPROCESS_TIMEOUT,
    )


def test_subprocess_exit_codes(tmp_path: Path, differing: tuple[Path, Path]) -> None:
    """0 for a match, 1 for differences, 2 for trouble, through `python -m convcli`."""
    same = convcli(differing[0], differing[0], "-q")
    assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
    differ = convcli(*differing, "--json")
    assert differ.returncode == 1 and json.loads(differ.stdout)["match"] is False
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    trouble = convcli(corrupt)
    assert trouble.returncode == 2
    assert trouble.stderr.startswith("Error:") and "corrupt.npz" in trouble.stderr
    assert "Traceback" not in trouble.stderr


def test_subprocess_verifies_a_torch_dump() -> None:
    result = convcli(FIXTURES / "conv_torch_float32.npz")
    assert result.returncode == 0 and "MATCH" in result.stdout


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("script", "framework"),
    [("torch_dump.py", "torch"), ("tensorflow_dump.py", "tensorflow")],
)
def test_examples_skip_without_their_framework(script: str, framework: str) -> None:
    if importlib.util.find_spec(framework) is not None:
        pytest.skip(f"{framework} is installed; the example would run in full")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"skipped: {framework} is not installed"


def test_fixture_dumps_are_small_and_spec_shaped() -> None:
    for dump in sorted(FIXTURES.glob("*.npz")):
        assert dump.stat().st_size < 16_000
        with zipfile.ZipFile(dump) as archive:
            assert "params.npy" in archive.namelist()
