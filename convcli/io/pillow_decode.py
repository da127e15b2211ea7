"""Decoding the formats Pillow reads (PNG, JPEG, BMP, GIF, WebP; TIFF as a fallback).

The image is opened lazily (headers only), planned from its headers (:func:`pillow_plan`),
and decoded only after the front door has checked the plan's size. 16-bit color PNGs go to
:func:`convcli.io.png.decode_png16`, since Pillow would keep only their high bytes.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from convcli.errors import InputError
from convcli.io.decoding import SUFFIX_16, DecodePlan, ImageHeader, finish, orient
from convcli.io.png import decode_png16, png16_color

__all__ = ["PILLOW_FORMATS", "decode_pillow", "pillow_open", "pillow_plan"]

Array = npt.NDArray[Any]

#: Pillow's name of each format it decodes here.
PILLOW_FORMATS: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WEBP",
}

#: Pillow's plugin module for each of :data:`PILLOW_FORMATS`.
_PILLOW_PLUGINS: Final = {
    "png": "PngImagePlugin",
    "jpeg": "JpegImagePlugin",
    "tiff": "TiffImagePlugin",
    "bmp": "BmpImagePlugin",
    "gif": "GifImagePlugin",
    "webp": "WebPImagePlugin",
}

#: Pillow's bomb check reads a process-wide limit; one thread at a time may lift it.
_PILLOW_LIMIT_LOCK = threading.Lock()


def _load_plugin(fmt: str) -> None:
    """Import Pillow's plugin for ``fmt`` alone, instead of the five ``Image.open`` loads.

    Given a handle, ``Image.open`` first runs ``Image.preinit``, which imports the BMP, GIF,
    JPEG, PPM and PNG plugins: about 10 ms of a one-PNG command's start-up. Pillow skips that
    itself when it opens a file name whose extension's plugin is loaded; convcli opens a
    handle (the format comes from the magic bytes, checked first), so it imports the plugin
    and marks Pillow's preinit as done (``Image._initialized``, a private flag: the one way
    to skip it for a handle). No format is lost: an open or save, by convcli or anyone in
    the process, of a format whose plugin is not loaded yet loads them all (``Image.init``),
    as Pillow does for every format preinit does not cover.
    """
    try:
        importlib.import_module(f"PIL.{_PILLOW_PLUGINS[fmt]}")
    except ImportError:  # as in preinit: Image.open finds what this Pillow has
        return
    if PILLOW_FORMATS[fmt] in PILImage.OPEN and PILImage._initialized < 1:
        PILImage._initialized = 1


@contextlib.contextmanager
def pillow_open(handle: IO[bytes], fmt: str) -> Iterator[PILImage.Image]:
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
        _load_plugin(fmt)
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            opened = PILImage.open(handle, formats=[PILLOW_FORMATS[fmt]])
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved
    try:
        yield opened
    finally:
        opened.close()


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


def pillow_plan(opened: PILImage.Image, fmt: str, prefix: bytes, name: str) -> DecodePlan:
    """Decide, from headers only, what array an opened Pillow image becomes."""
    mode = opened.mode
    transparent = "transparency" in opened.info
    convert: str | None = None
    transparent_gray: int | None = None
    png16 = png16_color(prefix) if fmt == "png" else None
    if png16 is not None:
        channels = png16[0]
        if channels == 3 and transparent:
            channels = 4
        dtype, has_alpha = "uint16", channels in (2, 4)
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[png16[0]] + SUFFIX_16
    elif mode == "P":
        if transparent:
            convert, channels = "RGBA", 4
        elif _gray_palette(opened):
            convert, channels = "L", 1
        else:
            convert, channels = "RGB", 3
        dtype, has_alpha = "uint8", channels == 4
    elif mode in ("1", "L", "RGB") and transparent:
        convert = "RGBA" if mode == "RGB" else "LA"
        channels, dtype, has_alpha = (4 if mode == "RGB" else 2), "uint8", True
        if fmt == "png" and mode != "RGB":
            transparent_gray = _png_transparent_gray(opened, prefix)
            convert = "L" if transparent_gray is not None else convert
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
    return DecodePlan(
        header, has_alpha, convert, orientation, png16, transparent_gray=transparent_gray
    )


def _png_transparent_gray(opened: PILImage.Image, prefix: bytes) -> int | None:
    """The 8-bit gray value a gray PNG's tRNS makes transparent (None: no usable tRNS).

    Pillow scales 1-bit pixels and their tRNS value to 0/255, but 2 and 4-bit pixels only:
    their tRNS value stays as stored, so Pillow's own conversion would keep them opaque.
    """
    value = opened.info.get("transparency")
    if not isinstance(value, int):
        return None
    if opened.mode == "1":
        return 255 if value else 0
    bits = prefix[24] if len(prefix) > 25 and prefix[12:16] == b"IHDR" else 8
    if bits < 8:
        top = (1 << bits) - 1
        # A value above the bit depth marks no pixel: -1 matches none.
        return value * (255 // top) if value <= top else -1
    return value


def decode_pillow(opened: PILImage.Image, plan: DecodePlan, handle: IO[bytes], name: str) -> Array:
    """Decode the image ``plan`` describes and check the array matches it."""
    if plan.png16 is not None:
        pixels = decode_png16(handle, opened, plan.png16)
    else:
        opened.load()
        converted = opened.convert(plan.convert) if plan.convert else opened
        pixels = pillow_array(converted)
        if plan.transparent_gray is not None:
            alpha = np.where(pixels == plan.transparent_gray, 0, 255).astype(np.uint8)
            pixels = np.stack([pixels, alpha], axis=-1)
        elif converted.mode.startswith("I"):
            pixels = _as_uint16(pixels, name)
            transparency = opened.info.get("transparency")
            if isinstance(transparency, int):
                alpha = np.where(pixels == transparency, 0, 65535).astype(np.uint16)
                pixels = np.stack([pixels, alpha], axis=-1)
    pixels = orient(pixels, plan.orientation)
    return finish(pixels, plan.header, name)


def _as_uint16(pixels: Array, name: str) -> Array:
    """16-bit gray from Pillow's "I;16*" (any byte order) or 32-bit "I" modes."""
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        return pixels.astype(np.uint16)  # native byte order
    if pixels.size and (int(pixels.min()) < 0 or int(pixels.max()) > 65535):
        raise InputError(f"{name}: cannot read image: integer pixels outside the 16-bit range")
    return pixels.astype(np.uint16)


