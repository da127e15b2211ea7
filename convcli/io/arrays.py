"""Safe reading and writing of NumPy ``.npy`` and ``.npz`` files.

Headers are read and checked before any data is loaded: sizes against ``max_bytes`` and
against the bytes actually present, dtypes against pickling. Nothing here ever unpickles.
"""

from __future__ import annotations

import io
import struct
import tokenize
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from convcli.errors import InputError, LimitError
from convcli.limits import (
    DEFAULT_MAX_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_NPY_HEADER_BYTES,
    MAX_NPZ_MEMBERS,
)

if TYPE_CHECKING:
    import zipfile

Array = npt.NDArray[Any]

#: What numpy's .npy header parser raises on a malformed header: besides ValueError, the
#: tokenizer and ast.literal_eval it runs on the header text raise their own errors.
HEADER_ERRORS = (
    ValueError,
    OSError,
    SyntaxError,
    EOFError,
    UnicodeDecodeError,
    tokenize.TokenError,
    TypeError,
    LookupError,
    RecursionError,
    MemoryError,
)


#: What zipfile raises on a corrupt archive besides its own two errors: whatever its parsing
#: of headers and extra fields trips over (struct.error, IndexError, a bad zlib stream, ...).
_ZIP_PARSING_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    OSError,
    NotImplementedError,
    ValueError,
    RuntimeError,
    LookupError,
    TypeError,
    ArithmeticError,
    struct.error,
    zlib.error,
)


def zip_errors() -> tuple[type[Exception], ...]:
    """What zipfile raises on a corrupt archive: its own errors and :data:`_ZIP_PARSING_ERRORS`.

    A function, and :data:`ZIP_ERRORS` its value on first use, so that zipfile (and the
    compression modules it loads) is imported only by a run that reads or writes an .npz.
    """
    import zipfile

    return (zipfile.BadZipFile, zipfile.LargeZipFile, *_ZIP_PARSING_ERRORS)


if TYPE_CHECKING:
    #: :func:`zip_errors`, as a constant.
    ZIP_ERRORS: tuple[type[Exception], ...]
else:

    def __getattr__(name: str) -> Any:
        """``ZIP_ERRORS`` on first use (PEP 562): :func:`zip_errors`."""
        if name == "ZIP_ERRORS":
            globals()[name] = value = zip_errors()
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:197] + "...") if len(text) > 200 else text or type(exc).__name__


def parse_npy_header(handle: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Read an .npy header (formats 1.0, 2.0 and 3.0) from ``handle`` without reading data.

    Returns ``(shape, fortran_order, dtype)``; the handle is left at the start of the data.
    The one .npy header reader: inputs, batches, verify and kernel files all use it.
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise InputError(f"{name}: unsupported .npy format version {version}")
        # numpy reads as many bytes as the length field claims: check it first
        length_field = handle.read(2 if version == (1, 0) else 4)
        length = int.from_bytes(length_field, "little")
        if length > MAX_NPY_HEADER_BYTES:
            raise InputError(
                f"{name}: not a valid .npy file (its header claims {length:,} bytes; "
                f"headers are at most {MAX_NPY_HEADER_BYTES:,})"
            )
        handle.seek(-len(length_field), io.SEEK_CUR)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except InputError:
        raise
    except HEADER_ERRORS as exc:
        raise InputError(f"{name}: not a valid .npy file ({_one_line(exc)})") from exc
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
    shape, fortran, dtype = parse_npy_header(handle, name)
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


@dataclass(frozen=True)
class NpyHeader:
    """An .npy file's header, checked: where its data starts and what it holds."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    offset: int
    nbytes: int


def read_npy_header(path: Path, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> NpyHeader:
    """Read and check an .npy file's header as :func:`read_npy` does, without its data."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            shape, fortran, dtype = parse_npy_header(handle, name)
            offset = handle.tell()
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    nbytes = check_array_header(shape, dtype, name=name, max_bytes=max_bytes)
    if nbytes > size - offset:
        raise InputError(
            f"{name}: header declares {nbytes:,} bytes of data but the file holds {size - offset:,}"
        )
    return NpyHeader(shape, fortran, dtype, offset, nbytes)


def iter_npy_slices(
    path: Path, header: NpyHeader, per_slice: int, *, name: str
) -> Iterator[tuple[int, Array]]:
    """Yield ``(start, array[start : start + per_slice])`` of a C-order .npy, read explicitly.

    Each slice is read with ``readinto`` into its own buffer, not through a memory map: a file
    that shrinks while it is read (another process truncating it) raises :class:`InputError`
    instead of killing the process with SIGBUS, and memory holds one slice, never the pages
    of the slices before it. ``header`` comes from :func:`read_npy_header`.

    Raises:
        InputError: the file cannot be read, or ends before the data its header declares.
    """
    if header.fortran:
        raise InputError(f"{name}: a Fortran-order .npy cannot be read in slices along N")
    count = header.shape[0]
    sample_bytes = header.nbytes // count if count else 0
    try:
        with path.open("rb", buffering=0) as handle:  # each slice read straight into place
            handle.seek(header.offset)
            for start in range(0, count, per_slice):
                rows = min(per_slice, count - start)
                chunk: Array = np.empty((rows, *header.shape[1:]), dtype=header.dtype)
                view = chunk.data.cast("B")
                filled = 0
                while filled < rows * sample_bytes:
                    got = handle.readinto(view[filled:])
                    if not got:
                        at = header.offset + start * sample_bytes + filled
                        raise InputError(
                            f"{name}: truncated while being read: it ended after {at:,} "
                            f"bytes, its header declares {header.offset + header.nbytes:,}"
                        )
                    filled += got
                yield start, chunk
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc


def _unsafe_member_name(member: str) -> str | None:
    """Why ``member`` (a zip member name) is unsafe to carry into outputs and reports, or None.

    Member names become array names, are written back into output archives and printed; they
    never become paths, but a name that would be one outside the archive (``../x.npy``,
    ``/etc/x.npy``, ``C:\\x.npy``) or that holds control characters is refused anyway.
    """
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in member):
        return "holds control characters"
    if "\\" in member or member.startswith("/") or (len(member) > 1 and member[1] == ":"):
        return "is an absolute or Windows path"
    if any(part in ("", ".", "..") for part in member[: -len(".npy")].split("/")):
        return "has an empty, '.' or '..' path component"
    return None


def _npz_members(archive: zipfile.ZipFile, name: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > MAX_NPZ_MEMBERS:
        raise LimitError(f"{name}: {len(infos)} members, more than the limit of {MAX_NPZ_MEMBERS}")
    total = 0
    seen: set[str] = set()
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise InputError(f"{name}: member {info.filename!r} is not a .npy array")
        problem = _unsafe_member_name(info.filename)
        if problem is not None:
            raise InputError(f"{name}: member name {info.filename!r} {problem}; refusing")
        if info.filename in seen:
            raise InputError(f"{name}: member {info.filename!r} appears more than once")
        seen.add(info.filename)
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
    import zipfile

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
    except (InputError, LimitError):
        raise
    except zip_errors() as exc:
        raise InputError(f"{name}: not a valid .npz file ({_one_line(exc)})") from exc


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
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for member, array in members.items():
            archive.writestr(
                zipfile.ZipInfo(f"{member}.npy", date_time=(1980, 1, 1, 0, 0, 0)), encode_npy(array)
            )
    return buffer.getvalue()
