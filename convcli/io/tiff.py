"""TIFF: reading any page with tifffile (or, where it lacks a codec, libtiff), and writing.

Tags are read before pixels: :func:`tiff_plan` decides from a page's tags what array it
becomes, so its size is checked (tiles included) before anything is decoded. One of three
routes then decodes the page's samples:

- tifffile, for the codecs and sample widths it handles without the imagecodecs package;
- :func:`convcli.io.tiff_decode.read_segments`, for LZW, PackBits and Zstandard strips (which
  libtiff decompresses) and for 2, 4, 12-bit and other odd sample widths;
- Pillow, for JPEG and CCITT fax compression and the colour spaces Pillow converts to RGB
  (YCbCr, CIELab).

Samples become pixels the same way on every route, as ImageMagick and libvips read them:
palettes are expanded, min-is-white inverted, odd widths scaled to 8 or 16 bits (rounded, so
4-bit 15 is 255 and 12-bit 4095 is 65535), CMYK converted to RGB without a profile, associated
alpha un-premultiplied, and the Orientation tag applied. Samples past the photometric's colour
channels are alpha only when the ExtraSamples tag says so.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from functools import cache
from typing import IO, Any, Final, Literal

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import tifffile

from convcli.errors import ConvcliError, InputError
from convcli.io.c_stderr import c_stderr_silenced
from convcli.io.decoding import (
    DECODE_ERRORS,
    SUFFIX_16,
    DecodePlan,
    Image,
    ImageHeader,
    check_decoded_bytes,
    check_pixels,
    finish,
    orient,
    reason,
)
from convcli.io.pillow_decode import decode_pillow, pillow_open, pillow_plan
from convcli.io.tiff_decode import SEGMENT_COMPRESSIONS, read_segments
from convcli.io.tiff_meta import main_pages, tiff_metadata, tiff_orientation
from convcli.io.tiff_pixels import cmyk_to_rgb, expand_palette, rescale, unpremultiply

__all__ = ["encode_tiff", "read_tiff", "read_tiff_header", "tiff_page_count", "tiff_plan"]

Array = npt.NDArray[Any]

#: Compressions (none, deflate, Adobe deflate, LZMA) and predictors (none, horizontal) that
#: tifffile decodes without imagecodecs.
_TIFFFILE_PURE_COMPRESSIONS: Final = frozenset({1, 8, 32946, 34925})
_TIFFFILE_PURE_PREDICTORS: Final = frozenset({1, 2})
#: Sample widths tifffile unpacks without imagecodecs.
_TIFFFILE_PURE_BITS: Final = frozenset({1, 8, 16, 32, 64})
_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_PALETTE, _TIFF_SEPARATED = 0, 1, 2, 3, 5
_BASE_PHOTOMETRICS: Final = frozenset({0, 1, 2, 3, 5})
_INKSET_TAG, _INKSET_CMYK, _ORIENTATION_TAG = 332, 1, 274
_EXTRASAMPLE_ASSOCIATED, _EXTRASAMPLE_UNASSOCIATED = 1, 2
#: TIFF sample dtypes read as float32 (exactly, except float64's extra precision).
_TIFF_AS_FLOAT32: Final = frozenset({"int8", "int16", "float16", "float64"})
#: How a page's samples are decoded (see the module docstring).
_Route = Literal["tifffile", "segments", "pillow"]


@cache
def _have_imagecodecs() -> bool:
    return importlib.util.find_spec("imagecodecs") is not None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one page's stored samples become the array :func:`read_tiff` returns."""

    plan: DecodePlan
    route: _Route
    photometric: int
    bits: int
    #: Stored colour samples: 1 (gray, palette index), 3 (RGB), 4 (CMYK), or every sample.
    colour: int
    cmyk: bool
    premultiplied: bool
    orientation: int


def tiff_plan(page: Any, name: str) -> DecodePlan:
    """Decide, from a page's tags only, what array it becomes (after orientation)."""
    return _layout(page, name).plan


