"""Compare arrays, images, folders and reference dumps, as h5diff does for HDF5 files.

An element passes when ``|actual - expected| <= atol + rtol * |expected|``, computed in
float64, with the default tolerances of ``torch.testing.assert_close`` taken from the
*expected* dtype (:func:`default_tolerances`). NaN matches NaN at the same position only;
infinities match only the same infinity. Integers (and bools) are compared exactly unless a
tolerance is given.

A reference dump is an ``.npz`` holding ``input``, ``output`` (expected), ``kernel`` (conv),
optional ``bias`` and ``params``: a 0-d string array of JSON with ``op`` ("conv", "max_pool"
or "avg_pool"), the engine's keywords by their Python names, and optional ``rtol``, ``atol``
and ``source``. :func:`write_reference` writes one from a PyTorch or TensorFlow script;
:func:`verify_dump` recomputes it with the engine and compares.

Nothing here prints or exits: results are :class:`Comparison` values, trouble is a
:class:`~convcli.errors.ConvcliError` (exit status 2 on the command line).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli import engine
from convcli.arrays import ZIP_ERRORS, encode_npz, read_npy, read_npz
from convcli.engine import DEFAULT_MAX_BYTES
from convcli.errors import ConvcliError, InputError, LimitError
from convcli.fileio import atomic_write
from convcli.images import DEFAULT_MAX_PIXELS, format_from_path, read_image

__all__ = [
    "DUMP_EXTRA_KEYS",
    "EXPECTED_LAYOUTS",
    "OPS",
    "OP_PARAMETERS",
    "Comparison",
    "Element",
    "HeatMap",
    "Pair",
    "ReferenceDump",
    "Verification",
    "as_nhwc",
    "compare_arrays",
    "compare_pair",
    "compare_paths",
    "comparisons_to_json",
    "default_tolerances",
    "diff_heatmap",
    "is_reference_dump",
    "iter_pairs",
    "read_reference",
    "recompute",
    "verify",
    "verify_dump",
    "write_reference",
]

Array: TypeAlias = npt.NDArray[Any]

#: Operations a reference dump may record.
OPS = ("conv", "max_pool", "avg_pool")
#: The engine keywords each operation accepts in a dump, by their Python names.
OP_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "conv": (
        "stride",
        "padding",
        "dilation",
        "groups",
        "pad_mode",
        "flip",
        "layout",
        "kernel_layout",
    ),
    "max_pool": ("size", "stride", "padding", "dilation", "ceil_mode", "layout"),
    "avg_pool": ("size", "stride", "padding", "ceil_mode", "count_include_pad", "layout"),
}
#: Keys of a dump's params JSON that are not engine keywords.
DUMP_EXTRA_KEYS = ("rtol", "atol", "source")
#: Array members of a dump, by operation (``params`` aside).
_DUMP_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "conv": ("input", "output", "kernel", "bias"),
    "max_pool": ("input", "output"),
    "avg_pool": ("input", "output"),
}
_OPTIONAL_MEMBERS = ("bias",)
#: Layouts the expected side may be in; the actual side is always channels-last.
EXPECTED_LAYOUTS = ("NHWC", "NCHW")
#: Elements compared per step: bounds the float64 scratch to a few tens of MB per array.
CHUNK_ELEMENTS = 1 << 20

# torch.testing.assert_close's defaults (torch/testing/_comparison.py, _DTYPE_PRECISIONS),
# keyed by the size in bytes of a float (of a complex's component): (rtol, atol).
_FLOAT_TOLERANCES: Mapping[int, tuple[float, float]] = {
    2: (1e-3, 1e-5),
    4: (1.3e-6, 1e-5),
    8: (1e-7, 1e-7),
}
_KIND_NAMES = {
    "b": "bool",
    "i": "int",
    "u": "int",
    "f": "float",
    "c": "complex",
    "U": "str",
    "S": "bytes",
    "M": "datetime",
    "m": "timedelta",
}


def default_tolerances(dtype: npt.DTypeLike) -> tuple[float, float]:
    """``(rtol, atol)`` of ``torch.testing.assert_close`` for ``dtype``.

    float16 (1e-3, 1e-5), float32 (1.3e-6, 1e-5), float64 (1e-7, 1e-7); complex types use
    their component's; wider floats (longdouble) use float64's. Integers, bools and anything
    else compare exactly: (0, 0). NumPy has no bfloat16.
    """
    resolved = np.dtype(dtype)
    if resolved.kind == "f":
        return _FLOAT_TOLERANCES.get(resolved.itemsize, _FLOAT_TOLERANCES[8])
    if resolved.kind == "c":
        return _FLOAT_TOLERANCES.get(resolved.itemsize // 2, _FLOAT_TOLERANCES[8])
    return (0.0, 0.0)


class Element(NamedTuple):
    """One compared element, for ``--show``: ``(position, actual, expected, diff)``.

    ``position`` is the element's index in the actual array; ``diff`` is
    ``|actual - expected|`` (NaN when a NaN is involved or both are the same infinity).
    """

    position: tuple[int, ...]
    actual: float | int
    expected: float | int
    diff: float


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one pair of arrays.

    Attributes
    ----------
    name : str
        What was compared: a path, ``file.npz:member``, or a relative path in folders.
    shape_actual, shape_expected : tuple of int or None
        Shapes (the expected one after ``expected_layout``); None for a missing side.
    dtype_actual, dtype_expected : str or None
        dtype names; None for a missing side.
    rtol, atol : float
        The tolerances used.
    max_abs_diff : float or None
        Largest ``|actual - expected|`` (may be ``inf``), ignoring positions where a NaN is
        involved; None when nothing was comparable.
    max_abs_index : tuple of int or None
        Index of ``max_abs_diff`` in the actual array (the first one on ties).
    max_rel_diff : float or None
        Largest ``|actual - expected| / |expected|`` over positions where both values are
        finite and ``expected != 0`` (elsewhere it is undefined; ``atol`` still catches a
        nonzero value where zero was expected); None when no position qualifies.
    mismatched : int
        Elements that fail the test; all ``total`` of them when the pair is not comparable.
    total : int
        Elements compared; for a missing partner the size of the side that exists (0 when
        that side was not read, as for an unmatched file in a folder).
    match : bool
        True when ``problem`` is None and nothing mismatched.
    problem : str or None
        Why the pair is not comparable: "shape mismatch", "dtype kind mismatch (float vs
        int)", "missing in actual" or "missing in expected"; None otherwise.
    worst : tuple of Element
        The ``show`` elements with the largest differences, worst first (a NaN against a
        number counts as the worst).
    """

    name: str
    shape_actual: tuple[int, ...] | None
    shape_expected: tuple[int, ...] | None
    dtype_actual: str | None
    dtype_expected: str | None
    rtol: float
    atol: float
    max_abs_diff: float | None
    max_abs_index: tuple[int, ...] | None
    max_rel_diff: float | None
    mismatched: int
    total: int
    match: bool
    problem: str | None = None
    worst: tuple[Element, ...] = ()


