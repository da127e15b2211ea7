"""The one input-format dispatcher: what a path or standard input holds, and reading it.

Every reader of inputs goes through here: ``conv``/``pool`` items (:func:`read_input`),
``verify`` pairs (:func:`read_source`) and the batch walker (:func:`format_of`). A file's
format comes from its extension, standard input's from its leading bytes; the decoders then
trust neither and check the magic bytes and the sizes in the header before decoding.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy.typing as npt

from convcli.errors import InputError, LimitError
from convcli.io import arrays, images
from convcli.io.frames import Frames, FrameSelection, read_frames
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, STDIN_PIECE_BYTES

Array = npt.NDArray[Any]

#: Formats that hold arrays rather than pictures.
ARRAY_FORMATS = ("npy", "npz")
#: Every format an input or output may have.
ALL_FORMATS = (*ARRAY_FORMATS, *images.IMAGE_FORMATS)
#: The name standard input goes by on the command line.
STDIN = "-"
#: The name standard input and output go by in messages and reports.
STDIN_NAME = "<stdin>"


def format_of(path: Path) -> str | None:
    """The format a file name implies (``"npy"``, ``"npz"``, ``"png"``, ...), or None."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    return images.format_from_path(path)


@dataclass
class Source:
    """A read input: ``arrays`` maps member names to arrays (one unnamed for .npy/images).

    An image's ``image`` is its first chosen frame; ``frames`` (None for one frame) hands
    out the others one at a time.
    """

    name: str
    format: str
    arrays: dict[str, Array]
    image: images.Image | None = None
    frames: Frames | None = None


def read_source(
    path: Path | None,
    *,
    data: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frames: FrameSelection = "first",
) -> Source:
    """Read a file (``path``) or stdin's bytes (``data``), checking sizes before decoding.

    ``frames`` chooses the frames of a multi-frame image (see :mod:`convcli.io.frames`).

    Raises:
        InputError: the input is missing, a folder, of an unsupported type, corrupt or unsafe.
        LimitError: it is over ``max_bytes`` or ``max_pixels``, or this machine's memory.
    """
    if data is not None:
        name = STDIN_NAME
        fmt = images.sniff_format(data)
        if fmt is None:
            raise InputError(f"{name}: unrecognized data (expected .npy, .npz or an image)")
        source: Path | bytes = data
    else:
        assert path is not None
        name = str(path)
        if path.is_dir():
            raise InputError(f"{name}: is a folder (give -o a folder to process folders)")
        if not path.exists():
            raise InputError(f"{name}: no such file")
        detected = format_of(path)
        if detected is None:
            raise InputError(
                f"{name}: unsupported file type {path.suffix!r} (expected .npy, .npz or an image)"
            )
        fmt = detected
        source = path
    try:
        if fmt == "npy":
            return Source(name, fmt, {"": arrays.read_npy(source, name=name, max_bytes=max_bytes)})
        if fmt == "npz":
            members = arrays.read_npz(source, name=name, max_bytes=max_bytes)
            if not members:
                raise InputError(f"{name}: the .npz holds no arrays")
            return Source(name, fmt, members)
        chosen = read_frames(
            source, name=name, selection=frames, max_pixels=max_pixels, max_bytes=max_bytes
        )
    except MemoryError as error:  # within the limits, but more than this machine has
        raise LimitError(f"{name}: out of memory reading it (see --max-bytes)") from error
    image = chosen.first
    many = chosen if chosen.count > 1 else None
    return Source(name, image.format, {"": image.pixels}, image, many)


def read_input(
    name: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frames: FrameSelection = "first",
) -> Source:
    """Read the input named on the command line: a file, or ``-`` for standard input."""
    path: Path | None = Path(name)
    data: bytes | None = None
    if name == STDIN:
        stream = sys.stdin.buffer if sys.stdin is not None else None
        path, data = None, read_stdin(stream, max_bytes=max_bytes)
    return read_source(path, data=data, max_bytes=max_bytes, max_pixels=max_pixels, frames=frames)


def read_stdin(stream: BinaryIO | None, *, max_bytes: int) -> bytes:
    """All of a binary stream, read in pieces, refusing more than ``max_bytes``.

    Memory grows with what arrives, never with the limit: a small image on stdin runs
    under a tight ``ulimit -v`` whatever ``--max-bytes`` is.

    Raises:
        InputError: standard input is closed, or sent nothing.
        LimitError: more than ``max_bytes`` arrived.
    """
    if stream is None:
        raise InputError(f"{STDIN_NAME}: standard input is closed")
    pieces: list[bytes] = []
    size = 0
    try:
        while size <= max_bytes:
            piece = stream.read(min(STDIN_PIECE_BYTES, max_bytes + 1 - size))
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
    except OSError as error:  # fd 0 closed or unreadable
        raise InputError(f"{STDIN_NAME}: cannot read: {error.strerror or error}") from error
    if size > max_bytes:
        raise LimitError(f"{STDIN_NAME}: more than --max-bytes {max_bytes:,} bytes")
    if not size:
        raise InputError(f"{STDIN_NAME}: no data")
    return b"".join(pieces)