def _layout(page: Any, name: str) -> _Layout:
    if int(page.imagedepth) > 1:
        raise InputError(f"{name}: cannot read image: volumetric TIFF (depth {page.imagedepth})")
    if set(page.axes) - {"Y", "X", "S"}:
        raise InputError(f"{name}: cannot read image: unsupported TIFF layout {page.axes}")
    if page.dtype is None:
        raise InputError(f"{name}: cannot read image: unsupported TIFF sample format")
    stored = np.dtype(page.dtype).name
    photometric, bits = int(page.photometric), int(page.bitspersample)
    samples = int(page.samplesperpixel)
    orientation = tiff_orientation(page)
    route = _route(page, photometric, bits)
    if photometric not in _BASE_PHOTOMETRICS:  # YCbCr, CIELab, ...: Pillow converts to RGB
        if stored != "uint8":
            raise InputError(
                f"{name}: cannot read image: unsupported TIFF color space (photometric "
                f"{photometric}) with {stored} samples"
            )
        header = _header(page, 3, "uint8", "RGB", orientation)
        plan = DecodePlan(header, False, use_pillow=True)
        return _Layout(plan, "pillow", photometric, bits, samples, False, False, orientation)
    colour = _colour_samples(page, photometric, samples, name)
    cmyk = photometric == _TIFF_SEPARATED and colour == 4
    extra = samples - colour
    extrasamples = tuple(int(kind) for kind in page.extrasamples)
    alpha_kind = extrasamples[0] if extra and extrasamples else 0
    if photometric == _TIFF_PALETTE:
        if page.colormap is None:
            raise InputError(f"{name}: cannot read image: broken TIFF palette (no colormap)")
        dtype = "uint8" if not np.any(np.asarray(page.colormap) % 257) else "uint16"
        channels = 3 + extra
    else:
        dtype = _tiff_dtype(stored, name)
        channels = (3 if cmyk else colour) + extra
    has_alpha = (
        alpha_kind in (_EXTRASAMPLE_ASSOCIATED, _EXTRASAMPLE_UNASSOCIATED)
        and extra == 1
        and channels in (2, 4)
    )
    premultiplied = alpha_kind == _EXTRASAMPLE_ASSOCIATED and photometric != _TIFF_PALETTE
    mode = _mode(photometric, cmyk, bits, channels, has_alpha, premultiplied, dtype)
    header = _header(page, channels, dtype, mode, orientation)
    plan = DecodePlan(header, has_alpha, use_pillow=route == "pillow")
    return _Layout(plan, route, photometric, bits, colour, cmyk, premultiplied, orientation)


def _route(page: Any, photometric: int, bits: int) -> _Route:
    """Which route decodes the page (see the module docstring)."""
    compression, predictor = int(page.compression), int(page.predictor)
    if photometric not in _BASE_PHOTOMETRICS:
        return "pillow"
    if _have_imagecodecs():
        return "tifffile"
    if (
        compression in _TIFFFILE_PURE_COMPRESSIONS
        and predictor in _TIFFFILE_PURE_PREDICTORS
        and bits in _TIFFFILE_PURE_BITS
    ):
        return "tifffile"
    if compression in SEGMENT_COMPRESSIONS and (
        predictor == 1 or (predictor == 2 and bits % 8 == 0)
    ):
        return "segments"
    return "pillow"


def _colour_samples(page: Any, photometric: int, samples: int, name: str) -> int:
    """How many of the samples are colour; the rest are alpha or extra channels."""
    if photometric == _TIFF_RGB:
        colour = 3
    elif photometric == _TIFF_SEPARATED:
        inkset = page.tags.valueof(_INKSET_TAG, default=_INKSET_CMYK)
        # CMYK (converted to RGB) when there are four inks; other separations stay as stored.
        return 4 if inkset == _INKSET_CMYK and samples >= 4 else samples
    else:
        colour = 1
    if samples < colour:
        raise InputError(
            f"{name}: cannot read image: TIFF photometric {photometric} needs {colour} samples "
            f"per pixel, the page has {samples}"
        )
    return colour


def _tiff_dtype(stored: str, name: str) -> str:
    """The dtype a TIFF's samples are read as."""
    if stored in ("bool", "uint8"):  # 1 to 8 bits
        return "uint8"
    if stored in ("uint16", "float32"):  # uint16: 9 to 16 bits
        return stored
    if stored in _TIFF_AS_FLOAT32:
        return "float32"
    raise InputError(
        f"{name}: cannot read image: TIFF samples of type {stored} are not supported "
        "(uint8, uint16 and float32 are; int8, int16, float16 and float64 are read as "
        "float32); convert the file to .npy"
    )


def _mode(
    photometric: int,
    cmyk: bool,
    bits: int,
    channels: int,
    has_alpha: bool,
    premultiplied: bool,
    dtype: str,
) -> str:
    """A Pillow-style name for the stored data ("1", "P", "L", "CMYK", "RGBa", "RGB;16", ...)."""
    suffix = {"uint8": "", "uint16": SUFFIX_16, "float32": ";F"}[dtype]
    if photometric == _TIFF_PALETTE:
        return ("PA" if has_alpha else "P") + suffix
    if cmyk:
        return "CMYK" + suffix
    if channels == 1:
        return "1" if bits == 1 else {"uint8": "L", "uint16": "I;16", "float32": "F"}[dtype]
    if has_alpha:
        base = {2: "La", 4: "RGBa"}[channels] if premultiplied else {2: "LA", 4: "RGBA"}[channels]
    elif channels == 3:
        base = "RGB"
    elif channels == 4 and photometric == _TIFF_RGB:
        base = "RGBX"  # RGB and an extra channel that is not alpha
    else:
        base = f"{channels}-channel"
    return base + suffix


