"""What a TIFF page holds besides pixels: orientation, ICC profile, EXIF, XMP and resolution.

Everything here reads tags only and never makes an image unreadable: a tag that cannot be
understood is left out of the :class:`~convcli.io.decoding.Metadata`.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import IO, Any, Final

from convcli.io.decoding import DECODE_ERRORS, Metadata

__all__ = ["is_subsidiary", "main_pages", "tiff_metadata", "tiff_orientation"]

_ORIENTATION, _XMP, _EXIF_IFD, _GPS_IFD, _ICC = 274, 700, 34665, 34853, 34675
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 282, 283, 296
_INCH, _CENTIMETRE = 2, 3
_SOFTWARE = 305
#: Baseline tags of a TIFF's first IFD that belong in an EXIF block's IFD0 (JPEG's holds
#: them there): ImageDescription, Make, Model, Software, DateTime, Artist, Copyright.
_EXIF_IFD0_TAGS: Final = (270, 271, 272, 305, 306, 315, 33432)
#: NewSubfileType bits of pages that are not pages of the document: a reduced-resolution
#: version of another page (bit 0) and a transparency mask (bit 2).
_SUBSIDIARY_BITS: Final = 0b101


def tiff_orientation(page: Any) -> int:
    """The page's Orientation tag (274), 1-8; 1 when absent or invalid."""
    value = page.tags.valueof(_ORIENTATION)
    with contextlib.suppress(TypeError, ValueError):
        if 1 <= int(value) <= 8:
            return int(value)
    return 1


def is_subsidiary(page: Any) -> bool:
    """A reduced-resolution copy or a transparency mask rather than a page of its own."""
    return bool(int(page.subfiletype) & _SUBSIDIARY_BITS)


def main_pages(pages: Any) -> Iterator[int]:
    """Indices in the IFD chain of the pages that count, in order.

    Pages marked as reduced-resolution copies or masks (NewSubfileType) are skipped, unless
    every page is so marked: then every page counts. SubIFDs (where OME-TIFF and most
    pyramids keep their reduced resolutions) are not in the chain at all. The chain is
    walked by index (``len`` stops at a loop in it; iterating pages uncached would not).
    """
    found = False
    total = len(pages)
    for index in range(total):
        if not is_subsidiary(pages[index]):
            found = True
            yield index
    if not found:
        yield from range(total)


def tiff_metadata(page: Any, handle: IO[bytes], *, byteorder: str) -> Metadata:
    """The ICC profile, EXIF (Orientation reset to 1), XMP and resolution of a page.

    Parameters
    ----------
    page : tifffile.TiffPage
        The page whose tags are read.
    handle : file
        The TIFF file, for the EXIF IFD (read with Pillow's TIFF directory reader).
    byteorder : str
        ``"<"`` or ``">"``, the file's byte order.
    """
    tags = page.tags
    dpi = _dpi(tags)
    if dpi is not None and tiff_orientation(page) >= 5:
        dpi = (dpi[1], dpi[0])  # the resolution follows the axes the pixels are turned to
    return Metadata(
        icc=_as_bytes(tags.valueof(_ICC)),
        exif=_exif(page, handle, byteorder),
        xmp=_as_bytes(tags.valueof(_XMP)),
        dpi=dpi,
    )


def _as_bytes(value: Any) -> bytes | None:
    """A tag's bytes (tifffile gives UNDEFINED as bytes, BYTE as bytes or an array)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value or None
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        data = value.tobytes() if hasattr(value, "tobytes") else bytes(value)
        return data or None
    return None


def _dpi(tags: Any) -> tuple[float, float] | None:
    """Pixels per inch from XResolution, YResolution and ResolutionUnit (default inch)."""
    x = _rational(tags.valueof(_X_RESOLUTION))
    y = _rational(tags.valueof(_Y_RESOLUTION))
    if x is None:
        return None
    y = x if y is None else y
    try:
        unit = int(tags.valueof(_RESOLUTION_UNIT, default=_INCH))
    except (TypeError, ValueError):
        return None
    if unit == _CENTIMETRE:
        return (x * 2.54, y * 2.54)
    return (x, y) if unit == _INCH else None  # unit 1: an aspect ratio, no absolute size


def _rational(value: Any) -> float | None:
    """A positive resolution from tifffile's (numerator, denominator) or a number."""
    try:
        if isinstance(value, tuple | list):
            numerator, denominator = value[0], value[1]
            resolution = float(numerator) / float(denominator)
        else:
            resolution = float(value)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    return resolution if resolution > 0 and resolution != float("inf") else None


