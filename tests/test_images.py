"""Tests of convcli.io.images: decoding, encoding, size limits and dtype/range mapping."""

from __future__ import annotations

import importlib.util
import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import features

from convcli.errors import ConvcliError, InputError, LimitError
from convcli.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    OUT_DTYPES,
    RANGE_MODES,
    Image,
    ImageHeader,
    check_writable,
    encode_image,
    format_from_path,
    merge_alpha,
    read_header,
    read_image,
    sniff_format,
    split_alpha,
    to_image_dtype,
)

Array = npt.NDArray[Any]

WEBP = pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")


def random_pixels(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> Array:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0, 100, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def smooth_rgb(height: int = 48, width: int = 64) -> Array:
    """A smooth color image: lossy codecs reproduce it closely."""
    y, x = np.mgrid[0:height, 0:width]
    red = 128 + 100 * np.sin(x / 9.0)
    green = 128 + 100 * np.cos(y / 7.0)
    blue = (x + y) * 255.0 / (height + width)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def pillow_bytes(image: PILImage.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tiff_bytes(array: Array, **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, metadata=None, **options)
    return buffer.getvalue()


# --------------------------------------------------------------- hand-made PNG files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))  # fmt: skip


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distances = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if distances[0] <= distances[1] and distances[0] <= distances[2]:
        return left
    return up if distances[1] <= distances[2] else up_left


def filter_row(row: bytes, above: bytes, kind: int, bpp: int) -> bytes:
    """One PNG filter applied with plain loops, straight from the PNG specification."""
    out = bytearray()
    for i, value in enumerate(row):
        left = row[i - bpp] if i >= bpp else 0
        up = above[i]
        up_left = above[i - bpp] if i >= bpp else 0
        predictor = (0, left, up, (left + up) // 2, paeth(left, up, up_left))[kind]
        out.append((value - predictor) % 256)
    return bytes([kind]) + bytes(out)


def unfilter_rows(data: bytes, height: int, stride: int, bpp: int) -> list[bytes]:
    """The inverse of :func:`filter_row` for a whole (non-interlaced) image."""
    rows: list[bytes] = []
    above = bytes(stride)
    position = 0
    for _ in range(height):
        kind, filtered = data[position], data[position + 1 : position + 1 + stride]
        position += 1 + stride
        row = bytearray(stride)
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up = above[i]
            up_left = above[i - bpp] if i >= bpp else 0
            predictor = (0, left, up, (left + up) // 2, paeth(left, up, up_left))[kind]
            row[i] = (filtered[i] + predictor) % 256
        rows.append(bytes(row))
        above = bytes(row)
    return rows


def sample_bytes(image: Array) -> list[bytes]:
    """Big-endian sample bytes of each row of an (H, W, C) uint8/uint16 image."""
    return [row.astype(">u2" if image.dtype == np.uint16 else "u1").tobytes() for row in image]


def make_png(
    image: Array,
    color_type: int,
    *,
    filters: tuple[int, ...] = (0,),
    interlace: bool = False,
    extra: bytes = b"",
    size: tuple[int, int] | None = None,
) -> bytes:
    """A PNG built by hand: any bit depth/color type Pillow cannot write, any filters."""
    height, width = image.shape[:2]
    depth = 16 if image.dtype == np.uint16 else 8
    channels = 1 if image.ndim == 2 else image.shape[2]
    bpp = channels * depth // 8
    pixels = image.reshape(height, width, channels)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b""
    row_number = 0
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = sample_bytes(sub)
        above = bytes(len(rows[0]))
        for row in rows:
            raw += filter_row(row, above, filters[row_number % len(filters)], bpp)
            above = row
            row_number += 1
    w, h = size or (width, height)
    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace))
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def decode_png_by_hand(data: bytes) -> tuple[tuple[int, ...], Array]:
    """(IHDR fields, samples) of a non-interlaced 8/16-bit PNG, decoded with plain loops."""
    position, idat = 8, b""
    ihdr: tuple[int, ...] = (0, 0, 0, 0)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[position + 8 + length :][:4])[0]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, color_type = ihdr[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    bpp = channels * depth // 8
    rows = unfilter_rows(zlib.decompress(idat), height, width * bpp, bpp)
    samples = np.frombuffer(b"".join(rows), dtype=">u2" if depth == 16 else "u1")
    return ihdr, samples.reshape(height, width, channels).astype(np.uint16)


# ------------------------------------------------------------------------ sniffing


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG_SIGNATURE + b"rest", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"II+\x00\x08\x00\x00\x00", "tiff"),
        (b"BM\x36\x00\x00\x00", "bmp"),
        (b"GIF87a\x01\x00", "gif"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x93NUMPY\x01\x00", "npy"),
        (b"PK\x03\x04\x14\x00", "npz"),
        (b"PK\x05\x06" + bytes(18), "npz"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_sniff_format_recognizes_each_magic(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


def test_sniff_format_agrees_with_real_files() -> None:
    """Files written by the encoders are recognized as what they are."""
    pixels = smooth_rgb()
    for fmt in ("png", "jpeg", "tiff", "bmp", "gif"):
        assert sniff_format(encode_image(pixels, format=fmt, name="x")) == fmt
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    assert sniff_format(buffer.getvalue()) == "npy"
    buffer = io.BytesIO()
    np.savez(buffer, a=pixels)
    assert sniff_format(buffer.getvalue()) == "npz"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.png", "png"), ("b.JPG", "jpeg"), ("c.jpeg", "jpeg"), ("d.tif", "tiff"),
     ("e.TIFF", "tiff"), ("f.bmp", "bmp"), ("g.gif", "gif"), ("h.webp", "webp"),
     ("i.npy", None), ("j.npz", None), ("noextension", None), ("k.png.txt", None)],
)  # fmt: skip
def test_format_from_path_uses_the_extension(name: str, expected: str | None) -> None:
    assert format_from_path(name) == expected
    assert format_from_path(Path("folder") / name) == expected


def test_image_formats_extensions_map_back_to_their_format() -> None:
    for fmt, extensions in IMAGE_FORMATS.items():
        assert all(format_from_path("x" + ext) == fmt for ext in extensions)


# ------------------------------------------------------------------- PNG round trips


@pytest.mark.parametrize(
    ("shape", "dtype", "has_alpha"),
    [
        ((9, 11), np.uint8, False),
        ((9, 11, 2), np.uint8, True),
        ((9, 11, 3), np.uint8, False),
        ((9, 11, 4), np.uint8, True),
        ((9, 11), np.uint16, False),
        ((9, 11, 2), np.uint16, True),
        ((9, 11, 3), np.uint16, False),
        ((9, 11, 4), np.uint16, True),
    ],
)
def test_png_round_trip_is_exact(
    tmp_path: Path, shape: tuple[int, ...], dtype: Any, has_alpha: bool
) -> None:
    pixels = random_pixels(shape, dtype)
    path = tmp_path / "image.png"
    path.write_bytes(encode_image(pixels, format="png", name=str(path)))
    image = read_image(path, name=str(path))
    assert image.format == "png"
    assert image.has_alpha is has_alpha
    assert image.pixels.dtype == dtype
    np.testing.assert_array_equal(image.pixels, pixels)
    header = read_header(path, name=str(path))
    channels = 1 if len(shape) == 2 else shape[2]
    assert (header.width, header.height, header.channels, header.dtype) == (
        11,
        9,
        channels,
        np.dtype(dtype).name,
    )


def test_png_gray_with_one_channel_axis_is_written_as_gray() -> None:
    pixels = random_pixels((5, 6, 1), np.uint8)
    image = read_image(encode_image(pixels, format="png", name="x"), name="x")
    np.testing.assert_array_equal(image.pixels, pixels[:, :, 0])


def test_png16_color_output_is_valid_png_by_an_independent_decoder() -> None:
    """Our own 16-bit RGB encoder's file decodes, with plain spec loops, to the same samples."""
    y, x = np.mgrid[0:13, 0:17]
    smooth = np.stack([x * 3000, y * 4000, (x * y * 97) % 65536], axis=-1).astype(np.uint16)
    noisy = random_pixels((13, 17, 3), np.uint16)
    for pixels in (smooth, noisy):  # smooth rows pick Sub/Up/Paeth, noise picks None
        ihdr, samples = decode_png_by_hand(encode_image(pixels, format="png", name="x"))
        assert ihdr == (17, 13, 16, 2, 0, 0, 0)
        np.testing.assert_array_equal(samples, pixels)


def test_png16_color_output_uses_adaptive_filters() -> None:
    y, x = np.mgrid[0:32, 0:32]
    pixels = np.stack([x * 2000, y * 2000, x * y * 60], axis=-1).astype(np.uint16)
    data = encode_image(pixels, format="png", name="x")
    length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + length])
    filter_types = {raw[row * (1 + 32 * 6)] for row in range(32)}
    assert filter_types - {0}, "a smooth image should not be stored unfiltered"


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize(("channels", "color_type"), [(3, 2), (4, 6), (2, 4)])
def test_png16_color_reads_every_filter_and_interlacing(
    channels: int, color_type: int, interlace: bool
) -> None:
    """Pillow would give 8 bits here; every filter type and Adam7 must decode to full depth."""
    pixels = random_pixels((11, 13, channels), np.uint16, seed=channels)
    data = make_png(pixels, color_type, filters=(0, 1, 2, 3, 4), interlace=interlace)
    image = read_image(data, name="<stdin>")
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.has_alpha is (channels in (2, 4))
    assert read_header(data, name="x").mode == {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}[color_type]
    # Pillow's own 8-bit view keeps the high bytes: a cross-check of which byte is which.
    with PILImage.open(io.BytesIO(data)) as opened:
        eight_bit = np.asarray(opened)
    np.testing.assert_array_equal(eight_bit[..., 0], pixels[..., 0] >> 8)


def test_png16_rgb_transparent_color_becomes_alpha() -> None:
    pixels = random_pixels((4, 5, 3), np.uint16)
    pixels[1, 2] = (1000, 2000, 3000)
    trns = png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))
    image = read_image(make_png(pixels, 2, extra=trns), name="x")
    assert image.has_alpha and image.pixels.shape == (4, 5, 4)
    expected_alpha = np.full((4, 5), 65535, np.uint16)
    expected_alpha[1, 2] = 0
    np.testing.assert_array_equal(image.pixels[..., 3], expected_alpha)
    np.testing.assert_array_equal(image.pixels[..., :3], pixels)


def test_png16_gray_transparent_value_becomes_alpha() -> None:
    pixels = np.array([[0, 1000], [5, 1000]], np.uint16)
    image = read_image(pillow_bytes(PILImage.fromarray(pixels), "PNG", transparency=1000), name="x")
    assert image.has_alpha
    np.testing.assert_array_equal(image.pixels[..., 0], pixels)
    np.testing.assert_array_equal(image.pixels[..., 1], [[65535, 0], [65535, 0]])


def test_palette_png_is_expanded_to_rgb() -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette_image = PILImage.fromarray(indices, mode="L").convert("P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    data = pillow_bytes(palette_image, "PNG")
    image = read_image(data, name="x")
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(image.pixels, colors[indices])
    assert not image.has_alpha
    assert read_header(data, name="x") == ImageHeader(3, 2, 3, "uint8", "png", "P")


def test_palette_png_with_transparency_becomes_rgba() -> None:
    palette_image = PILImage.new("P", (3, 2))
    palette_image.putpalette([255, 0, 0, 0, 255, 0])
    palette_image.putpixel((1, 0), 1)
    image = read_image(pillow_bytes(palette_image, "PNG", transparency=0), name="x")
    assert image.has_alpha and image.pixels.shape == (2, 3, 4)
    np.testing.assert_array_equal(image.pixels[..., 3], [[0, 255, 0], [0, 0, 0]])
    np.testing.assert_array_equal(image.pixels[0, 1], [0, 255, 0, 255])


def test_palette_of_grays_stays_gray() -> None:
    gray = (np.arange(24, dtype=np.uint8) * 10).reshape(4, 6)
    palette_image = PILImage.fromarray(gray).convert("P")
    palette_image.putpalette([value for level in range(256) for value in (level,) * 3])
    palette_image.putdata(gray.ravel().tolist())
    image = read_image(pillow_bytes(palette_image, "PNG"), name="x")
    np.testing.assert_array_equal(image.pixels, gray)


def test_gray_png_transparent_value_becomes_alpha() -> None:
    gray = np.array([[0, 10, 20], [10, 10, 30]], np.uint8)
    image = read_image(pillow_bytes(PILImage.fromarray(gray), "PNG", transparency=10), name="x")
    assert image.has_alpha
    np.testing.assert_array_equal(image.pixels[..., 0], gray)
    np.testing.assert_array_equal(image.pixels[..., 1], [[255, 0, 255], [0, 0, 255]])


def test_one_bit_image_becomes_uint8_0_or_255() -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    image = read_image(pillow_bytes(PILImage.fromarray(bits), "PNG"), name="x")
    assert image.pixels.dtype == np.uint8
    np.testing.assert_array_equal(image.pixels, np.where(bits, 255, 0))
    assert read_header(pillow_bytes(PILImage.fromarray(bits), "PNG"), name="x").mode == "1"


# --------------------------------------------------------------------- other formats


@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 3)])
def test_jpeg_round_trip_is_close(tmp_path: Path, shape: tuple[int, ...]) -> None:
    pixels = smooth_rgb(40, 56)
    if len(shape) == 2:
        pixels = pixels[:, :, 1]
    path = tmp_path / "image.jpg"
    path.write_bytes(encode_image(pixels, format="jpeg", name=str(path)))
    image = read_image(path, name=str(path))
    assert image.format == "jpeg" and image.pixels.shape == shape and not image.has_alpha
    error = np.abs(image.pixels.astype(int) - pixels.astype(int))
    assert error.mean() < 1.5 and error.max() <= 12


def test_jpeg_quality_changes_the_size() -> None:
    pixels = random_pixels((32, 32, 3), np.uint8)
    small = encode_image(pixels, format="jpeg", quality=20, name="x")
    large = encode_image(pixels, format="jpeg", quality=95, name="x")
    assert len(small) < len(large)


@pytest.mark.parametrize(
    ("orientation", "transform"),
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (4, lambda a: a[::-1]),
        (5, lambda a: a.swapaxes(0, 1)),
        (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: np.rot90(a, -1)[::-1]),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied_like_pillow(
    orientation: int, transform: Callable[[Array], Array]
) -> None:
    from PIL import ImageOps

    stored = np.zeros((8, 16), np.uint8)
    stored[:4, :8] = 255  # a bright top-left quadrant: any flip or turn moves it
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    data = pillow_bytes(PILImage.fromarray(stored), "JPEG", quality=100, exif=exif.tobytes())
    image = read_image(data, name="x")
    with PILImage.open(io.BytesIO(data)) as opened:
        reference = np.asarray(ImageOps.exif_transpose(opened))
    np.testing.assert_array_equal(image.pixels, reference)
    assert np.abs(image.pixels.astype(int) - transform(stored)).max() < 40
    header = read_header(data, name="x")
    assert (header.height, header.width) == image.pixels.shape


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
def test_tiff_round_trip_is_exact(tmp_path: Path, dtype: Any, channels: int) -> None:
    shape = (7, 9) if channels == 1 else (7, 9, channels)
    pixels = random_pixels(shape, dtype, seed=channels)
    path = tmp_path / "image.tif"
    path.write_bytes(encode_image(pixels, format="tiff", name=str(path)))
    image = read_image(path, name=str(path))
    assert image.format == "tiff" and image.pixels.dtype == dtype
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.has_alpha is (channels in (2, 4))
    header = read_header(path, name=str(path))
    assert (header.width, header.height, header.channels) == (9, 7, channels)
    assert header.dtype == np.dtype(dtype).name


def test_tiff_planar_separate_is_read_channels_last() -> None:
    pixels = random_pixels((6, 8, 3), np.uint16)
    data = tiff_bytes(np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(data, name="x").pixels, pixels)


@pytest.mark.parametrize(("photometric", "white"), [("minisblack", True), ("miniswhite", False)])
def test_tiff_bilevel_becomes_0_or_255(photometric: str, white: bool) -> None:
    bits = np.array([[True, False, True, True], [False, False, True, False]])
    image = read_image(tiff_bytes(bits, photometric=photometric), name="x")
    assert image.pixels.dtype == np.uint8
    np.testing.assert_array_equal(image.pixels, np.where(bits == white, 255, 0))


def test_tiff_palette_is_expanded() -> None:
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :3] = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]).T * 257
    image = read_image(tiff_bytes(indices, photometric="palette", colormap=colormap), name="x")
    np.testing.assert_array_equal(image.pixels[1, 0], [0, 0, 255])
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (2, 2, 3)


def test_tiff_int16_is_read_as_float32_and_uint32_is_refused() -> None:
    signed = np.array([[-300, 0], [7, 32767]], np.int16)
    image = read_image(tiff_bytes(signed), name="s.tif")
    assert image.pixels.dtype == np.float32
    np.testing.assert_array_equal(image.pixels, signed)
    with pytest.raises(InputError, match=r"u\.tif: .*uint32"):
        read_image(tiff_bytes(np.zeros((2, 2), np.uint32)), name="u.tif")


def test_tiff_with_codec_tifffile_lacks_is_read_by_pillow() -> None:
    """LZW needs imagecodecs in tifffile; Pillow's libtiff reads it when no bits are lost."""
    if not features.check("libtiff"):
        pytest.skip("Pillow built without libtiff")
    pixels = smooth_rgb()
    data = pillow_bytes(PILImage.fromarray(pixels), "TIFF", compression="tiff_lzw")
    image = read_image(data, name="x")
    np.testing.assert_array_equal(image.pixels, pixels)


def test_tiff_16bit_rgb_lzw_without_imagecodecs_is_read_exactly() -> None:
    """libtiff decompresses the LZW strip; convcli unpacks the 16-bit samples (Pillow would
    keep 8 bits of them)."""
    if not features.check("libtiff"):
        pytest.skip("Pillow built without libtiff")
    pixels = random_pixels((4, 5, 3), np.uint16)
    plain = tiff_bytes(pixels, photometric="rgb")
    # LZW codes bytes: Pillow's libtiff codes the samples' bytes as an 8-bit gray image.
    coded = pillow_bytes(
        PILImage.frombytes("L", (30, 4), pixels.astype("<u2").tobytes()), "TIFF",
        compression="tiff_lzw",
    )  # fmt: skip
    with tifffile.TiffFile(io.BytesIO(coded)) as tif:
        (offset,), (count,) = tif.pages.first.dataoffsets, tif.pages.first.databytecounts
    lzw = bytearray(plain + coded[offset : offset + count])
    with tifffile.TiffFile(io.BytesIO(plain)) as tif:  # point the strip at the LZW bytes
        tags = tif.pages.first.tags
        for tag, value in (("Compression", 5), ("StripOffsets", len(plain)),
                           ("StripByteCounts", count)):  # fmt: skip
            code = "H" if tags[tag].dtype == 3 else "I"
            struct.pack_into("<" + code, lzw, tags[tag].valueoffset, value)
    image = read_image(bytes(lzw), name="x.tif")
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, pixels)
    if importlib.util.find_spec("imagecodecs") is None:  # else tifffile reports it
        relabelled = bytearray(plain)  # raw samples labelled LZW: a clean error
        struct.pack_into("<H", relabelled, tags["Compression"].valueoffset, 5)
        with pytest.raises(InputError, match=r"x\.tif: .*corrupt or truncated LZW data"):
            read_image(bytes(relabelled), name="x.tif")


@pytest.mark.parametrize("shape", [(10, 12), (10, 12, 3)])
def test_bmp_round_trip_is_exact(shape: tuple[int, ...]) -> None:
    pixels = random_pixels(shape, np.uint8)
    image = read_image(encode_image(pixels, format="bmp", name="x"), name="x")
    assert image.format == "bmp"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_gif_gray_round_trip_stays_gray() -> None:
    pixels = random_pixels((10, 12), np.uint8)
    image = read_image(encode_image(pixels, format="gif", name="x"), name="x")
    assert image.format == "gif"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_gif_rgb_with_few_colors_is_exact() -> None:
    colors = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [250, 250, 0]], np.uint8)
    pixels = colors[np.arange(48).reshape(6, 8) % 4]
    image = read_image(encode_image(pixels, format="gif", name="x"), name="x")
    np.testing.assert_array_equal(image.pixels, pixels)


def test_animated_gif_reads_the_first_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((6, 7), value, np.uint8) for value in (40, 120, 200)])
    frames[0, 2, 3] = 90
    path = tmp_path / "anim.gif"
    path.write_bytes(iio.imwrite("<bytes>", frames, extension=".gif", plugin="pillow"))
    image = read_image(path, name=str(path))
    np.testing.assert_array_equal(image.pixels, frames[0])


@WEBP
@pytest.mark.parametrize("channels", [3, 4])
def test_webp_round_trip_is_close(channels: int) -> None:
    pixels = smooth_rgb()
    if channels == 4:
        pixels = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], -1)
        pixels[:10, :10, 3] = 0
    image = read_image(encode_image(pixels, format="webp", name="x"), name="x")
    assert image.format == "webp" and image.pixels.shape == pixels.shape
    assert image.has_alpha is (channels == 4)
    error = np.abs(image.pixels.astype(int) - pixels.astype(int))
    assert error.mean() < 3


@WEBP
def test_webp_stores_gray_as_rgb() -> None:
    gray = smooth_rgb()[:, :, 0]
    image = read_image(encode_image(gray, format="webp", name="x"), name="x")
    assert image.pixels.shape == gray.shape + (3,)


# ------------------------------------------------------------------- size limits


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but which holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png_chunk(b"IEND", b"")
    )


def test_oversized_png_header_is_read_and_refused_without_decoding(tmp_path: Path) -> None:
    """30000x30000 from the header alone: decoding this file would fail, refusing does not."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(30_000, 30_000))
    tracemalloc.start()
    try:
        header = read_header(path, name=str(path))
        assert (header.width, header.height, header.channels) == (30_000, 30_000, 1)
        with pytest.raises(LimitError, match=r"bomb\.png: image is 30000x30000 = 900,000,000"):
            read_image(path, name=str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2  # refused from the header: not one row of pixels decoded
    with pytest.raises(InputError, match="bomb.png: cannot read image"):
        read_image(png_claiming(300, 300), name=str(path))  # small enough: decoding is tried


@pytest.fixture(scope="module")
def huge_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 20000x20000 zlib TIFF (1.8 MB), cut after its tags: only the header survives."""
    path = tmp_path_factory.mktemp("tiff") / "huge.tif"
    tile = np.zeros((2048, 2048), np.uint8)
    tiles = ((20_000 + 2047) // 2048) ** 2
    tifffile.imwrite(path, (tile for _ in range(tiles)), shape=(20_000, 20_000), dtype=np.uint8,
                     tile=(2048, 2048), compression="zlib", compressionargs={"level": 1},
                     metadata=None)  # fmt: skip
    data = path.read_bytes()
    path.write_bytes(data[:4096])
    return path


def test_oversized_tiff_header_is_read_and_refused_without_decoding(huge_tiff: Path) -> None:
    tracemalloc.start()
    try:
        header = read_header(huge_tiff, name="huge.tif")
        assert (header.width, header.height, header.dtype, header.mode) == (
            20_000,
            20_000,
            "uint8",
            "L",
        )
        with pytest.raises(LimitError, match="huge.tif: image is 20000x20000"):
            read_image(huge_tiff, name="huge.tif")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2  # refused from the header: no tile decoded


def test_max_pixels_is_applied_to_every_format() -> None:
    pixels = smooth_rgb(10, 10)
    for fmt in ("png", "jpeg", "tiff", "bmp", "gif"):
        data = encode_image(pixels, format=fmt, name="x")
        assert read_image(data, name="x", max_pixels=100).pixels.shape[:2] == (10, 10)
        with pytest.raises(LimitError, match="over the limit of 99"):
            read_image(data, name="x", max_pixels=99)


def test_user_limit_above_pillows_is_honored_and_pillows_setting_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow's global bomb limit neither overrides --max-pixels nor is left changed."""
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 50)
    data = encode_image(smooth_rgb(20, 20), format="png", name="x")
    assert read_image(data, name="x", max_pixels=1000).pixels.shape == (20, 20, 3)
    assert read_header(data, name="x").width == 20
    assert PILImage.MAX_IMAGE_PIXELS == 50


