"""What every image decoder shares: the header and plan types, size checks made before any
pixel is decoded, and the mapping of decoder exceptions to one-line errors.

A decoder first makes a :class:`DecodePlan` from headers alone (what array the file becomes),
the front door (:mod:`convcli.io.images`) checks its size against the limits, and only then are
pixels decoded and checked against the plan with :func:`finish`.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from convcli.errors import ConvcliError, InputError, LimitError

__all__ = [
    "DECODE_ERRORS",
    "SUFFIX_16",
    "DecodePlan",
    "Image",
    "ImageHeader",
    "check_decoded_bytes",
    "check_pixels",
    "decoder_errors",
    "finish",
    "orient",
    "reason",
]

Array = npt.NDArray[Any]

#: Exceptions decoders raise on corrupt or hostile input (besides convcli's own errors).
DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    EOFError,
    zlib.error,
    MemoryError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RuntimeError,  # includes RecursionError and NotImplementedError
    PILImage.DecompressionBombError,
    PILImage.DecompressionBombWarning,
    Warning,  # any decoder warning a warnings filter has made an error
)
#: Appended to a Pillow-style mode name for 16-bit data Pillow has no mode for ("RGB;16").
SUFFIX_16: Final = ";16"


@dataclass(frozen=True)
class ImageHeader:
    """What an image file holds, read without decoding its pixels.

    ``channels`` and ``dtype`` describe the array :func:`read_image` returns (after palette
    expansion); ``width`` and ``height`` are after EXIF orientation. ``mode`` is Pillow's name
    for the stored data ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "F", "CMYK", ...), with
    ";16" or ";F" appended for 16-bit or float multi-channel data Pillow has no mode for
    (e.g. "RGB;16"), and "<C>-channel" for TIFFs with more than four samples.
    """

    width: int
    height: int
    channels: int
    dtype: str
    format: str
    mode: str


@dataclass(frozen=True)
class Metadata:
    """What an image file holds besides its pixels, carried to the output (``--strip``: none).

    Attributes
    ----------
    icc : bytes or None
        The ICC colour profile.
    exif : bytes or None
        The EXIF block as TIFF-structured bytes (starting ``II*\0`` or ``MM\0*``, no
        ``Exif\0\0`` prefix), with its Orientation reset to 1: pixels are read upright.
    xmp : bytes or None
        The XMP packet.
    dpi : (float, float) or None
        Horizontal and vertical resolution in pixels per inch.
    text : tuple of (str, str)
        PNG text chunks (tEXt, zTXt, iTXt) as (keyword, text), in file order.
    """

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JpegSettings:
    """How a JPEG was compressed, so a JPEG written from it can be compressed alike.

    ``qtables`` are the quantization tables (64 values each, in natural order, as Pillow's
    ``quantization``), ``subsampling`` Pillow's code (0: 4:4:4, 1: 4:2:2, 2: 4:2:0).
    """

    qtables: tuple[tuple[int, ...], ...]
    subsampling: int


@dataclass
class Image:
    """A decoded image (one frame or page of it).

    Attributes
    ----------
    pixels : ndarray
        ``(H, W)`` gray or ``(H, W, C)``; dtype ``uint8``, ``uint16`` or ``float32``.
    format : str
        A key of :data:`IMAGE_FORMATS`.
    has_alpha : bool
        The last channel is alpha (gray + alpha or RGBA).
    metadata : Metadata
        ICC profile, EXIF, XMP, resolution and text of the file.
    jpeg : JpegSettings or None
        A JPEG's quantization tables and chroma subsampling.
    """

    pixels: Array
    format: str
    has_alpha: bool
    metadata: Metadata = field(default_factory=Metadata)
    jpeg: JpegSettings | None = None


@dataclass(frozen=True)
class DecodePlan:
    """How one opened image decodes: its header plus the steps that produce the array."""

    header: ImageHeader
    has_alpha: bool
    #: Pillow mode to convert to before taking the array (None: as stored).
    convert: str | None = None
    #: EXIF orientation 1-8 (1: as stored).
    orientation: int = 1
    #: 16-bit color PNG: (channels, interlaced); decoded by :func:`decode_png16`.
    png16: tuple[int, int] | None = None
    #: TIFF only: let Pillow decode (tifffile lacks the codec).
    use_pillow: bool = False
    #: Gray PNG with tRNS: the gray value (as 8-bit, after Pillow's scaling) that is
    #: transparent; decoding adds the alpha channel itself (Pillow ignores tRNS below 8 bits).
    transparent_gray: int | None = None


@contextlib.contextmanager
def decoder_errors(name: str, *, max_pixels: int | None) -> Iterator[None]:
    """Turn whatever a decoder raises on bad data into a one-line InputError or LimitError."""
    try:
        yield
    except ConvcliError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        limit = f"{max_pixels:,} pixels (--max-pixels)" if max_pixels else "Pillow's size limit"
        raise LimitError(f"{name}: image is larger than {limit}") from exc
    except DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot read image: {reason(exc)}") from exc


def reason(exc: BaseException) -> str:
    """A short, single-line reason for a decoder exception."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a valid image file of its kind"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RecursionError):
        return "structure nested too deeply"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    if len(text) > 200:
        text = text[:197] + "..."
    if isinstance(exc, LookupError) or len(text) < 4:
        # "0" or "'StripOffsets'" from an index or tag lookup says nothing on its own.
        detail = f" ({text})" if text else ""
        return f"corrupt or truncated data: {type(exc).__name__}{detail}"
    return text or type(exc).__name__


def check_pixels(width: int, height: int, max_pixels: int, name: str, what: str = "image") -> None:
    """Refuse an image (or a TIFF tile) over ``max_pixels`` pixels, or one with none."""
    pixels = width * height
    if pixels < 1:
        raise InputError(f"{name}: {what} has no pixels ({width}x{height})")
    if pixels > max_pixels:
        raise LimitError(
            f"{name}: {what} is {width}x{height} = {pixels:,} pixels, "
            f"over the limit of {max_pixels:,} (--max-pixels)"
        )


def check_decoded_bytes(header: ImageHeader, stored: str, max_bytes: int, name: str) -> None:
    """Refuse an image whose decoded samples (stored or returned, the larger) exceed max_bytes."""
    itemsize = max(np.dtype(stored).itemsize, np.dtype(header.dtype).itemsize)
    nbytes = header.width * header.height * header.channels * itemsize
    if nbytes > max_bytes:
        raise LimitError(
            f"{name}: image {header.width}x{header.height} with {header.channels} "
            f"{stored} samples per pixel decodes to {nbytes:,} bytes, over --max-bytes "
            f"{max_bytes:,}"
        )


def finish(pixels: Array, header: ImageHeader, name: str) -> Array:
    """A contiguous, writable array, checked against what the header promised."""
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    expected: tuple[int, ...] = (header.height, header.width)
    if header.channels > 1:
        expected = (*expected, header.channels)
    if pixels.shape != expected or pixels.dtype != np.dtype(header.dtype):
        raise InputError(
            f"{name}: cannot read image: decoded {pixels.shape} {pixels.dtype} pixels, "
            f"but the header announced {expected} {header.dtype}"
        )
    return pixels


def orient(pixels: Array, orientation: int) -> Array:
    """Turn stored pixels upright for an EXIF/TIFF orientation (1-8), as Pillow's
    ``ImageOps.exif_transpose`` does; 5-8 swap rows and columns.
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels
