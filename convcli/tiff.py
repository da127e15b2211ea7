"""TIFF: reading with tifffile (Pillow's libtiff for codecs tifffile lacks), and writing.

Tags are read before pixels: :func:`tiff_plan` decides from the first page's tags what array
the file becomes, so its size is checked (tiles included) before anything is decoded.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import IO, Any, Final

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import tifffile

from convcli.decoding import (
    DECODE_ERRORS,
    SUFFIX_16,
    DecodePlan,
    Image,
    ImageHeader,
    check_decoded_bytes,
    check_pixels,
    finish,
    reason,
)
from convcli.errors import ConvcliError, InputError
from convcli.pillow_decode import decode_pillow, pillow_open, pillow_plan

__all__ = ["encode_tiff", "read_tiff", "read_tiff_header"]

Array = npt.NDArray[Any]

#: Compressions (none, deflate, Adobe deflate, LZMA) and predictors (none, horizontal) that
#: tifffile decodes without imagecodecs; other TIFFs go to Pillow's libtiff when it is missing.
_TIFFFILE_PURE_COMPRESSIONS: Final = frozenset({1, 8, 32946, 34925})
_TIFFFILE_PURE_PREDICTORS: Final = frozenset({1, 2})
_TIFF_MINISWHITE, _TIFF_MINISBLACK, _TIFF_RGB, _TIFF_PALETTE, _TIFF_SEPARATED = 0, 1, 2, 3, 5
#: TIFF sample dtypes read as float32 (exactly, except float64's extra precision).
_TIFF_AS_FLOAT32: Final = frozenset({"int8", "int16", "float16", "float64"})


@cache
def _have_imagecodecs() -> bool:
    return importlib.util.find_spec("imagecodecs") is not None


def tiff_plan(page: Any, name: str) -> DecodePlan:
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
    return DecodePlan(header, has_alpha, use_pillow=use_pillow)


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
    return dtype, base + {"uint8": "", "uint16": SUFFIX_16, "float32": ";F"}[dtype]


def _first_page(tif: tifffile.TiffFile, name: str) -> Any:
    if not len(tif.pages):
        raise InputError(f"{name}: cannot read image: the TIFF holds no readable page")
    return tif.pages.first


def read_tiff_header(handle: IO[bytes], name: str) -> ImageHeader:
    """What the first page of a TIFF holds, from its tags (nothing is decoded)."""
    with tifffile.TiffFile(handle) as tif:
        return tiff_plan(_first_page(tif, name), name).header


def read_tiff(handle: IO[bytes], *, name: str, max_pixels: int, max_bytes: int) -> Image:
    """Decode the first page of a TIFF, after checking its size (and its tiles') from tags."""
    with tifffile.TiffFile(handle) as tif:
        page = _first_page(tif, name)
        plan = tiff_plan(page, name)
        check_pixels(plan.header.width, plan.header.height, max_pixels, name)
        if page.is_tiled:
            # tifffile allocates whole tiles: a 16x16 image in one 65536x65536 tile is 4 GiB.
            tile_pixels = int(page.tilelength) * max(int(page.tiledepth), 1)
            check_pixels(int(page.tilewidth), tile_pixels, max_pixels, name, "TIFF tile")
        check_decoded_bytes(plan.header, np.dtype(page.dtype).name, max_bytes, name)
        if not plan.use_pillow:
            pixels = _decode_tiff_page(page, plan, name)
            return Image(pixels, "tiff", plan.has_alpha)
        compression = getattr(page.compression, "name", str(page.compression))
    return Image(
        _read_tiff_with_pillow(handle, plan, compression, name, max_pixels), "tiff", plan.has_alpha
    )


def _decode_tiff_page(page: Any, plan: DecodePlan, name: str) -> Array:
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
    return finish(pixels.astype(plan.header.dtype, copy=False), plan.header, name)


def _read_tiff_with_pillow(
    handle: IO[bytes], plan: DecodePlan, compression: str, name: str, max_pixels: int
) -> Array:
    """Decode a TIFF whose codec tifffile lacks with Pillow, if Pillow keeps every bit."""
    handle.seek(0)
    missing = (
        f"{name}: cannot read image: TIFF with {compression} compression and "
        f"{plan.header.channels} x {plan.header.dtype} samples needs the optional imagecodecs "
        "package"
    )
    try:
        with pillow_open(handle, "tiff") as opened:
            fallback = pillow_plan(opened, "tiff", b"", name)
            header = fallback.header
            if (header.channels, header.dtype) != (plan.header.channels, plan.header.dtype):
                raise InputError(missing)  # Pillow would lose bits (e.g. 16-bit RGB -> 8-bit)
            return decode_pillow(opened, fallback, handle, name)
    except ConvcliError:
        raise
    except DECODE_ERRORS as exc:
        raise InputError(f"{missing} ({reason(exc)})") from exc


def encode_tiff(array: Array, *, level: int) -> bytes:
    """A single-page TIFF, deflated at zlib ``level`` (horizontal predictor for integers)."""
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
        options["extrasamples"] = ("unassalpha",)
    encoded = iio.imwrite("<bytes>", array, extension=".tif", plugin="tifffile", **options)
    return bytes(encoded)
