"""What an image file holds besides pixels: read from Pillow's headers, written per format.

Reading normalizes what the formats store differently: EXIF without JPEG's ``Exif\\0\\0``
prefix and with Orientation reset to 1 (pixels are turned upright on reading), XMP from
JPEG/WebP segments or PNG's ``XML:com.adobe.xmp`` text chunk, resolution in dots per inch.
Writing gives each encoder what it takes: Pillow keywords for JPEG and WebP, chunks for PNG
(:mod:`convcli.io.png`), tags for TIFF.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final

from convcli.io.decoding import Metadata

#: PNG text keyword under which XMP is stored (Adobe's XMP specification, part 3).
XMP_KEYWORD: Final = "XML:com.adobe.xmp"
#: EXIF's Orientation tag.
ORIENTATION: Final = 0x0112
_EXIF_PREFIX: Final = b"Exif\x00\x00"
_METRES_PER_INCH: Final = 0.0254


def upright_exif(raw: bytes | None) -> bytes | None:
    """EXIF as TIFF-structured bytes with Orientation 1, or None if absent or unreadable."""
    if not raw:
        return None
    data = raw[len(_EXIF_PREFIX) :] if raw.startswith(_EXIF_PREFIX) else raw
    if not data.startswith((b"II*\x00", b"MM\x00*")):
        return None
    from PIL import Image as PILImage

    try:
        exif = PILImage.Exif()
        exif.load(data)
        if exif.get(ORIENTATION, 1) == 1:
            return data
        exif[ORIENTATION] = 1
        rebuilt = exif.tobytes()
    except Exception:  # a broken EXIF block is dropped, not fatal
        return None
    return rebuilt[len(_EXIF_PREFIX) :] if rebuilt.startswith(_EXIF_PREFIX) else rebuilt


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes) and value:
        return value
    if isinstance(value, str) and value:
        return value.encode("utf-8")
    return None


def _dpi(value: object) -> tuple[float, float] | None:
    if isinstance(value, tuple) and len(value) == 2:
        try:
            x, y = float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
        if x > 0 and y > 0:
            return (x, y)
    return None


def pillow_metadata(info: Mapping[Any, Any], fmt: str) -> Metadata:
    """The metadata of an image Pillow opened (its ``info`` dict, from headers only)."""
    text: list[tuple[str, str]] = []
    xmp = _as_bytes(info.get("xmp"))
    if fmt == "png":
        for key, value in info.items():
            if not isinstance(key, str) or not isinstance(value, str):
                continue
            if key == XMP_KEYWORD:
                xmp = xmp or value.encode("utf-8")
            elif key not in ("icc_profile", "exif", "xmp", "dpi"):
                text.append((key, value))
    return Metadata(
        icc=_as_bytes(info.get("icc_profile")),
        exif=upright_exif(_as_bytes(info.get("exif"))),
        xmp=xmp,
        dpi=_dpi(info.get("dpi")),
        text=tuple(text),
    )


def pillow_save_options(metadata: Metadata, fmt: str) -> dict[str, Any]:
    """Keywords for Pillow's JPEG or WebP writer that carry ``metadata``."""
    options: dict[str, Any] = {}
    if metadata.icc is not None:
        options["icc_profile"] = metadata.icc
    if metadata.exif is not None:
        options["exif"] = _EXIF_PREFIX + metadata.exif
    if metadata.xmp is not None:
        options["xmp"] = metadata.xmp
    if metadata.dpi is not None and fmt == "jpeg":
        options["dpi"] = tuple(round(value) for value in metadata.dpi)
    return options


def png_chunks(metadata: Metadata) -> list[tuple[bytes, bytes]]:
    """(type, data) of the PNG chunks carrying ``metadata``; all go before the image data."""
    chunks: list[tuple[bytes, bytes]] = []
    if metadata.icc is not None:
        chunks.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc)))
    if metadata.dpi is not None:
        x, y = (round(value / _METRES_PER_INCH) for value in metadata.dpi)
        chunks.append((b"pHYs", struct.pack(">IIB", x, y, 1)))
    if metadata.exif is not None:
        chunks.append((b"eXIf", metadata.exif))
    if metadata.xmp is not None:
        keyword = XMP_KEYWORD.encode("latin-1")
        chunks.append((b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + metadata.xmp))
    for key, value in metadata.text:
        chunks.append(_png_text(key, value))
    return chunks


def _png_text(key: str, value: str) -> tuple[bytes, bytes]:
    """tEXt for Latin-1 text (what most readers show), iTXt (UTF-8) otherwise."""
    keyword = key.encode("latin-1", "replace")[:79] or b"Comment"
    try:
        return (b"tEXt", keyword + b"\x00" + value.encode("latin-1"))
    except UnicodeEncodeError:
        return (b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))


def tiff_tags(metadata: Metadata) -> dict[str, Any]:
    """Keywords for tifffile's ``TiffWriter.write`` carrying ``metadata``.

    ICC profile (tag 34675), XMP (700) and resolution (282, 283 in inches) are written as
    TIFF tags. EXIF's own fields that TIFF defines in its main IFD (camera make and model,
    date, artist, copyright, software, description) are written there; the EXIF and GPS
    sub-IFDs are not (tifffile writes no sub-IFD of that kind).
    """
    options: dict[str, Any] = {}
    extratags: list[tuple[int, int, int, Any, bool]] = []
    if metadata.icc is not None:
        options["iccprofile"] = metadata.icc
    if metadata.dpi is not None:
        options["resolution"] = metadata.dpi
        options["resolutionunit"] = "INCH"
    if metadata.xmp is not None:
        extratags.append((700, 1, len(metadata.xmp), metadata.xmp, True))
    for code, value in _exif_main_ifd_tags(metadata.exif).items():
        extratags.append((code, 2, 0, value, True))
    if extratags:
        options["extratags"] = extratags
    return options


#: EXIF fields that are TIFF main-IFD tags (ASCII): description, make, model, software,
#: date, artist, copyright.
_TIFF_ASCII_TAGS: Final = (270, 271, 272, 305, 306, 315, 33432)


def _exif_main_ifd_tags(exif: bytes | None) -> dict[int, str]:
    if exif is None:
        return {}
    from PIL import Image as PILImage

    try:
        parsed = PILImage.Exif()
        parsed.load(exif)
    except Exception:
        return {}
    found: dict[int, str] = {}
    for code in _TIFF_ASCII_TAGS:
        value = parsed.get(code)
        if isinstance(value, str) and value and value.isascii():
            found[code] = value
    return found
