"""Comparing two arrays element by element -> a :class:`Comparison`, as h5diff does.

An element passes when ``|actual - expected| <= atol + rtol * |expected|``, computed in
float64, with the default tolerances of ``torch.testing.assert_close`` taken from the
*expected* dtype (:func:`default_tolerances`). NaN matches NaN at the same position only;
infinities match only the same infinity. Integers (and bools) are compared exactly unless a
tolerance is given.

Nothing here reads files, prints or exits: trouble is a
:class:`~convcli.errors.ConvcliError` (exit status 2 on the command line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError
from convcli.validate import one_of, tolerance
from convcli.verify import EXPECTED_LAYOUTS

__all__ = [
    "CHUNK_ELEMENTS",
    "EXPECTED_LAYOUTS",
    "Comparison",
    "Element",
    "as_nhwc",
    "compare_arrays",
    "default_tolerances",
    "missing_comparison",
]

Array: TypeAlias = npt.NDArray[Any]

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
    return tolerance(value, name)


def as_nhwc(array: Array, layout: str | None) -> Array:
    """View ``array`` channels-last: NCHW -> NHWC (4-D), CHW -> HWC (3-D); 2-D is unchanged.

    ``layout`` None or "NHWC" returns ``array`` itself.
    """
    if layout is None or layout == "NHWC":
        return array
    one_of(layout, EXPECTED_LAYOUTS, "expected_layout")
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


def missing_comparison(
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