# ------------------------------------------------------------------- corrupt input


def truncated_png() -> bytes:
    data = encode_image(random_pixels((40, 40, 3), np.uint8), format="png", name="x")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"\x89P", "not a supported image", id="two-bytes"),
        pytest.param(b"BM", "cannot read image", id="bare-BM"),
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(PNG_SIGNATURE + bytes(40), "cannot read image", id="png-garbage"),
        pytest.param(b"\xff\xd8\xff\xe0" + bytes(30), "cannot read image", id="jpeg-garbage"),
        pytest.param(b"GIF89a" + bytes(3), "cannot read image", id="gif-short"),
        pytest.param(b"II*\x00" + b"\xff" * 20, "cannot read image", id="tiff-garbage"),
        pytest.param(
            b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8),
            "cannot read image",
            id="webp-garbage",
            marks=WEBP,
        ),  # fmt: skip
        pytest.param(np.random.default_rng(1).bytes(500), "not a supported image", id="random"),
        pytest.param(b"\x93NUMPY\x01\x00", "is a NumPy .npy file, not an image", id="npy"),
    ],
)
def test_corrupt_files_give_an_input_error_naming_the_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    for call in (read_image, read_header):
        with pytest.raises(InputError, match=f"broken.png: {reason}") as caught:
            call(path, name=str(path))
        assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match=f"<stdin>: {reason}"):
        read_image(content, name="<stdin>")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(truncated_png(), id="8-bit"),
        pytest.param(make_png(random_pixels((20, 20, 3), np.uint16), 2)[:-60], id="16-bit-rgb"),
    ],
)
def test_truncated_png_gives_an_input_error_though_its_header_reads(data: bytes) -> None:
    assert read_header(data, name="x.png").width in (20, 40)
    with pytest.raises(InputError, match="x.png: cannot read image"):
        read_image(data, name="x.png")


def test_missing_file_gives_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere.png: cannot open"):
        read_image(tmp_path / "nothere.png", name="nothere.png")


def test_content_decides_the_format_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "really-a-bmp.png"
    path.write_bytes(encode_image(random_pixels((3, 4), np.uint8), format="bmp", name="x"))
    assert read_image(path, name=str(path)).format == "bmp"


# ------------------------------------------------------------------ dtype mapping


def test_clip_rounds_half_to_even_and_counts_clipped_values() -> None:
    result = np.array([-1.0, -0.4, 0.5, 1.5, 2.5, 254.5, 255.5, 300.0], np.float32)
    converted, clipped = to_image_dtype(result, dtype="uint8")
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, [0, 0, 0, 2, 2, 254, 255, 255])
    assert clipped == 3  # -1, 255.5 (rounds to 256) and 300


def test_clip_to_uint16() -> None:
    result = np.array([[-5.0, 65534.5], [65535.4, 70000.0]])
    converted, clipped = to_image_dtype(result, dtype="uint16", range_mode="clip")
    np.testing.assert_array_equal(converted, [[0, 65534], [65535, 65535]])
    assert converted.dtype == np.uint16 and clipped == 2


def test_normalize_stretches_to_the_full_range() -> None:
    converted, clipped = to_image_dtype(np.array([-1.0, 0.0, 1.0]), dtype="uint8",
                                        range_mode="normalize")  # fmt: skip
    np.testing.assert_array_equal(converted, [0, 128, 255])  # 127.5 rounds to even
    assert clipped == 0
    converted, _ = to_image_dtype(np.array([2.0, 4.0, 6.0]), dtype="uint16", range_mode="normalize")
    np.testing.assert_array_equal(converted, [0, 32768, 65535])


def test_normalize_of_a_constant_gives_zeros() -> None:
    converted, clipped = to_image_dtype(np.full((2, 3), 7.5), dtype="uint8", range_mode="normalize")
    np.testing.assert_array_equal(converted, np.zeros((2, 3)))
    assert clipped == 0


