"""Safe reading and writing of NumPy ``.npy`` and ``.npz`` files.

Headers are read and checked before any data is loaded: sizes against ``max_bytes`` and
against the bytes actually present, dtypes against pickling. Nothing here ever unpickles.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from convcli.engine import DEFAULT_MAX_BYTES
from convcli.errors import InputError, LimitError

#: Most members an ``.npz`` may hold.
MAX_NPZ_MEMBERS = 64
#: Largest accepted ratio of declared to compressed size of an ``.npz`` member.
MAX_COMPRESSION_RATIO = 1000

Array = npt.NDArray[Any]


def _read_header(handle: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Read an .npy header from ``handle`` (positioned at its start) without reading data."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise InputError(f"{name}: unsupported .npy format version {version}")
    except InputError:
        raise
    except (ValueError, OSError, SyntaxError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: not a valid .npy file ({exc})") from exc
    return tuple(int(n) for n in shape), bool(fortran), dtype


def check_array_header(
    shape: tuple[int, ...], dtype: np.dtype[Any], *, name: str, max_bytes: int
) -> int:
    """Refuse pickled, structured or oversized arrays; return the data size in bytes."""
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects (dtype {dtype}); refusing to unpickle")
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(f"{name}: structured dtype {dtype} is not supported")
    if any(n < 0 for n in shape):
        raise InputError(f"{name}: invalid shape {shape}")
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise LimitError(
            f"{name}: array {shape} {dtype} needs {nbytes:,} bytes, over --max-bytes {max_bytes:,}"
        )
    return nbytes


def _read_npy_stream(handle: IO[bytes], *, name: str, max_bytes: int, available: int) -> Array:
    """Read one .npy array from ``handle`` holding ``available`` bytes from its start."""
    start = handle.tell()
    shape, fortran, dtype = _read_header(handle, name)
    nbytes = check_array_header(shape, dtype, name=name, max_bytes=max_bytes)
    present = available - (handle.tell() - start)
    if nbytes > present:
        raise InputError(
            f"{name}: header declares {nbytes:,} bytes of data but the file holds {present:,}"
        )
    data = handle.read(nbytes)
    if len(data) != nbytes:
        raise InputError(f"{name}: truncated: expected {nbytes:,} bytes of data, got {len(data):,}")
    flat: Array = np.frombuffer(data, dtype=dtype)
    array: Array = flat.reshape(shape, order="F" if fortran else "C")
    return array.copy(order="K")


def read_npy(source: Path | bytes, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Array:
    """Read an ``.npy`` file or its bytes, checking the header before loading the data."""
    if isinstance(source, bytes):
        return _read_npy_stream(
            io.BytesIO(source), name=name, max_bytes=max_bytes, available=len(source)
        )
    try:
        size = source.stat().st_size
        with source.open("rb") as handle:
            return _read_npy_stream(handle, name=name, max_bytes=max_bytes, available=size)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc


def _npz_members(archive: zipfile.ZipFile, name: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > MAX_NPZ_MEMBERS:
        raise LimitError(f"{name}: {len(infos)} members, more than the limit of {MAX_NPZ_MEMBERS}")
    total = 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise InputError(f"{name}: member {info.filename!r} is not a .npy array")
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise LimitError(
                f"{name}: member {info.filename!r} expands {info.file_size:,} bytes from "
                f"{info.compress_size:,} (ratio over {MAX_COMPRESSION_RATIO}); refusing"
            )
        total += info.file_size
    if total > max_bytes:
        raise LimitError(f"{name}: members declare {total:,} bytes, over --max-bytes {max_bytes:,}")
    return infos


def iter_npz(
    source: Path | bytes, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[str, Array]]:
    """Yield ``(member_name, array)`` for each member of an ``.npz``, one at a time.

    Member names are returned without their ``.npy`` suffix, as ``np.load`` names them.
    """
    try:
        handle: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        with handle, zipfile.ZipFile(handle) as archive:
            for info in _npz_members(archive, name, max_bytes):
                member = info.filename[: -len(".npy")]
                with archive.open(info) as stream:
                    array = _read_npy_stream(
                        stream,
                        name=f"{name}:{member}",
                        max_bytes=max_bytes,
                        available=info.file_size,
                    )
                yield member, array
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        NotImplementedError,
    ) as exc:
        raise InputError(f"{name}: not a valid .npz file ({exc})") from exc
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, InputError | LimitError):
            raise
        raise InputError(f"{name}: not a valid .npz file ({exc})") from exc


def read_npz(
    source: Path | bytes, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Array]:
    """Read every member of an ``.npz`` into a dict (see :func:`iter_npz`)."""
    return dict(iter_npz(source, name=name, max_bytes=max_bytes))


def encode_npy(array: Array) -> bytes:
    """The bytes ``np.save`` writes for ``array`` (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_npz(members: dict[str, Array]) -> bytes:
    """The bytes of an uncompressed ``.npz`` holding ``members`` (as ``np.savez`` writes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for member, array in members.items():
            archive.writestr(
                zipfile.ZipInfo(f"{member}.npy", date_time=(1980, 1, 1, 0, 0, 0)), encode_npy(array)
            )
    return buffer.getvalue()