#: Pillow modes whose raw bytes are uint8 samples, by channel count.
_RAW_UINT8_MODES: Final = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def pillow_array(image: PILImage.Image) -> Array:
    """The pixels of a loaded Pillow image as a new array, copied once.

    ``np.asarray`` goes through ``tobytes``, which joins the raw encoder's pieces into a
    second full-size copy; for a 24-megapixel photo that is 72 MB more at the peak. The
    common 8-bit modes are instead encoded piece by piece straight into the array (the same
    raw encoder ``tobytes`` uses); other modes take ``np.asarray``.
    """
    channels = _RAW_UINT8_MODES.get(image.mode)
    width, height = image.size
    if channels is None or not width or not height:
        return np.asarray(image)
    from PIL import ImageFile

    out = np.empty((height, width, channels) if channels > 1 else (height, width), np.uint8)
    flat = out.reshape(-1)
    encoder = PILImage._getencoder(image.mode, "raw", image.mode)
    try:
        encoder.setimage(image.im, (0, 0, width, height))
        piece = max(ImageFile.MAXBLOCK, width * 4)
        filled = 0
        while True:
            _, status, data = encoder.encode(piece)
            flat[filled : filled + len(data)] = np.frombuffer(data, np.uint8)
            filled += len(data)
            if status:
                break
    finally:
        encoder.cleanup()
    if status < 0 or filled != out.size:
        return np.asarray(image)
    return out
