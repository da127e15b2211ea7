"""Kernel files (JSON / .npy) and named presets -> a validated :class:`Kernel`.

:func:`load_kernel` resolves a kernel spec in this order:

1. an existing file ending ``.npy`` (4-D weights in ``kernel_layout``, default OHWI);
2. any other existing file, parsed as a JSON kernel file (a nested list, or an object);
3. a preset, ``NAME`` or ``NAME:key=value,...`` such as ``gaussian:size=7,sigma=1.5``.

An existing file wins over a preset of the same name. Parsing is strict: each defect raises
:class:`~convcli.errors.KernelError` naming the file and the JSON path of the defect
(``kernel.json: weights[1]: row has 2 numbers, expected 3``); size limits raise
:class:`~convcli.errors.LimitError` before the file is read or the array allocated. Nothing is
ever unpickled or evaluated.

convcli computes cross-correlation, like PyTorch, TensorFlow and OpenCV, so the derivative
presets are printed the way OpenCV documents them: ``sobel-x`` is positive where intensity
increases to the right, ``sobel-y`` where it increases downwards.
"""

from __future__ import annotations

import codecs
import difflib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, TypeGuard

import numpy as np
import numpy.typing as npt

from convcli.arrays import HEADER_ERRORS
from convcli.errors import ConvcliError, KernelError, LimitError

FloatArray = npt.NDArray[np.float64]

KERNEL_LAYOUTS = ("OHWI", "OIHW", "HWIO")
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
MAX_KERNEL_FILE_BYTES = 16 * 1024 * 1024
MAX_KERNEL_WEIGHTS = 1_000_000
#: Operation keys a kernel may set as defaults; command-line flags override them.
OPTION_KEYS = ("stride", "padding", "dilation", "groups", "pad_mode", "flip")
#: Every key a JSON kernel object may have.
JSON_KEYS = ("weights", "layout", "bias", "scale", "normalize", *OPTION_KEYS, "name", "description")
#: Deeper JSON is refused before parsing (json.loads would hit the recursion limit); a 4-D
#: kernel in an object needs 5 levels.
MAX_JSON_DEPTH = 64
#: Longer JSON integers are refused before int() (Python refuses over 4300 digits anyway).
MAX_INT_DIGITS = 400
#: Largest size/length a preset accepts.
MAX_PRESET_SIZE = 101
#: Largest sharpening amount a preset accepts.
MAX_PRESET_AMOUNT = 1e6

_RANKS = "weights must be 2-D (kh,kw), 3-D (kh,kw,C) or 4-D (a filter bank)"
_FLOAT_MAX = float(np.finfo(np.float64).max)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, so compare by identity
class Kernel:
    """A validated kernel: float64 weights with scale/normalize applied, plus defaults.

    Attributes
    ----------
    weights : ndarray of float64, read-only
        (kh, kw) one filter per channel, (kh, kw, C) one filter over all channels, or a 4-D
        filter bank in ``layout``.
    layout : str
        Layout of 4-D weights, one of :data:`KERNEL_LAYOUTS`.
    bias : ndarray of float64 or None
        0-d (the same for every output channel) or 1-D (one per output channel).
    name, description, source : str
        Preset name or file stem; free text; the file path or preset spec it came from.
    options : Mapping
        Only the operation keys the file or preset set (:data:`OPTION_KEYS`): stride and
        dilation as int or (h, w); padding "same", "valid", int, or a tuple of 2 or 4 ints;
        groups int; pad_mode one of :data:`PAD_MODES`; flip bool.
    """

    weights: FloatArray
    layout: str = "OHWI"
    bias: FloatArray | None = None
    name: str = ""
    description: str = ""
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = _read_only(np.array(self.weights, dtype=np.float64))
        if not 2 <= weights.ndim <= 4:
            raise KernelError(f"{_RANKS}, got shape {weights.shape}")
        if self.layout not in KERNEL_LAYOUTS:
            raise KernelError(f"layout must be one of {', '.join(KERNEL_LAYOUTS)}: {self.layout!r}")
        unknown = sorted(set(self.options) - set(OPTION_KEYS))
        if unknown:
            raise KernelError(f"unknown kernel options {unknown} (expected {OPTION_KEYS})")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.bias is not None:
            bias = _read_only(np.array(self.bias, dtype=np.float64))
            if bias.ndim > 1:
                raise KernelError(f"bias must be a number or 1-D, got shape {bias.shape}")
            object.__setattr__(self, "bias", bias)

    def to_json(self) -> str:
        """Return this kernel as a JSON kernel file (object form, no trailing newline).

        The weights are written final (scale and normalize already applied) and exactly:
        :func:`parse_kernel_json` reads back the same weights, bias and options.
        """
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


