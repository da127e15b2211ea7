"""Reading and writing images, and mapping float results back to image dtypes.

Reading checks an image's size from its header against ``max_pixels`` before any pixel data is
decoded, for every format, and runs only the decoder that matches the file's magic bytes (the
file extension is not trusted). PNG, JPEG, BMP, GIF and WebP are decoded by Pillow, TIFF by
tifffile (Pillow's libtiff takes over for TIFF compressions tifffile cannot decode without the
optional imagecodecs package). Writing goes through imageio's v3 front door
(``imageio.v3.imwrite``), except 16-bit color PNG, which neither Pillow nor imageio writes and
which this module encodes itself.

What :func:`read_image` returns:

- gray ``(H, W)``, gray + alpha ``(H, W, 2)``, RGB ``(H, W, 3)``, RGBA ``(H, W, 4)``; a TIFF may
  hold any number of channels ``(H, W, C)``.
- dtype ``uint8``, ``uint16`` or ``float32``. 1-bit images become ``uint8`` 0/255 (white 255).
  Palette images are expanded to RGB, to RGBA when the palette has transparency, and to gray
  when every palette entry is gray. 16-bit PNGs stay ``uint16``, color ones included (Pillow
  alone would truncate those to 8 bits). TIFF int8, int16, float16 and float64 samples are read
  as float32; other TIFF sample types are refused.
- The EXIF orientation of JPEG, WebP and PNG images is applied, so the pixels are what a viewer
  shows (outputs carry no EXIF, so an unrotated result would look turned).
- GIF and animated PNG/WebP: the first frame only. Multi-page TIFF: the first page only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any, Final

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image as PILImage
from PIL import UnidentifiedImageError, features

from convcli.engine import DEFAULT_MAX_BYTES
from convcli.errors import ConvcliError, InputError, LimitError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_QUALITY",
    "IMAGE_FORMATS",
    "OUT_DTYPES",
    "PNG_COMPRESS_LEVEL",
    "RANGE_MODES",
    "Image",
    "ImageHeader",
    "check_writable",
    "encode_image",
    "format_from_path",
    "merge_alpha",
    "read_header",
    "read_image",
    "sniff_format",
    "split_alpha",
    "to_image_dtype",
]

Array = npt.NDArray[Any]

#: Image format name -> file extensions (the first is the one written).
IMAGE_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "tiff": (".tif", ".tiff"),
    "bmp": (".bmp",),
    "gif": (".gif",),
    "webp": (".webp",),
}
#: Largest image read by default, in pixels: Pillow's own decompression-bomb limit.
DEFAULT_MAX_PIXELS: Final = 89_478_485
#: How float results map back to integer pixels (see :func:`to_image_dtype`).
RANGE_MODES: Final = ("clip", "normalize", "abs")
#: Pixel dtypes an image may be written with.
OUT_DTYPES: Final = ("uint8", "uint16", "float32")
#: JPEG and WebP quality when none is given.
DEFAULT_QUALITY: Final = 95
#: zlib level of PNG (and TIFF) output: zlib's and Pillow's default. Measured on 1280x960 RGB:
#: level 1 is about 2x faster but 2-25% larger, level 9 at most 3% smaller but up to 6x slower.
PNG_COMPRESS_LEVEL: Final = 6

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PILLOW_FORMATS: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WEBP",
}
_LABELS: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WebP",
}
#: Exceptions decoders raise on corrupt or hostile input (besides convcli's own errors).
_DECODE_ERRORS: Final = (
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


# --------------------------------------------------------------------------- data types


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


@dataclass
class Image:
    """A decoded image.

    Attributes
    ----------
    pixels : ndarray
        ``(H, W)`` gray or ``(H, W, C)``; dtype ``uint8``, ``uint16`` or ``float32``.
    format : str
        A key of :data:`IMAGE_FORMATS`.
    has_alpha : bool
        The last channel is alpha (gray + alpha or RGBA).
    """

    pixels: Array
    format: str
    has_alpha: bool


@dataclass(frozen=True)
class _Plan:
    """How one opened image decodes: its header plus the steps that produce the array."""

    header: ImageHeader
    has_alpha: bool
    #: Pillow mode to convert to before taking the array (None: as stored).
    convert: str | None = None
    #: EXIF orientation 1-8 (1: as stored).
    orientation: int = 1
    #: 16-bit color PNG: (channels, interlaced); decoded by :func:`_decode_png16`.
    png16: tuple[int, int] | None = None
    #: TIFF only: let Pillow decode (tifffile lacks the codec).
    use_pillow: bool = False


# --------------------------------------------------------------------------- format detection


def format_from_path(path: str | Path) -> str | None:
    """The image format a file name's extension names, or None if it names no image format.

    >>> format_from_path("photo.JPG")
    'jpeg'
    """
    suffix = Path(path).suffix.lower()
    for name, extensions in IMAGE_FORMATS.items():
        if suffix in extensions:
            return name
    return None


def sniff_format(data: bytes) -> str | None:
    """The format the leading bytes of a file announce, or None.

    Recognizes the image formats of :data:`IMAGE_FORMATS` plus NumPy's ``"npy"``
    (``\\x93NUMPY``) and ``"npz"`` (a zip archive). Sixteen bytes are enough.
    """
    head = bytes(data[:16])
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip with members, or an empty one
        return "npz"
    return None


@cache
def _webp_supported() -> bool:
    return bool(features.check("webp"))


@cache
def _have_imagecodecs() -> bool:
    return importlib.util.find_spec("imagecodecs") is not None


# --------------------------------------------------------------------------- reading


def read_header(source: Path | bytes, *, name: str) -> ImageHeader:
    """Read an image's size, channels and dtype without decoding its pixels.

    Parameters
    ----------
    source : Path or bytes
        An image file, or its bytes (e.g. stdin).
    name : str
        The path or ``"<stdin>"``, used in error messages.

    Raises
    ------
    InputError
        The data is not a readable image of a supported format.
    """
    with _opened(source, name) as handle:
        fmt, prefix = _sniff_image(handle, name)
        with _decoder_errors(name, max_pixels=None):
            if fmt == "tiff":
                with tifffile.TiffFile(handle) as tif:
                    if not len(tif.pages):
                        raise InputError(
                            f"{name}: cannot read image: the TIFF holds no readable page"
                        )
                    return _tiff_plan(tif.pages.first, name).header
            with _pillow_open(handle, fmt) as opened:
                return _pillow_plan(opened, fmt, prefix, name).header


def read_image(
    source: Path | bytes,
    *,
    name: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image:
    """Decode an image, refusing it from its header if it has more than ``max_pixels`` pixels.

    Parameters
    ----------
    source : Path or bytes
        An image file, or its bytes (e.g. stdin). The format comes from the magic bytes.
    name : str
        The path or ``"<stdin>"``, used in error messages.
    max_pixels : int
        Largest width * height accepted (``--max-pixels``), checked before decoding. A TIFF
        tile may not hold more pixels either.
    max_bytes : int
        Largest decoded size in bytes (``--max-bytes``): width * height * channels * bytes
        per sample, checked before decoding (a TIFF may have thousands of samples per pixel).

    Returns
    -------
    Image
        The pixels (see the module docstring for shapes and dtypes), format and alpha flag.

    Raises
    ------
    LimitError
        The image has more than ``max_pixels`` pixels or would decode to over ``max_bytes``.
    InputError
        The data is corrupt, truncated, or not a supported image.
    """
    if max_pixels < 1:
        raise ConvcliError(f"max_pixels must be at least 1, got {max_pixels}")
    with _opened(source, name) as handle:
        fmt, prefix = _sniff_image(handle, name)
        with _decoder_errors(name, max_pixels=max_pixels):
            if fmt == "tiff":
                return _read_tiff(handle, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
            with _pillow_open(handle, fmt) as opened:
                # The size first: planning may look at the palette, which must not decode.
                _check_pixels(*opened.size, max_pixels, name)
                plan = _pillow_plan(opened, fmt, prefix, name)
                _check_decoded_bytes(plan.header, plan.header.dtype, max_bytes, name)
                pixels = _decode_pillow(opened, plan, handle, name)
            return Image(pixels, fmt, plan.has_alpha)


@contextlib.contextmanager
def _opened(source: Path | bytes, name: str) -> Iterator[IO[bytes]]:
    """A binary handle on ``source``: a file read lazily, or the bytes given."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
        return
    try:
        handle = Path(source).open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror or exc}") from exc
    with handle:
        yield handle