def _kind_name(dtype: np.dtype[Any]) -> str:
    return _KIND_NAMES.get(dtype.kind, dtype.kind)


def _kinds_compatible(actual: np.dtype[Any], expected: np.dtype[Any]) -> bool:
    integral = {"bool", "int"}
    kinds = {_kind_name(actual), _kind_name(expected)}
    return len(kinds) == 1 or kinds <= integral


def _resolve_tolerance(value: float | None, default: float, name: str) -> float:
    if value is None:
        return default
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConvcliError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def as_nhwc(array: Array, layout: str | None) -> Array:
    """View ``array`` channels-last: NCHW -> NHWC (4-D), CHW -> HWC (3-D); 2-D is unchanged.

    ``layout`` None or "NHWC" returns ``array`` itself.
    """
    if layout is None or layout == "NHWC":
        return array
    if layout != "NCHW":
        raise ConvcliError(
            f"expected_layout must be one of {', '.join(EXPECTED_LAYOUTS)}, got {layout!r}"
        )
    if array.ndim == 4:
        return array.transpose(0, 2, 3, 1)
    if array.ndim == 3:
        return array.transpose(1, 2, 0)
    if array.ndim == 2:
        return array
    raise ConvcliError(
        f"expected layout NCHW needs a 2-, 3- or 4-D array, got {array.ndim}-D shape {array.shape}"
    )


class _Scan:
    """Running statistics over the chunks of a pair of flattened arrays."""

    def __init__(self, show: int) -> None:
        self.show = show
        self.mismatched = 0
        self.max_abs = -1.0
        self.max_abs_flat = -1
        self.max_rel = -1.0
        self.worst_keys = np.empty(0, dtype=np.float64)
        self.worst_flat = np.empty(0, dtype=np.intp)

    def add(self, start: int, mismatch: Array, diff: Array, relative: Array) -> None:
        """Fold in one chunk; ``diff`` is NaN where undefined, ``relative`` -1 there."""
        self.mismatched += int(np.count_nonzero(mismatch))
        defined = np.where(np.isnan(diff), -1.0, diff)
        if defined.size:
            local = int(np.argmax(defined))
            if defined[local] > self.max_abs:
                self.max_abs = float(defined[local])
                self.max_abs_flat = start + local
        if relative.size:
            self.max_rel = max(self.max_rel, float(relative.max()))
        if self.show and diff.size:
            # NaN-vs-number mismatches rank first; matching NaN/inf pairs rank last.
            keys = np.where(np.isnan(diff), np.where(mismatch, np.inf, -1.0), diff)
            count = min(self.show, keys.size)
            picked = np.argpartition(-keys, count - 1)[:count]
            all_keys = np.concatenate([self.worst_keys, keys[picked]])
            all_flat = np.concatenate([self.worst_flat, picked + start])
            order = np.lexsort((all_flat, -all_keys))[: self.show]
            self.worst_keys, self.worst_flat = all_keys[order], all_flat[order]


def _flat(array: Array) -> Array:
    """The array's elements in C order: a view when contiguous, else one copy (same dtype)."""
    return np.reshape(array, -1)


def _element(actual: Array, expected: Array, flat: int, shape: tuple[int, ...]) -> Element:
    value_actual = actual[flat].item()
    value_expected = expected[flat].item()
    if isinstance(value_actual, int) and isinstance(value_expected, int):
        diff = float(abs(value_actual - value_expected))
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = float(abs(np.float64(value_actual) - np.float64(value_expected)))
    return Element(_unravel(flat, shape), value_actual, value_expected, diff)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def _scan_numeric(actual: Array, expected: Array, *, rtol: float, atol: float, show: int) -> _Scan:
    """Compare two equally long 1-D real arrays chunk by chunk in float64."""
    scan = _Scan(show)
    exact = rtol == 0 and atol == 0
    integral = actual.dtype.kind in "biu" and expected.dtype.kind in "biu"
    for start in range(0, actual.size, CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        raw_actual, raw_expected = actual[start:stop], expected[start:stop]
        a = raw_actual.astype(np.float64)
        e = raw_expected.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a - e)
            if integral:
                # Exact for any integer widths (float64 would round above 2**53).
                close = raw_actual == raw_expected
            else:
                close = (a == e) | (np.isnan(a) & np.isnan(e))
            if not exact:
                # An infinite expected value would make the tolerance infinite: exact only.
                close |= (diff <= atol + rtol * np.abs(e)) & np.isfinite(e)
            finite = np.isfinite(diff) & np.isfinite(e) & (e != 0)
            relative = np.divide(diff, np.abs(e), out=np.full_like(diff, -1.0), where=finite)
        scan.add(start, ~close, diff, relative)
    return scan


def _scan_exact(actual: Array, expected: Array) -> _Scan:
    """Compare non-real arrays (complex, strings, dates) for exact equality."""
    scan = _Scan(0)
    for start in range(0, actual.size, CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        mismatch = np.asarray(actual[start:stop] != expected[start:stop])
        scan.mismatched += int(np.count_nonzero(mismatch))
    return scan


def compare_arrays(
    actual: npt.ArrayLike,
    expected: npt.ArrayLike,
    *,
    name: str,
    rtol: float | None = None,
    atol: float | None = None,
    expected_layout: str | None = None,
    show: int = 0,
) -> Comparison:
    """Compare ``actual`` with ``expected`` element by element.

    Parameters
    ----------
    actual : array_like
        Any shape; channels-last ((H, W, C) or (N, H, W, C)) when ``expected_layout`` is used.
    expected : array_like
        The same shape, or that shape in ``expected_layout``.
    name : str
        The name the comparison carries.
    rtol, atol : float, optional
        Tolerances; each defaults to :func:`default_tolerances` of the expected dtype. An
        element passes when ``|a - e| <= atol + rtol * |e|`` in float64 (integers are
        compared exactly when both are 0); NaN passes only against NaN, an infinity only
        against the same infinity.
    expected_layout : {"NHWC", "NCHW"}, optional
        "NCHW" transposes the expected side first: (N, C, H, W) -> (N, H, W, C),
        (C, H, W) -> (H, W, C); 2-D arrays are left alone.
    show : int
        How many of the worst elements to keep in :attr:`Comparison.worst`.

    Returns
    -------
    Comparison
        Different shapes, or a float against an integer (a dtype kind mismatch; float32
        against float64 is fine), set ``problem`` and make ``match`` false.

    Raises
    ------
    ConvcliError
        A negative or non-finite tolerance, ``show < 0``, or an ``expected_layout`` that
        does not fit the expected array's rank.

    Notes
    -----
    The arrays are walked in chunks of :data:`CHUNK_ELEMENTS`, so the float64 scratch space
    is a few tens of MB whatever their size; a non-contiguous side (e.g. transposed by
    ``expected_layout``) is copied once in its own dtype. Integers with a nonzero tolerance
    are judged on float64 differences, which round above 2**53. Other dtypes (complex,
    strings, dates) are compared for exact equality, without differences or a worst list.
    """
    if show < 0:
        raise ConvcliError(f"show must be >= 0, got {show}")
    actual_array = np.asarray(actual)
    expected_array = as_nhwc(np.asarray(expected), expected_layout)
    default_rtol, default_atol = default_tolerances(expected_array.dtype)
    used_rtol = _resolve_tolerance(rtol, default_rtol, "rtol")
    used_atol = _resolve_tolerance(atol, default_atol, "atol")
    problems = []
    if actual_array.shape != expected_array.shape:
        problems.append("shape mismatch")
    if not _kinds_compatible(actual_array.dtype, expected_array.dtype):
        problems.append(
            f"dtype kind mismatch ({_kind_name(actual_array.dtype)} vs "
            f"{_kind_name(expected_array.dtype)})"
        )
    if problems:
        total = int(expected_array.size)
        return Comparison(
            name=name,
            shape_actual=tuple(actual_array.shape),
            shape_expected=tuple(expected_array.shape),
            dtype_actual=str(actual_array.dtype),
            dtype_expected=str(expected_array.dtype),
            rtol=used_rtol,
            atol=used_atol,
            max_abs_diff=None,
            max_abs_index=None,
            max_rel_diff=None,
            mismatched=total,
            total=total,
            match=False,
            problem="; ".join(problems),
        )
    flat_actual, flat_expected = _flat(actual_array), _flat(expected_array)
    real = actual_array.dtype.kind in "biuf" and expected_array.dtype.kind in "biuf"
    if real:
        scan = _scan_numeric(flat_actual, flat_expected, rtol=used_rtol, atol=used_atol, show=show)
    else:
        scan = _scan_exact(flat_actual, flat_expected)
    shape = tuple(actual_array.shape)
    found = scan.max_abs_flat >= 0
    worst = tuple(
        _element(flat_actual, flat_expected, int(flat), shape) for flat in scan.worst_flat
    )
    return Comparison(
        name=name,
        shape_actual=shape,
        shape_expected=tuple(expected_array.shape),
        dtype_actual=str(actual_array.dtype),
        dtype_expected=str(expected_array.dtype),
        rtol=used_rtol,
        atol=used_atol,
        max_abs_diff=scan.max_abs if found else None,
        max_abs_index=_unravel(scan.max_abs_flat, shape) if found else None,
        max_rel_diff=scan.max_rel if scan.max_rel >= 0 else None,
        mismatched=scan.mismatched,
        total=int(actual_array.size),
        match=scan.mismatched == 0,
        worst=worst,
    )


def _missing(
    name: str, side: str, present: Array | None, *, rtol: float | None, atol: float | None
) -> Comparison:
    """A pair whose ``side`` ("actual" or "expected") does not exist."""
    shape = tuple(present.shape) if present is not None else None
    dtype = str(present.dtype) if present is not None else None
    total = int(present.size) if present is not None else 0
    defaults = default_tolerances(present.dtype) if present is not None else (0.0, 0.0)
    return Comparison(
        name=name,
        shape_actual=shape if side == "expected" else None,
        shape_expected=shape if side == "actual" else None,
        dtype_actual=dtype if side == "expected" else None,
        dtype_expected=dtype if side == "actual" else None,
        rtol=_resolve_tolerance(rtol, defaults[0], "rtol"),
        atol=_resolve_tolerance(atol, defaults[1], "atol"),
        max_abs_diff=None,
        max_abs_index=None,
        max_rel_diff=None,
        mismatched=total,
        total=total,
        match=False,
        problem=f"missing in {side}",
    )


# --------------------------------------------------------------------------- files and folders


@dataclass(frozen=True)
class Pair:
    """Two arrays to compare, read from files; a missing side is ``None``.

    ``missing`` names the side ("actual" or "expected") that has no partner file or member.
    """

    name: str
    actual: Array | None
    expected: Array | None
    missing: str | None = None


def _file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if format_from_path(path) is not None:
        return "image"
    return None


def _read_array(path: Path, kind: str, *, max_bytes: int, max_pixels: int) -> Array:
    if kind == "npy":
        return read_npy(path, name=str(path), max_bytes=max_bytes)
    if kind == "image":
        return read_image(path, name=str(path), max_pixels=max_pixels, max_bytes=max_bytes).pixels
    raise InputError(f"{path}: unsupported file type (expected .npy, .npz or an image)")


def _file_pairs(
    actual: Path, expected: Path, name: str, *, max_bytes: int, max_pixels: int
) -> Iterator[Pair]:
    kinds = []
    for path in (actual, expected):
        kind = _file_kind(path)
        if kind is None:
            raise InputError(f"{path}: unsupported file type (expected .npy, .npz or an image)")
        kinds.append(kind)
    kind_actual, kind_expected = kinds
    if "npz" in kinds:
        if kind_actual != kind_expected:
            raise InputError(
                f"cannot compare {actual} with {expected}: an .npz compares only with an .npz"
            )
        members_actual = read_npz(actual, name=str(actual), max_bytes=max_bytes)
        members_expected = read_npz(expected, name=str(expected), max_bytes=max_bytes)
        for member in sorted(members_actual.keys() | members_expected.keys()):
            a, e = members_actual.get(member), members_expected.get(member)
            missing = "actual" if a is None else "expected" if e is None else None
            yield Pair(f"{name}:{member}", a, e, missing)
        return
    yield Pair(
        name,
        _read_array(actual, kind_actual, max_bytes=max_bytes, max_pixels=max_pixels),
        _read_array(expected, kind_expected, max_bytes=max_bytes, max_pixels=max_pixels),
    )


def _walk(root: Path) -> dict[str, Path]:
    """Supported files below ``root`` by relative POSIX path; hidden names are skipped."""

    def fail(error: OSError) -> None:
        raise InputError(f"{error.filename or root}: cannot list: {error.strerror or error}")

    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(root, onerror=fail):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for file_name in files:
            path = Path(folder, file_name)
            if not file_name.startswith(".") and _file_kind(path) is not None:
                found[path.relative_to(root).as_posix()] = path
    return dict(sorted(found.items()))


def iter_pairs(
    actual: Path,
    expected: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Pair]:
    """Read ``actual`` and ``expected`` pair by pair (one pair in memory at a time).

    Two files: .npy and images in any combination give one pair named ``str(actual)``; two
    .npz give one pair per member (``NAME:member``, sorted; a member on one side only is a
    pair with ``missing`` set). Two folders: the supported files below them (recursively;
    hidden names and other files ignored) paired by relative path, sorted; a file with no
    partner is a pair with ``missing`` set, and is not read.

    Parameters
    ----------
    actual, expected : Path
        Files or folders.
    max_bytes : int
        Refuse an array (or .npz) over this many bytes.
    max_pixels : int
        Refuse an image with more pixels, before decoding it.

    Yields
    ------
    Pair

    Raises
    ------
    InputError
        A path does not exist, is unreadable or unsafe, is an unsupported file, or a folder
        is compared with a file (or an .npz with anything but an .npz).
    LimitError
        An input is over ``max_bytes`` or ``max_pixels``.
    """
    for path in (actual, expected):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if actual.is_dir() != expected.is_dir():
        raise InputError(f"cannot compare {actual} with {expected}: one is a folder, one a file")
    if not actual.is_dir():
        yield from _file_pairs(
            actual, expected, str(actual), max_bytes=max_bytes, max_pixels=max_pixels
        )
        return
    files_actual, files_expected = _walk(actual), _walk(expected)
    for relative in sorted(files_actual.keys() | files_expected.keys()):
        if relative not in files_actual:
            yield Pair(relative, None, None, "actual")
        elif relative not in files_expected:
            yield Pair(relative, None, None, "expected")
        else:
            yield from _file_pairs(
                files_actual[relative],
                files_expected[relative],
                relative,
                max_bytes=max_bytes,
                max_pixels=max_pixels,
            )


def compare_pair(
    pair: Pair,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    expected_layout: str | None = None,
    show: int = 0,
) -> Comparison:
    """Compare one :class:`Pair` (see :func:`compare_arrays`)."""
    if pair.missing is not None or pair.actual is None or pair.expected is None:
        side = pair.missing or ("actual" if pair.actual is None else "expected")
        present = pair.expected if side == "actual" else pair.actual
        return _missing(pair.name, side, present, rtol=rtol, atol=atol)
    return compare_arrays(
        pair.actual,
        pair.expected,
        name=pair.name,
        rtol=rtol,
        atol=atol,
        expected_layout=expected_layout,
        show=show,
    )


def compare_paths(
    actual: Path,
    expected: Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    expected_layout: str | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Comparison]:
    """Compare two files or folders (see :func:`iter_pairs` and :func:`compare_arrays`).

    Returns
    -------
    list of Comparison
        One per pair, in :func:`iter_pairs`'s order.

    Raises
    ------
    ConvcliError
        Unreadable or unsafe input (never reported as a difference).
    """
    return [
        compare_pair(pair, rtol=rtol, atol=atol, expected_layout=expected_layout, show=show)
        for pair in iter_pairs(actual, expected, max_bytes=max_bytes, max_pixels=max_pixels)
    ]


# --------------------------------------------------------------------------- heat map


@dataclass(frozen=True)
class HeatMap:
    """A grey image of ``|actual - expected|`` for one pair.

    ``scale`` is the difference one grey level stands for (white = 255 * scale).
    """

    name: str
    pixels: npt.NDArray[np.uint8]
    scale: float


def diff_heatmap(
    actual: npt.ArrayLike, expected: npt.ArrayLike
) -> tuple[npt.NDArray[np.uint8], float]:
    """A uint8 image of ``|actual - expected|``, scaled so the largest difference is 255.

    Parameters
    ----------
    actual, expected : array_like
        Real arrays of the same shape: (H, W), (H, W, C) or (N, H, W, C).

    Returns
    -------
    image : ndarray of uint8
        (H, W) for one image: per pixel, the largest difference over the channels divided
        by ``scale``, rounded. A batch is tiled into a near-square grid of
        ``columns = ceil(sqrt(N))``: image n at rows ``(n // columns) * H``, columns
        ``(n % columns) * W``, giving (ceil(N / columns) * H, columns * W); unused cells are
        black. A NaN against a number, or an infinity against anything else, is white (255)
        and does not set the scale.
    scale : float
        The difference one grey level stands for (white = 255 * scale); 0.0 when the arrays
        are equal.

    Raises
    ------
    ConvcliError
        Different shapes, a rank other than 2-4, an empty array, or a non-real dtype.
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise ConvcliError(f"diff image needs equal shapes, got {a.shape} and {e.shape}")
    if a.ndim not in (2, 3, 4) or a.size == 0:
        raise ConvcliError(f"diff image needs a non-empty 2-, 3- or 4-D array, got {a.shape}")
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf":
        raise ConvcliError(f"diff image needs real numbers, got {a.dtype} and {e.dtype}")
    if a.ndim == 2:
        a, e = a[None, :, :, None], e[None, :, :, None]
    elif a.ndim == 3:
        a, e = a[None], e[None]
    count, height, width, channels = a.shape
    per_pixel = np.zeros((count, height, width), dtype=np.float64)
    saturated = np.zeros((count, height, width), dtype=bool)
    for channel in range(channels):
        ac = a[..., channel].astype(np.float64)
        ec = e[..., channel].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(ac - ec)
            diff[(ac == ec) | (np.isnan(ac) & np.isnan(ec))] = 0.0
        bad = ~np.isfinite(diff)
        saturated |= bad
        diff[bad] = 0.0
        np.maximum(per_pixel, diff, out=per_pixel)
    peak = float(per_pixel.max())
    grey = np.zeros((count, height, width), dtype=np.uint8)
    if peak > 0:
        grey[...] = np.clip(np.rint(per_pixel * (255.0 / peak)), 0, 255)
    grey[saturated] = 255
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width), dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[top : top + height, left : left + width] = grey[index]
    return canvas, peak / 255.0


def _drawable(pair: Pair, comparison: Comparison) -> bool:
    return (
        comparison.problem is None
        and pair.actual is not None
        and pair.actual.ndim in (2, 3, 4)
        and pair.actual.size > 0
        and pair.actual.dtype.kind in "biuf"
        and pair.expected is not None
        and pair.expected.dtype.kind in "biuf"
    )


# --------------------------------------------------------------------------- reference dumps


@dataclass(frozen=True)
class ReferenceDump:
    """A reference dump as read from disk.

    ``params`` holds the engine keywords (JSON lists turned into tuples).
    """

    path: Path
    op: str
    params: Mapping[str, Any]
    input: Array
    output: Array
    kernel: Array | None
    bias: Array | None
    rtol: float | None
    atol: float | None
    source: str | None


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as plain JSON data: tuples become lists, NumPy scalars Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConvcliError(f"{what} must be finite, got {value!r}")
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(item, what) for item in value]
    raise ConvcliError(f"{what}: cannot store {type(value).__name__} {value!r} in JSON")


def _check_tolerance_value(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConvcliError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConvcliError(f"{what} must be a finite number >= 0, got {value!r}")
    return number


def write_reference(
    path: Path | str,
    *,
    op: str,
    input: npt.ArrayLike,
    output: npt.ArrayLike,
    kernel: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    source: str | None = None,
    **params: Any,
) -> None:
    """Write a reference dump that ``convcli verify DUMP.npz`` recomputes and compares.

    Parameters
    ----------
    path : Path or str
        The ``.npz`` to write, atomically; an existing file is replaced.
    op : {"conv", "max_pool", "avg_pool"}
    input : array_like
        What the operation was applied to, in ``layout`` (default NHWC): (N, H, W, C),
        (H, W, C) or (H, W); (N, C, H, W) or (C, H, W) with ``layout="NCHW"``.
    output : array_like
        The expected result (e.g. computed by PyTorch or TensorFlow), in the same layout.
    kernel : array_like, optional
        The weights; conv only, and required there: (kh, kw), (kh, kw, C), or 4-D in
        ``kernel_layout`` (default OHWI).
    bias : array_like, optional
        Conv only: a scalar or one value per output channel.
    rtol, atol : float, optional
        Tolerances to verify with; the command line's flags override them.
    source : str, optional
        Free text, e.g. ``"torch 2.13.0 nn.Conv2d(3, 8, 3)"``.
    **params
        The engine's keywords for ``op`` (:data:`OP_PARAMETERS`), e.g. ``stride=2,
        padding=(1, 1), layout="NCHW", kernel_layout="OIHW"``; tuples are stored as JSON
        lists.

    Raises
    ------
    ConvcliError
        Unknown op or keyword, a kernel or bias given to a pooling op, a missing kernel or
        size, a value JSON cannot hold, an object array, or a path not ending in .npz.
    """
    target = Path(path)
    if target.suffix.lower() != ".npz":
        raise ConvcliError(f"{target}: a reference dump must be an .npz file")
    if op not in OPS:
        raise ConvcliError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    allowed = OP_PARAMETERS[op]
    for key in params:
        if key not in allowed:
            raise ConvcliError(
                f"unknown parameter {key!r} for op {op!r} (allowed: {', '.join(allowed)})"
            )
    if op == "conv" and kernel is None:
        raise ConvcliError("op 'conv' needs a kernel")
    if op != "conv" and (kernel is not None or bias is not None):
        raise ConvcliError(f"op {op!r} takes no kernel or bias")
    if op != "conv" and "size" not in params:
        raise ConvcliError(f"op {op!r} needs size")
    document: dict[str, Any] = {"op": op}
    for key, value in params.items():
        document[key] = _jsonable(value, key)
    if rtol is not None:
        document["rtol"] = _check_tolerance_value(rtol, "rtol")
    if atol is not None:
        document["atol"] = _check_tolerance_value(atol, "atol")
    if source is not None:
        if not isinstance(source, str):
            raise ConvcliError(f"source must be a string, got {source!r}")
        document["source"] = source
    members: dict[str, Array] = {"input": np.asarray(input), "output": np.asarray(output)}
    if kernel is not None:
        members["kernel"] = np.asarray(kernel)
    if bias is not None:
        members["bias"] = np.asarray(bias)
    for member, array in members.items():
        if array.dtype.hasobject:
            raise ConvcliError(f"{member} holds Python objects (dtype {array.dtype})")
    members["params"] = np.array(json.dumps(document))
    atomic_write(target, encode_npz(members))


def is_reference_dump(path: Path) -> bool:
    """Whether ``path`` is an ``.npz`` file with a ``params`` member (nothing is loaded)."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "params.npy" in archive.namelist()
    except ZIP_ERRORS:
        return False


def _parse_params(params: Array, name: str) -> dict[str, Any]:
    where = f"{name}: member 'params'"
    if params.ndim != 0 or params.dtype.kind not in "US":
        raise InputError(f"{where} must be a 0-d string array of JSON, got {params.dtype}")
    text = params.item()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where} is not UTF-8 ({exc})") from exc

    def unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise InputError(f"{where}: duplicate key {key!r}")
            result[key] = value
        return result

    def no_constant(constant: str) -> Any:
        raise InputError(f"{where}: {constant} is not allowed")

    try:
        document = json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise InputError(f"{where} must be a JSON object, got {type(document).__name__}")
    op = document.get("op")
    if op not in OPS:
        raise InputError(f"{where}: op must be one of {', '.join(OPS)}, got {op!r}")
    allowed = ("op", *OP_PARAMETERS[op], *DUMP_EXTRA_KEYS)
    for key in document:
        if key not in allowed:
            raise InputError(
                f"{where}: unknown key {key!r} for op {op!r} (allowed: {', '.join(allowed[1:])})"
            )
    return document