def test_abs_takes_magnitudes_then_clips() -> None:
    result = np.array([-3.5, -300.0, 2.5, -0.5, 255.0], np.float32)
    converted, clipped = to_image_dtype(result, dtype="uint8", range_mode="abs")
    np.testing.assert_array_equal(converted, [4, 255, 2, 0, 255])
    assert clipped == 1


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("range_mode", ["clip", "abs"])
def test_float32_results_map_as_their_float64_values_do(dtype: str, range_mode: str) -> None:
    """float32 results are rounded in float32: the same pixels and counts as via float64."""
    rng = np.random.default_rng(4)
    top = np.iinfo(dtype).max
    halves = np.arange(-3, top + 4, dtype=np.float64) + 0.5  # every tie, both ways
    noise = rng.uniform(-2.0 * top, 2.0 * top, 300_000)  # several chunks
    result = np.concatenate([halves, noise, [-0.0, 0.0, top, top + 0.49]]).astype(np.float32)
    converted, clipped = to_image_dtype(result, dtype=dtype, range_mode=range_mode)
    expected, expected_clipped = to_image_dtype(
        result.astype(np.float64), dtype=dtype, range_mode=range_mode
    )
    np.testing.assert_array_equal(converted, expected)
    assert converted.dtype == np.dtype(dtype) and clipped == expected_clipped > 0


def test_float32_output_keeps_values() -> None:
    result = np.array([-1.5, 0.25, 1000.0, np.nan])
    converted, clipped = to_image_dtype(result, dtype="float32")
    assert converted.dtype == np.float32 and clipped == 0
    np.testing.assert_array_equal(converted, np.array([-1.5, 0.25, 1000.0, np.nan], np.float32))
    converted, _ = to_image_dtype(result[:3], dtype="float32", range_mode="abs")
    np.testing.assert_array_equal(converted, [1.5, 0.25, 1000.0])
    converted, _ = to_image_dtype(np.array([2.0, 3.0, 6.0]), dtype="float32",
                                  range_mode="normalize")  # fmt: skip
    np.testing.assert_array_equal(converted, [0.0, 0.25, 1.0])


def test_float32_output_counts_overflow_to_infinity() -> None:
    converted, overflowed = to_image_dtype(np.array([1e300, -1e300, 1.0]), dtype="float32")
    assert overflowed == 2 and np.isinf(converted[:2]).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_non_finite_values_to_an_integer_dtype_are_an_error(dtype: str) -> None:
    result = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    with pytest.raises(ConvcliError, match=r"result has 3 non-finite values \(NaN/Inf\); write"):
        to_image_dtype(result, dtype=dtype)


def test_normalize_with_non_finite_values_is_an_error_even_to_float32() -> None:
    with pytest.raises(ConvcliError, match="1 non-finite"):
        to_image_dtype(np.array([1.0, np.nan]), dtype="float32", range_mode="normalize")


def test_mapping_keeps_shape_and_does_not_depend_on_the_float_type() -> None:
    result = np.random.default_rng(3).normal(100, 120, (5, 6, 3))
    for mode in RANGE_MODES:
        wide, wide_clipped = to_image_dtype(result.astype(np.float32).astype(np.float64),
                                            dtype="uint8", range_mode=mode)  # fmt: skip
        narrow, narrow_clipped = to_image_dtype(result.astype(np.float32), dtype="uint8",
                                                range_mode=mode)  # fmt: skip
        assert narrow.shape == (5, 6, 3)
        np.testing.assert_array_equal(wide, narrow)
        assert wide_clipped == narrow_clipped


def test_integer_results_are_accepted() -> None:
    converted, clipped = to_image_dtype(np.array([-2, 7, 400]), dtype="uint8")
    np.testing.assert_array_equal(converted, [0, 7, 255])
    assert clipped == 2


def test_unknown_dtype_or_range_mode_is_an_error() -> None:
    with pytest.raises(ConvcliError, match="unknown output dtype 'int8'"):
        to_image_dtype(np.zeros(3), dtype="int8")
    with pytest.raises(ConvcliError, match="unknown range mode 'wrap'"):
        to_image_dtype(np.zeros(3), dtype="uint8", range_mode="wrap")
    assert set(OUT_DTYPES) == {"uint8", "uint16", "float32"}


# ---------------------------------------------------------------------------- alpha


def test_split_and_merge_alpha_round_trip() -> None:
    for channels in (2, 4):
        pixels = random_pixels((3, 4, channels), np.uint8)
        color, alpha = split_alpha(pixels)
        assert alpha is not None
        assert color.shape == ((3, 4) if channels == 2 else (3, 4, 3))
        np.testing.assert_array_equal(merge_alpha(color, alpha), pixels)
    for shape in [(3, 4), (3, 4, 3), (3, 4, 5)]:
        pixels = random_pixels(shape, np.uint8)
        color, alpha = split_alpha(pixels)
        assert alpha is None and color is pixels