def _sniff_image(handle: IO[bytes], name: str) -> tuple[str, bytes]:
    """The image format of ``handle`` and its first bytes; the handle is rewound."""
    try:
        prefix = handle.read(64)
        handle.seek(0)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    if not prefix:
        raise InputError(f"{name}: empty file")
    fmt = sniff_format(prefix)
    if fmt in ("npy", "npz"):
        raise InputError(f"{name}: is a NumPy .{fmt} file, not an image")
    if fmt is None:
        raise InputError(f"{name}: not a supported image (PNG, JPEG, TIFF, BMP, GIF or WebP)")
    if fmt == "webp" and not _webp_supported():
        raise InputError(f"{name}: cannot read image: this Pillow build has no WebP support")
    return fmt, prefix


@contextlib.contextmanager
def _decoder_errors(name: str, *, max_pixels: int | None) -> Iterator[None]:
    """Turn whatever a decoder raises on bad data into a one-line InputError or LimitError."""
    try:
        yield
    except ConvcliError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        limit = f"{max_pixels:,} pixels (--max-pixels)" if max_pixels else "Pillow's size limit"
        raise LimitError(f"{name}: image is larger than {limit}") from exc
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot read image: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
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


def _check_pixels(width: int, height: int, max_pixels: int, name: str, what: str = "image") -> None:
    """Refuse an image (or a TIFF tile) over ``max_pixels`` pixels, or one with none."""
    pixels = width * height
    if pixels < 1:
        raise InputError(f"{name}: {what} has no pixels ({width}x{height})")
    if pixels > max_pixels:
        raise LimitError(
            f"{name}: {what} is {width}x{height} = {pixels:,} pixels, "
            f"over the limit of {max_pixels:,} (--max-pixels)"
        )


def _check_decoded_bytes(header: ImageHeader, stored: str, max_bytes: int, name: str) -> None:
    """Refuse an image whose decoded samples (stored or returned, the larger) exceed max_bytes."""
    itemsize = max(np.dtype(stored).itemsize, np.dtype(header.dtype).itemsize)
    nbytes = header.width * header.height * header.channels * itemsize
    if nbytes > max_bytes:
        raise LimitError(
            f"{name}: image {header.width}x{header.height} with {header.channels} "
            f"{stored} samples per pixel decodes to {nbytes:,} bytes, over --max-bytes "
            f"{max_bytes:,}"
        )