def _read_only(array: FloatArray) -> FloatArray:
    array.flags.writeable = False
    return array


def _format_number(value: float) -> str:
    # Integral weights print as integers for readability; repr() is the shortest exact form.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _format_nested(array: FloatArray, level: int) -> str:
    if array.ndim == 0:
        return _format_number(float(array))
    if array.ndim == 1:
        return "[" + ", ".join(_format_number(float(value)) for value in array) + "]"
    inner = "  " * (level + 1)
    rows = ",\n".join(inner + _format_nested(row, level + 1) for row in array)
    return "[\n" + rows + "\n" + "  " * level + "]"


# --- JSON kernel files -------------------------------------------------------------------------


class _Defect(Exception):
    """A defect at a JSON path; turned into a KernelError naming the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


class _BadNumber:
    """A JSON number float64 cannot hold (NaN, Infinity, 1e400, a 5000-digit integer).

    json.loads calls its number hooks without a position, so they return this marker and the
    validator, which knows the JSON path, reports it.
    """

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys given more than once."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    result = _JsonObject()
    result.duplicates = []
    for key, value in pairs:
        if key in result:
            result.duplicates.append(key)
        result[key] = value
    return result


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(text, f"{_clip(text)} overflows float64")


def _parse_int(text: str) -> int | _BadNumber:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _BadNumber(text, f"a {digits}-digit integer overflows float64")
    value = int(text)
    if abs(value) > _FLOAT_MAX:
        return _BadNumber(text, f"{_clip(text)} overflows float64")
    return value


def _parse_constant(text: str) -> _BadNumber:
    return _BadNumber(text, f"{text} is not a finite number")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _clip(json.dumps(value, ensure_ascii=False))
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, _BadNumber):
        return _clip(value.text)
    return _clip(repr(value))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is a subclass of int but not a JSON number; _BadNumber is neither.
    return type(value) is float or type(value) is int


def _number(value: object, path: str) -> float:
    if isinstance(value, _BadNumber):
        raise _Defect(path, value.reason)
    if not _is_number(value):
        raise _Defect(path, f"expected a number, got {_describe(value)}")
    return float(value)


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_SCAN_CHUNK = 1 << 20


def _nesting_depth(data: bytes) -> int:
    """Return the deepest bracket nesting of JSON ``data`` (strings skipped), cheaply."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS), np.uint8)
    depth = deepest = 0
    for start in range(0, brackets.size, _SCAN_CHUNK):
        chunk = brackets[start : start + _SCAN_CHUNK]
        steps = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int64) * 2 - 1
        running = depth + np.cumsum(steps)
        deepest = max(deepest, int(running.max()))
        if deepest > MAX_JSON_DEPTH:
            break
        depth = int(running[-1])
    return deepest