def _exif(page: Any, handle: IO[bytes], byteorder: str) -> bytes | None:
    """The page's EXIF IFD (and GPS IFD) as a TIFF-structured EXIF block, Orientation 1.

    tifffile parses the EXIF IFD into names and values; Pillow's TIFF directory reader keeps
    the tag numbers and types that writing an EXIF block needs, so it reads the IFDs again
    from the file at the offsets the page's tags hold. A page with no EXIF IFD but with
    description, camera, date or author tags of its own gets a block of those alone; one
    with neither gets None.
    """
    own = {tag: page.tags.valueof(tag) for tag in _EXIF_IFD0_TAGS}
    own = {tag: value for tag, value in own.items() if isinstance(value, str) and value}
    if _EXIF_IFD not in page.tags and not set(own) - {_SOFTWARE}:
        return None  # (every writer names itself in Software: that alone is no metadata)
    from PIL import Image as PILImage

    try:
        handle.seek(0)
        header = handle.read(8)
        exif_ifd = None
        if _EXIF_IFD in page.tags:
            exif_ifd = _ifd(header, handle, _ifd_offset(page, _EXIF_IFD, header, handle))
            if exif_ifd is None:
                return None
            exif_ifd.pop(0xA005, None)  # the Interoperability IFD pointer: it would dangle
        block = PILImage.Exif()
        block.endian = byteorder
        for tag, value in own.items():
            block[tag] = value
        block[_ORIENTATION] = 1
        if exif_ifd is not None:
            block.get_ifd(_EXIF_IFD).update(exif_ifd)
        if _GPS_IFD in page.tags:
            gps = _ifd(header, handle, _ifd_offset(page, _GPS_IFD, header, handle))
            if gps:
                block.get_ifd(_GPS_IFD).update(gps)
        data = block.tobytes()
    except DECODE_ERRORS:  # a broken EXIF IFD leaves the EXIF out, the image stays readable
        return None
    return data[6:] if data.startswith(b"Exif\0\0") else data


def _ifd_offset(page: Any, code: int, header: bytes, handle: IO[bytes]) -> int | None:
    """The file offset a pointer tag (EXIF or GPS IFD) holds, read from the tag entry itself.

    (tifffile replaces such a tag's value with the parsed sub-IFD.) An entry is 12 bytes with
    the value in its last 4, or in BigTIFF 20 bytes with the value in its last 8.
    """
    tag = page.tags.get(code)
    if tag is None or int(tag.count) != 1:
        return None
    bigtiff = header[2:4] in (b"+\0", b"\0+")  # version 43 in either byte order
    formats = {4: "I", 13: "I", 16: "Q", 18: "Q"}  # LONG, IFD, LONG8, IFD8
    fmt = formats.get(int(tag.dtype))
    if fmt is None:
        return None
    handle.seek(int(tag.offset) + (12 if bigtiff else 8))
    raw = handle.read(struct.calcsize(fmt))
    if len(raw) != struct.calcsize(fmt):
        return None
    offset = int(struct.unpack(("<" if header[:2] == b"II" else ">") + fmt, raw)[0])
    return offset or None


def _ifd(header: bytes, handle: IO[bytes], offset: int | None) -> dict[int, Any] | None:
    """The tags of the IFD at ``offset``, as Pillow's ``Exif.get_ifd`` returns them.

    ``header`` is the file's first 8 bytes, which tell Pillow the byte order and whether
    offsets are BigTIFF's 64-bit ones.
    """
    if offset is None:
        return None
    from PIL import TiffImagePlugin

    directory = TiffImagePlugin.ImageFileDirectory_v2(header)
    handle.seek(offset)
    directory.load(handle)
    # Pillow's Exif gives one-value tags as the value, not as a 1-tuple.
    return {
        tag: value[0] if isinstance(value, tuple) and len(value) == 1 else value
        for tag, value in dict(directory).items()
    }
