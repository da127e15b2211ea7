"""Reading a TIFF page's strips or tiles where tifffile cannot without imagecodecs.

Without the optional imagecodecs package tifffile unpacks only 1, 8, 16, 32 and 64-bit
samples and decompresses only deflate and LZMA. :func:`read_segments` reads a page's strips
or tiles itself: uncompressed, deflate and LZMA data with the standard library; LZW, PackBits
and Zstandard through Pillow's libtiff, by wrapping each run of segments in a minimal 8-bit
gray TIFF that libtiff decompresses to the bytes as stored. It then undoes the horizontal
predictor and unpacks samples of any width up to 16 bits, most significant bit first with
each row padded to a whole byte, as libtiff does.

libtiff reports problems on the C-level stderr, past Python's ``sys.stderr``: decoding runs
inside :func:`convcli.io.c_stderr.c_stderr_silenced`.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from convcli.errors import InputError
from convcli.io.c_stderr import c_stderr_silenced
from convcli.io.pillow_decode import pillow_open

__all__ = ["LIBTIFF_COMPRESSIONS", "SEGMENT_COMPRESSIONS", "read_segments"]

Array = npt.NDArray[Any]

#: Lossless byte-stream codecs libtiff decompresses for us.
LIBTIFF_COMPRESSIONS_NAMES: Final = {5: "LZW", 32773: "PackBits", 50000: "Zstandard"}
LIBTIFF_COMPRESSIONS: Final = frozenset(LIBTIFF_COMPRESSIONS_NAMES)
#: Compressions :func:`read_segments` handles: none, deflate (two codes), LZMA, and libtiff's.
SEGMENT_COMPRESSIONS: Final = frozenset({1, 8, 32946, 34925}) | LIBTIFF_COMPRESSIONS
#: The value of each byte with its bits reversed (FillOrder 2).
_REVERSED_BITS: Final = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], np.uint8)


@dataclass(frozen=True)
class _Geometry:
    """Where a page's strips or tiles go: each holds ``rows`` x ``width`` pixels of one plane."""

    height: int
    width: int
    samples: int
    bits: int
    planes: int
    #: Samples per pixel inside one segment: all of them (contiguous) or one (planar).
    segment_samples: int
    segment_width: int
    segment_height: int
    #: Segments across and down one plane.
    across: int
    down: int

    @property
    def row_bytes(self) -> int:
        return (self.segment_width * self.segment_samples * self.bits + 7) // 8

    def rows(self, index: int) -> int:
        """Rows segment ``index`` holds: strips at the bottom are cut to the image."""
        if self.segment_width != self.width:  # tiles are always whole
            return self.segment_height
        down = index % (self.across * self.down)
        return min(self.segment_height, self.height - down * self.segment_height)

    def origin(self, index: int) -> tuple[int, int, int]:
        """(plane, top row, left column) of segment ``index``."""
        plane, position = divmod(index, self.across * self.down)
        down, across = divmod(position, self.across)
        return plane, down * self.segment_height, across * self.segment_width