def _decode_json(data: bytes) -> object:
    if data.startswith(codecs.BOM_UTF8):
        raise _Defect("", "starts with a UTF-8 byte order mark; save it as plain UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        raise _Defect("", f"not UTF-8 text (byte 0x{byte:02x} at offset {error.start})") from None
    if not text.strip():
        raise _Defect("", "file is empty")
    if _nesting_depth(data) > MAX_JSON_DEPTH:
        raise _Defect("", f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(
            text,
            object_pairs_hook=_object_pairs,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise _Defect("", f"invalid JSON at {where}: {error.msg}") from None


def _check_nested(value: list[Any], shape: tuple[int, ...], path: str) -> None:
    if len(shape) == 1:
        if len(value) != shape[0]:
            raise _Defect(path, f"row has {_plural(len(value), 'number')}, expected {shape[0]}")
        for index, item in enumerate(value):
            if not _is_number(item):
                _number(item, f"{path}[{index}]")  # raises, naming the defect
        return
    if len(value) != shape[0]:
        noun = "row" if len(shape) == 2 else "item"
        raise _Defect(path, f"has {_plural(len(value), noun)}, expected {shape[0]}")
    for index, item in enumerate(value):
        if not isinstance(item, list):
            raise _Defect(f"{path}[{index}]", f"expected a list, got {_describe(item)}")
        _check_nested(item, shape[1:], f"{path}[{index}]")


def _parse_weights(value: object, max_weights: int) -> FloatArray:
    if not isinstance(value, list):
        raise _Defect("weights", f"expected a nested list of numbers, got {_describe(value)}")
    shape: list[int] = []
    probe: object = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            raise _Defect("weights" + "[0]" * (len(shape) - 1), "empty")
        probe = probe[0]
    if not 2 <= len(shape) <= 4:
        raise _Defect("weights", f"{len(shape)}-D; {_RANKS}")
    count = math.prod(shape)
    if count > max_weights:
        raise LimitError(
            f"weights: {tuple(shape)} is {count:,} weights, over the limit {max_weights:,}"
        )
    _check_nested(value, tuple(shape), "weights")
    return np.array(value, dtype=np.float64)


def _integer(value: object, path: str, minimum: int) -> int:
    if isinstance(value, _BadNumber):
        raise _Defect(path, value.reason)
    if type(value) is not int or value < minimum:
        raise _Defect(path, f"expected an integer >= {minimum}, got {_describe(value)}")
    return value


def _ints(
    value: object, path: str, minimum: int, lengths: tuple[int, ...]
) -> int | tuple[int, ...]:
    if isinstance(value, list):
        if len(value) not in lengths:
            counts = " or ".join(map(str, lengths))
            raise _Defect(path, f"expected {counts} integers, got {_plural(len(value), 'item')}")
        return tuple(_integer(item, f"{path}[{i}]", minimum) for i, item in enumerate(value))
    return _integer(value, path, minimum)


def _choice(value: object, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _Defect(path, f"expected one of {', '.join(choices)}, got {_describe(value)}")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Defect(path, f"expected true or false, got {_describe(value)}")
    return value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _Defect(path, f"expected a string, got {_describe(value)}")
    return value


def _parse_option(key: str, value: object) -> object:
    if key in ("stride", "dilation"):
        return _ints(value, key, 1, (2,))
    if key == "padding":
        if isinstance(value, str):
            return _choice(value, key, ("same", "valid"))
        return _ints(value, key, 0, (2, 4))
    if key == "groups":
        return _integer(value, key, 1)
    if key == "pad_mode":
        return _choice(value, key, PAD_MODES)
    if key == "flip":
        return _boolean(value, key)
    raise AssertionError(f"not an option key: {key}")


def _output_channels(weights: FloatArray, layout: str) -> int | None:
    """Return the number of filters, or None for 2-D weights (one per input channel)."""
    if weights.ndim == 2:
        return None
    if weights.ndim == 3:
        return 1
    return int(weights.shape[3] if layout == "HWIO" else weights.shape[0])


def _parse_bias(
    value: object, filters: int | None, layout: str, shape: tuple[int, ...]
) -> FloatArray:
    if not isinstance(value, list):
        return np.array(_number(value, "bias"))
    if not value:
        raise _Defect("bias", "empty")
    numbers = [_number(item, f"bias[{index}]") for index, item in enumerate(value)]
    if filters is not None and len(numbers) != filters:
        raise _Defect(
            "bias",
            f"has {_plural(len(numbers), 'number')}, expected {filters} "
            f"(one per filter of weights {shape} in {layout})",
        )
    return np.array(numbers)


def _kernel_from_json(
    document: object, *, name: str, kernel_layout: str | None, max_weights: int
) -> Kernel:
    if isinstance(document, list):
        document = _object_pairs([("weights", document)])
    if not isinstance(document, _JsonObject):
        raise _Defect(
            "", f"expected a JSON object or a nested list of weights, got {_describe(document)}"
        )
    if document.duplicates:
        raise _Defect("", f"duplicate key {_describe(document.duplicates[0])}")
    for key in document:
        if key not in JSON_KEYS:
            close = difflib.get_close_matches(key, JSON_KEYS, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            expected = ", ".join(JSON_KEYS)
            raise _Defect("", f"unknown key {_describe(key)} ({hint}expected one of {expected})")
    if "weights" not in document:
        raise _Defect("", 'missing the required key "weights"')
    weights = _parse_weights(document["weights"], max_weights)
    layout = _choice(document.get("layout", "OHWI"), "layout", KERNEL_LAYOUTS)
    layout = kernel_layout or layout
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
        if _boolean(document.get("normalize", False), "normalize"):
            total = float(weights.sum())
            if not math.isfinite(total) or abs(total) <= 1e-12 * float(np.abs(weights).sum()):
                raise _Defect("normalize", f"weights sum to {total:g}; cannot normalize")
            weights = weights / total
        if "scale" in document:
            weights = weights * _number(document["scale"], "scale")
    if not np.isfinite(weights).all():
        raise _Defect("scale" if "scale" in document else "normalize", "weights overflow float64")
    options = {key: _parse_option(key, document[key]) for key in OPTION_KEYS if key in document}
    filters = _output_channels(weights, layout)
    groups = options.get("groups", 1)
    if weights.ndim == 4 and isinstance(groups, int) and filters is not None and filters % groups:
        raise _Defect(
            "groups", f"{groups} does not divide the {filters} filters of {layout} weights"
        )
    bias = None
    if "bias" in document:
        bias = _parse_bias(document["bias"], filters, layout, weights.shape)
    return Kernel(
        weights=weights,
        layout=layout,
        bias=bias,
        name=_text(document.get("name", Path(name).stem), "name"),
        description=_text(document.get("description", ""), "description"),
        source=name,
        options=options,
    )


def parse_kernel_json(
    text: bytes | str,
    *,
    name: str,
    kernel_layout: str | None = None,
    max_weights: int = MAX_KERNEL_WEIGHTS,
) -> Kernel:
    """Parse a JSON kernel file's contents into a :class:`Kernel`.

    Parameters
    ----------
    text : bytes or str
        The file's contents (bytes must be UTF-8 without a byte order mark).
    name : str
        The file name used in messages (``kernel.json: weights[0][2]: ...``) and, without its
        suffix, as the kernel name when the file has no "name" key.
    kernel_layout : str, optional
        Layout of 4-D weights; overrides the file's "layout" key when given.
    max_weights : int
        Refuse (LimitError) more weights than this.

    Raises
    ------
    KernelError
        A defect, named by the file and its JSON path.
    LimitError
        More than ``max_weights`` weights.
    """
    if kernel_layout is not None and kernel_layout not in KERNEL_LAYOUTS:
        raise KernelError(
            f"kernel_layout must be one of {', '.join(KERNEL_LAYOUTS)}: {kernel_layout!r}"
        )
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        document = _decode_json(data)
        return _kernel_from_json(
            document, name=name, kernel_layout=kernel_layout, max_weights=max_weights
        )
    except _Defect as defect:
        where = f"{defect.path}: " if defect.path else ""
        raise KernelError(f"{name}: {where}{defect.reason}") from None
    except LimitError as error:
        raise LimitError(f"{name}: {error}") from None


# --- .npy kernels and the front door --------------------------------------------------------


def _check_size_limit(path: str, max_file_bytes: int) -> None:
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise KernelError(f"{path}: cannot read: {error.strerror}") from None
    if size > max_file_bytes:
        raise LimitError(
            f"{path}: kernel file is {size:,} bytes, over the limit {max_file_bytes:,}"
        )


def _read_npy_header(handle: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # 3.0 only differs for structured dtypes with non-Latin-1 field names
        raise KernelError(f"{name}: unsupported .npy format version {version[0]}.{version[1]}")
    return shape, dtype


def _check_npy_header(
    name: str, shape: tuple[int, ...], dtype: np.dtype[Any], max_weights: int
) -> None:
    if dtype.hasobject:
        raise KernelError(f"{name}: holds Python objects (dtype {dtype}); convcli never unpickles")
    if dtype.kind not in "iuf":
        raise KernelError(f"{name}: dtype {dtype} is not a real number type (integer or float)")
    if not 2 <= len(shape) <= 4:
        raise KernelError(f"{name}: {_RANKS}, got shape {shape}")
    count = math.prod(shape)
    if count == 0:
        raise KernelError(f"{name}: weights are empty, shape {shape}")
    if count > max_weights:
        raise LimitError(
            f"{name}: shape {shape} is {count:,} weights, over the limit {max_weights:,}"
        )


def load_npy_kernel(
    path: str | os.PathLike[str],
    *,
    kernel_layout: str | None = None,
    max_weights: int = MAX_KERNEL_WEIGHTS,
    max_file_bytes: int = MAX_KERNEL_FILE_BYTES,
) -> Kernel:
    """Load a .npy kernel without unpickling; shape and dtype are checked from the header first.

    Integer and floating dtypes are accepted; object (pickled), bool, complex, string and
    structured dtypes, ranks outside 2..4, empty and non-finite arrays are refused. 4-D weights
    are in ``kernel_layout`` (default OHWI).

    Raises
    ------
    KernelError
        The file is unreadable, not a .npy file, or holds an unusable array.
    LimitError
        The file is over ``max_file_bytes`` or the header announces over ``max_weights``.
    """
    name = os.fspath(path)
    layout = kernel_layout or "OHWI"
    if layout not in KERNEL_LAYOUTS:
        raise KernelError(f"kernel_layout must be one of {', '.join(KERNEL_LAYOUTS)}: {layout!r}")
    _check_size_limit(name, max_file_bytes)
    try:
        with open(name, "rb") as handle:
            shape, dtype = _read_npy_header(handle, name)
            _check_npy_header(name, shape, dtype, max_weights)
            handle.seek(0)
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except ConvcliError:
        raise
    except OSError as error:
        raise KernelError(f"{name}: cannot read: {error.strerror or error}") from None
    except HEADER_ERRORS as error:  # numpy's complaints about a corrupt header or short data
        reason = " ".join(str(error).split()) or type(error).__name__
        raise KernelError(f"{name}: not a valid .npy file ({reason})") from None
    with np.errstate(invalid="ignore"):  # a signaling NaN warns when cast; refused below
        weights = array.astype(np.float64)
    if not np.isfinite(weights).all():
        raise KernelError(f"{name}: weights contain NaN or infinity")
    return Kernel(weights=weights, layout=layout, name=Path(name).stem, source=name)


def load_kernel(
    spec: str | os.PathLike[str],
    *,
    kernel_layout: str | None = None,
    max_file_bytes: int = MAX_KERNEL_FILE_BYTES,
    max_weights: int = MAX_KERNEL_WEIGHTS,
) -> Kernel:
    """Load a kernel from a .npy file, a JSON file, or a preset spec (in that order).

    ``kernel_layout`` is the layout of 4-D weights: for .npy files it defaults to OHWI; for
    JSON files it overrides the file's "layout" key only when given. Presets ignore it.

    Raises
    ------
    KernelError
        No such file or preset, or the kernel is malformed (the message names the culprit).
    LimitError
        The file or its weights are over the limits (checked before reading).
    """
    text = os.fspath(spec)
    if not text.strip():
        raise KernelError("empty kernel spec: give a kernel file or a preset name")
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() == ".npy":
            return load_npy_kernel(
                text,
                kernel_layout=kernel_layout,
                max_weights=max_weights,
                max_file_bytes=max_file_bytes,
            )
        _check_size_limit(text, max_file_bytes)
        try:
            with open(text, "rb") as handle:
                data = handle.read(max_file_bytes + 1)
        except OSError as error:
            raise KernelError(f"{text}: cannot read: {error.strerror}") from None
        if len(data) > max_file_bytes:  # the file grew after stat()
            raise LimitError(f"{text}: kernel file is over the limit {max_file_bytes:,} bytes")
        return parse_kernel_json(
            data, name=text, kernel_layout=kernel_layout, max_weights=max_weights
        )
    if path.is_dir():
        raise KernelError(f"{text}: is a folder, expected a kernel file or preset")
    if text.partition(":")[0].strip() in PRESETS:
        return preset_kernel(text)
    raise KernelError(f"{text}: no such kernel file or preset (see `convcli kernels`)")


# --- Presets ------------------------------------------------------------------------------------


def _constant(rows: list[list[float]]) -> FloatArray:
    return _read_only(np.array(rows, dtype=np.float64))


# Wikipedia, "Kernel (image processing)": identity.
IDENTITY = _constant([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
# Wikipedia, "Discrete Laplace operator" (5-point stencil); OpenCV cv::Laplacian with ksize=1.
LAPLACIAN_4 = _constant([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
# Wikipedia, "Discrete Laplace operator" (9-point stencil with diagonals).
LAPLACIAN_8 = _constant([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
# Wikipedia, "Kernel (image processing)": sharpen, = IDENTITY - LAPLACIAN_4.
SHARPEN = _constant([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
# Wikipedia, "Kernel (image processing)": edge detection, = -LAPLACIAN_8.
EDGE = _constant([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
# GIMP manual, "Convolution Matrix" filter: emboss (sums to 1, so flat areas keep their value).
EMBOSS = _constant([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
# OpenCV docs, "Sobel Derivatives" (cv::Sobel, ksize=3); scikit-image filters.sobel_v up to 1/4.
SOBEL_X = _constant([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
SOBEL_Y = SOBEL_X.T
# Wikipedia, "Prewitt operator"; scikit-image filters.prewitt_v up to its 1/3 scale.
PREWITT_X = _constant([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
PREWITT_Y = PREWITT_X.T
# OpenCV docs, cv::Scharr; Wikipedia, "Sobel operator", section "Alternative operators".
SCHARR_X = _constant([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
SCHARR_Y = SCHARR_X.T

#: Parameter types; a default of None means "auto" (and accepts the value ``auto``).
_PARAM_TYPES: dict[str, type[int] | type[float]] = {
    **dict.fromkeys(("size", "length", "neighbours"), int),
    **dict.fromkeys(("sigma", "amount", "angle"), float),
}
# Photo presets are normalized and replicate the border so edges don't darken.
_PHOTO: Mapping[str, Any] = MappingProxyType({"padding": "same", "pad_mode": "replicate"})
_DERIVATIVE: Mapping[str, Any] = MappingProxyType({"padding": "same"})
_WIKI_KERNEL = 'Wikipedia, "Kernel (image processing)"'
_Builder = Callable[..., FloatArray]


@dataclass(frozen=True)
class Preset:
    """A named kernel: ``builder(**params)`` returns its weights; ``options`` its defaults."""

    name: str
    description: str
    params: Mapping[str, int | float | None]
    citation: str
    builder: _Builder
    options: Mapping[str, Any] = field(default_factory=dict)


#: Every preset by name, in the order `convcli kernels` lists them.
PRESETS: dict[str, Preset] = {}


def _preset(
    name: str, description: str, citation: str, options: Mapping[str, Any] = _PHOTO
) -> Callable[[_Builder], _Builder]:
    """Register the decorated builder as a preset; its keyword defaults are the parameters."""

    def register(builder: _Builder) -> _Builder:
        params = {p.name: p.default for p in inspect.signature(builder).parameters.values()}
        PRESETS[name] = Preset(name, description, params, citation, builder, options)
        return builder

    return register


def _check_size(value: int, param: str = "size", *, odd: bool = True) -> int:
    if not 1 <= value <= MAX_PRESET_SIZE or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise KernelError(f"{param} must be {kind} from 1 to {MAX_PRESET_SIZE}, got {value}")
    return value


def _check_amount(amount: float) -> float:
    # Far past any visible effect already; larger amounts only push weights past float32.
    if amount < 0:
        raise KernelError(f"amount must be >= 0, got {amount:g}")
    if amount > MAX_PRESET_AMOUNT:
        raise KernelError(f"amount must be at most {MAX_PRESET_AMOUNT:g}, got {amount:g}")
    return amount


@_preset("identity", "Identity: output equals input", _WIKI_KERNEL)
def _identity(size: int = 3) -> FloatArray:
    weights = np.zeros((_check_size(size), size))
    weights[size // 2, size // 2] = 1.0
    return weights


@_preset("box", "Box blur: mean of a size x size window", 'Wikipedia, "Box blur"')
def _box(size: int = 3) -> FloatArray:
    _check_size(size, odd=False)  # even boxes are fine: padding="same" puts the extra row last
    return np.full((size, size), 1.0 / (size * size))


@_preset(
    "gaussian",
    "Gaussian blur; auto sigma: OpenCV's 0.3*((size-1)/2-1)+0.8, auto size: 3 sigma a side",
    "OpenCV docs, cv::getGaussianKernel",
)
def gaussian_weights(size: int | None = None, sigma: float | None = None) -> FloatArray:
    """Return a normalized (size, size) Gaussian, the outer product of two 1-D Gaussians.

    ``sigma=None`` follows OpenCV's cv::getGaussianKernel: 0.3 * ((size - 1) / 2 - 1) + 0.8.
    ``size=None`` is 2 * ceil(3 * sigma) + 1 (three sigmas each side), or 5 when both are None.
    """
    if sigma is not None and sigma <= 0:
        raise KernelError(f"sigma must be > 0 (or auto), got {sigma:g}")
    if size is None:
        size = 5 if sigma is None else 2 * math.ceil(3 * sigma) + 1
        if size > MAX_PRESET_SIZE:
            raise KernelError(f"sigma={sigma:g} needs size {size}, over {MAX_PRESET_SIZE}")
    _check_size(size)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(size) - (size - 1) / 2
    with np.errstate(over="ignore", under="ignore"):  # a tiny sigma is a discrete delta
        profile = np.exp(-0.5 * (offsets / sigma) ** 2)
    profile /= profile.sum()
    return np.outer(profile, profile)


@_preset("sharpen", "Sharpen: identity - amount * 4-neighbour Laplacian", _WIKI_KERNEL)
def _sharpen(amount: float = 1.0) -> FloatArray:
    return IDENTITY - _check_amount(amount) * LAPLACIAN_4


@_preset(
    "unsharp",
    "Unsharp mask: identity + amount * (identity - gaussian)",
    'Gonzalez & Woods, "Digital Image Processing", 3.6.3 "Unsharp masking"',
)
def _unsharp(
    size: int | None = None, sigma: float | None = None, amount: float = 1.0
) -> FloatArray:
    blur = gaussian_weights(size, sigma)
    identity = _identity(blur.shape[0])
    return identity + _check_amount(amount) * (identity - blur)


@_preset(
    "motion-blur",
    "Motion blur: a line of length pixels at angle degrees counter-clockwise",
    "after MATLAB fspecial('motion', length, angle)",
)
def _motion_blur(length: int = 9, angle: float = 0.0) -> FloatArray:
    """A line of ``length`` pixels through the centre at ``angle`` degrees counter-clockwise
    from the horizontal, antialiased as max(0, 1 - distance to the segment), normalized."""
    centre = (_check_size(length, "length") - 1) / 2
    theta = math.radians(angle)
    # Rounded so that 0, 90, 180... degrees give exact axis-aligned lines.
    dx, dy = round(math.cos(theta), 12), -round(math.sin(theta), 12)  # rows point down
    rows, cols = np.mgrid[0:length, 0:length] - centre
    along = np.clip(cols * dx + rows * dy, -centre, centre)
    distance = np.hypot(cols - along * dx, rows - along * dy)
    weights: FloatArray = np.clip(1.0 - distance, 0.0, None)
    weights /= weights.sum()
    return weights


@_preset(
    "emboss", "Emboss: relief along the diagonal, sums to 1", "GIMP manual, Convolution Matrix"
)
def _emboss() -> FloatArray:
    return np.array(EMBOSS)


@_preset(
    "laplacian",
    "Discrete Laplacian (neighbours=4 or 8), sums to 0",
    'Wikipedia, "Discrete Laplace operator"',
    _DERIVATIVE,
)
def _laplacian(neighbours: int = 4) -> FloatArray:
    if neighbours not in (4, 8):
        raise KernelError(f"neighbours must be 4 or 8, got {neighbours}")
    return np.array(LAPLACIAN_4 if neighbours == 4 else LAPLACIAN_8)


def _fixed(name: str, weights: FloatArray, description: str, citation: str) -> None:
    _preset(name, description, citation, _DERIVATIVE)(lambda: np.array(weights))


_fixed("edge", EDGE, "Outline edge detector (8-neighbour), sums to 0", _WIKI_KERNEL)
_fixed("sobel-x", SOBEL_X, "Sobel d/dx: responds to vertical edges", "OpenCV docs, cv::Sobel")
_fixed("sobel-y", SOBEL_Y, "Sobel d/dy (y down): horizontal edges", "OpenCV docs, cv::Sobel")
_fixed("prewitt-x", PREWITT_X, "Prewitt d/dx: vertical edges", 'Wikipedia, "Prewitt operator"')
_fixed("prewitt-y", PREWITT_Y, "Prewitt d/dy: horizontal edges", 'Wikipedia, "Prewitt operator"')
_fixed("scharr-x", SCHARR_X, "Scharr d/dx: more isotropic than Sobel", "OpenCV docs, cv::Scharr")
_fixed("scharr-y", SCHARR_Y, "Scharr d/dy: more isotropic than Sobel", "OpenCV docs, cv::Scharr")


def _format_params(values: Mapping[str, int | float | None]) -> str:
    return ", ".join(
        f"{key}={'auto' if value is None else _format_number(float(value))}"
        for key, value in values.items()
    )


def _parse_param(preset: Preset, key: str, raw: str) -> int | float | None:
    if raw == "auto" and preset.params[key] is None:
        return None
    if _PARAM_TYPES[key] is int:
        if not re.fullmatch(r"[+-]?\d{1,9}", raw):
            raise KernelError(f"{preset.name}: {key} must be an integer, got {raw!r}")
        return int(raw)
    try:
        value = float(raw)
    except ValueError:
        raise KernelError(f"{preset.name}: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise KernelError(f"{preset.name}: {key} must be a finite number, got {raw!r}")
    return value


def preset_kernel(spec: str) -> Kernel:
    """Build a preset from ``NAME`` or ``NAME:key=value,...`` (``gaussian:size=7,sigma=1.5``).

    Raises
    ------
    KernelError
        Unknown preset or parameter, a parameter given twice, or a bad value; the message
        names the preset and the parameter.
    """
    name, has_params, param_text = spec.partition(":")
    name = name.strip()
    preset = PRESETS.get(name)
    if preset is None:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else " (see `convcli kernels`)"
        raise KernelError(f"{name}: no such preset{hint}")
    values = dict(preset.params)
    given: set[str] = set()
    for item in param_text.split(",") if has_params else ():
        key, equals, raw = (part.strip() for part in item.partition("="))
        if not equals or not key:
            raise KernelError(f"{name}: expected key=value, got {item.strip()!r}")
        if key not in preset.params:
            known = ", ".join(preset.params) or "none"
            raise KernelError(f"{name}: unknown parameter {key!r} (parameters: {known})")
        if key in given:
            raise KernelError(f"{name}: parameter {key!r} given twice")
        given.add(key)
        values[key] = _parse_param(preset, key, raw)
    try:
        weights = preset.builder(**values)
    except KernelError as error:
        raise KernelError(f"{name}: {error}") from None
    description = (
        f"{preset.description} [{_format_params(values)}]" if values else preset.description
    )
    return Kernel(
        weights=weights, name=name, description=description, source=spec, options=preset.options
    )


def preset_table() -> list[tuple[str, str, str, str]]:
    """Rows for ``convcli kernels``: (name, default size "HxW", parameters, description)."""
    rows = []
    for preset in PRESETS.values():
        height, width = preset.builder(**preset.params).shape
        rows.append(
            (preset.name, f"{height}x{width}", _format_params(preset.params), preset.description)
        )
    return rows