def read_reference(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ReferenceDump:
    """Read and validate a reference dump (see the module docstring for its format).

    Raises
    ------
    InputError
        Not an .npz; ``params`` missing or malformed (not a 0-d string, bad JSON, duplicate
        key, unknown op or key, bad tolerance); a member missing or not used by the op.
        Each message names the dump and the member.
    LimitError
        A member is over ``max_bytes``.
    """
    name = str(path)
    if not path.is_file():
        raise InputError(f"{name}: no such file")
    members = read_npz(path, name=name, max_bytes=max_bytes)
    if "params" not in members:
        raise InputError(f"{name}: not a reference dump: no 'params' member")
    document = _parse_params(members.pop("params"), name)
    op = document.pop("op")
    expected_members = _DUMP_MEMBERS[op]
    for member in members:
        if member not in expected_members:
            raise InputError(
                f"{name}: unexpected member {member!r} (a {op} dump holds "
                f"{', '.join(expected_members)} and params)"
            )
    for member in expected_members:
        if member not in members and member not in _OPTIONAL_MEMBERS:
            raise InputError(
                f"{name}: missing member {member!r} (a {op} dump holds "
                f"{', '.join(expected_members)} and params)"
            )
    tolerances: dict[str, float | None] = {}
    for key in ("rtol", "atol"):
        value = document.pop(key, None)
        try:
            tolerances[key] = None if value is None else _check_tolerance_value(value, key)
        except ConvcliError as exc:
            raise InputError(f"{name}: member 'params': {exc}") from exc
    source = document.pop("source", None)
    if source is not None and not isinstance(source, str):
        raise InputError(f"{name}: member 'params': source must be a string, got {source!r}")
    params = {
        key: tuple(value) if isinstance(value, list) else value for key, value in document.items()
    }
    return ReferenceDump(
        path=path,
        op=op,
        params=params,
        input=members["input"],
        output=members["output"],
        kernel=members.get("kernel"),
        bias=members.get("bias"),
        rtol=tolerances["rtol"],
        atol=tolerances["atol"],
        source=source,
    )


def recompute(dump: ReferenceDump, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Array:
    """Run the dump's operation on its input with the engine.

    Returns
    -------
    ndarray
        float64 for a float64 input, else float32, in the dump's layout.

    Raises
    ------
    InputError
        The engine refuses the dump's arguments (the message names the dump).
    LimitError
        The result or scratch memory would exceed ``max_bytes``.
    """
    params = dict(dump.params)
    try:
        if dump.op == "conv":
            if dump.kernel is None:
                raise InputError(f"{dump.path}: missing member 'kernel'")
            return engine.conv2d(dump.input, dump.kernel, dump.bias, max_bytes=max_bytes, **params)
        if dump.op == "max_pool":
            return engine.max_pool2d(dump.input, max_bytes=max_bytes, **params)
        if dump.op == "avg_pool":
            return engine.avg_pool2d(dump.input, max_bytes=max_bytes, **params)
    except LimitError as exc:
        raise LimitError(f"{dump.path}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"{dump.path}: cannot recompute {dump.op}: {exc}") from exc
    raise InputError(f"{dump.path}: unknown op {dump.op!r}")


def _dump_tolerances(
    dump: ReferenceDump, rtol: float | None, atol: float | None
) -> tuple[float | None, float | None]:
    """Command-line values first, then the dump's; None leaves the dtype default."""
    return (rtol if rtol is not None else dump.rtol, atol if atol is not None else dump.atol)


def verify_dump(
    path: Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Comparison:
    """Recompute a reference dump with the engine and compare with its ``output``.

    Tolerances: ``rtol``/``atol`` if given, else the dump's, else the defaults of the
    expected (``output``) dtype.

    Returns
    -------
    Comparison
        Named after the dump's path.

    Raises
    ------
    InputError
        A malformed dump (see :func:`read_reference`) or arguments the engine refuses.

    Notes
    -----
    A float32 reference summed in another order (e.g. by PyTorch's convolution) can differ
    from the engine's float32 result by more than float32's default rtol of 1.3e-6 when a
    filter has many taps (C * kh * kw in the hundreds); the defaults are not loosened for
    that. Record ``rtol``/``atol`` in the dump, or pass them.
    """
    dump = read_reference(path, max_bytes=max_bytes)
    actual = recompute(dump, max_bytes=max_bytes)
    used_rtol, used_atol = _dump_tolerances(dump, rtol, atol)
    return compare_arrays(
        actual, dump.output, name=str(path), rtol=used_rtol, atol=used_atol, show=show
    )


# --------------------------------------------------------------------------- front door


@dataclass(frozen=True)
class Verification:
    """Everything ``convcli verify`` reports: the comparisons and an optional heat map."""

    comparisons: tuple[Comparison, ...]
    heatmap: HeatMap | None = None

    @property
    def match(self) -> bool:
        """True when every pair matches (exit status 0)."""
        return all(comparison.match for comparison in self.comparisons)


def verify(
    actual: Path,
    expected: Path | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    expected_layout: str | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    heatmap: bool = False,
) -> Verification:
    """Compare two files or folders, or (``expected`` None) verify a reference dump.

    What ``convcli verify`` runs; see :func:`compare_paths` and :func:`verify_dump` for the
    parameters.

    Parameters
    ----------
    heatmap : bool
        Draw :attr:`Verification.heatmap` (:func:`diff_heatmap`) for the first pair that
        differs and has equal shapes, a rank of 2-4 and real dtypes; when every pair
        matches, for the first such pair. It stays None when no pair qualifies. Arrays in
        NCHW (``expected_layout``, or a dump's ``layout``) are drawn channels-last.

    Raises
    ------
    ConvcliError
        Trouble: unreadable or unsafe input, a malformed dump, ``expected_layout`` given
        with a dump.
    """
    # Layouts the heat map reads each side in: a dump's arrays are both in its own layout.
    draw_actual: str | None = None
    draw_expected = expected_layout
    if expected is None:
        if expected_layout not in (None, "NHWC"):
            raise ConvcliError("a reference dump records its own layout; drop expected_layout")
        dump = read_reference(actual, max_bytes=max_bytes)
        result = recompute(dump, max_bytes=max_bytes)
        rtol, atol = _dump_tolerances(dump, rtol, atol)
        pairs: Iterator[Pair] = iter([Pair(str(actual), result, dump.output)])
        draw_actual = draw_expected = str(dump.params.get("layout", "NHWC"))
    else:
        pairs = iter_pairs(actual, expected, max_bytes=max_bytes, max_pixels=max_pixels)
    comparisons: list[Comparison] = []
    drawn: HeatMap | None = None
    drawn_differs = False
    for pair in pairs:
        comparison = compare_pair(
            pair, rtol=rtol, atol=atol, expected_layout=expected_layout, show=show
        )
        comparisons.append(comparison)
        wanted = drawn is None or (not drawn_differs and not comparison.match)
        if heatmap and wanted and _drawable(pair, comparison):
            assert pair.actual is not None and pair.expected is not None
            image, scale = diff_heatmap(
                as_nhwc(pair.actual, draw_actual), as_nhwc(pair.expected, draw_expected)
            )
            drawn = HeatMap(pair.name, image, scale)
            drawn_differs = not comparison.match
    return Verification(tuple(comparisons), drawn)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def comparisons_to_json(comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """The ``--json`` report: exactly ``{"match", "pairs": [{"name", "shape_actual",
    "shape_expected", "max_abs_diff", "max_rel_diff", "mismatched", "total", "match"}]}``.

    Shapes are lists; a missing side's shape and any difference that is undefined or not
    finite (an infinity against a number) are ``null``, so the output is strict JSON.
    """
    return {
        "match": all(comparison.match for comparison in comparisons),
        "pairs": [
            {
                "name": comparison.name,
                "shape_actual": _shape_list(comparison.shape_actual),
                "shape_expected": _shape_list(comparison.shape_expected),
                "max_abs_diff": _finite_or_none(comparison.max_abs_diff),
                "max_rel_diff": _finite_or_none(comparison.max_rel_diff),
                "mismatched": comparison.mismatched,
                "total": comparison.total,
                "match": comparison.match,
            }
            for comparison in comparisons
        ],
    }


def _shape_list(shape: tuple[int, ...] | None) -> list[int] | None:
    return None if shape is None else list(shape)
