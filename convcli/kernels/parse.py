"""JSON kernel files -> a validated :class:`~convcli.kernels.kernel.Kernel`.

:func:`load_kernel` resolves a kernel spec in this order:

1. an existing file ending ``.npy`` (4-D weights in ``kernel_layout``, default OHWI);
2. any other existing file, parsed as a JSON kernel file (a nested list, or an object);
3. a preset (:mod:`convcli.kernels.presets`), ``NAME`` or ``NAME:key=value,...`` such as
   ``gaussian:size=7,sigma=1.5``.

An existing file wins over a preset of the same name. Parsing is strict: each defect raises
:class:`~convcli.errors.KernelError` naming the file and the JSON path of the defect
(``kernel.json: weights[1]: row has 2 numbers, expected 3``); size limits raise
:class:`~convcli.errors.LimitError` before the file is read or the array allocated. Nothing is
ever unpickled or evaluated.
"""

from __future__ import annotations

import codecs
import math
import re
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from convcli.engine.args import KERNEL_LAYOUTS, PAD_MODES
from convcli.errors import KernelError, LimitError
from convcli.kernels.kernel import OPTION_KEYS, RANKS, FloatArray, Kernel
from convcli.limits import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_KERNEL_WEIGHTS,
)
from convcli.validate import one_of

#: Every key a JSON kernel object may have.
JSON_KEYS = ("weights", "layout", "bias", "scale", "normalize", *OPTION_KEYS, "name", "description")

_FLOAT_MAX = float(np.finfo(np.float64).max)


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
        import json

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
    import json  # here, not at the top: presets and .npy kernels need no JSON parser

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
        raise _Defect("weights", f"{len(shape)}-D; {RANKS}")
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
            import difflib

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
    if kernel_layout is not None:
        one_of(kernel_layout, KERNEL_LAYOUTS, "kernel_layout", error=KernelError)
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
