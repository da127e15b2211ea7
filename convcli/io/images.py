"""Reading and writing images, and mapping float results back to image dtypes.

Reading checks an image's size from its header against ``max_pixels`` before any pixel data is
decoded, for every format, and runs only the decoder that matches the file's magic bytes (the
file extension is not trusted). PNG, JPEG, BMP, GIF and WebP are decoded by Pillow, TIFF by
tifffile (Pillow's libtiff takes over for TIFF compressions tifffile cannot decode without the
optional imagecodecs package). PNG is written by :mod:`convcli.io.png` (Pillow writes no 16-bit
color PNG, and its writer took 6x longer on photographs); the other formats go through
imageio's v3 front door (``imageio.v3.imwrite``).

This module is the front door; the details sit behind it: :mod:`convcli.io.decoding` (what every
decoder shares: headers, plans, size checks, error mapping), :mod:`convcli.io.pillow_decode`,
:mod:`convcli.io.tiff`, :mod:`convcli.io.png` and :mod:`convcli.io.pixels` (dtype and range mapping,
alpha).

What :func:`read_image` returns:

- gray ``(H, W)``, gray + alpha ``(H, W, 2)``, RGB ``(H, W, 3)``, RGBA ``(H, W, 4)``; a TIFF may
  hold any number of channels ``(H, W, C)``.
- dtype ``uint8``, ``uint16`` or ``float32``. 1-bit images become ``uint8`` 0/255 (white 255).
  Palette images are expanded to RGB, to RGBA when the palette has transparency, and to gray
  when every palette entry is gray. 16-bit PNGs stay ``uint16``, color ones included (Pillow
  alone would truncate those to 8 bits). TIFF int8, int16, float16 and float64 samples are read
  as float32; other TIFF sample types are refused.
- The EXIF orientation of JPEG, WebP and PNG images, and TIFF's Orientation tag, are
  applied, so the pixels are what a viewer shows (outputs carry EXIF with Orientation 1).
- The metadata (:class:`~convcli.io.decoding.Metadata`: ICC, EXIF, XMP, DPI, PNG text) and a
  JPEG's quantization tables come along. This reads one frame (page); every frame of GIF,
  APNG, WebP and multi-page TIFF is read by :mod:`convcli.io.frames`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy.typing as npt

from convcli.errors import ConvcliError, InputError
from convcli.io.decoding import (
    Image,
    ImageHeader,
    JpegSettings,
    check_decoded_bytes,
    check_pixels,
    decoder_errors,
)
from convcli.io.image_meta import pillow_metadata
from convcli.io.image_write import (
    DEFAULT_QUALITY,
    IMAGE_FORMATS,
    LABELS,
    MULTI_FRAME_FORMATS,
    PNG_COMPRESS_LEVEL,
    Animation,
    FrameWriter,
    check_frames,
    check_writable,
    encode_image,
)
from convcli.io.pillow_decode import decode_pillow, pillow_open, pillow_plan
from convcli.io.pixels import OUT_DTYPES, RANGE_MODES, merge_alpha, split_alpha, to_image_dtype
from convcli.io.png import PNG_SIGNATURE
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

# TIFF (tifffile) and the formats written through imageio are imported where they are used:
# together they take about 15 ms to import, a twentieth of a PNG-to-PNG command's run.

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_QUALITY",
    "IMAGE_FORMATS",
    "LABELS",
    "MULTI_FRAME_FORMATS",
    "Animation",
    "FrameWriter",
    "check_frames",
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
                from convcli.io.tiff import read_tiff_header

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
                from convcli.io.tiff import read_tiff

                return read_tiff(handle, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
            with pillow_open(handle, fmt) as opened:
                # The size first: planning may look at the palette, which must not decode.
                check_pixels(*opened.size, max_pixels, name)
                plan = pillow_plan(opened, fmt, prefix, name)
                check_decoded_bytes(plan.header, plan.header.dtype, max_bytes, name)
                pixels = decode_pillow(opened, plan, handle, name)
                metadata = pillow_metadata(opened.info, fmt)
                jpeg = jpeg_settings(opened) if fmt == "jpeg" else None
            return Image(pixels, fmt, plan.has_alpha, metadata, jpeg)


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


def jpeg_settings(opened: Any) -> JpegSettings | None:
    """A JPEG's quantization tables and chroma subsampling, as Pillow read them."""
    from PIL import JpegImagePlugin

    tables = getattr(opened, "quantization", None)
    if not tables:
        return None
    try:
        subsampling = JpegImagePlugin.get_sampling(opened)
    except Exception:  # an odd sampling layout: let the encoder choose
        return None
    if subsampling < 0:
        return None
    ordered = tuple(tuple(int(v) for v in tables[key]) for key in sorted(tables))
    return JpegSettings(ordered, subsampling)