# ----------------------------------------------------------------- Pillow formats

#: Pillow's bomb check reads a process-wide limit; one thread at a time may lift it.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_open(handle: IO[bytes], fmt: str) -> Iterator[PILImage.Image]:
    """Open ``handle`` lazily (headers only) with Pillow's decoder for ``fmt`` and no other.

    Pillow checks for decompression bombs inside ``Image.open`` against the process-wide
    ``Image.MAX_IMAGE_PIXELS`` (warning above it, raising above twice it). That check is off
    for the duration of this open, which reads headers only (so the lock is held briefly):
    callers check the size themselves right after, against their own ``max_pixels`` and with
    an exact message, so a ``--max-pixels`` above Pillow's limit is honored and a global
    setting made elsewhere does not leak in. Pillow does not re-check when decoding a first
    frame; should it ever raise its bomb error or warning, it becomes a LimitError.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            opened = PILImage.open(handle, formats=[_PILLOW_FORMATS[fmt]])
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved
    try:
        yield opened
    finally:
        opened.close()


def _png16_color(prefix: bytes) -> tuple[int, int] | None:
    """(channels, interlace) of a 16-bit color or gray+alpha PNG, from its IHDR; else None."""
    if prefix[12:16] != b"IHDR" or len(prefix) < 29:
        return None
    bit_depth, color_type, _, _, interlace = struct.unpack(">BBBBB", prefix[24:29])
    channels = {2: 3, 4: 2, 6: 4}.get(color_type)
    if bit_depth != 16 or channels is None:
        return None
    return channels, interlace


def _exif_orientation(opened: PILImage.Image) -> int:
    """The EXIF orientation (1-8) found in the headers; 1 when absent or unreadable.

    Reads only EXIF already parsed from the headers: ``getexif()`` on a PNG would decode the
    whole image to look for a trailing eXIf chunk.
    """
    raw = opened.info.get("exif")
    if not isinstance(raw, bytes):
        return 1
    try:
        exif = PILImage.Exif()
        exif.load(raw)
        value = exif.get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _gray_palette(opened: PILImage.Image) -> bool:
    """Whether every palette entry is gray, from the palette the headers hold.

    ``Image.getpalette()`` would decode the whole image first (a bomb, before its size is
    checked); the header's palette is loaded into a 1x1 image instead, which converts any
    raw palette layout (BGR, planar TIFF colormaps, ...) the way decoding would.
    """
    header_palette = opened.palette
    if header_palette is None:
        return False
    probe = PILImage.new("P", (1, 1))
    try:
        probe.putpalette(
            bytes(header_palette.palette), header_palette.rawmode or header_palette.mode
        )
    except (ValueError, TypeError):
        return False
    palette = probe.getpalette()
    if not palette:
        return False
    reds, greens, blues = palette[0::3], palette[1::3], palette[2::3]
    return reds == greens == blues


_SUFFIX_16: Final = ";16"


def _pillow_plan(opened: PILImage.Image, fmt: str, prefix: bytes, name: str) -> _Plan:
    """Decide, from headers only, what array an opened Pillow image becomes."""
    mode = opened.mode
    transparent = "transparency" in opened.info
    convert: str | None = None
    png16 = _png16_color(prefix) if fmt == "png" else None
    if png16 is not None:
        channels = png16[0]
        if channels == 3 and transparent:
            channels = 4
        dtype, has_alpha = "uint16", channels in (2, 4)
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[png16[0]] + _SUFFIX_16
    elif mode == "P":
        if transparent:
            convert, channels = "RGBA", 4
        elif _gray_palette(opened):
            convert, channels = "L", 1
        else:
            convert, channels = "RGB", 3
        dtype, has_alpha = "uint8", channels == 4
    elif mode in ("L", "RGB") and transparent:
        convert = "LA" if mode == "L" else "RGBA"
        channels, dtype, has_alpha = (2 if mode == "L" else 4), "uint8", True
    elif mode in ("1", "L"):
        convert = "L" if mode == "1" else None
        channels, dtype, has_alpha = 1, "uint8", False
    elif mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        convert = {"La": "LA", "PA": "RGBA", "RGBa": "RGBA"}.get(mode)
        channels = 2 if mode in ("LA", "La") else 4
        dtype, has_alpha = "uint8", True
    elif mode in ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        convert = None if mode == "RGB" else "RGB"
        channels, dtype, has_alpha = 3, "uint8", False
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        channels = 2 if transparent else 1
        dtype, has_alpha = "uint16", transparent
    elif mode == "F":
        channels, dtype, has_alpha = 1, "float32", False
    else:
        raise InputError(f"{name}: cannot read image: unsupported {fmt} pixel mode {mode!r}")
    orientation = _exif_orientation(opened) if fmt in ("jpeg", "png", "webp") else 1
    width, height = opened.size
    if orientation >= 5:  # the four orientations that swap rows and columns
        width, height = height, width
    header = ImageHeader(width, height, channels, dtype, fmt, mode)
    return _Plan(header, has_alpha, convert, orientation, png16)


def _decode_pillow(opened: PILImage.Image, plan: _Plan, handle: IO[bytes], name: str) -> Array:
    """Decode the image ``plan`` describes and check the array matches it."""
    if plan.png16 is not None:
        pixels = _decode_png16(handle, opened, plan.png16)
    else:
        opened.load()
        converted = opened.convert(plan.convert) if plan.convert else opened
        pixels = np.asarray(converted)
        if converted.mode.startswith("I"):
            pixels = _as_uint16(pixels, name)
            transparency = opened.info.get("transparency")
            if isinstance(transparency, int):
                alpha = np.where(pixels == transparency, 0, 65535).astype(np.uint16)
                pixels = np.stack([pixels, alpha], axis=-1)
    pixels = _orient(pixels, plan.orientation)
    return _finish(pixels, plan.header, name)


def _as_uint16(pixels: Array, name: str) -> Array:
    """16-bit gray from Pillow's "I;16*" (any byte order) or 32-bit "I" modes."""
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        return pixels.astype(np.uint16)  # native byte order
    if pixels.size and (int(pixels.min()) < 0 or int(pixels.max()) > 65535):
        raise InputError(f"{name}: cannot read image: integer pixels outside the 16-bit range")
    return pixels.astype(np.uint16)