def _header(page: Any, channels: int, dtype: str, mode: str, orientation: int) -> ImageHeader:
    width, height = int(page.imagewidth), int(page.imagelength)
    if orientation >= 5:  # the four orientations that swap rows and columns
        width, height = height, width
    return ImageHeader(width, height, channels, dtype, "tiff", mode)


def _select_page(tif: tifffile.TiffFile, page: int, name: str) -> tuple[int, Any]:
    """The index in the IFD chain and the TiffPage of page ``page`` (counted from 0)."""
    if page < 0:
        raise InputError(f"{name}: there is no TIFF page {page}: pages count from 0")
    counted = 0
    for index in main_pages(tif.pages):
        if counted == page:
            return index, tif.pages[index]
        counted += 1
    if counted == 0:
        raise InputError(f"{name}: cannot read image: the TIFF holds no readable page")
    raise InputError(f"{name}: the TIFF has {counted} page(s), there is no page {page}")


def tiff_page_count(handle: IO[bytes]) -> int:
    """How many pages a TIFF holds, from its IFD chain (nothing is decoded).

    Pages marked as reduced-resolution copies or transparency masks of another page
    (NewSubfileType) are not counted; SubIFDs (OME-TIFF and pyramid levels) are not pages.
    Raises what tifffile raises on a broken file (see :func:`convcli.io.decoding.decoder_errors`).
    """
    with tifffile.TiffFile(handle) as tif:
        tif.pages.cache = False  # a count must not keep every page of a long file in memory
        return sum(1 for _ in main_pages(tif.pages))


def read_tiff_header(handle: IO[bytes], name: str, *, page: int = 0) -> ImageHeader:
    """What page ``page`` of a TIFF holds, from its tags (nothing is decoded)."""
    with tifffile.TiffFile(handle) as tif:
        return _layout(_select_page(tif, page, name)[1], name).plan.header


def read_tiff(
    handle: IO[bytes], *, name: str, max_pixels: int, max_bytes: int, page: int = 0
) -> Image:
    """Decode page ``page`` of a TIFF, after checking its size (and its tiles') from tags.

    The image carries the page's ICC profile, EXIF, XMP and resolution as its metadata.
    """
    with tifffile.TiffFile(handle) as tif:
        index, tiff_page = _select_page(tif, page, name)
        layout = _layout(tiff_page, name)
        header = layout.plan.header
        check_pixels(header.width, header.height, max_pixels, name)
        if tiff_page.is_tiled:
            # Whole tiles are decoded: a 16x16 image in one 65536x65536 tile is 4 GiB.
            tile_pixels = int(tiff_page.tilelength) * max(int(tiff_page.tiledepth), 1)
            check_pixels(int(tiff_page.tilewidth), tile_pixels, max_pixels, name, "TIFF tile")
        # Stored samples may outnumber the returned channels (CMYK: 4 for 3).
        samples = max(header.channels, int(tiff_page.samplesperpixel))
        stored_header = dataclasses.replace(header, channels=samples)
        check_decoded_bytes(stored_header, np.dtype(tiff_page.dtype).name, max_bytes, name)
        pixels: Array | None = None
        if layout.route == "tifffile":
            pixels = _to_pixels(_tifffile_samples(tiff_page, name), layout, tiff_page)
        elif layout.route == "segments":
            stored = read_segments(tif.filehandle, tiff_page, tif.byteorder, name)
            pixels = _to_pixels(stored, layout, tiff_page)
        compression = getattr(tiff_page.compression, "name", str(tiff_page.compression))
        metadata = tiff_metadata(tiff_page, handle, byteorder=tif.byteorder)
    upright = False
    if pixels is None:
        pixels, upright = _read_with_pillow(handle, index, layout, compression, name)
    pixels = finish(pixels if upright else orient(pixels, layout.orientation), header, name)
    return Image(pixels, "tiff", layout.plan.has_alpha, metadata)