def _geometry(page: Any) -> _Geometry:
    height, width = int(page.imagelength), int(page.imagewidth)
    samples, bits = int(page.samplesperpixel), int(page.bitspersample)
    separate = int(page.planarconfig) == 2 and samples > 1
    if page.is_tiled:
        segment_width, segment_height = int(page.tilewidth), int(page.tilelength)
    else:
        segment_width = width
        segment_height = min(int(page.rowsperstrip), height) or height
    return _Geometry(
        height=height,
        width=width,
        samples=samples,
        bits=bits,
        planes=samples if separate else 1,
        segment_samples=1 if separate else samples,
        segment_width=segment_width,
        segment_height=segment_height,
        across=-(-width // segment_width),
        down=-(-height // segment_height),
    )


def read_segments(filehandle: Any, page: Any, byteorder: str, name: str) -> Array:
    """Decode a page's samples as stored: ``(H, W, samples)``, channels last.

    Parameters
    ----------
    filehandle : tifffile.FileHandle
        The open file (``TiffFile.filehandle``).
    page : tifffile.TiffPage
        The page; its compression must be in :data:`SEGMENT_COMPRESSIONS` and its predictor
        1, or 2 with 8, 16, 32 or 64-bit samples.
    byteorder : str
        ``"<"`` or ``">"``, the file's byte order.
    name : str
        The path, for messages.

    Returns
    -------
    ndarray
        Unsigned integers (uint8 up to 8 bits, uint16 up to 16 bits, 1-bit as 0/1), or the
        page's own dtype for 32 and 64-bit samples and signed or float ones.
    """
    geometry = _geometry(page)
    dtype = _sample_dtype(page, geometry.bits, byteorder, name)
    count = geometry.planes * geometry.across * geometry.down
    offsets, bytecounts = tuple(page.dataoffsets), tuple(page.databytecounts)
    if len(offsets) < count or len(bytecounts) < count:
        raise InputError(
            f"{name}: cannot read image: the TIFF page lists {len(offsets)} of its {count} "
            "strips or tiles"
        )
    planes = np.zeros(
        (geometry.planes, geometry.height, geometry.width, geometry.segment_samples),
        dtype.newbyteorder("="),
    )
    raw = _RawSegments(filehandle, offsets[:count], bytecounts[:count], int(page.fillorder))
    for index, data in _decompressed(raw, geometry, int(page.compression), name):
        rows = geometry.rows(index)
        expected = rows * geometry.row_bytes
        if len(data) < expected:
            raise InputError(
                f"{name}: cannot read image: TIFF strip or tile {index} is truncated "
                f"({len(data)} of {expected} bytes)"
            )
        block = np.frombuffer(data, np.uint8, expected).reshape(rows, geometry.row_bytes)
        samples = _unpack(block, geometry, dtype, int(page.predictor), name)
        plane, top, left = geometry.origin(index)
        bottom = min(top + rows, geometry.height)
        right = min(left + geometry.segment_width, geometry.width)
        planes[plane, top:bottom, left:right] = samples[: bottom - top, : right - left]
    samples_last: Array = planes[0] if geometry.planes == 1 else np.moveaxis(planes[..., 0], 0, -1)
    return samples_last


def _sample_dtype(page: Any, bits: int, byteorder: str, name: str) -> np.dtype[Any]:
    """The dtype one sample unpacks to (in the file's byte order for whole bytes)."""
    sampleformat = int(page.sampleformat)
    if sampleformat == 1 and bits <= 16:
        return np.dtype(np.uint8 if bits <= 8 else np.uint16)
    kinds = {1: "u", 2: "i", 3: "f"}
    if sampleformat in kinds and bits in (8, 16, 32, 64) and not (sampleformat == 3 and bits == 8):
        return np.dtype(f"{byteorder}{kinds[sampleformat]}{bits // 8}")
    raise InputError(
        f"{name}: cannot read image: TIFF samples of {bits} bits (SampleFormat {sampleformat}) "
        "are not supported"
    )


class _RawSegments:
    """A page's strips or tiles as stored, read one at a time."""

    def __init__(
        self, filehandle: Any, offsets: tuple[int, ...], bytecounts: tuple[int, ...], fill: int
    ) -> None:
        self._filehandle = filehandle
        self._offsets, self._bytecounts = offsets, bytecounts
        self._reverse = fill == 2  # FillOrder 2: bits stored least significant first
        self._size = int(filehandle.size)

    def __len__(self) -> int:
        return len(self._offsets)

    def empty(self, index: int) -> bool:
        """Whether the segment holds no bytes (tifffile reads those as zeros)."""
        offset, bytecount = self._offsets[index], self._bytecounts[index]
        return bytecount <= 0 or offset <= 0 or offset >= self._size

    def stored_bytes(self, index: int) -> int:
        return (
            0
            if self.empty(index)
            else min(self._bytecounts[index], self._size - self._offsets[index])
        )

    def __getitem__(self, index: int) -> bytes:
        """The segment's bytes; a count past the end of the file reads what is there."""
        if self.empty(index):
            return b""
        self._filehandle.seek(self._offsets[index])
        data = bytes(self._filehandle.read(self.stored_bytes(index)))
        if self._reverse:
            data = _REVERSED_BITS[np.frombuffer(data, np.uint8)].tobytes()
        return data


#: Compressed bytes handed to libtiff at once: runs of strips are split at this size.
_LIBTIFF_RUN_BYTES: Final = 64 << 20


def _decompressed(
    raw: _RawSegments, geometry: _Geometry, compression: int, name: str
) -> Iterator[tuple[int, bytes | memoryview]]:
    """(index, decompressed bytes) of each non-empty segment, at most what it must hold."""
    if compression in LIBTIFF_COMPRESSIONS:
        yield from _decompressed_by_libtiff(raw, geometry, compression, name)
        return
    for index in range(len(raw)):
        if raw.empty(index):
            continue
        data = raw[index]
        expected = geometry.rows(index) * geometry.row_bytes
        try:
            if compression == 1:
                yield index, data[:expected]
            elif compression in (8, 32946):
                yield index, zlib.decompressobj().decompress(data, expected)
            elif compression == 34925:
                yield index, lzma.LZMADecompressor().decompress(data, max_length=expected)
            else:
                raise InputError(f"{name}: cannot read image: TIFF compression {compression}")
        except (zlib.error, lzma.LZMAError) as exc:
            raise InputError(
                f"{name}: cannot read image: TIFF strip or tile {index} is corrupt ({exc})"
            ) from exc


def _decompressed_by_libtiff(
    raw: _RawSegments, geometry: _Geometry, compression: int, name: str
) -> Iterator[tuple[int, bytes | memoryview]]:
    """Decompress runs of non-empty segments of equal height, one libtiff call per run.

    A run holds at most :data:`_LIBTIFF_RUN_BYTES` (compressed and decompressed), unless a
    single segment is larger.
    """
    start = 0
    while start < len(raw):
        if raw.empty(start):
            start += 1
            continue
        rows, end, run_bytes = geometry.rows(start), start, 0
        segment_bytes = rows * geometry.row_bytes
        while (
            end < len(raw)
            and not raw.empty(end)
            and geometry.rows(end) == rows
            and (
                end == start
                or max(run_bytes + raw.stored_bytes(end), (end - start + 1) * segment_bytes)
                <= _LIBTIFF_RUN_BYTES
            )
        ):
            run_bytes += raw.stored_bytes(end)
            end += 1
        segments = [raw[index] for index in range(start, end)]
        block = _libtiff_decompress(segments, segment_bytes, compression, name)
        for offset, index in enumerate(range(start, end)):
            yield index, block[offset].data.cast("B")
        start = end


def _libtiff_decompress(
    segments: list[bytes], segment_bytes: int, compression: int, name: str
) -> Array:
    """``(len(segments), segment_bytes)`` bytes: the segments decompressed by libtiff.

    The segments become the strips, one row each, of a minimal TIFF. Its pixels are 32-bit
    where the size allows, so that Pillow's decompression-bomb check, which counts pixels,
    sees a quarter of the bytes.
    """
    wide = segment_bytes % 4 == 0
    wrapper = _wrapper_tiff(segments, segment_bytes, wide, compression, name)
    codec = LIBTIFF_COMPRESSIONS_NAMES[compression]
    try:
        with pillow_open(io.BytesIO(wrapper), "tiff") as opened:
            if opened.mode != ("I" if wide else "L"):
                raise InputError(f"{name}: cannot read image: libtiff cannot decompress {codec}")
            with c_stderr_silenced():
                opened.load()
            block = np.asarray(opened)
    except OSError as exc:  # libtiff's message went to the silenced stderr; Pillow's says little
        raise InputError(
            f"{name}: cannot read image: corrupt or truncated {codec} data in the TIFF's strips "
            "or tiles"
        ) from exc
    if wide:  # the bytes as stored: little-endian 32-bit values
        block = block.astype("<i4", copy=False).view(np.uint8)
    if block.shape != (len(segments), segment_bytes):
        raise InputError(f"{name}: cannot read image: TIFF strips decompressed to {block.shape}")
    return block


def _wrapper_tiff(
    segments: list[bytes], segment_bytes: int, wide: bool, compression: int, name: str
) -> bytes:
    """A little-endian TIFF whose strips are ``segments``, each one row of gray pixels.

    Pixels are 32-bit signed integers (``wide``) or 8-bit.
    """
    count = len(segments)
    entries = 10
    arrays = 8 + 2 + 12 * entries + 4  # the offset and byte-count arrays follow the IFD
    offsets, position = [], arrays + 8 * count
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    if position >= 2**32:
        raise InputError(f"{name}: cannot read image: TIFF strips over 4 GiB in one run")

    def entry(tag: int, kind: int, number: int, value: int) -> bytes:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, kind, number) + packed

    single = count == 1
    ifd = b"".join(
        [
            struct.pack("<H", entries),
            entry(256, 4, 1, segment_bytes // 4 if wide else segment_bytes),  # ImageWidth
            entry(257, 4, 1, count),  # ImageLength: a row per segment
            entry(258, 3, 1, 32 if wide else 8),  # BitsPerSample
            entry(259, 3, 1, compression),
            entry(262, 3, 1, 1),  # PhotometricInterpretation: min-is-black
            entry(273, 4, count, offsets[0] if single else arrays),  # StripOffsets
            entry(277, 3, 1, 1),  # SamplesPerPixel
            entry(278, 4, 1, 1),  # RowsPerStrip
            entry(279, 4, count, len(segments[0]) if single else arrays + 4 * count),
            entry(339, 3, 1, 2 if wide else 1),  # SampleFormat: signed or unsigned integers
            b"\0\0\0\0",  # no next IFD
        ]
    )
    tables = struct.pack(f"<{count}I", *offsets) + struct.pack(
        f"<{count}I", *(len(segment) for segment in segments)
    )
    return b"".join([b"II*\0", struct.pack("<I", 8), ifd, tables, *segments])


def _unpack(
    block: Array, geometry: _Geometry, dtype: np.dtype[Any], predictor: int, name: str
) -> Array:
    """``(rows, segment width, segment samples)`` samples from a segment's rows of bytes."""
    rows = block.shape[0]
    width, per_pixel, bits = geometry.segment_width, geometry.segment_samples, geometry.bits
    count = width * per_pixel
    if bits % 8 == 0:
        stored = block[:, : count * bits // 8]
        samples = stored if bits == 8 and dtype.kind == "u" else stored.copy().view(dtype)
        if predictor == 2:
            unsigned = samples.view(f"{dtype.byteorder}u{bits // 8}").astype(f"=u{bits // 8}")
            unsigned = np.cumsum(
                unsigned.reshape(rows, width, per_pixel), axis=1, dtype=unsigned.dtype
            )
            samples = unsigned.astype(f"{dtype.byteorder}u{bits // 8}").view(dtype)
        return samples.astype(dtype.newbyteorder("="), copy=False).reshape(rows, width, per_pixel)
    if predictor != 1:
        raise InputError(
            f"{name}: cannot read image: TIFF predictor {predictor} with {bits}-bit samples"
        )
    return _unpack_bits(block, count, bits).astype(dtype).reshape(rows, width, per_pixel)


def _unpack_bits(block: Array, count: int, bits: int) -> Array:
    """The first ``count`` ``bits``-wide unsigned values of each row, MSB first."""
    rows = block.shape[0]
    if bits in (1, 2, 4):
        shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)
        values = (block[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)
        return values.reshape(rows, -1)[:, :count]
    if bits == 12:  # three bytes hold two samples
        pairs = (count + 1) // 2
        padded = np.zeros((rows, pairs * 3), np.uint16)
        padded[:, : min(block.shape[1], pairs * 3)] = block[:, : pairs * 3]
        first, middle, last = padded[:, 0::3], padded[:, 1::3], padded[:, 2::3]
        values = np.empty((rows, pairs, 2), np.uint16)
        values[..., 0] = (first << 4) | (middle >> 4)
        values[..., 1] = ((middle & 0xF) << 8) | last
        return values.reshape(rows, -1)[:, :count]
    # Any other width: spread to bits, left-pad each value to 16 bits, and pack again.
    spread = np.unpackbits(block, axis=1)[:, : count * bits].reshape(rows, count, bits)
    wide = np.zeros((rows, count, 16), np.uint8)
    wide[..., 16 - bits :] = spread
    return np.packbits(wide, axis=-1).view(">u2").reshape(rows, count).astype(np.uint16)
