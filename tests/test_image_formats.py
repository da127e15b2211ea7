"""Pixel formats Pillow or tifffile read, read faithfully (spec: "Image fidelity", issue 11).

TIFFs are built here tag by tag (:func:`tiff_file`), so the stored samples are known exactly:
2, 4 and 12-bit samples are packed with Python integers, LZW strips come from Pillow's libtiff
encoder. Where ImageMagick or libvips are installed, their decoding is compared too.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageOps, TiffImagePlugin, features

from convcli.errors import InputError, LimitError
from convcli.io.decoding import Metadata
from convcli.io.images import read_header, read_image
from convcli.io.tiff import encode_tiff, read_tiff, tiff_page_count
from tests.conftest import convcli, run

Array = npt.NDArray[Any]

LIBTIFF = pytest.mark.skipif(not features.check("libtiff"), reason="Pillow built without libtiff")

# TIFF field types and tags used below.
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 1, 2, 3, 4, 5, 7
NONE, LZW, DEFLATE = 1, 5, 8
MINISWHITE, MINISBLACK, RGB, PALETTE, SEPARATED = 0, 1, 2, 3, 5


# --------------------------------------------------------------- a TIFF writer, tag by tag


@dataclass
class Page:
    """One IFD: tags as {code: (type, values)}, its strips, and sub-IFDs by pointer tag."""

    tags: dict[int, tuple[int, Any]]
    strips: list[bytes]
    sub_ifds: dict[int, dict[int, tuple[int, Any]]] = field(default_factory=dict)


def page(
    width: int,
    height: int,
    strips: bytes | list[bytes],
    *,
    bits: int = 8,
    samples: int = 1,
    photometric: int = MINISBLACK,
    compression: int = NONE,
    rows_per_strip: int | None = None,
    tile: tuple[int, int] | None = None,
    extra: dict[int, tuple[int, Any]] | None = None,
    sub_ifds: dict[int, dict[int, tuple[int, Any]]] | None = None,
) -> Page:
    """A page of ``strips`` (or of tiles, ``tile`` = (width, length), row-major)."""
    tags: dict[int, tuple[int, Any]] = {
        256: (LONG, [width]),
        257: (LONG, [height]),
        258: (SHORT, [bits] * samples),
        259: (SHORT, [compression]),
        262: (SHORT, [photometric]),
        277: (SHORT, [samples]),
        284: (SHORT, [1]),
    }
    if tile is None:
        tags[278] = (LONG, [rows_per_strip or height])
    else:
        tags[322], tags[323] = (LONG, [tile[0]]), (LONG, [tile[1]])
    tags.update(extra or {})
    return Page(tags, [strips] if isinstance(strips, bytes) else strips, sub_ifds or {})


def _encode_values(kind: int, values: Any, order: str) -> tuple[bytes, int]:
    if kind == ASCII:
        data = values.encode() + b"\0"
        return data, len(data)
    if kind in (BYTE, UNDEFINED):
        return bytes(values), len(values)
    if kind == RATIONAL:
        flat = [number for pair in values for number in pair]
        return struct.pack(f"{order}{len(flat)}I", *flat), len(values)
    code = {SHORT: "H", LONG: "I"}[kind]
    return struct.pack(f"{order}{len(values)}{code}", *values), len(values)


def _write_ifd(out: bytearray, tags: dict[int, tuple[int, Any]], order: str) -> list[int]:
    """Append an IFD with its values; returns [position of its next-IFD field]."""
    if len(out) % 2:
        out.append(0)
    start = len(out)
    data_at = start + 2 + 12 * len(tags) + 4
    entries, data = [], bytearray()
    for code in sorted(tags):
        kind, values = tags[code]
        encoded, count = _encode_values(kind, values, order)
        if len(encoded) <= 4:
            field_bytes = encoded.ljust(4, b"\0")
        else:
            field_bytes = struct.pack(order + "I", data_at + len(data))
            data += encoded + b"\0" * (len(encoded) % 2)
        entries.append(struct.pack(order + "HHI", code, kind, count) + field_bytes)
    out += struct.pack(order + "H", len(tags)) + b"".join(entries) + b"\0\0\0\0" + data
    return [data_at - 4]


def tiff_file(*pages: Page, order: str = "<") -> bytes:
    """A classic TIFF of ``pages`` (each page's strips, then its IFD, then its sub-IFDs)."""
    out = bytearray((b"II*\0" if order == "<" else b"MM\0*") + b"\0\0\0\0")
    next_field = 4
    for tiff_page in pages:
        offsets = []
        for strip in tiff_page.strips:
            if len(out) % 2:
                out.append(0)
            offsets.append(len(out))
            out += strip
        tags = dict(tiff_page.tags)
        offsets_tag, counts_tag = (324, 325) if 322 in tags else (273, 279)  # tiles or strips
        tags[offsets_tag] = (LONG, offsets)
        tags[counts_tag] = (LONG, [len(strip) for strip in tiff_page.strips])
        pointers = {code: (LONG, [0]) for code in tiff_page.sub_ifds}
        tags.update(pointers)
        ifd_start = len(out) + len(out) % 2
        struct.pack_into(order + "I", out, next_field, ifd_start)
        (next_ifd_field,) = _write_ifd(out, tags, order)
        for code, sub_tags in tiff_page.sub_ifds.items():
            sub_start = len(out) + len(out) % 2
            _write_ifd(out, sub_tags, order)
            _patch_pointer(out, ifd_start, code, sub_start, order)
        next_field = next_ifd_field
    return bytes(out)


def _patch_pointer(out: bytearray, ifd_start: int, code: int, value: int, order: str) -> None:
    (count,) = struct.unpack_from(order + "H", out, ifd_start)
    for entry in range(count):
        position = ifd_start + 2 + 12 * entry
        if struct.unpack_from(order + "H", out, position)[0] == code:
            struct.pack_into(order + "I", out, position + 8, value)
            return
    raise AssertionError(f"no tag {code}")


def pack_rows(values: Array, bits: int) -> bytes:
    """Rows of unsigned samples packed MSB first, each row padded to a byte (plain ints)."""
    out = bytearray()
    for row in values.reshape(values.shape[0], -1):
        number, total = 0, 0
        for value in row.tolist():
            number = (number << bits) | int(value)
            total += bits
        number <<= -total % 8
        out += number.to_bytes((total + 7) // 8, "big")
    return bytes(out)


def libtiff_lzw(data: bytes, row_bytes: int) -> tuple[list[bytes], int]:
    """LZW strips of ``data`` (rows of ``row_bytes``) from Pillow's libtiff encoder.

    LZW codes bytes, whatever they hold: an 8-bit gray image as wide as a row's bytes gives
    the strips of any TIFF with those rows. Returns the strips and their rows per strip.
    """
    rows = len(data) // row_bytes
    buffer = io.BytesIO()
    PILImage.frombytes("L", (row_bytes, rows), data).save(buffer, "TIFF", compression="tiff_lzw")
    with tifffile.TiffFile(io.BytesIO(buffer.getvalue())) as tif:
        lzw_page = tif.pages.first
        strips = []
        for offset, count in zip(lzw_page.dataoffsets, lzw_page.databytecounts, strict=True):
            strips.append(buffer.getvalue()[offset : offset + count])
        return strips, min(int(lzw_page.rowsperstrip), rows)


def scaled(values: Array, bits: int, top: int) -> Array:
    """round(value * top / (2**bits - 1)), with exact fractions."""
    maximum = (1 << bits) - 1
    flat = [round(Fraction(int(v) * top, maximum)) for v in values.ravel()]
    return np.array(flat, np.uint16 if top > 255 else np.uint8).reshape(values.shape)


def colormap_tag(rgb16: Array) -> tuple[int, list[int]]:
    """A ColorMap tag from an (N, 3) array of 16-bit colours (stored as all reds, greens...)."""
    return (SHORT, np.asarray(rgb16, np.uint16).T.ravel().tolist())


def tifffile_bytes(array: Array, **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, metadata=None, **options)
    return buffer.getvalue()


def decode(data: bytes, **options: Any) -> Any:
    return read_image(data, name="x.tif", **options)


def rng_values(shape: tuple[int, ...], top: int, seed: int = 0) -> Array:
    return np.random.default_rng(seed).integers(0, top, shape, endpoint=True)


# --------------------------------------------------------------- peers: ImageMagick, libvips


def _imagemagick() -> str | None:
    for command in ("magick", "convert"):
        path = shutil.which(command)
        if path is None:
            continue
        probe = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and "ImageMagick" in probe.stdout:
            return path
    return None


IMAGEMAGICK = _imagemagick()
VIPS = shutil.which("vips")
NEEDS_IMAGEMAGICK = pytest.mark.skipif(IMAGEMAGICK is None, reason="ImageMagick not installed")
NEEDS_VIPS = pytest.mark.skipif(VIPS is None, reason="libvips (vips) not installed")


def magick_pixels(path: Path, shape: tuple[int, ...], dtype: Any, *options: str) -> Array:
    """ImageMagick's decoding of ``path`` as gray/graya/rgb/rgba samples of ``dtype``.

    ImageMagick (Q16) computes at 16 bits; its own ``-depth 8`` output then drops rather than
    rounds some fractions, so 8-bit results are its 16-bit samples rounded to 8 bits.
    """
    assert IMAGEMAGICK is not None
    channels = shape[2] if len(shape) == 3 else 1
    layout = {1: "gray", 2: "graya", 3: "rgb", 4: "rgba"}[channels]
    command = [IMAGEMAGICK, f"{path}[0]", *options, "-depth", "16", f"{layout}:-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    samples = np.frombuffer(raw, "<u2").reshape(shape)
    if np.dtype(dtype) == np.uint8:
        return ((samples.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)
    return samples.astype(np.uint16)


def vips_pixels(path: Path, shape: tuple[int, ...], dtype: Any, tmp_path: Path) -> Array:
    """libvips's decoding of ``path`` (``vips rawsave``: the bands as stored in memory)."""
    assert VIPS is not None
    out = tmp_path / f"{path.stem}.raw"
    subprocess.run([VIPS, "rawsave", str(path), str(out)], capture_output=True, check=True)
    return np.fromfile(out, np.dtype(dtype)).reshape(shape)


# --------------------------------------------------------------- 1. 1-bit palette, multi-page


ONE_BIT = np.array([[1, 0, 1, 1, 0, 0, 1, 0, 1, 1], [0, 0, 1, 0, 1, 1, 1, 0, 0, 1]], np.uint8)
TWO_COLOURS = np.array([[65535, 0, 0], [0, 0, 65535]])  # red, blue


def one_bit_palette_pages() -> bytes:
    pages = [
        page(10, 2, pack_rows(bits, 1), bits=1, photometric=PALETTE,
             extra={320: colormap_tag(TWO_COLOURS)})
        for bits in (ONE_BIT, 1 - ONE_BIT)
    ]  # fmt: skip
    return tiff_file(*pages)


def test_one_bit_palette_multipage_tiff_is_expanded_on_every_page() -> None:
    data = one_bit_palette_pages()
    expected = (TWO_COLOURS // 257).astype(np.uint8)
    for number, bits in enumerate((ONE_BIT, 1 - ONE_BIT)):
        image = read_tiff(io.BytesIO(data), name="x.tif", max_pixels=10**6, max_bytes=10**9,
                          page=number)  # fmt: skip
        np.testing.assert_array_equal(image.pixels, expected[bits])
        assert image.pixels.dtype == np.uint8 and not image.has_alpha
    assert tiff_page_count(io.BytesIO(data)) == 2
    with PILImage.open(io.BytesIO(data)) as opened:  # Pillow agrees on page 0
        np.testing.assert_array_equal(decode(data).pixels, np.asarray(opened.convert("RGB")))


def test_one_bit_palette_tiff_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "pal1.tif"
    source.write_bytes(one_bit_palette_pages())
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png").pixels
    np.testing.assert_array_equal(out, (TWO_COLOURS // 257).astype(np.uint8)[ONE_BIT])


# --------------------------------------------------------------- 2. 2, 4 and 12-bit samples


@pytest.mark.parametrize("bits", [2, 4, 12, 3, 10])
@pytest.mark.parametrize("compression", [NONE, DEFLATE])
def test_odd_bit_depth_gray_is_scaled_to_8_or_16_bits(bits: int, compression: int) -> None:
    values = rng_values((5, 7), (1 << bits) - 1, seed=bits)  # 7 columns: rows end mid-byte
    values.flat[:2] = [0, (1 << bits) - 1]
    packed = pack_rows(values, bits)
    strip = zlib.compress(packed) if compression == DEFLATE else packed
    data = tiff_file(page(7, 5, strip, bits=bits, compression=compression))
    image = decode(data)
    top = 255 if bits <= 8 else 65535
    np.testing.assert_array_equal(image.pixels, scaled(values, bits, top))
    assert read_header(data, name="x").dtype == image.pixels.dtype.name


def test_twelve_bit_scaling_rounds_as_imagemagick_not_by_truncation() -> None:
    values = np.array([[0, 255, 2048, 4095]])
    image = decode(tiff_file(page(4, 1, pack_rows(values, 12), bits=12)))
    # 255 * 65535 / 4095 = 4080.9: rounded, not 4080 (truncated or bit-replicated).
    np.testing.assert_array_equal(image.pixels, [[0, 4081, 32776, 65535]])


@pytest.mark.parametrize("bits", [4, 12])
def test_odd_bit_depth_rgb_min_is_white_and_planar(bits: int) -> None:
    values = rng_values((3, 5, 3), (1 << bits) - 1, seed=1)
    top = 255 if bits <= 8 else 65535
    rgb = tiff_file(page(5, 3, pack_rows(values, bits), bits=bits, samples=3, photometric=RGB))
    np.testing.assert_array_equal(decode(rgb).pixels, scaled(values, bits, top))
    planes = [pack_rows(values[..., channel], bits) for channel in range(3)]
    separate = page(5, 3, planes, bits=bits, samples=3, photometric=RGB, extra={284: (SHORT, [2])})
    np.testing.assert_array_equal(decode(tiff_file(separate)).pixels, scaled(values, bits, top))
    gray = values[..., 0]
    white = tiff_file(page(5, 3, pack_rows(gray, bits), bits=bits, photometric=MINISWHITE))
    np.testing.assert_array_equal(decode(white).pixels, scaled((1 << bits) - 1 - gray, bits, top))


@LIBTIFF
@pytest.mark.parametrize("bits", [4, 12, 16])
def test_lzw_strips_of_any_bit_depth_are_decoded_exactly(bits: int) -> None:
    """LZW needs imagecodecs in tifffile; libtiff decompresses the strips, convcli unpacks."""
    values = rng_values((40, 9, 3), (1 << bits) - 1, seed=bits)
    if bits == 16:
        packed, expected = values.astype("<u2").tobytes(), values.astype(np.uint16)
    else:
        packed, expected = pack_rows(values, bits), scaled(values, bits, 255 if bits < 8 else 65535)
    row_bytes = len(packed) // 40
    strips, rows = libtiff_lzw(packed, row_bytes)
    data = tiff_file(page(9, 40, strips, bits=bits, samples=3, photometric=RGB,
                          compression=LZW, rows_per_strip=rows))  # fmt: skip
    np.testing.assert_array_equal(decode(data).pixels, expected)


def test_odd_bit_depth_tiles_are_placed_and_cut_to_the_image() -> None:
    values = rng_values((10, 20), 4095, seed=9)
    padded = np.zeros((16, 32), np.int64)
    padded[:10, :20] = values
    tiles = [pack_rows(padded[:, x : x + 16], 12) for x in (0, 16)]
    data = tiff_file(page(20, 10, tiles, bits=12, tile=(16, 16)))
    np.testing.assert_array_equal(decode(data).pixels, scaled(values, 12, 65535))


def test_fill_order_2_reverses_the_bits_of_each_byte() -> None:
    values = rng_values((3, 6), 15, seed=4)
    packed = np.frombuffer(pack_rows(values, 4), np.uint8)
    reversed_bits = np.unpackbits(packed).reshape(-1, 8)[:, ::-1]
    data = tiff_file(page(6, 3, np.packbits(reversed_bits).tobytes(), bits=4,
                          extra={266: (SHORT, [2])}))  # fmt: skip
    np.testing.assert_array_equal(decode(data).pixels, scaled(values, 4, 255))


@LIBTIFF
def test_one_bit_min_is_white_lzw_and_packbits_rgb() -> None:
    bits = np.tile(ONE_BIT, (3, 1))
    strips, rows = libtiff_lzw(pack_rows(bits, 1), 2)
    data = tiff_file(page(10, 6, strips, bits=1, photometric=MINISWHITE, compression=LZW,
                          rows_per_strip=rows))  # fmt: skip
    np.testing.assert_array_equal(decode(data).pixels, np.where(bits == 1, 0, 255))
    rgb = rng_values((9, 13, 3), 255, seed=3).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, "TIFF", compression="packbits")
    np.testing.assert_array_equal(decode(buffer.getvalue()).pixels, rgb)


@LIBTIFF
def test_lzw_with_horizontal_predictor_is_undone_per_sample() -> None:
    values = rng_values((6, 7, 3), 65535, seed=2).astype(np.uint16)
    differences = values.copy()
    differences[:, 1:] = np.diff(values, axis=1)  # modulo 2**16, per channel
    strips, rows = libtiff_lzw(differences.astype("<u2").tobytes(), 7 * 3 * 2)
    data = tiff_file(page(7, 6, strips, bits=16, samples=3, photometric=RGB, compression=LZW,
                          rows_per_strip=rows, extra={317: (SHORT, [2])}))  # fmt: skip
    np.testing.assert_array_equal(decode(data).pixels, values)


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize("options", [["-define", "tiff:predictor=2"],
                                     ["-define", "tiff:tile-geometry=16x16"]])  # fmt: skip
def test_sixteen_bit_lzw_matches_imagemagick(tmp_path: Path, options: list[str]) -> None:
    assert IMAGEMAGICK is not None
    path = tmp_path / "rgb16.tif"
    subprocess.run([IMAGEMAGICK, "-size", "37x23", "plasma:fractal", "-seed", "5", "-type",
                    "TrueColor", "-depth", "16", "-compress", "lzw", *options, str(path)],
                   check=True)  # fmt: skip
    image = read_image(path, name=str(path))
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, magick_pixels(path, (23, 37, 3), np.uint16))


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize(("depth", "compress"), [(2, "none"), (4, "lzw"), (12, "none"),
                                                 (12, "zip"), (4, "zip")])  # fmt: skip
def test_odd_bit_depths_match_imagemagick(tmp_path: Path, depth: int, compress: str) -> None:
    assert IMAGEMAGICK is not None
    path = tmp_path / f"g{depth}.tif"
    subprocess.run([IMAGEMAGICK, "-size", "37x23", "plasma:fractal", "-seed", "4", "-type",
                    "TrueColor", "-depth", str(depth), "-compress", compress, str(path)],
                   check=True)  # fmt: skip
    image = read_image(path, name=str(path))
    reference = magick_pixels(path, image.pixels.shape, image.pixels.dtype)
    np.testing.assert_array_equal(image.pixels, reference)


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize("bits", [2, 4, 12])
def test_every_value_of_a_bit_depth_scales_as_imagemagick(tmp_path: Path, bits: int) -> None:
    values = np.arange(1 << bits).reshape(-1, 64 if bits == 12 else 1 << bits)
    height, width = values.shape
    path = tmp_path / f"all{bits}.tif"
    path.write_bytes(tiff_file(page(width, height, pack_rows(values, bits), bits=bits)))
    image = read_image(path, name=str(path))
    reference = magick_pixels(path, values.shape, image.pixels.dtype)
    np.testing.assert_array_equal(image.pixels, reference)


@NEEDS_VIPS
@pytest.mark.parametrize("bits", [2, 4])
def test_two_and_four_bit_gray_match_libvips(tmp_path: Path, bits: int) -> None:
    values = rng_values((6, 11), (1 << bits) - 1, seed=bits)
    path = tmp_path / f"g{bits}.tif"
    path.write_bytes(tiff_file(page(11, 6, pack_rows(values, bits), bits=bits)))
    image = read_image(path, name=str(path))
    np.testing.assert_array_equal(image.pixels, vips_pixels(path, (6, 11), np.uint8, tmp_path))


def test_twelve_bit_tiff_through_the_cli(tmp_path: Path) -> None:
    values = rng_values((6, 5), 4095, seed=3)
    source = tmp_path / "g12.tif"
    source.write_bytes(tiff_file(page(5, 6, pack_rows(values, 12), bits=12)))
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png").pixels
    np.testing.assert_array_equal(out, scaled(values, 12, 65535))


# --------------------------------------------------------------- 3. CMYK to RGB


def cmyk_reference(cmyk: Array, top: int) -> Array:
    """R = (1 - C)(1 - K) etc., rounded, with exact fractions."""
    c = cmyk.astype(object)
    rgb = [[[round(Fraction((top - px[i]) * (top - px[3]), top)) for i in range(3)]
            for px in row] for row in c]  # fmt: skip
    return np.array(rgb, np.uint16 if top > 255 else np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_cmyk_tiff_is_read_as_rgb_without_alpha(dtype: Any) -> None:
    top = int(np.iinfo(dtype).max)
    cmyk = rng_values((4, 6, 4), top, seed=2).astype(dtype)
    data = tifffile_bytes(cmyk, photometric="separated")
    image = decode(data)
    assert image.pixels.shape == (4, 6, 3) and image.pixels.dtype == dtype
    assert not image.has_alpha
    np.testing.assert_array_equal(image.pixels, cmyk_reference(cmyk, top))
    header = read_header(data, name="x")
    assert (header.channels, header.mode) == (3, "CMYK" if dtype == np.uint8 else "CMYK;16")
    if dtype == np.uint8:  # Pillow's own conversion gives the same
        with PILImage.open(io.BytesIO(data)) as opened:
            np.testing.assert_array_equal(image.pixels, np.asarray(opened.convert("RGB")))


@LIBTIFF
def test_jpeg_compressed_cmyk_tiff_is_read_as_pillow_converts_it() -> None:
    cmyk = rng_values((16, 24, 4), 255, seed=5).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(cmyk, "CMYK").save(buffer, "TIFF", compression="jpeg", quality=90)
    image = decode(buffer.getvalue())
    with PILImage.open(io.BytesIO(buffer.getvalue())) as opened:
        assert opened.mode == "CMYK"
        reference = np.asarray(opened.convert("RGB"))
    np.testing.assert_array_equal(image.pixels, reference)
    assert image.pixels.shape == (16, 24, 3) and not image.has_alpha


def test_cmyk_jpeg_adobe_inverted_is_read_as_rgb() -> None:
    cmyk = rng_values((16, 16, 4), 255, seed=6).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(cmyk, "CMYK").save(buffer, "JPEG", quality=95)  # Adobe APP14, inverted
    assert b"Adobe" in buffer.getvalue()
    image = read_image(buffer.getvalue(), name="x.jpg")
    with PILImage.open(io.BytesIO(buffer.getvalue())) as opened:
        reference = np.asarray(opened.convert("RGB"))
    np.testing.assert_array_equal(image.pixels, reference)
    assert image.pixels.shape == (16, 16, 3) and not image.has_alpha


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize("kind", ["8.tif", "16.tif", "jpeg.tif", ".jpg"])
def test_cmyk_matches_imagemagick(tmp_path: Path, kind: str) -> None:
    assert IMAGEMAGICK is not None
    path = tmp_path / f"cmyk{kind}"
    options = {"8.tif": ["-depth", "8"], "16.tif": ["-depth", "16"],
               "jpeg.tif": ["-depth", "8", "-compress", "jpeg"], ".jpg": []}[kind]  # fmt: skip
    subprocess.run([IMAGEMAGICK, "-size", "24x16", "plasma:fractal", "-seed", "2",
                    "-colorspace", "cmyk", *options, str(path)], check=True)  # fmt: skip
    image = read_image(path, name=str(path))
    assert image.pixels.shape == (16, 24, 3) and not image.has_alpha
    reference = magick_pixels(path, image.pixels.shape, image.pixels.dtype, "-colorspace", "sRGB")
    np.testing.assert_array_equal(image.pixels, reference)


def test_cmyk_tiff_through_the_cli_gives_rgb(tmp_path: Path) -> None:
    cmyk = rng_values((5, 6, 4), 65535, seed=7).astype(np.uint16)
    source = tmp_path / "cmyk16.tif"
    source.write_bytes(tifffile_bytes(cmyk, photometric="separated"))
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png")
    assert out.pixels.shape == (5, 6, 3) and not out.has_alpha
    np.testing.assert_array_equal(out.pixels, cmyk_reference(cmyk, 65535))


# --------------------------------------------------------------- 4. associated alpha


def unpremultiplied(rgba: Array, top: int) -> Array:
    """colour * top / alpha rounded half up (as ImageMagick), 0 where alpha is 0."""
    out = rgba.astype(object).copy()
    for index in np.ndindex(rgba.shape[:2]):
        alpha = int(rgba[index][3])
        for channel in range(3):
            exact = Fraction(int(rgba[index][channel]) * top, alpha or 1)
            out[index][channel] = 0 if alpha == 0 else min(top, math.floor(exact + Fraction(1, 2)))
    return out.astype(rgba.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_associated_alpha_tiff_is_unpremultiplied(dtype: Any) -> None:
    top = int(np.iinfo(dtype).max)
    rng = np.random.default_rng(8)
    alpha = rng.integers(0, top, (5, 7), endpoint=True).astype(dtype)
    alpha[0, :3] = [0, 1, top]
    colour = (rng.random((5, 7, 3)) * alpha[..., None]).astype(dtype)  # premultiplied: <= alpha
    rgba = np.concatenate([colour, alpha[..., None]], axis=-1)
    image = decode(tifffile_bytes(rgba, photometric="rgb", extrasamples=("assocalpha",)))
    assert image.has_alpha
    np.testing.assert_array_equal(image.pixels, unpremultiplied(rgba, top))
    assert image.pixels[0, 0, :3].tolist() == [0, 0, 0]  # alpha 0: colour 0


def assoc_alpha_file(path: Path) -> Array:
    y, x = np.mgrid[0:16, 0:24]
    alpha = (40 + 9 * x).astype(np.uint8)
    colour = np.stack([x * 10, y * 15, (x + y) * 6], axis=-1).astype(np.uint16)
    colour = (colour * alpha[..., None] // 255).astype(np.uint8)
    rgba = np.concatenate([colour, alpha[..., None]], axis=-1)
    path.write_bytes(tifffile_bytes(rgba, photometric="rgb", extrasamples=("assocalpha",)))
    return rgba


@NEEDS_IMAGEMAGICK
def test_associated_alpha_matches_imagemagick(tmp_path: Path) -> None:
    """ImageMagick un-premultiplies at 16 bits; its result rounded to 8 bits is convcli's."""
    path = tmp_path / "assoc.tif"
    assoc_alpha_file(path)
    image = read_image(path, name=str(path))
    np.testing.assert_array_equal(image.pixels, magick_pixels(path, image.pixels.shape, np.uint8))


@NEEDS_VIPS
def test_associated_alpha_matches_libvips_within_its_truncation(tmp_path: Path) -> None:
    path = tmp_path / "assoc.tif"
    rgba = assoc_alpha_file(path)
    image = read_image(path, name=str(path))
    reference = vips_pixels(path, rgba.shape, np.uint8, tmp_path)
    assert np.abs(image.pixels.astype(int) - reference.astype(int)).max() <= 1  # vips truncates


def test_associated_alpha_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "assoc.tif"
    rgba = assoc_alpha_file(source)
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png")
    assert out.has_alpha
    np.testing.assert_array_equal(out.pixels, unpremultiplied(rgba, 255))


# --------------------------------------------------------------- 5. palette + alpha, LZW


PALETTE_COLOURS = np.array([[65535, 0, 0], [0, 65535, 0], [0, 0, 65535], [65535, 65535, 0]])


def palette_alpha_file(*, lzw: bool, bits: int = 8) -> tuple[bytes, Array]:
    index = np.array([[0, 1, 2, 3, 0], [3, 2, 1, 0, 1], [2, 2, 3, 3, 0]])
    alpha = np.array([[255, 128, 0, 255, 7], [1, 2, 3, 255, 254], [0, 0, 9, 200, 255]])
    alpha = alpha >> (8 - bits)
    packed = pack_rows(np.stack([index, alpha], axis=-1), bits)
    colormap = np.zeros((1 << bits, 3), np.int64)
    colormap[:4] = PALETTE_COLOURS
    options: dict[str, Any] = {
        "bits": bits, "samples": 2, "photometric": PALETTE,
        "extra": {320: colormap_tag(colormap), 338: (SHORT, [2])},
    }  # fmt: skip
    if lzw:
        strips, rows = libtiff_lzw(packed, len(packed) // 3)
        data = tiff_file(page(5, 3, strips, compression=LZW, rows_per_strip=rows, **options))
    else:
        data = tiff_file(page(5, 3, packed, **options))
    rgb = (PALETTE_COLOURS // 257)[index]
    expected = np.concatenate([rgb, scaled(alpha, bits, 255)[..., None]], axis=-1)
    return data, expected.astype(np.uint8)


@pytest.mark.parametrize("lzw", [pytest.param(True, marks=LIBTIFF), False])
@pytest.mark.parametrize("bits", [8, 4])
def test_palette_with_alpha_tiff_is_read_as_rgba(lzw: bool, bits: int) -> None:
    data, expected = palette_alpha_file(lzw=lzw, bits=bits)
    image = decode(data)
    assert image.has_alpha
    np.testing.assert_array_equal(image.pixels, expected)
    assert read_header(data, name="x").mode == "PA"


@NEEDS_IMAGEMAGICK
def test_palette_with_alpha_lzw_matches_imagemagick(tmp_path: Path) -> None:
    assert IMAGEMAGICK is not None
    source, path = tmp_path / "rgba.png", tmp_path / "pa.tif"
    PILImage.fromarray(palette_alpha_file(lzw=False)[1]).save(source)
    subprocess.run([IMAGEMAGICK, str(source), "-type", "PaletteAlpha", "-compress", "lzw",
                    str(path)], check=True)  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.photometric == PALETTE and tif.pages.first.samplesperpixel == 2
    image = read_image(path, name=str(path))
    reference = magick_pixels(path, image.pixels.shape, image.pixels.dtype)
    np.testing.assert_array_equal(image.pixels, reference)


@LIBTIFF
def test_palette_with_alpha_lzw_through_the_cli(tmp_path: Path) -> None:
    data, expected = palette_alpha_file(lzw=True)
    source = tmp_path / "pa.tif"
    source.write_bytes(data)
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(read_image(tmp_path / "out.png", name="o").pixels, expected)


# --------------------------------------------------------------- 6. extra samples, no tag


@pytest.mark.parametrize(("photometric", "samples"), [(RGB, 4), (MINISBLACK, 2), (RGB, 5)])
def test_samples_without_extrasamples_tag_are_plain_channels(
    photometric: int, samples: int
) -> None:
    values = rng_values((3, 4, samples), 255, seed=samples).astype(np.uint8)
    data = tiff_file(page(4, 3, values.tobytes(), samples=samples, photometric=photometric))
    image = decode(data)
    assert not image.has_alpha
    np.testing.assert_array_equal(image.pixels, values)
    extras = samples - (3 if photometric == RGB else 1)
    kinds = [2] + [0] * (extras - 1)  # unassociated alpha, then unspecified
    with_tag = page(4, 3, values.tobytes(), samples=samples, photometric=photometric,
                    extra={338: (SHORT, kinds)})  # fmt: skip
    assert decode(tiff_file(with_tag)).has_alpha is (samples in (2, 4))


@pytest.mark.parametrize("channels", [2, 4])
def test_encode_tiff_writes_an_extra_channel_that_is_not_alpha_as_such(channels: int) -> None:
    pixels = rng_values((3, 4, channels), 255, seed=1).astype(np.uint8)
    plain = encode_tiff(pixels, level=6, has_alpha=False)
    with tifffile.TiffFile(io.BytesIO(plain)) as tif:
        assert [int(kind) for kind in tif.pages.first.extrasamples] == [0]
    assert not decode(plain).has_alpha
    alpha = encode_tiff(pixels, level=6)  # the default stays: 2 and 4 channels are alpha
    assert decode(alpha).has_alpha
    np.testing.assert_array_equal(decode(plain).pixels, pixels)


def test_fourth_sample_without_tag_is_filtered_like_colour_through_the_cli(tmp_path: Path) -> None:
    values = np.zeros((5, 5, 4), np.uint8)
    values[2, 2] = [90, 90, 90, 90]
    source = tmp_path / "rgbx.tif"
    source.write_bytes(tiff_file(page(5, 5, values.tobytes(), samples=4, photometric=RGB)))
    result = run("conv", source, "-k", "box", "-o", tmp_path / "out.tif")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.tif", name="out.tif").pixels
    assert out.shape == (5, 5, 4)
    np.testing.assert_array_equal(out[..., 3], out[..., 0])  # blurred, not passed through
    assert out[1, 1, 3] == 10


# --------------------------------------------------------------- 7. gray PNG with tRNS


def gray_png(values: Array, bits: int, transparent: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width = values.shape
    rows = pack_rows(values, bits) if bits < 8 else values.astype(f">u{bits // 8}").tobytes()
    row_bytes = len(rows) // height
    raw = b"".join(b"\0" + rows[i * row_bytes : (i + 1) * row_bytes] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"tRNS", struct.pack(">H", transparent))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_gray_png_with_trns_is_read_as_gray_and_alpha(bits: int) -> None:
    values = rng_values((4, 9), (1 << bits) - 1, seed=bits)
    key = 1 if bits > 1 else 0
    values.flat[:2] = [key, (1 << bits) - 1]
    image = read_image(gray_png(values, bits, key), name="x.png")
    assert image.has_alpha and image.pixels.shape == (4, 9, 2)
    np.testing.assert_array_equal(image.pixels[..., 0], scaled(values, bits, 255))
    np.testing.assert_array_equal(image.pixels[..., 1], np.where(values == key, 0, 255))
    assert read_header(gray_png(values, bits, key), name="x.png").channels == 2


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_gray_png_with_trns_matches_imagemagick(tmp_path: Path, bits: int) -> None:
    values = rng_values((4, 9), (1 << bits) - 1, seed=bits)
    path = tmp_path / f"g{bits}.png"
    path.write_bytes(gray_png(values, bits, 1))
    image = read_image(path, name=str(path))
    np.testing.assert_array_equal(image.pixels, magick_pixels(path, (4, 9, 2), np.uint8))


def test_one_bit_png_with_trns_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "bits.png"
    source.write_bytes(gray_png(ONE_BIT, 1, 1))
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png")
    assert out.has_alpha
    np.testing.assert_array_equal(out.pixels[..., 1], np.where(ONE_BIT == 1, 0, 255))


# --------------------------------------------------------------- 8. decoder log lines


def corrupt_lzw_tiff() -> bytes:
    values = rng_values((8, 8, 3), 255).astype(np.uint8).tobytes()
    strips, rows = libtiff_lzw(values, 24)
    broken = [b"\xff" * len(strip) for strip in strips]  # codes not yet in the table
    return tiff_file(page(8, 8, broken, samples=3, photometric=RGB, compression=LZW,
                          rows_per_strip=rows))  # fmt: skip


def corrupt_jpeg_tiff() -> bytes:
    """A JPEG-in-TIFF whose strip is noise after its first bytes: libjpeg complains."""
    buffer = io.BytesIO()
    PILImage.fromarray(rng_values((32, 32, 3), 255).astype(np.uint8)).save(
        buffer, "TIFF", compression="jpeg"
    )
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offset, count = tif.pages.first.dataoffsets[0], tif.pages.first.databytecounts[0]
    data[offset + 20 : offset + count] = (
        rng_values((count - 20,), 255, seed=1).astype(np.uint8).tobytes()
    )
    return bytes(data)


@LIBTIFF
@pytest.mark.parametrize("make", [corrupt_lzw_tiff, corrupt_jpeg_tiff])
def test_no_libtiff_line_reaches_a_real_stderr(tmp_path: Path, make: Callable[[], bytes]) -> None:
    """libtiff prints "LZWDecode: ..." or "JPEGLib: ..." on fd 2; only convcli's line shows."""
    source = tmp_path / "broken.tif"
    source.write_bytes(make())
    result = convcli("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("Error:"), lines
    assert f"{source}: cannot read image" in lines[0]


@LIBTIFF
def test_corrupt_lzw_is_an_input_error_naming_the_file() -> None:
    with pytest.raises(InputError, match=r"x\.tif: cannot read image"):
        decode(corrupt_lzw_tiff())


# --------------------------------------------------------------- 9. TIFF orientation


def pillow_upright(data: bytes) -> Array:
    with PILImage.open(io.BytesIO(data)) as opened:
        return np.asarray(ImageOps.exif_transpose(opened))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_like_pillow(orientation: int) -> None:
    stored = rng_values((3, 5, 3), 255, seed=orientation).astype(np.uint8)
    data = tifffile_bytes(stored, photometric="rgb",
                          extratags=[(274, "H", 1, orientation, False)])  # fmt: skip
    image = decode(data)
    np.testing.assert_array_equal(image.pixels, pillow_upright(data))
    header = read_header(data, name="x")
    assert (header.height, header.width) == image.pixels.shape[:2]
    assert (header.width, header.height) == ((3, 5) if orientation >= 5 else (5, 3))


@NEEDS_IMAGEMAGICK
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_matches_imagemagick_auto_orient(tmp_path: Path, orientation: int) -> None:
    stored = rng_values((3, 5, 3), 255, seed=orientation).astype(np.uint8)
    path = tmp_path / f"o{orientation}.tif"
    path.write_bytes(
        tifffile_bytes(stored, photometric="rgb", extratags=[(274, "H", 1, orientation, False)])
    )
    image = read_image(path, name=str(path))
    reference = magick_pixels(path, image.pixels.shape, np.uint8, "-auto-orient")
    np.testing.assert_array_equal(image.pixels, reference)


@LIBTIFF
@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_tiff_orientation_is_applied_on_every_decoding_route(compression: str) -> None:
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8, :12] = 255  # a white top-left quarter
    buffer = io.BytesIO()
    PILImage.fromarray(stored).save(buffer, "TIFF", compression=compression,
                                    tiffinfo={274: 6})  # fmt: skip
    image = decode(buffer.getvalue())
    assert image.pixels.shape == (24, 16, 3)
    assert image.pixels[:12, 8:].min() > 200 and image.pixels[:12, :8].max() < 50  # top right


def test_tiff_orientation_through_the_cli(tmp_path: Path) -> None:
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    source = tmp_path / "turned.tif"
    source.write_bytes(tifffile_bytes(stored, extratags=[(274, "H", 1, 8, False)]))
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.png", name="out.png").pixels
    np.testing.assert_array_equal(out, np.rot90(stored, 1))


# --------------------------------------------------------------- 10. TIFF metadata


def metadata_tiff(orientation: int = 6, unit: int = 3) -> bytes:
    exif_ifd = {
        0x829A: (RATIONAL, [(1, 250)]),  # ExposureTime
        0x8827: (SHORT, [400]),  # ISOSpeedRatings
        0x9003: (ASCII, "2024:01:02 03:04:05"),  # DateTimeOriginal
    }
    extra = {
        271: (ASCII, "Canon"),
        272: (ASCII, "EOS R"),
        274: (SHORT, [orientation]),
        282: (RATIONAL, [(300, 1)]),
        283: (RATIONAL, [(150, 1)]),
        296: (SHORT, [unit]),
        700: (BYTE, list(b"<x:xmpmeta>hi</x:xmpmeta>")),
        34675: (UNDEFINED, list(b"ICC-PROFILE-BYTES")),
    }
    return tiff_file(page(4, 2, bytes(8), extra=extra, sub_ifds={34665: exif_ifd}))


def test_tiff_metadata_is_read_into_the_image() -> None:
    image = decode(metadata_tiff())
    metadata = image.metadata
    assert metadata.icc == b"ICC-PROFILE-BYTES"
    assert metadata.xmp == b"<x:xmpmeta>hi</x:xmpmeta>"
    # 300 x 150 pixels per centimetre, in inches, swapped with the axes (orientation 6).
    assert metadata.dpi == pytest.approx((150 * 2.54, 300 * 2.54))
    assert metadata.exif is not None and metadata.exif[:4] in (b"II*\0", b"MM\0*")
    exif = PILImage.Exif()
    exif.load(b"Exif\0\0" + metadata.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "Canon" and exif[0x0110] == "EOS R"
    details = exif.get_ifd(0x8769)
    assert details[0x829A] == TiffImagePlugin.IFDRational(1, 250)
    assert details[0x8827] == 400 and details[0x9003] == "2024:01:02 03:04:05"


def test_tiff_without_metadata_has_none_and_inch_resolution_is_kept() -> None:
    assert decode(tifffile_bytes(np.zeros((2, 2), np.uint8))).metadata == Metadata()
    inches = decode(metadata_tiff(orientation=1, unit=2)).metadata
    assert inches.dpi == pytest.approx((300.0, 150.0))
    assert decode(metadata_tiff(orientation=1, unit=1)).metadata.dpi is None  # no unit


def test_tiff_metadata_reaches_a_jpeg_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "meta.tif"
    source.write_bytes(metadata_tiff())
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.jpg")
    assert result.exit_code == 0, result.stderr
    out = read_image(tmp_path / "out.jpg", name="out.jpg")
    assert out.pixels.shape[:2] == (4, 2)  # turned upright: orientation 6
    assert out.metadata.icc == b"ICC-PROFILE-BYTES"
    assert out.metadata.dpi == pytest.approx((381, 762), abs=1)
    with PILImage.open(tmp_path / "out.jpg") as opened:
        exif = opened.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "Canon"
        assert exif.get_ifd(0x8769)[0x829A] == TiffImagePlugin.IFDRational(1, 250)


# --------------------------------------------------------------- 11. pages


def test_page_count_skips_reduced_resolution_copies_and_subifds() -> None:
    full = page(4, 2, bytes(range(8)))
    second = page(4, 2, bytes(range(8, 16)))
    reduced = page(2, 1, bytes(2), extra={254: (LONG, [1])})
    data = tiff_file(full, reduced, second)
    assert tiff_page_count(io.BytesIO(data)) == 2
    second_page = read_tiff(io.BytesIO(data), name="x.tif", max_pixels=100, max_bytes=10**6,
                            page=1)  # fmt: skip
    np.testing.assert_array_equal(second_page.pixels, np.arange(8, 16).reshape(2, 4))
    with pytest.raises(InputError, match=r"x\.tif: the TIFF has 2 page\(s\), there is no page 2"):
        read_tiff(io.BytesIO(data), name="x.tif", max_pixels=100, max_bytes=10**6, page=2)
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:  # a pyramid in SubIFDs: one page
        writer.write(np.zeros((8, 8), np.uint8), subifds=1, metadata=None)
        writer.write(np.zeros((4, 4), np.uint8), subfiletype=1, metadata=None)
    assert tiff_page_count(io.BytesIO(buffer.getvalue())) == 1


def test_each_page_is_planned_and_size_checked_from_its_own_tags() -> None:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(np.full((2, 3), 7, np.uint8), metadata=None)
        writer.write(np.full((40, 50, 3), 9, np.uint16), photometric="rgb", metadata=None)
    data = buffer.getvalue()
    first = read_tiff(io.BytesIO(data), name="m.tif", max_pixels=100, max_bytes=10**6)
    np.testing.assert_array_equal(first.pixels, np.full((2, 3), 7))
    with pytest.raises(LimitError, match="m.tif: image is 50x40"):
        read_tiff(io.BytesIO(data), name="m.tif", max_pixels=100, max_bytes=10**6, page=1)
    second = read_tiff(io.BytesIO(data), name="m.tif", max_pixels=10**4, max_bytes=10**6, page=1)
    assert second.pixels.shape == (40, 50, 3) and second.pixels.dtype == np.uint16


def test_multipage_tiff_through_the_cli_reads_its_first_page(tmp_path: Path) -> None:
    source = tmp_path / "pages.tif"
    source.write_bytes(one_bit_palette_pages())
    result = run("conv", source, "-k", "identity", "-o", tmp_path / "out.npy")
    assert result.exit_code == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    first = (TWO_COLOURS // 257)[ONE_BIT]
    assert np.array_equal(out.reshape(-1, 2, 10, 3)[0], first)  # pages may be on an N axis