def test_merge_alpha_rescales_alpha_to_the_color_dtype() -> None:
    alpha = np.array([[0, 128, 255]], np.uint8)
    merged = merge_alpha(np.zeros((1, 3), np.uint16), alpha)
    np.testing.assert_array_equal(merged[..., 1], [[0, 128 * 257, 65535]])
    merged = merge_alpha(np.zeros((1, 3, 3), np.uint8), np.array([[0, 32896, 65535]], np.uint16))
    np.testing.assert_array_equal(merged[..., 3], [[0, 128, 255]])
    merged = merge_alpha(np.zeros((1, 3), np.float32), alpha)
    assert merged.dtype == np.float32
    np.testing.assert_array_equal(merged[..., 1], [[0.0, 128.0, 255.0]])


def test_merge_alpha_of_a_different_size_is_an_error() -> None:
    with pytest.raises(ConvcliError, match=r"alpha channel \(4, 4\) does not fit"):
        merge_alpha(np.zeros((2, 2, 3), np.uint8), np.zeros((4, 4), np.uint8))


# -------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("fmt", "pixels"),
    [
        ("png", random_pixels((20, 24, 3), np.uint8)),
        ("png", random_pixels((20, 24, 3), np.uint16)),
        ("jpeg", random_pixels((20, 24, 3), np.uint8)),
        ("tiff", random_pixels((20, 24, 5), np.float32)),
        ("bmp", random_pixels((20, 24), np.uint8)),
        ("gif", random_pixels((20, 24, 3), np.uint8)),
        pytest.param("webp", random_pixels((20, 24, 4), np.uint8), marks=WEBP),
    ],
)
def test_encoding_is_deterministic(fmt: str, pixels: Array) -> None:
    """Writing to stdout and to a file must give the same bytes."""
    first = encode_image(pixels, format=fmt, name="x")
    assert first == encode_image(pixels.copy(), format=fmt, name="<stdout>")
    assert sniff_format(first) == fmt


@pytest.mark.parametrize(
    ("shape", "dtype", "fmt", "message"),
    [
        ((4, 4, 3), "float32", "png", "PNG cannot hold float32 data; write TIFF or .npy, "
                                      "or pass --out-dtype uint8"),
        ((4, 4), "float32", "jpeg", "JPEG cannot hold float32 data"),
        ((4, 4), "uint16", "jpeg", "JPEG cannot hold uint16 data; write PNG or TIFF"),
        ((4, 4), "float64", "tiff", "TIFF cannot hold float64 data"),
        ((4, 4, 8), "uint8", "png", "PNG cannot hold 8 channels .*write TIFF, .npy or .npz"),
        ((4, 4, 4), "uint8", "jpeg", "JPEG cannot hold RGBA images .*write PNG, TIFF or WebP"),
        ((4, 4, 2), "uint8", "bmp", "BMP cannot hold gray \\+ alpha"),
        ((4, 4, 4), "uint8", "gif", "GIF cannot hold RGBA"),
        ((4, 4, 3), "uint16", "webp", "WebP cannot hold uint16"),
        ((2, 4, 4, 3), "uint8", "png", "an image is \\(height, width\\)"),
        ((0, 4), "uint8", "png", "an image is"),
        ((4, 4), "uint8", "jp2", "unknown image format 'jp2'"),
        ((20_000, 10), "uint8", "webp", "WebP images are at most 16,383 pixels on a side"),
        ((70_000, 10), "uint8", "jpeg", "JPEG images are at most"),
    ],
)  # fmt: skip
def test_check_writable_refuses_what_a_format_cannot_hold(
    shape: tuple[int, ...], dtype: str, fmt: str, message: str
) -> None:
    with pytest.raises(ConvcliError, match=f"^out.x: {message}"):
        check_writable(shape, dtype, fmt, name="out.x")


@pytest.mark.parametrize(
    ("shape", "dtype", "fmt"),
    [((4, 4, 8), "float32", "tiff"), ((4, 4, 1), "uint16", "png"), ((4, 4, 2), "uint8", "webp"),
     ((4, 4), "uint8", "gif"), ((1, 1, 3), "uint8", "jpeg")],
)  # fmt: skip
def test_check_writable_accepts_what_a_format_holds(
    shape: tuple[int, ...], dtype: str, fmt: str
) -> None:
    check_writable(shape, dtype, fmt, name="x")


def test_encode_image_refuses_before_encoding() -> None:
    with pytest.raises(ConvcliError, match="PNG cannot hold float32"):
        encode_image(np.zeros((3, 3), np.float32), format="png", name="x")
    with pytest.raises(ConvcliError, match="quality must be between 1 and 100"):
        encode_image(np.zeros((3, 3), np.uint8), format="jpeg", quality=0, name="x")


def test_image_dataclass_holds_what_read_image_returns() -> None:
    image = read_image(encode_image(np.zeros((2, 3, 4), np.uint8), format="png", name="x"),
                       name="x")  # fmt: skip
    assert isinstance(image, Image)
    assert image.pixels.flags.writeable and image.pixels.flags.c_contiguous
    assert DEFAULT_MAX_PIXELS == 89_478_485
