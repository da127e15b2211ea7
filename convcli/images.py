"""Reading and writing images, and mapping float results back to image dtypes.

Reading checks an image's size from its header against ``max_pixels`` before any pixel data is
decoded, for every format, and runs only the decoder that matches the file's magic bytes (the
file extension is not trusted). PNG, JPEG, BMP, GIF and WebP are decoded by Pillow, TIFF by
tifffile (Pillow's libtiff takes over for TIFF compressions tifffile cannot decode without the
optional imagecodecs package). PNG is written by :mod:`convcli.png` (Pillow writes no 16-bit
color PNG, and its writer took 6x longer on photographs); the other formats go through
imageio's v3 front door (``imageio.v3.imwrite``).

This module is the front door; the details sit behind it: :mod:`convcli.decoding` (what every
decoder shares: headers, plans, size checks, error mapping), :mod:`convcli.pillow_decode`,
:mod:`convcli.tiff`, :mod:`convcli.png` and :mod:`convcli.pixels` (dtype and range mapping,
alpha).

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
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from convcli.decoding import (
    Image,
    ImageHeader,
    check_decoded_bytes,
    check_pixels,
    decoder_errors,
    reason,
)
from convcli.errors import ConvcliError, InputError, join_or
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from convcli.pillow_decode import decode_pillow, pillow_open, pillow_plan
from convcli.pixels import OUT_DTYPES, RANGE_MODES, merge_alpha, split_alpha, to_image_dtype
from convcli.png import PNG_SIGNATURE, encode_png

# TIFF (tifffile) and the formats written through imageio are imported where they are used:
# together they take about 15 ms to import, a twentieth of a PNG-to-PNG command's run.

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
#: JPEG and WebP quality when none is given.
DEFAULT_QUALITY: Final = 95
#: zlib level of TIFF output and of the PNG pieces deflated with zlib's default strategy
#: (see :func:`convcli.png.encode_png`): zlib's and Pillow's default. Measured on 1280x960
#: RGB: level 1 is about 2x faster but 2-25% larger, level 9 at most 3% smaller but up to 6x
#: slower.
PNG_COMPRESS_LEVEL: Final = 6
_LABELS: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WebP",
}


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
    if head.startswith(PNG_SIGNATURE):
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
    from PIL import features

    return bool(features.check("webp"))


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
        with decoder_errors(name, max_pixels=None):
            if fmt == "tiff":
                from convcli.tiff import read_tiff_header

                return read_tiff_header(handle, name)
            with pillow_open(handle, fmt) as opened:
                return pillow_plan(opened, fmt, prefix, name).header


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
        with decoder_errors(name, max_pixels=max_pixels):
            if fmt == "tiff":
                from convcli.tiff import read_tiff

                return read_tiff(handle, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
            with pillow_open(handle, fmt) as opened:
                # The size first: planning may look at the palette, which must not decode.
                check_pixels(*opened.size, max_pixels, name)
                plan = pillow_plan(opened, fmt, prefix, name)
                check_decoded_bytes(plan.header, plan.header.dtype, max_bytes, name)
                pixels = decode_pillow(opened, plan, handle, name)
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
            f"{name}: unknown image format {format!r}; "
            f"expected one of {join_or(tuple(_WRITE_RULES))}"
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
            fix = f"images hold {join_or(OUT_DTYPES)}: pass --out-dtype, or write .npy"
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
            f"write {join_or(tuple(holders))}"
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
            from convcli.tiff import encode_tiff

            return encode_tiff(array, level=PNG_COMPRESS_LEVEL)
        if format == "png":
            return encode_png(array, level=PNG_COMPRESS_LEVEL)
        options: dict[str, Any] = {}
        if format == "jpeg":
            options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
        elif format == "webp":
            options = {"quality": quality}
        import imageio.v3 as iio

        encoded = iio.imwrite(
            "<bytes>", array, extension=IMAGE_FORMATS[format][0], plugin="pillow", **options
        )
    except (OSError, ValueError, TypeError, KeyError, struct.error, zlib.error) as exc:
        raise ConvcliError(f"{name}: cannot encode {_LABELS[format]}: {reason(exc)}") from exc
    except MemoryError as exc:
        raise ConvcliError(f"{name}: cannot encode {_LABELS[format]}: out of memory") from exc
    return bytes(encoded)