def _png_idat(handle: IO[bytes]) -> bytes:
    """The concatenated IDAT payload (the zlib stream) of a PNG."""
    handle.seek(len(_PNG_SIGNATURE))
    parts: list[bytes] = []
    while True:
        head = handle.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            data = handle.read(length)
            if len(data) < length:
                raise EOFError("PNG file is truncated")
            parts.append(data)
            handle.seek(4, io.SEEK_CUR)  # CRC
        else:
            handle.seek(length + 4, io.SEEK_CUR)
    return b"".join(parts)


def _decode_png16(handle: IO[bytes], opened: PILImage.Image, png16: tuple[int, int]) -> Array:
    """Decode a 16-bit RGB, RGBA or gray + alpha PNG at full depth.

    Pillow has no 16-bit multi-channel modes: it opens these as 8-bit RGB/RGBA, keeping the
    high bytes. Its PNG decoder (zlib and row unfiltering, Adam7 included) is still used, twice:
    the "RGB;16B"/"RGBA;16B" raw modes keep the high byte of each sample, the ";16L" ones the
    low byte. For gray + alpha, "RGBA" copies the four bytes of each pixel as they are.
    """
    channels, interlace = png16
    stream = _png_idat(handle)
    width, height = opened.size
    if channels == 2:
        raw = np.asarray(
            PILImage.frombytes("RGBA", (width, height), stream, "zip", "RGBA", interlace)
        )
        high, low = raw[..., 0::2], raw[..., 1::2]
    else:
        mode = "RGB" if channels == 3 else "RGBA"
        high = np.asarray(
            PILImage.frombytes(mode, (width, height), stream, "zip", f"{mode};16B", interlace)
        )
        low = np.asarray(
            PILImage.frombytes(mode, (width, height), stream, "zip", f"{mode};16L", interlace)
        )
    pixels: Array = (high.astype(np.uint16) << 8) | low
    key = opened.info.get("transparency")
    if channels == 3 and isinstance(key, tuple) and len(key) == 3:
        opaque = np.any(pixels != np.asarray(key, dtype=np.uint16), axis=-1)
        alpha = np.where(opaque, 65535, 0).astype(np.uint16)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    return pixels


def _orient(pixels: Array, orientation: int) -> Array:
    """Apply an EXIF orientation, as Pillow's ``ImageOps.exif_transpose`` does."""
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


def _finish(pixels: Array, header: ImageHeader, name: str) -> Array:
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


# --------------------------------------------------------------------------- TIFF

#: Compressions (none, deflate, Adobe deflate, LZMA) and predictors (none, horizontal) that
#: tifffile decodes without imagecodecs; other TIFFs go to Pillow's libtiff when it is missing.
_TIFFFILE_PURE_COMPRESSIONS: Final = frozenset({1, 8, 32946, 34925})
_TIFFFILE_PURE_PREDICTORS: Final = frozenset({1, 2})
_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_PALETTE, _TIFF_SEPARATED = 0, 1, 2, 3, 5
#: TIFF sample dtypes read as float32 (exactly, except float64's extra precision).
_TIFF_AS_FLOAT32: Final = frozenset({"int8", "int16", "float16", "float64"})


def _tiff_plan(page: Any, name: str) -> _Plan:
    """Decide, from the first page's tags only, what array a TIFF becomes."""
    if int(page.imagedepth) > 1:
        raise InputError(f"{name}: cannot read image: volumetric TIFF (depth {page.imagedepth})")
    if set(page.axes) - {"Y", "X", "S"}:
        raise InputError(f"{name}: cannot read image: unsupported TIFF layout {page.axes}")
    if page.dtype is None:
        raise InputError(f"{name}: cannot read image: unsupported TIFF sample format")
    stored = np.dtype(page.dtype).name
    photometric = int(page.photometric)
    samples = int(page.samplesperpixel)
    extrasamples = tuple(int(kind) for kind in page.extrasamples)
    use_pillow = not _have_imagecodecs() and (
        int(page.compression) not in _TIFFFILE_PURE_COMPRESSIONS
        or int(page.predictor) not in _TIFFFILE_PURE_PREDICTORS
    )
    if photometric == _TIFF_PALETTE:
        colormap = page.colormap
        if colormap is None or samples != 1:
            raise InputError(f"{name}: cannot read image: broken TIFF palette")
        channels, has_alpha, mode = 3, False, "P"
        dtype = "uint8" if not np.any(np.asarray(colormap) % 257) else "uint16"
    elif photometric in (_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_SEPARATED):
        channels = samples
        alpha_sample = bool(extrasamples) and extrasamples[0] in (1, 2)  # assoc./unassoc. alpha
        has_alpha = alpha_sample and channels in (2, 4) and photometric != _TIFF_SEPARATED
        dtype, mode = _tiff_dtype_mode(stored, channels, photometric, name)
    else:  # YCbCr, CIELab, ...: Pillow converts these to RGB
        if stored != "uint8":
            raise InputError(
                f"{name}: cannot read image: unsupported TIFF color space (photometric "
                f"{photometric}) with {stored} samples"
            )
        channels, has_alpha, mode, dtype, use_pillow = 3, False, "RGB", "uint8", True
    header = ImageHeader(int(page.imagewidth), int(page.imagelength), channels, dtype, "tiff", mode)
    return _Plan(header, has_alpha, use_pillow=use_pillow)


def _tiff_dtype_mode(stored: str, channels: int, photometric: int, name: str) -> tuple[str, str]:
    """The dtype a TIFF's samples are read as, and a Pillow-style mode name for them."""
    if stored == "bool":
        return "uint8", "1"
    if stored in ("uint8", "uint16", "float32"):
        dtype = stored
    elif stored in _TIFF_AS_FLOAT32:
        dtype = "float32"
    else:
        raise InputError(
            f"{name}: cannot read image: TIFF samples of type {stored} are not supported "
            "(uint8, uint16 and float32 are; int8, int16, float16 and float64 are read as "
            "float32); convert the file to .npy"
        )
    if channels == 1:
        return dtype, {"uint8": "L", "uint16": "I;16", "float32": "F"}[dtype]
    if photometric == _TIFF_SEPARATED and channels == 4:
        base = "CMYK"
    else:
        base = {2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    return dtype, base + {"uint8": "", "uint16": _SUFFIX_16, "float32": ";F"}[dtype]


def _read_tiff(handle: IO[bytes], *, name: str, max_pixels: int, max_bytes: int) -> Image:
    with tifffile.TiffFile(handle) as tif:
        if not len(tif.pages):
            raise InputError(f"{name}: cannot read image: the TIFF holds no readable page")
        page = tif.pages.first
        plan = _tiff_plan(page, name)
        _check_pixels(plan.header.width, plan.header.height, max_pixels, name)
        if page.is_tiled:
            # tifffile allocates whole tiles: a 16x16 image in one 65536x65536 tile is 4 GiB.
            tile_pixels = int(page.tilelength) * max(int(page.tiledepth), 1)
            _check_pixels(int(page.tilewidth), tile_pixels, max_pixels, name, "TIFF tile")
        _check_decoded_bytes(plan.header, np.dtype(page.dtype).name, max_bytes, name)
        if not plan.use_pillow:
            pixels = _decode_tiff_page(page, plan, name)
            return Image(pixels, "tiff", plan.has_alpha)
        compression = getattr(page.compression, "name", str(page.compression))
    return Image(
        _read_tiff_with_pillow(handle, plan, compression, name, max_pixels), "tiff", plan.has_alpha
    )


def _decode_tiff_page(page: Any, plan: _Plan, name: str) -> Array:
    """Decode a TIFF page with tifffile and map it to the dtype and layout ``plan`` promises."""
    stored: Array = page.asarray()
    if stored.ndim != len(page.axes):
        raise InputError(f"{name}: cannot read image: unexpected TIFF data shape {stored.shape}")
    pixels = stored.transpose([page.axes.index(axis) for axis in "YXS" if axis in page.axes])
    photometric = int(page.photometric)
    if photometric == _TIFF_PALETTE:
        colormap = np.asarray(page.colormap, dtype=np.uint16).T  # (entries, 3)
        rgb = colormap[pixels]
        pixels = rgb // 257 if plan.header.dtype == "uint8" else rgb
    elif pixels.dtype == np.bool_:
        on, off = (0, 255) if photometric == _TIFF_MINISWHITE else (255, 0)
        pixels = np.where(pixels, on, off)
    elif photometric == _TIFF_MINISWHITE and pixels.dtype.kind == "u":
        maximum = np.iinfo(pixels.dtype).max
        pixels = pixels.copy()
        if pixels.ndim == 3:
            pixels[..., 0] = maximum - pixels[..., 0]
        else:
            pixels = maximum - pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return _finish(pixels.astype(plan.header.dtype, copy=False), plan.header, name)


def _read_tiff_with_pillow(
    handle: IO[bytes], plan: _Plan, compression: str, name: str, max_pixels: int
) -> Array:
    """Decode a TIFF whose codec tifffile lacks with Pillow, if Pillow keeps every bit."""
    handle.seek(0)
    missing = (
        f"{name}: cannot read image: TIFF with {compression} compression and "
        f"{plan.header.channels} x {plan.header.dtype} samples needs the optional imagecodecs "
        "package"
    )
    try:
        with _pillow_open(handle, "tiff") as opened:
            pillow_plan = _pillow_plan(opened, "tiff", b"", name)
            header = pillow_plan.header
            if (header.channels, header.dtype) != (plan.header.channels, plan.header.dtype):
                raise InputError(missing)  # Pillow would lose bits (e.g. 16-bit RGB -> 8-bit)
            return _decode_pillow(opened, pillow_plan, handle, name)
    except ConvcliError:
        raise
    except _DECODE_ERRORS as exc:
        raise InputError(f"{missing} ({_reason(exc)})") from exc


# --------------------------------------------------------------------------- dtype mapping


def to_image_dtype(result: Array, *, dtype: str, range_mode: str = "clip") -> tuple[Array, int]:
    """Map a (float) result to an image dtype.

    Parameters
    ----------
    result : ndarray
        Any real array, typically the float32/float64 output of the engine.
    dtype : {"uint8", "uint16", "float32"}
        The pixel dtype wanted.
    range_mode : {"clip", "normalize", "abs"}
        For ``uint8``/``uint16``: ``"clip"`` rounds half to even (``np.rint``) and clips to
        ``[0, max]``; ``"normalize"`` stretches ``[min, max]`` linearly onto ``[0, max]``, then
        rounds (a constant result becomes all zeros); ``"abs"`` takes the absolute value, then
        rounds and clips. For ``float32`` nothing is rounded or clipped: ``"clip"`` keeps the
        values, ``"abs"`` takes their absolute value and ``"normalize"`` stretches them onto
        ``[0, 1]``.

    Returns
    -------
    converted : ndarray
        Same shape as ``result``, dtype ``dtype``.
    clipped : int
        How many values fell outside ``[0, max]`` after rounding and were clipped (for
        ``float32``: how many finite values overflowed to infinity; normally 0).

    Raises
    ------
    ConvcliError
        Unknown ``dtype`` or ``range_mode``; non-finite values going to an integer dtype or
        being normalized.
    """
    if dtype not in OUT_DTYPES:
        raise ConvcliError(f"unknown output dtype {dtype!r}; expected one of {_or(OUT_DTYPES)}")
    if range_mode not in RANGE_MODES:
        raise ConvcliError(f"unknown range mode {range_mode!r}; expected one of {_or(RANGE_MODES)}")
    values = np.asarray(result)
    if values.dtype.kind not in "biuf":
        raise ConvcliError(f"cannot map {values.dtype} values to image pixels")
    flat = values.reshape(-1)
    if values.dtype.kind == "f" and (dtype != "float32" or range_mode == "normalize"):
        bad = sum(
            int(np.count_nonzero(~np.isfinite(flat[start : start + _CHUNK])))
            for start in range(0, flat.size, _CHUNK)
        )
        if bad:
            fix = "write to .npy or TIFF float32 to keep them"
            if dtype == "float32":
                fix = "use --range clip or abs to keep them"
            raise ConvcliError(f"result has {bad:,} non-finite values (NaN/Inf); {fix}")
    top = 1.0 if dtype == "float32" else float(np.iinfo(dtype).max)
    low, scale = 0.0, 1.0
    if range_mode == "normalize" and flat.size:
        low, high = float(flat.min()), float(flat.max())
        scale = top / (high - low) if high > low else 0.0
    out = np.empty(flat.shape, dtype=dtype)
    clipped = 0
    # Chunks of float64 bound the temporaries; float64 holds every float32 and integer pixel
    # value exactly, so the result does not depend on the chunking or the input's float type.
    for start in range(0, flat.size, _CHUNK):
        work = flat[start : start + _CHUNK].astype(np.float64)
        if range_mode == "abs":
            np.abs(work, out=work)
        elif range_mode == "normalize":
            work -= low
            work *= scale
        if dtype == "float32":
            with np.errstate(over="ignore"):
                converted = work.astype(np.float32)
            clipped += int(np.count_nonzero(np.isinf(converted) & np.isfinite(work)))
            out[start : start + _CHUNK] = converted
            continue
        np.rint(work, out=work)
        if range_mode != "normalize":
            clipped += int(np.count_nonzero(work < 0)) + int(np.count_nonzero(work > top))
        np.clip(work, 0.0, top, out=work)
        out[start : start + _CHUNK] = work
    return out.reshape(values.shape), clipped


#: Elements per block in :func:`to_image_dtype`.
_CHUNK: Final = 1 << 20


def _or(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


# --------------------------------------------------------------------------- alpha


def split_alpha(pixels: Array) -> tuple[Array, Array | None]:
    """Split off the alpha channel of gray + alpha or RGBA pixels.

    Returns
    -------
    color : ndarray
        ``(H, W)`` for 2 channels, ``(H, W, 3)`` for 4; ``pixels`` itself otherwise.
    alpha : ndarray or None
        ``(H, W)`` (a view), or None when ``pixels`` has not 2 or 4 channels.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (2, 4):
        return pixels, None
    color = pixels[:, :, 0] if pixels.shape[2] == 2 else pixels[:, :, :3]
    return color, pixels[:, :, -1]


def merge_alpha(color: Array, alpha: Array) -> Array:
    """Append ``alpha`` to ``color`` as its last channel, in ``color``'s dtype.

    ``color`` is ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; ``alpha`` is ``(H, W)``.
    Alpha follows the dtype change: uint8 -> uint16 multiplies by 257, uint16 -> uint8
    divides by 257 and rounds; to float32 the values are kept; float to an integer dtype
    rounds and clips.

    Raises
    ------
    ConvcliError
        The two do not have the same height and width (e.g. after a stride or pooling).
    """
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if color.ndim not in (2, 3) or alpha.ndim != 2 or color.shape[:2] != alpha.shape:
        raise ConvcliError(
            f"the alpha channel {alpha.shape} does not fit the filtered image {color.shape}; "
            "use --filter-alpha to filter it along"
        )
    stacked = color if color.ndim == 3 else color[:, :, None]
    return np.concatenate([stacked, _alpha_as(alpha, color.dtype)[:, :, None]], axis=2)


def _alpha_as(alpha: Array, dtype: np.dtype[Any]) -> Array:
    if alpha.dtype == dtype:
        return alpha
    if dtype.kind == "f":
        return alpha.astype(dtype)
    top = float(np.iinfo(dtype).max)
    values = alpha.astype(np.float64)
    if alpha.dtype.kind in "ui":
        values *= top / float(np.iinfo(alpha.dtype).max)
    return np.clip(np.rint(values), 0.0, top).astype(dtype)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _WriteRule:
    """What a format can hold."""

    dtypes: tuple[str, ...]
    #: Channel counts it holds (None: any).
    channels: tuple[int, ...] | None
    #: Largest width or height.
    max_side: int


_WRITE_RULES: Final = {
    "png": _WriteRule(("uint8", "uint16"), (1, 2, 3, 4), 2**31 - 1),
    "jpeg": _WriteRule(("uint8",), (1, 3), 65_500),  # libjpeg's JPEG_MAX_DIMENSION
    "tiff": _WriteRule(("uint8", "uint16", "float32"), None, 2**32 - 1),
    "bmp": _WriteRule(("uint8",), (1, 3), 2**31 - 1),  # Pillow writes RGBA BMPs it reads as RGB
    "gif": _WriteRule(("uint8",), (1, 3), 65_535),
    "webp": _WriteRule(("uint8",), (1, 2, 3, 4), 16_383),  # gray is stored as RGB
}
_CHANNEL_NAMES: Final = {1: "gray", 2: "gray + alpha", 3: "RGB", 4: "RGBA"}


def check_writable(pixels_shape: tuple[int, ...], dtype: str, format: str, *, name: str) -> None:
    """Refuse, from shape and dtype alone, pixels that ``format`` cannot hold.

    Parameters
    ----------
    pixels_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    dtype : str
        The pixel dtype to be written.
    format : str
        A key of :data:`IMAGE_FORMATS`.
    name : str
        The output path or ``"<stdout>"``, used in messages.

    Raises
    ------
    ConvcliError
        Unknown format, a shape that is no image, or a dtype, channel count or size the
        format cannot hold; the message names a format (or .npy) that can.
    """
    rule = _WRITE_RULES.get(format)
    if rule is None:
        raise ConvcliError(
            f"{name}: unknown image format {format!r}; expected one of {_or(tuple(_WRITE_RULES))}"
        )
    label = _LABELS[format]
    shape = tuple(int(n) for n in pixels_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ConvcliError(
            f"{name}: an image is (height, width) or (height, width, channels), not {shape}; "
            "write .npy or .npz"
        )
    try:
        dtype_name = np.dtype(dtype).name
    except TypeError as exc:
        raise ConvcliError(f"{name}: unknown dtype {dtype!r}") from exc
    channels = shape[2] if len(shape) == 3 else 1
    if dtype_name not in rule.dtypes:
        if dtype_name == "float32":
            fix = "write TIFF or .npy, or pass --out-dtype uint8"
        elif dtype_name == "uint16":
            fix = "write PNG or TIFF, or pass --out-dtype uint8"
        else:
            fix = f"images hold {_or(OUT_DTYPES)}: pass --out-dtype, or write .npy"
        raise ConvcliError(f"{name}: {label} cannot hold {dtype_name} data; {fix}")
    if rule.channels is not None and channels not in rule.channels:
        holders = [
            _LABELS[other]
            for other, other_rule in _WRITE_RULES.items()
            if dtype_name in other_rule.dtypes
            and (other_rule.channels is None or channels in other_rule.channels)
        ]
        if channels not in _CHANNEL_NAMES:
            holders += [".npy", ".npz"]
        what = _CHANNEL_NAMES.get(channels, f"{channels} channels")
        raise ConvcliError(
            f"{name}: {label} cannot hold {what} images ({channels} channels); "
            f"write {_or(tuple(holders))}"
        )
    height, width = shape[:2]
    if max(height, width) > rule.max_side:
        raise ConvcliError(
            f"{name}: {label} images are at most {rule.max_side:,} pixels on a side, "
            f"not {width}x{height}; write TIFF or .npy"
        )


def encode_image(pixels: Array, *, format: str, quality: int | None = None, name: str) -> bytes:
    """Encode pixels as an image file's bytes, deterministically.

    Parameters
    ----------
    pixels : ndarray
        ``(H, W)`` or ``(H, W, C)``; ``(H, W, 1)`` is written as gray. 2 and 4 channels are
        gray + alpha and RGBA.
    format : str
        A key of :data:`IMAGE_FORMATS`. PNG: uint8 or uint16, 1-4 channels. JPEG: uint8 gray
        or RGB (4:4:4 chroma at quality >= 90, else 4:2:0, as ImageMagick). TIFF: uint8, uint16
        or float32 with any channel count, deflate-compressed. BMP: uint8 gray or RGB. GIF:
        uint8 gray or RGB (RGB is quantized to 256 colors). WebP: uint8; gray is stored as RGB.
    quality : int, optional
        JPEG and WebP quality, 1-100 (default :data:`DEFAULT_QUALITY`); ignored by lossless
        formats.
    name : str
        The output path or ``"<stdout>"``, used in messages.

    Returns
    -------
    bytes
        The file's contents; the same pixels always give the same bytes.

    Raises
    ------
    ConvcliError
        The format cannot hold the pixels (see :func:`check_writable`), or encoding failed.
    """
    array = np.asarray(pixels)
    check_writable(array.shape, str(array.dtype), format, name=name)
    if quality is None:
        quality = DEFAULT_QUALITY
    if not 1 <= quality <= 100:
        raise ConvcliError(f"{name}: quality must be between 1 and 100, not {quality}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    array = np.ascontiguousarray(array)
    try:
        if format == "tiff":
            return _encode_tiff(array)
        if format == "png" and array.dtype == np.uint16 and array.ndim == 3:
            return _encode_png16(array)
        options: dict[str, Any] = {}
        if format == "png":
            options = {"compress_level": PNG_COMPRESS_LEVEL}
        elif format == "jpeg":
            options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
        elif format == "webp":
            options = {"quality": quality}
        encoded = iio.imwrite(
            "<bytes>", array, extension=IMAGE_FORMATS[format][0], plugin="pillow", **options
        )
    except (OSError, ValueError, TypeError, KeyError, struct.error, zlib.error) as exc:
        raise ConvcliError(f"{name}: cannot encode {_LABELS[format]}: {_reason(exc)}") from exc
    except MemoryError as exc:
        raise ConvcliError(f"{name}: cannot encode {_LABELS[format]}: out of memory") from exc
    return bytes(encoded)


def _encode_tiff(array: Array) -> bytes:
    """A deflate-compressed, single-page TIFF (horizontal predictor for integer samples)."""
    channels = array.shape[2] if array.ndim == 3 else 1
    options: dict[str, Any] = {
        "photometric": "rgb" if channels in (3, 4) else "minisblack",
        "compression": "zlib",
        "compressionargs": {"level": PNG_COMPRESS_LEVEL},
        "metadata": None,  # no JSON ImageDescription
    }
    if array.dtype.kind == "u":
        options["predictor"] = "horizontal"
    if channels > 1:
        options["planarconfig"] = "contig"
    if channels in (2, 4):
        options["extrasamples"] = ("unassalpha",)
    encoded = iio.imwrite("<bytes>", array, extension=".tif", plugin="tifffile", **options)
    return bytes(encoded)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _encode_png16(array: Array) -> bytes:
    """A 16-bit gray + alpha, RGB or RGBA PNG (Pillow cannot write these)."""
    height, width, channels = array.shape
    color_type = {2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)
    filtered = _png_filter_rows(rows, bytes_per_pixel=2 * channels)
    stream = zlib.compress(filtered.tobytes(), PNG_COMPRESS_LEVEL)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    chunk_size = 1 << 20
    idat = b"".join(
        _png_chunk(b"IDAT", stream[start : start + chunk_size])
        for start in range(0, max(len(stream), 1), chunk_size)
    )
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + idat + _png_chunk(b"IEND", b"")


def _png_filter_rows(rows: Array, *, bytes_per_pixel: int) -> Array:
    """PNG-filter byte rows, choosing per row the filter with the smallest sum of |residual|.

    That is libpng's heuristic. Returns ``(H, 1 + row bytes)`` uint8: the filter type, then
    the filtered bytes. Works in blocks of rows to bound the temporaries.
    """
    height, stride = rows.shape
    out = np.empty((height, stride + 1), dtype=np.uint8)
    block = max(1, (1 << 20) // max(stride, 1))
    above = np.zeros(stride, dtype=np.int16)
    for start in range(0, height, block):
        current = rows[start : start + block].astype(np.int16)
        up = np.concatenate([above[None, :], current[:-1]], axis=0)
        left = np.zeros_like(current)
        left[:, bytes_per_pixel:] = current[:, :-bytes_per_pixel]
        up_left = np.zeros_like(up)
        up_left[:, bytes_per_pixel:] = up[:, :-bytes_per_pixel]
        estimate = left + up - up_left
        distance_left = np.abs(estimate - left)
        distance_up = np.abs(estimate - up)
        distance_up_left = np.abs(estimate - up_left)
        paeth = np.where(
            (distance_left <= distance_up) & (distance_left <= distance_up_left),
            left,
            np.where(distance_up <= distance_up_left, up, up_left),
        )
        candidates = (
            np.stack(
                [
                    current,
                    current - left,
                    current - up,
                    current - ((left + up) >> 1),
                    current - paeth,
                ]
            )
            & 0xFF
        )
        cost = np.minimum(candidates, 256 - candidates).sum(axis=2, dtype=np.int64)
        choice = np.argmin(cost, axis=0)
        stop = start + current.shape[0]
        out[start:stop, 0] = choice
        out[start:stop, 1:] = candidates[choice, np.arange(current.shape[0])]
        above = current[-1]
    return out
