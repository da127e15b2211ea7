"""convcli.kernels and convcli.kernels.presets: strict JSON/.npy kernel loading, the presets."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convcli.engine.args import KERNEL_LAYOUTS
from convcli.errors import ConvcliError, KernelError, LimitError
from convcli.kernels.files import load_kernel, load_npy_kernel
from convcli.kernels.kernel import Kernel
from convcli.kernels.parse import parse_kernel_json
from convcli.kernels.presets import (
    EMBOSS,
    PRESETS,
    SCHARR_X,
    SOBEL_X,
    SOBEL_Y,
    preset_kernel,
    preset_table,
)

SHARPEN_3X3 = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]


def parse(text: str | bytes, **kwargs: Any) -> Kernel:
    data = text.encode() if isinstance(text, str) else text
    return parse_kernel_json(data, name="kernel.json", **kwargs)


def assert_kernel_error(text: str | bytes, message: str, **kwargs: Any) -> None:
    with pytest.raises(KernelError, match=re.escape(message)):
        parse(text, **kwargs)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# --- JSON: accepted forms -------------------------------------------------------------------


def test_bare_list_is_the_weights_and_the_stem_is_the_name() -> None:
    kernel = parse("[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]")
    np.testing.assert_array_equal(kernel.weights, SHARPEN_3X3)
    assert kernel.weights.dtype == np.float64
    assert (kernel.name, kernel.source, kernel.layout, kernel.bias) == (
        "kernel",
        "kernel.json",
        "OHWI",
        None,
    )
    assert dict(kernel.options) == {}


def test_object_with_every_key_is_parsed_and_normalized() -> None:
    document = {
        "weights": [[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]],
        "layout": "OIHW",
        "bias": [0.5, -1],
        "scale": 2,
        "normalize": False,
        "flip": True,
        "stride": [2, 1],
        "padding": [1, 2, 3, 4],
        "dilation": 2,
        "groups": 1,
        "pad_mode": "reflect",
        "name": "bank",
        "description": "two filters",
    }
    kernel = parse(json.dumps(document))
    assert kernel.weights.shape == (2, 1, 2, 2)
    np.testing.assert_array_equal(kernel.weights.ravel(), np.arange(1, 9) * 2.0)
    np.testing.assert_array_equal(kernel.bias, [0.5, -1.0])
    assert (kernel.layout, kernel.name, kernel.description) == ("OIHW", "bank", "two filters")
    assert dict(kernel.options) == {
        "flip": True,
        "stride": (2, 1),
        "padding": (1, 2, 3, 4),
        "dilation": 2,
        "groups": 1,
        "pad_mode": "reflect",
    }


def test_options_hold_only_the_keys_the_file_set() -> None:
    kernel = parse('{"weights": [[1, 2], [3, 4]], "padding": "valid"}')
    assert dict(kernel.options) == {"padding": "valid"}


def test_normalize_divides_by_the_sum_before_scale() -> None:
    kernel = parse('{"weights": [[1, 1], [1, 1]], "normalize": true, "scale": 2}')
    np.testing.assert_array_equal(kernel.weights, np.full((2, 2), 0.5))


def test_scalar_bias_is_0d_and_any_bias_list_is_accepted_for_2d_weights() -> None:
    scalar = parse('{"weights": [[1]], "bias": 3}')
    assert scalar.bias is not None and scalar.bias.shape == ()
    per_channel = parse('{"weights": [[1]], "bias": [1, 2, 3]}')
    assert per_channel.bias is not None and per_channel.bias.shape == (3,)


def test_kernel_layout_argument_overrides_the_file_layout() -> None:
    text = '{"weights": [[[[1, 2, 3]]]], "layout": "OHWI", "bias": [1, 2, 3]}'
    assert parse(text, kernel_layout="HWIO").layout == "HWIO"


def test_json_round_trip_keeps_weights_bias_options_and_text() -> None:
    original = parse(
        json.dumps(
            {
                "weights": [[[0.1, -2.5e-300], [1e300, 3]], [[7, 8], [9, 1 / 3]]],
                "bias": 0.25,
                "stride": [1, 2],
                "padding": "same",
                "pad_mode": "circular",
                "flip": False,
                "name": 'röund "trip"',
                "description": "x",
            }
        )
    )
    again = parse(original.to_json())
    np.testing.assert_array_equal(again.weights, original.weights)
    np.testing.assert_array_equal(again.bias, original.bias)
    assert dict(again.options) == dict(original.options)
    assert (again.name, again.description) == (original.name, original.description)


def test_4d_round_trip_keeps_layout_and_bias_list() -> None:
    weights = np.arange(24.0).reshape(2, 3, 2, 2) / 7
    original = Kernel(weights=weights, layout="HWIO", bias=np.array([1.0, 2.0]))
    again = parse(original.to_json())
    assert again.layout == "HWIO"
    np.testing.assert_array_equal(again.weights, weights)
    np.testing.assert_array_equal(again.bias, [1.0, 2.0])


def test_kernel_arrays_are_read_only_copies() -> None:
    source = np.ones((3, 3))
    kernel = Kernel(weights=source)
    source[0, 0] = 5
    assert kernel.weights[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        kernel.weights[0, 0] = 2.0


# --- JSON: defects, each named by file and JSON path -----------------------------------------


def test_ragged_row_names_the_row() -> None:
    assert_kernel_error(
        "[[1, 2, 3], [1, 2]]", "kernel.json: weights[1]: row has 2 numbers, expected 3"
    )


def test_ragged_upper_level_names_the_list() -> None:
    assert_kernel_error(
        '{"weights": [[[1], [2]], [[3]]]}', "kernel.json: weights[1]: has 1 row, expected 2"
    )


def test_list_where_a_number_belongs_is_named() -> None:
    assert_kernel_error(
        "[[1, 2], [3, [4]]]", "kernel.json: weights[1][1]: expected a number, got a list"
    )


def test_number_where_a_row_belongs_is_named() -> None:
    assert_kernel_error("[[1, 2], 3]", "kernel.json: weights[1]: expected a list, got 3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "kernel.json: weights: empty"),
        ('{"weights": [[]]}', "kernel.json: weights[0]: empty"),
    ],
)
def test_empty_weights_are_refused(text: str, message: str) -> None:
    assert_kernel_error(text, message)


@pytest.mark.parametrize(
    ("value", "shown"),
    [('"a"', '"a"'), ("true", "true"), ("false", "false"), ("null", "null"), ("{}", "an object")],
)
def test_non_numbers_in_weights_are_named(value: str, shown: str) -> None:
    assert_kernel_error(
        f"[[1, 2, 3], [4, 5, {value}]]",
        f"kernel.json: weights[1][2]: expected a number, got {shown}",
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused(constant: str) -> None:
    assert_kernel_error(
        f"[[0, {constant}], [1, 2]]",
        f"kernel.json: weights[0][1]: {constant} is not a finite number",
    )


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 309])
def test_numbers_overflowing_float64_are_refused(number: str) -> None:
    assert_kernel_error(f"[[1, 2], [3, {number}]]", "kernel.json: weights[1][1]:")
    assert_kernel_error(f"[[1, 2], [3, {number}]]", "overflows float64")


def test_huge_integer_is_refused_without_int_conversion() -> None:
    assert_kernel_error(
        "[[" + "9" * 5000 + ", 1]]",
        "kernel.json: weights[0][0]: a 5000-digit integer overflows float64",
    )


def test_more_than_four_dimensions_is_refused() -> None:
    assert_kernel_error("[[[[[1]]]]]", "kernel.json: weights: 5-D; weights must be 2-D (kh,kw)")


def test_one_dimensional_weights_are_refused() -> None:
    assert_kernel_error("[1, 2, 3]", "kernel.json: weights: 1-D; weights must be 2-D (kh,kw), 3-D")


def test_too_many_weights_is_a_limit_error_naming_the_file() -> None:
    with pytest.raises(LimitError, match=r"kernel\.json: weights: \(3, 4\) is 12 weights"):
        parse("[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]", max_weights=11)


def test_unknown_key_is_named_with_a_suggestion() -> None:
    assert_kernel_error(
        '{"wieghts": [[1]]}', 'kernel.json: unknown key "wieghts" (did you mean "weights"?'
    )


def test_duplicate_key_is_refused() -> None:
    assert_kernel_error(
        '{"weights": [[1]], "weights": [[2]]}', 'kernel.json: duplicate key "weights"'
    )


def test_missing_weights_is_refused() -> None:
    assert_kernel_error('{"scale": 2}', 'kernel.json: missing the required key "weights"')


@pytest.mark.parametrize("root", ['"weights"', "3", "null", "true"])
def test_root_must_be_an_object_or_a_list(root: str) -> None:
    assert_kernel_error(root, "kernel.json: expected a JSON object or a nested list of weights")


@pytest.mark.parametrize(
    ("weights", "layout", "bias", "expected"),
    [
        ([[[[1.0] * 2] * 3] * 3] * 8, "OHWI", [0, 0, 0], 8),
        ([[[[1.0] * 8] * 2] * 3] * 3, "HWIO", [0, 0], 8),
        ([[[1.0] * 3] * 3] * 3, "OHWI", [1, 2], 1),
    ],
)
def test_bias_of_the_wrong_length_is_refused(
    weights: list[Any], layout: str, bias: list[int], expected: int
) -> None:
    text = json.dumps({"weights": weights, "layout": layout, "bias": bias})
    assert_kernel_error(text, f"kernel.json: bias: has {len(bias)} numbers, expected {expected}")


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ('"bias": [1, "x"]', 'bias[1]: expected a number, got "x"'),
        ('"bias": []', "bias: empty"),
        ('"scale": "2"', 'scale: expected a number, got "2"'),
        ('"scale": NaN', "scale: NaN is not a finite number"),
        ('"normalize": 1', "normalize: expected true or false, got 1"),
        ('"flip": "yes"', 'flip: expected true or false, got "yes"'),
        ('"stride": 0', "stride: expected an integer >= 1, got 0"),
        ('"stride": [1, 2, 3]', "stride: expected 2 integers, got 3 items"),
        ('"dilation": 1.5', "dilation: expected an integer >= 1, got 1.5"),
        ('"dilation": [1, true]', "dilation[1]: expected an integer >= 1, got true"),
        ('"padding": "full"', 'padding: expected one of same, valid, got "full"'),
        ('"padding": -1', "padding: expected an integer >= 0, got -1"),
        ('"padding": [1, 2, 3]', "padding: expected 2 or 4 integers, got 3 items"),
        ('"groups": 0', "groups: expected an integer >= 1, got 0"),
        ('"groups": 2', "groups: 2 does not divide the 3 filters of OHWI weights"),
        (
            '"pad_mode": "edge"',
            'pad_mode: expected one of zeros, reflect, replicate, circular, got "edge"',
        ),
        ('"layout": "NCHW"', 'layout: expected one of OHWI, OIHW, HWIO, got "NCHW"'),
        ('"name": 5', "name: expected a string, got 5"),
        ('"description": null', "description: expected a string, got null"),
        ('"name": NaN', "name: expected a string, got NaN"),
        ('"stride": 1e999', "stride: 1e999 overflows float64"),
    ],
)
def test_bad_key_values_are_named(fragment: str, message: str) -> None:
    assert_kernel_error('{"weights": [[[[1]]], [[[1]]], [[[1]]]], ' + fragment + "}", message)


def test_normalize_refuses_weights_summing_to_zero() -> None:
    assert_kernel_error(
        '{"weights": [[-1, 0, 1]], "normalize": true}', "kernel.json: normalize: weights sum to 0"
    )


def test_scale_overflowing_float64_is_refused() -> None:
    assert_kernel_error(
        '{"weights": [[1e300]], "scale": 1e10}', "kernel.json: scale: weights overflow"
    )


def test_utf8_byte_order_mark_is_refused() -> None:
    assert_kernel_error(b"\xef\xbb\xbf[[1]]", "kernel.json: starts with a UTF-8 byte order mark")


def test_non_utf8_bytes_are_refused_with_their_offset() -> None:
    assert_kernel_error(b'[[1]]  "\xff"', "kernel.json: not UTF-8 text (byte 0xff at offset 8)")


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    assert_kernel_error("[" * 100_000, "kernel.json: nesting deeper than 64 levels")
    assert_kernel_error('{"a": ' * 100 + "1" + "}" * 100, "nesting deeper than 64 levels")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"weights": [[1]], "description": "[" * 1000 + '\\"{' * 100})
    assert parse(text).description.startswith("[[[")


def test_syntax_error_names_line_and_column() -> None:
    assert_kernel_error(
        '{\n  "weights": [[1, 2]\n  "scale": 2\n}',
        "kernel.json: invalid JSON at line 3 column 3: Expecting ',' delimiter",
    )


def test_empty_file_is_refused() -> None:
    assert_kernel_error(b"  \n", "kernel.json: file is empty")


# --- load_kernel: files, limits and lookup ---------------------------------------------------


def test_load_kernel_reads_json_files_and_names_them(tmp_path: Path) -> None:
    path = write(tmp_path, "sharp.json", json.dumps({"weights": SHARPEN_3X3}))
    kernel = load_kernel(path)
    np.testing.assert_array_equal(kernel.weights, SHARPEN_3X3)
    assert (kernel.name, kernel.source) == ("sharp", str(path))
    with pytest.raises(KernelError, match=re.escape(f"{path}: weights[1]: row has 1 number")):
        load_kernel(write(tmp_path, "sharp.json", "[[1, 2], [3]]"))


def test_existing_file_without_json_suffix_is_parsed_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, "blur.kernel", "[[1, 1], [1, 1]]")
    assert load_kernel(str(path)).weights.shape == (2, 2)


def test_existing_file_wins_over_a_preset_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "box", "[[7]]")
    assert load_kernel("box").weights.tolist() == [[7.0]]


def test_oversized_kernel_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "big.json", "[[1]]" + " " * 100)
    with pytest.raises(LimitError, match="big.json: kernel file is 105 bytes, over the limit 100"):
        load_kernel(path, max_file_bytes=100)


def test_empty_spec_is_refused() -> None:
    with pytest.raises(KernelError, match="empty kernel spec"):
        load_kernel("")


def test_missing_file_or_preset_message_suggests_or_points_at_the_list() -> None:
    with pytest.raises(
        KernelError,
        match=re.escape('sharpen2: no such kernel file or preset (did you mean "sharpen"?)'),
    ):
        load_kernel("sharpen2")
    with pytest.raises(
        KernelError,
        match=re.escape("zzzz: no such kernel file or preset (see `convcli kernels`)"),
    ):
        load_kernel("zzzz")


def test_preset_names_are_case_insensitive() -> None:
    assert load_kernel("Sharpen").name == "sharpen"
    np.testing.assert_array_equal(
        load_kernel("GAUSSIAN:size=3").weights, load_kernel("gaussian:size=3").weights
    )


def test_folder_is_not_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="is a folder"):
        load_kernel(tmp_path)


def test_load_kernel_resolves_presets_with_parameters() -> None:
    kernel = load_kernel("box:size=5")
    np.testing.assert_allclose(kernel.weights, np.full((5, 5), 1 / 25))
    assert kernel.source == "box:size=5"


def test_kernel_errors_are_value_errors() -> None:
    assert issubclass(KernelError, ConvcliError) and issubclass(KernelError, ValueError)


# --- .npy kernels ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
def test_npy_4d_kernel_is_loaded_in_the_given_layout(tmp_path: Path, layout: str) -> None:
    weights = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    path = tmp_path / "bank.npy"
    np.save(path, weights)
    kernel = load_kernel(path, kernel_layout=layout)
    assert kernel.layout == layout and kernel.name == "bank"
    assert kernel.weights.dtype == np.float64
    np.testing.assert_array_equal(kernel.weights, weights)


def test_npy_layout_defaults_to_ohwi_and_integer_dtypes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k.npy"
    np.save(path, np.array(SOBEL_X, dtype=np.int16))
    kernel = load_npy_kernel(path)
    assert kernel.layout == "OHWI"
    np.testing.assert_array_equal(kernel.weights, SOBEL_X)


def test_npy_fortran_order_big_endian_is_read_correctly(tmp_path: Path) -> None:
    weights = np.asfortranarray(np.arange(6.0).reshape(2, 3)).astype(">f8")
    path = tmp_path / "f.npy"
    np.save(path, weights)
    np.testing.assert_array_equal(load_npy_kernel(path).weights, np.arange(6.0).reshape(2, 3))


_UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    _UNPICKLED.append("unpickled")
    return "payload"


class _Tripwire:
    """Unpickling this object calls _record_unpickling."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def test_pickled_object_npy_is_refused_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evil.npy"
    array = np.empty((2, 2), dtype=object)
    array[:] = [[_Tripwire(), 1], [2, 3]]
    np.save(path, array, allow_pickle=True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(KernelError, match="evil.npy: holds Python objects .*never unpickles"):
        load_kernel(path)
    assert _UNPICKLED == []


@pytest.mark.parametrize(
    "array",
    [
        np.ones((2, 2), dtype=np.complex128),
        np.ones((2, 2), dtype=bool),
        np.array([["a", "b"], ["c", "d"]]),
        np.zeros((2, 2), dtype=[("x", "f8"), ("y", "f8")]),
    ],
    ids=["complex", "bool", "str", "structured"],
)
def test_npy_non_real_dtypes_are_refused(tmp_path: Path, array: np.ndarray[Any, Any]) -> None:
    path = tmp_path / "k.npy"
    np.save(path, array)
    with pytest.raises(KernelError, match=r"k\.npy: dtype .* is not a real number type"):
        load_npy_kernel(path)


@pytest.mark.parametrize("shape", [(3,), (1, 1, 1, 1, 1), ()])
def test_npy_ranks_outside_2_to_4_are_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "k.npy"
    np.save(path, np.ones(shape))
    with pytest.raises(KernelError, match="weights must be 2-D"):
        load_npy_kernel(path)


def test_npy_empty_and_non_finite_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.npy"
    np.save(path, np.ones((0, 3)))
    with pytest.raises(KernelError, match="weights are empty"):
        load_npy_kernel(path)
    np.save(path, np.array([[1.0, np.nan]]))
    with pytest.raises(KernelError, match="NaN or infinity"):
        load_npy_kernel(path)


def test_npy_weight_limit_is_checked_from_the_header_before_reading_data(tmp_path: Path) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.ones((1, 1)))
    header["shape"] = (2000, 2000)
    path = tmp_path / "claims_big.npy"
    with path.open("wb") as handle:  # a header announcing 4e6 weights, and no data at all
        np.lib.format.write_array_header_1_0(handle, header)
    with pytest.raises(LimitError, match=r"\(2000, 2000\) is 4,000,000 weights, over the limit"):
        load_npy_kernel(path)


def test_truncated_or_foreign_npy_is_a_kernel_error(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.ones((10, 10)))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(KernelError, match=r"short\.npy: not a valid \.npy file"):
        load_npy_kernel(path)
    foreign = write(tmp_path, "text.npy", "[[1, 2]]")
    with pytest.raises(KernelError, match=r"text\.npy: not a valid \.npy file"):
        load_kernel(foreign)


# --- presets ---------------------------------------------------------------------------------


def gaussian_2d(size: int, sigma: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Direct 2-D formula exp(-(x^2 + y^2) / (2 sigma^2)), normalized."""
    centre = (size - 1) / 2
    values = [
        [math.exp(-((x - centre) ** 2 + (y - centre) ** 2) / (2 * sigma**2)) for x in range(size)]
        for y in range(size)
    ]
    array: np.ndarray[Any, np.dtype[np.float64]] = np.array(values)
    array /= array.sum()
    return array


def test_gaussian_matches_the_direct_formula() -> None:
    np.testing.assert_allclose(
        preset_kernel("gaussian:size=7,sigma=1.5").weights, gaussian_2d(7, 1.5), rtol=1e-12
    )


def test_gaussian_auto_sigma_follows_opencv_and_auto_size_covers_three_sigma() -> None:
    np.testing.assert_allclose(preset_kernel("gaussian").weights, gaussian_2d(5, 1.1), rtol=1e-12)
    np.testing.assert_allclose(
        preset_kernel("gaussian:size=9").weights, gaussian_2d(9, 0.3 * (4 - 1) + 0.8), rtol=1e-12
    )
    assert preset_kernel("gaussian:sigma=2").weights.shape == (13, 13)
    assert preset_kernel("gaussian:sigma=2,size=auto").weights.shape == (13, 13)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sobel-x", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
        ("sobel-y", [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
        ("prewitt-x", [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
        ("prewitt-y", [[-1, -1, -1], [0, 0, 0], [1, 1, 1]]),
        ("scharr-x", [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]),
        ("scharr-y", [[-3, -10, -3], [0, 0, 0], [3, 10, 3]]),
        ("laplacian", [[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        ("laplacian:neighbours=8", [[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
        ("edge", [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
        ("emboss", [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
        ("sharpen", SHARPEN_3X3),
        ("sharpen:amount=0.5", [[0, -0.5, 0], [-0.5, 3, -0.5], [0, -0.5, 0]]),
        ("identity", [[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
        ("box", [[1 / 9] * 3] * 3),
    ],
)
def test_fixed_presets_have_the_published_weights(name: str, expected: list[list[float]]) -> None:
    np.testing.assert_allclose(preset_kernel(name).weights, expected, rtol=1e-15)


def test_derivative_constants_are_transposes_and_read_only() -> None:
    np.testing.assert_array_equal(SOBEL_Y, SOBEL_X.T)
    assert not SOBEL_X.flags.writeable and not SCHARR_X.flags.writeable
    assert not EMBOSS.flags.writeable


def test_sobel_x_responds_positively_to_intensity_increasing_rightwards() -> None:
    ramp = np.tile(np.arange(3.0), (3, 1))  # cross-correlation at the centre pixel
    assert float((preset_kernel("sobel-x").weights * ramp).sum()) == 8.0


def test_unsharp_is_identity_plus_amount_times_identity_minus_gaussian() -> None:
    identity = np.zeros((7, 7))
    identity[3, 3] = 1
    expected = identity + 1.5 * (identity - gaussian_2d(7, 2.0))
    np.testing.assert_allclose(
        preset_kernel("unsharp:size=7,sigma=2,amount=1.5").weights, expected, atol=1e-15
    )


def test_motion_blur_at_0_and_180_degrees_is_a_horizontal_line() -> None:
    expected = np.zeros((9, 9))
    expected[4, :] = 1 / 9
    np.testing.assert_allclose(preset_kernel("motion-blur").weights, expected, atol=1e-15)
    np.testing.assert_allclose(preset_kernel("motion-blur:angle=180").weights, expected, atol=1e-15)


def test_motion_blur_at_90_degrees_is_a_vertical_line() -> None:
    expected = np.zeros((5, 5))
    expected[:, 2] = 1 / 5
    np.testing.assert_allclose(
        preset_kernel("motion-blur:length=5,angle=90").weights, expected, atol=1e-12
    )


def test_motion_blur_at_45_degrees_runs_from_bottom_left_to_top_right() -> None:
    weights = preset_kernel("motion-blur:length=7,angle=45").weights
    on_line = np.fliplr(weights).diagonal()[1:-1]  # 6 pixels along the line span 4.2 per axis
    np.testing.assert_allclose(on_line, weights.max())
    assert weights[0, 0] == 0 and weights[6, 6] == 0
    np.testing.assert_allclose(weights, weights.T[::-1, ::-1])  # symmetric about the line


@pytest.mark.parametrize("angle", [30.0, 45.0, 100.0, 160.0, -20.0])
def test_motion_blur_principal_axis_follows_the_angle(angle: float) -> None:
    weights = preset_kernel(f"motion-blur:length=15,angle={angle}").weights
    rows, cols = np.mgrid[0:15, 0:15] - 7.0
    x, y = cols.ravel(), -rows.ravel()  # y up, so angles are counter-clockwise on screen
    assert abs(float(weights.ravel() @ x)) < 1e-12 and abs(float(weights.ravel() @ y)) < 1e-12
    covariance = np.cov(np.stack([x, y]), aweights=weights.ravel())
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    direction = eigenvectors[:, np.argmax(eigenvalues)]
    measured = math.degrees(math.atan2(direction[1], direction[0])) % 180
    assert abs((measured - angle % 180 + 90) % 180 - 90) < 1.0


@pytest.mark.parametrize(
    "spec",
    [
        "identity",
        "box",
        "box:size=4",
        "gaussian",
        "gaussian:size=3,sigma=0.01",
        "sharpen",
        "unsharp",
        "emboss",
        "motion-blur:length=11,angle=30",
        "motion-blur:length=1",
    ],
)
def test_photo_presets_sum_to_one_and_replicate_the_border(spec: str) -> None:
    kernel = preset_kernel(spec)
    assert math.isclose(float(kernel.weights.sum()), 1.0, rel_tol=1e-12)
    assert dict(kernel.options) == {"padding": "same", "pad_mode": "replicate"}


@pytest.mark.parametrize(
    "name",
    ["laplacian", "edge", "sobel-x", "sobel-y", "prewitt-x", "prewitt-y", "scharr-x", "scharr-y"],
)
def test_derivative_presets_sum_to_zero_and_pad_same(name: str) -> None:
    kernel = preset_kernel(name)
    assert float(kernel.weights.sum()) == 0.0
    assert dict(kernel.options) == {"padding": "same"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_a_kernel_file(tmp_path: Path, name: str) -> None:
    original = preset_kernel(name)
    path = write(tmp_path, f"{name}.json", original.to_json())
    again = load_kernel(path)
    np.testing.assert_array_equal(again.weights, original.weights)
    assert dict(again.options) == dict(original.options)
    assert (again.name, again.description) == (original.name, original.description)


def test_parameterized_preset_round_trips_exactly(tmp_path: Path) -> None:
    original = preset_kernel("motion-blur:length=7,angle=33.3")
    again = load_kernel(write(tmp_path, "m.json", original.to_json()))
    np.testing.assert_array_equal(again.weights, original.weights)


def test_required_presets_exist_and_have_citations() -> None:
    required = {
        "identity", "box", "gaussian", "sharpen", "unsharp", "emboss", "laplacian", "sobel-x",
        "sobel-y", "prewitt-x", "prewitt-y", "scharr-x", "scharr-y", "motion-blur", "edge",
    }  # fmt: skip
    assert required <= set(PRESETS)
    assert all(preset.citation for preset in PRESETS.values())


def test_preset_table_lists_every_preset_with_size_and_parameters() -> None:
    rows = {row[0]: row for row in preset_table()}
    assert set(rows) == set(PRESETS)
    assert rows["gaussian"][1:4] == ("5x5", "replicate", "size=auto, sigma=auto")
    assert rows["box"][1:4] == ("3x3", "replicate", "size=3")
    assert rows["motion-blur"][1:4] == ("9x9", "replicate", "length=9, angle=0")
    assert rows["sobel-x"][2:4] == ("replicate (arrays: zeros)", "")
    assert all(row[4] for row in rows.values())


def test_preset_description_records_the_parameters() -> None:
    assert preset_kernel("gaussian:size=7,sigma=1.5").description.endswith("[size=7, sigma=1.5]")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gausian", 'gausian: no such preset (did you mean "gaussian"?)'),
        ("gaussian:sigm=2", "gaussian: unknown parameter 'sigm' (parameters: size, sigma)"),
        ("sobel-x:size=5", "sobel-x: unknown parameter 'size' (parameters: none)"),
        ("gaussian:size=4", "gaussian: size must be an odd integer from 1 to 999, got 4"),
        ("gaussian:size=0", "gaussian: size must be an odd integer from 1 to 999, got 0"),
        ("box:size=1002", "box: size must be an integer from 1 to 999, got 1002"),
        ("gaussian:sigma=0", "gaussian: sigma must be > 0 (or auto), got 0"),
        ("gaussian:sigma=-1", "gaussian: sigma must be > 0 (or auto), got -1"),
        ("gaussian:sigma=abc", "gaussian: sigma must be a number, got 'abc'"),
        ("gaussian:sigma=nan", "gaussian: sigma must be a finite number, got 'nan'"),
        ("gaussian:sigma=400", "gaussian: sigma=400 needs size 2401, over 999"),
        ("gaussian:size=7.5", "gaussian: size must be an integer, got '7.5'"),
        ("box:size=auto", "box: size must be an integer, got 'auto'"),
        ("gaussian:size", "gaussian: expected key=value, got 'size'"),
        ("gaussian:size=3,size=5", "gaussian: parameter 'size' given twice"),
        ("laplacian:neighbours=6", "laplacian: neighbours must be 4 or 8, got 6"),
        ("motion-blur:length=4", "motion-blur: length must be an odd integer from 1 to 999"),
        ("sharpen:amount=-1", "sharpen: amount must be >= 0, got -1"),
    ],
)
def test_bad_preset_specs_name_the_preset_and_parameter(spec: str, message: str) -> None:
    with pytest.raises(KernelError, match=re.escape(message)):
        preset_kernel(spec)


def test_load_kernel_reports_preset_parameter_errors() -> None:
    with pytest.raises(KernelError, match=re.escape("gaussian: size must be an odd integer")):
        load_kernel("gaussian:size=4")