def _tifffile_samples(page: Any, name: str) -> Array:
    """A page's samples decoded by tifffile, as ``(H, W)`` or ``(H, W, samples)``."""
    stored: Array = page.asarray()
    if stored.ndim != len(page.axes):
        raise InputError(f"{name}: cannot read image: unexpected TIFF data shape {stored.shape}")
    return stored.transpose([page.axes.index(axis) for axis in "YXS" if axis in page.axes])


def _to_pixels(stored: Array, layout: _Layout, page: Any) -> Array:
    """The pixels of a page's stored samples (before orientation)."""
    samples = stored if stored.ndim == 3 else stored[..., np.newaxis]
    if samples.dtype == np.bool_:
        samples = samples.view(np.uint8)  # 1-bit samples as 0 and 1
    dtype = np.dtype(layout.plan.header.dtype)
    colour, extra = samples[..., : layout.colour], samples[..., layout.colour :]
    if layout.photometric == _TIFF_PALETTE:
        colour = expand_palette(colour[..., 0], page.colormap, dtype)
    else:
        if layout.photometric == _TIFF_MINISWHITE and colour.dtype.kind == "u":
            colour = ((1 << layout.bits) - 1 - colour.astype(np.int64)).astype(colour.dtype)
        colour = rescale(colour, layout.bits, dtype)
    extra = rescale(extra, layout.bits, dtype)
    if layout.premultiplied:
        colour = unpremultiply(colour, extra[..., 0])
    if layout.cmyk:
        colour = cmyk_to_rgb(colour)
    pixels = np.concatenate([colour, extra], axis=-1) if extra.shape[-1] else colour
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return pixels.astype(dtype, copy=False)


def _read_with_pillow(
    handle: IO[bytes], index: int, layout: _Layout, compression: str, name: str
) -> tuple[Array, bool]:
    """Decode a page whose codec only libtiff has with Pillow, if Pillow keeps every bit.

    Returns the pixels and whether they are upright already: Pillow 11 and later apply the
    Orientation tag themselves when loading (and then drop the tag).
    """
    handle.seek(0)
    plan = layout.plan
    missing = (
        f"{name}: cannot read image: TIFF with {compression} compression and "
        f"{plan.header.channels} x {plan.header.dtype} samples needs the optional imagecodecs "
        "package"
    )
    try:
        with pillow_open(handle, "tiff") as opened:
            if index:
                opened.seek(index)
            fallback = pillow_plan(opened, "tiff", b"", name)
            header = fallback.header
            if (header.channels, header.dtype) != (plan.header.channels, plan.header.dtype):
                raise InputError(missing)  # Pillow would lose bits (e.g. 16-bit RGB -> 8-bit)
            with c_stderr_silenced():
                opened.load()
            tags = getattr(opened, "tag_v2", {})
            upright = layout.orientation == 1 or _ORIENTATION_TAG not in tags
            if layout.premultiplied and opened.mode in ("La", "RGBa"):
                stored = np.asarray(opened)  # Pillow would un-premultiply with truncation
                colour = unpremultiply(stored[..., :-1], stored[..., -1])
                return np.concatenate([colour, stored[..., -1:]], axis=-1), upright
            return decode_pillow(opened, fallback, handle, name), upright
    except ConvcliError:
        raise
    except DECODE_ERRORS as exc:
        detail = reason(exc)
        if detail.startswith("decoder error"):  # libtiff said why, on the silenced stderr
            detail = f"corrupt or truncated {compression} data"
        raise InputError(
            f"{name}: cannot read image: TIFF with {compression} compression: {detail}"
        ) from exc


def encode_tiff(array: Array, *, level: int, has_alpha: bool | None = None) -> bytes:
    """A single-page TIFF, deflated at zlib ``level`` (horizontal predictor for integers).

    ``has_alpha`` says whether the last channel is alpha (ExtraSamples "unassociated alpha")
    or a plain extra channel ("unspecified"); None keeps the old rule: 2 and 4 channels are
    gray + alpha and RGBA.
    """
    channels = array.shape[2] if array.ndim == 3 else 1
    options: dict[str, Any] = {
        "photometric": "rgb" if channels in (3, 4) else "minisblack",
        "compression": "zlib",
        "compressionargs": {"level": level},
        "metadata": None,  # no JSON ImageDescription
    }
    if array.dtype.kind == "u":
        options["predictor"] = "horizontal"
    if channels > 1:
        options["planarconfig"] = "contig"
    if channels in (2, 4):
        alpha = True if has_alpha is None else has_alpha
        options["extrasamples"] = ("unassalpha" if alpha else "unspecified",)
    encoded = iio.imwrite("<bytes>", array, extension=".tif", plugin="tifffile", **options)
    return bytes(encoded)
