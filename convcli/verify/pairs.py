"""Reading two files or folders pair by pair for comparison (folders by relative path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy.typing as npt

from convcli.errors import InputError
from convcli.io.arrays import read_npz
from convcli.io.sources import format_of, read_source
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from convcli.verify.compare import Comparison, compare_arrays, missing_comparison

__all__ = ["Pair", "compare_pair", "compare_paths", "iter_pairs"]

Array: TypeAlias = npt.NDArray[Any]


@dataclass(frozen=True)
class Pair:
    """Two arrays to compare, read from files; a missing side is ``None``.

    ``missing`` names the side ("actual" or "expected") that has no partner file or member.
    """

    name: str
    actual: Array | None
    expected: Array | None
    missing: str | None = None


def _read_array(path: Path, *, max_bytes: int, max_pixels: int) -> Array:
    """The one array of an .npy file or an image."""
    return read_source(path, max_bytes=max_bytes, max_pixels=max_pixels).arrays[""]


def _file_pairs(
    actual: Path, expected: Path, name: str, *, max_bytes: int, max_pixels: int
) -> Iterator[Pair]:
    kinds = []
    for path in (actual, expected):
        kind = format_of(path)
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
        _read_array(actual, max_bytes=max_bytes, max_pixels=max_pixels),
        _read_array(expected, max_bytes=max_bytes, max_pixels=max_pixels),
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
            if not file_name.startswith(".") and format_of(path) is not None:
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
        return missing_comparison(pair.name, side, present, rtol=rtol, atol=atol)
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
