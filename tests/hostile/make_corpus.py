"""Generate the hostile-input corpus: tiny malformed, oversized-by-header and booby-trapped files.

Run ``python tests/hostile/make_corpus.py`` to (re)write ``tests/hostile/corpus/``; the output is
deterministic (fixed seeds, fixed zip timestamps), so a rerun leaves ``git diff`` empty on the
same library versions. Each file is a few KB at most. The few inputs that cannot be tiny (a
400 KB zlib TIFF bomb, a 100,000-deep JSON, a 2 MB kernel with over 1e6 weights, a 17 MiB kernel
file) are written at test time by :func:`write_large` into a temporary folder instead of being
committed.

Valid seeds (``valid_*``) are included too: the corpus cases use them as the good half of a
pair, and the fuzz test mutates them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

CORPUS = Path(__file__).resolve().parent / "corpus"
#: Relative name of the folder the pickle payloads create if anything ever unpickles them. The
#: tests run convcli with the working directory set to a fresh temporary folder and assert the
#: file never appears there.
PICKLE_MARKER = "convcli-unpickled-marker"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Builder = Callable[[], bytes]
FILES: dict[str, Builder] = {}


def corpus_file(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        FILES[name] = builder
        return builder

    return register


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- helpers


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy whose header text is ``header`` (padded as numpy pads it) followed by ``data``."""
    text = header.encode("latin1")
    prefix = 10 if version == (1, 0) else 12
    padded = text + b" " * ((64 - (prefix + len(text) + 1) % 64) % 64) + b"\n"
    if version == (1, 0):
        length = struct.pack("<H", len(padded))
    else:
        length = struct.pack("<I", len(padded))
    return b"\x93NUMPY" + bytes(version) + length + padded + data


def zip_bytes(
    members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED, level: int = 9
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate member names are the point of one file
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = compression
                archive.writestr(info, data, compresslevel=level)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rows: bytes, color_type: int = 0, depth: int = 8) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def pillow_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb_image(size: int = 8) -> Image.Image:
    pixels = rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def tiff_bytes(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, metadata=None, **options)
    return buffer.getvalue()


def tiff_by_hand(entries: list[tuple[int, int, int, int]], data: bytes = b"") -> bytes:
    """A little-endian classic TIFF with one IFD of ``(tag, type, count, value)`` entries.

    ``data`` follows the IFD; a StripOffsets/TileOffsets value of -1 is replaced by its offset.
    """
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in sorted(entries):
        if value == -1:
            value = data_offset
        if kind == 3 and count == 1:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + data


SHORT, LONG = 3, 4


def tiff_gray_strip(width: int, height: int, strip: bytes, compression: int = 8) -> bytes:
    """A one-strip 8-bit gray TIFF of ``width`` x ``height`` whose strip holds ``strip``."""
    return tiff_by_hand(
        [
            (256, LONG, 1, width),
            (257, LONG, 1, height),
            (258, SHORT, 1, 8),
            (259, SHORT, 1, compression),
            (262, SHORT, 1, 1),
            (273, LONG, 1, -1),
            (277, SHORT, 1, 1),
            (278, LONG, 1, height),
            (279, LONG, 1, len(strip)),
        ],
        strip,
    )


class _Payload:
    """Unpickling this creates the folder PICKLE_MARKER in the working directory (os.mkdir)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (PICKLE_MARKER,))


def pickle_payload() -> bytes:
    return pickle.dumps(_Payload(), protocol=2)


def object_npy() -> bytes:
    """An object-dtype .npy whose pickled data would create PICKLE_MARKER if loaded."""
    return npy_with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", pickle_payload()
    )


# --------------------------------------------------------------------------- valid seeds


@corpus_file("valid_gray.png")
def _valid_gray_png() -> bytes:
    pixels = rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    return pillow_bytes(Image.fromarray(pixels, "L"), "PNG")


@corpus_file("valid_rgb.png")
def _valid_rgb_png() -> bytes:
    return pillow_bytes(rgb_image(), "PNG")


@corpus_file("valid_rgb.jpg")
def _valid_jpg() -> bytes:
    return pillow_bytes(rgb_image(16), "JPEG", quality=90)


@corpus_file("valid_rgb.gif")
def _valid_gif() -> bytes:
    return pillow_bytes(rgb_image().convert("P"), "GIF")


@corpus_file("valid_rgb.bmp")
def _valid_bmp() -> bytes:
    return pillow_bytes(rgb_image(), "BMP")


@corpus_file("valid_rgb.webp")
def _valid_webp() -> bytes:
    return pillow_bytes(rgb_image(), "WEBP", lossless=True)


@corpus_file("valid_rgb.tif")
def _valid_tif() -> bytes:
    return tiff_bytes(np.asarray(rgb_image()), compression="zlib", photometric="rgb")


@corpus_file("valid_x.npy")
def _valid_npy() -> bytes:
    return npy_bytes(rng(3).standard_normal((2, 8, 8, 3)).astype(np.float32))


@corpus_file("valid_x_other.npy")
def _valid_npy_other() -> bytes:
    """Same shape as valid_x.npy, other values: verify finds differences (exit 1)."""
    return npy_bytes(rng(33).standard_normal((2, 8, 8, 3)).astype(np.float32))


@corpus_file("valid_x.npz")
def _valid_npz() -> bytes:
    x = rng(4).standard_normal((8, 8, 3)).astype(np.float32)
    return zip_bytes([("a.npy", npy_bytes(x)), ("b.npy", npy_bytes(x[:4]))])


@corpus_file("valid_kernel.json")
def _valid_kernel() -> bytes:
    return b'{"weights": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "padding": "same"}\n'


@corpus_file("valid_dump.npz")
def _valid_dump() -> bytes:
    x = rng(5).standard_normal((1, 6, 6, 2)).astype(np.float32)
    return reference_dump({"input": x, "output": x.copy()}, {"op": "max_pool", "size": 1})


def reference_dump(members: dict[str, np.ndarray], params: object) -> bytes:
    entries = [(f"{name}.npy", npy_bytes(array)) for name, array in members.items()]
    text = params if isinstance(params, str) else json.dumps(params)
    entries.append(("params.npy", npy_bytes(np.array(text))))
    return zip_bytes(entries)


# --------------------------------------------------------------------------- image bombs by header


@corpus_file("bomb_png_30000x30000.png")
def _png_bomb() -> bytes:
    # The IHDR claims 30000x30000 RGB (2.7 GB decoded); the IDAT holds one row.
    return png_bytes(30000, 30000, b"\x00" * (1 + 3 * 30000), color_type=2)


@corpus_file("bomb_jpeg_65000x65000.jpg")
def _jpeg_bomb() -> bytes:
    data = bytearray(_valid_jpg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


@corpus_file("bomb_gif_65535x65535.gif")
def _gif_bomb() -> bytes:
    data = bytearray(_valid_gif())
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    descriptor = data.index(b"\x2c")  # the image descriptor follows the palette
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


@corpus_file("bomb_bmp_100000x100000.bmp")
def _bmp_bomb() -> bytes:
    data = bytearray(_valid_bmp())
    data[18:26] = struct.pack("<ii", 100000, 100000)
    return bytes(data)


@corpus_file("bomb_webp_16384x16384.webp")
def _webp_bomb() -> bytes:
    data = bytearray(_valid_webp())
    start = data.index(b"VP8L") + 8
    assert data[start] == 0x2F
    bits = int.from_bytes(data[start + 1 : start + 5], "little")
    bits = (bits & ~0xFFFFFFF) | 16383 | (16383 << 14)  # width-1, height-1: 14 bits each
    data[start + 1 : start + 5] = bits.to_bytes(4, "little")
    return bytes(data)


@corpus_file("bomb_tiff_20000x20000.tif")
def _tiff_bomb_header() -> bytes:
    # Header only: one zlib strip of a single row; the decoder would allocate 400 MB.
    return tiff_gray_strip(20000, 20000, zlib.compress(b"\x00" * 20000, 9))


@corpus_file("bomb_tiff_tile_65536.tif")
def _tiff_tile_bomb() -> bytes:
    # A 16x16 image stored as one 65536x65536 tile: a decoder that sizes buffers by the tile
    # would allocate 4 GiB for 256 pixels.
    tile = zlib.compress(b"\x00" * 256, 9)
    return tiff_by_hand(
        [
            (256, LONG, 1, 16),
            (257, LONG, 1, 16),
            (258, SHORT, 1, 8),
            (259, SHORT, 1, 8),
            (262, SHORT, 1, 1),
            (277, SHORT, 1, 1),
            (322, LONG, 1, 65536),
            (323, LONG, 1, 65536),
            (324, LONG, 1, -1),
            (325, LONG, 1, len(tile)),
        ],
        tile,
    )


@corpus_file("bomb_tiff_65535_samples.tif")
def _tiff_samples_bomb() -> bytes:
    # 1000x1000 pixels (under --max-pixels) of 65535 samples each: 65 GB of data.
    strip = zlib.compress(b"\x00" * 1024, 9)
    return tiff_by_hand(
        [
            (256, LONG, 1, 1000),
            (257, LONG, 1, 1000),
            (258, SHORT, 1, 8),
            (259, SHORT, 1, 8),
            (262, SHORT, 1, 1),
            (273, LONG, 1, -1),
            (277, SHORT, 1, 65535),
            (278, LONG, 1, 1000),
            (279, LONG, 1, len(strip)),
            (284, SHORT, 1, 1),
        ],
        strip,
    )


@corpus_file("bomb_png_idat_zlib.png")
def _png_idat_bomb() -> bytes:
    # A 1x1 PNG whose IDAT inflates to 4 MB: only the bytes the header needs may be decoded.
    return png_bytes(1, 1, b"\x00" * (4 << 20))


# --------------------------------------------------------------------------- broken images


@corpus_file("two_bytes.png")
def _two_bytes() -> bytes:
    return b"\x89P"


@corpus_file("just_bm.bmp")
def _just_bm() -> bytes:
    return b"BM"


@corpus_file("just_bm_named.png")
def _just_bm_png() -> bytes:
    return b"BM"


@corpus_file("png_signature_only.png")
def _png_signature_only() -> bytes:
    return PNG_SIGNATURE


@corpus_file("png_bad_crc.png")
def _png_bad_crc() -> bytes:
    data = bytearray(_valid_rgb_png())
    data[29] ^= 0xFF  # the IHDR CRC
    return bytes(data)


@corpus_file("png_zero_width.png")
def _png_zero_width() -> bytes:
    return png_bytes(0, 8, b"")


@corpus_file("png_bad_zlib.png")
def _png_bad_zlib() -> bytes:
    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(40)))
        + png_chunk(b"IEND", b"")
    )


@corpus_file("tiff_ifd_loop.tif")
def _tiff_loop() -> bytes:
    data = bytearray(_tiff_bomb_header())
    count = struct.unpack("<H", data[8:10])[0]
    next_ifd = 10 + 12 * count
    data[next_ifd : next_ifd + 4] = struct.pack("<I", 8)  # the IFD points to itself
    data[10 + 4 : 10 + 12] = struct.pack("<II", 1, 4)  # and the image is 4 pixels wide
    return bytes(data)


@corpus_file("tiff_bad_offset.tif")
def _tiff_bad_offset() -> bytes:
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0)


@corpus_file("tiff_strip_past_end.tif")
def _tiff_strip_past_end() -> bytes:
    data = tiff_gray_strip(8, 8, zlib.compress(b"\x00" * 64))
    return data[:-8]


@corpus_file("jpeg_sof_zero_height.jpg")
def _jpeg_zero() -> bytes:
    data = bytearray(_valid_jpg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = b"\x00\x00"
    return bytes(data)


for _fmt, _builder in {
    "png": _valid_rgb_png,
    "jpg": _valid_jpg,
    "gif": _valid_gif,
    "tif": _valid_tif,
    "bmp": _valid_bmp,
    "webp": _valid_webp,
}.items():

    def _truncated(builder: Builder = _builder) -> bytes:
        data = builder()
        return data[: len(data) // 2]

    corpus_file(f"truncated.{_fmt}")(_truncated)

    def _random(index: int = len(FILES)) -> bytes:
        return rng(100 + index).integers(0, 256, 512, dtype=np.uint8).tobytes()

    corpus_file(f"random_bytes.{_fmt}")(_random)

    def _empty() -> bytes:
        return b""

    corpus_file(f"empty.{_fmt}")(_empty)


@corpus_file("png_magic_then_garbage.png")
def _png_garbage() -> bytes:
    return PNG_SIGNATURE + rng(7).integers(0, 256, 256, dtype=np.uint8).tobytes()


@corpus_file("jpeg_magic_then_garbage.jpg")
def _jpeg_garbage() -> bytes:
    return b"\xff\xd8\xff\xe0" + rng(8).integers(0, 256, 256, dtype=np.uint8).tobytes()


@corpus_file("gif_magic_then_garbage.gif")
def _gif_garbage() -> bytes:
    return b"GIF89a" + rng(9).integers(0, 256, 256, dtype=np.uint8).tobytes()


@corpus_file("tiff_magic_then_garbage.tif")
def _tiff_garbage() -> bytes:
    return b"II*\x00" + rng(10).integers(0, 256, 256, dtype=np.uint8).tobytes()


@corpus_file("webp_magic_then_garbage.webp")
def _webp_garbage() -> bytes:
    return b"RIFF\x00\x01\x00\x00WEBPVP8 " + rng(11).integers(0, 256, 256, np.uint8).tobytes()


@corpus_file("npy_named.png")
def _npy_named_png() -> bytes:
    return npy_bytes(np.zeros((4, 4), np.float32))


# --------------------------------------------------------------------------- .npy


@corpus_file("npy_claims_75GiB.npy")
def _npy_75gib() -> bytes:
    # 10,066,329,600 float64 values = 75 GiB declared, 64 bytes present.
    return npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (10066329600,), }", b"\x00" * 64
    )


@corpus_file("npy_pickle_payload.npy")
def _npy_pickle() -> bytes:
    return object_npy()


@corpus_file("npy_complex.npy")
def _npy_complex() -> bytes:
    return npy_bytes(np.ones((4, 4), np.complex128))


@corpus_file("npy_strings.npy")
def _npy_strings() -> bytes:
    return npy_bytes(np.array([["ab", "cd"], ["ef", "gh"]]))


@corpus_file("npy_bool.npy")
def _npy_bool() -> bytes:
    return npy_bytes(np.ones((4, 4), bool))


@corpus_file("npy_datetime.npy")
def _npy_datetime() -> bytes:
    return npy_bytes(np.zeros((4, 4), "datetime64[s]"))


@corpus_file("npy_structured.npy")
def _npy_structured() -> bytes:
    return npy_bytes(np.zeros((4, 4), [("a", "<f4"), ("b", "<i4")]))


@corpus_file("npy_5d.npy")
def _npy_5d() -> bytes:
    return npy_bytes(np.zeros((1, 1, 4, 4, 1), np.float32))


@corpus_file("npy_1d.npy")
def _npy_1d() -> bytes:
    return npy_bytes(np.zeros(16, np.float32))


@corpus_file("npy_0d.npy")
def _npy_0d() -> bytes:
    return npy_bytes(np.float32(1.0))


@corpus_file("npy_empty_batch.npy")
def _npy_empty() -> bytes:
    return npy_bytes(np.zeros((0, 8, 8, 3), np.float32))


@corpus_file("npy_negative_shape.npy")
def _npy_negative() -> bytes:
    return npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 4), }", b"")


@corpus_file("npy_header_code.npy")
def _npy_code() -> bytes:
    # A header that is Python code, not a literal: never evaluated.
    header = "{'descr': __import__('os').mkdir('" + PICKLE_MARKER + "'), 'shape': (1,)}"
    return npy_with_header(header, b"\x00" * 8)


@corpus_file("npy_version_9.npy")
def _npy_version() -> bytes:
    data = bytearray(npy_bytes(np.zeros((4, 4), np.float32)))
    data[6:8] = b"\x09\x00"
    return bytes(data)


@corpus_file("npy_header_len_2GiB.npy")
def _npy_long_header() -> bytes:
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", 0x7FFFFFFF) + b"{'descr'"


@corpus_file("npy_truncated.npy")
def _npy_truncated() -> bytes:
    data = npy_bytes(np.zeros((8, 8), np.float32))
    return data[:-100]


@corpus_file("npy_nan_inf.npy")
def _npy_nan() -> bytes:
    x = np.zeros((8, 8), np.float32)
    x[2, 3] = np.nan
    x[5, 5] = np.inf
    return npy_bytes(x)


@corpus_file("npy_magic_only.npy")
def _npy_magic() -> bytes:
    return b"\x93NUMPY"


@corpus_file("empty.npy")
def _npy_empty_file() -> bytes:
    return b""


@corpus_file("npy_8_channels.npy")
def _npy_8_channels() -> bytes:
    return npy_bytes(np.zeros((8, 8, 8), np.float32))


# --------------------------------------------------------------------------- .npz


def small_member() -> bytes:
    return npy_bytes(np.zeros((4, 4), np.float32))


@corpus_file("npz_65_members.npz")
def _npz_many() -> bytes:
    members = [(f"m{index:02d}.npy", small_member()) for index in range(65)]
    return zip_bytes(members, compression=zipfile.ZIP_DEFLATED)


@corpus_file("npz_text_member.npz")
def _npz_text() -> bytes:
    return zip_bytes([("a.npy", small_member()), ("readme.txt", b"not an array\n")])


@corpus_file("npz_ratio_bomb.npz")
def _npz_ratio() -> bytes:
    # 4 MiB of zeros deflate to ~4 KB: a ratio over 1000.
    member = npy_bytes(np.zeros(1 << 19, np.float64))
    return zip_bytes([("a.npy", member)], compression=zipfile.ZIP_DEFLATED)


@corpus_file("npz_declares_4GiB.npz")
def _npz_lying() -> bytes:
    # A stored member whose headers claim 4 GiB uncompressed over 128 bytes of data.
    data = bytearray(zip_bytes([("a.npy", small_member()[:128])]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        where = data.index(signature) + offset
        data[where : where + 4] = struct.pack("<I", 0xFFFFFFFE)
    return bytes(data)


@corpus_file("npz_dotdot_member.npz")
def _npz_dotdot() -> bytes:
    return zip_bytes([("../../evil.npy", small_member())])


@corpus_file("npz_absolute_member.npz")
def _npz_absolute() -> bytes:
    return zip_bytes([("/tmp/evil.npy", small_member())])


@corpus_file("npz_control_chars_member.npz")
def _npz_control() -> bytes:
    return zip_bytes([("a\n\x1b[31mred.npy", small_member())])


@corpus_file("npz_duplicate_member.npz")
def _npz_duplicate() -> bytes:
    return zip_bytes([("a.npy", small_member()), ("a.npy", small_member())])


@corpus_file("npz_pickle_member.npz")
def _npz_pickle() -> bytes:
    return zip_bytes([("a.npy", object_npy())])


@corpus_file("npz_encrypted.npz")
def _npz_encrypted() -> bytes:
    data = bytearray(zip_bytes([("a.npy", small_member())]))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        where = data.index(signature) + offset
        data[where] |= 1  # general purpose flag bit 0: encrypted
    return bytes(data)


@corpus_file("npz_deflate64.npz")
def _npz_deflate64() -> bytes:
    data = bytearray(zip_bytes([("a.npy", small_member())]))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        where = data.index(signature) + offset
        data[where : where + 2] = struct.pack("<H", 9)  # Deflate64: unsupported
    return bytes(data)


@corpus_file("npz_bad_crc.npz")
def _npz_crc() -> bytes:
    data = bytearray(zip_bytes([("a.npy", small_member())]))
    data[200] ^= 0xFF  # inside the member's array data
    return bytes(data)


@corpus_file("npz_truncated.npz")
def _npz_truncated() -> bytes:
    data = _valid_npz()
    return data[: len(data) // 2]


@corpus_file("npz_no_members.npz")
def _npz_none() -> bytes:
    return zip_bytes([])


@corpus_file("npz_zip_garbage.npz")
def _npz_garbage() -> bytes:
    return b"PK\x03\x04" + rng(12).integers(0, 256, 256, dtype=np.uint8).tobytes()


@corpus_file("npz_member_is_zip.npz")
def _npz_nested() -> bytes:
    return zip_bytes([("a.npy", _valid_npz())])


@corpus_file("npz_member_75GiB.npz")
def _npz_member_huge() -> bytes:
    return zip_bytes([("a.npy", _npy_75gib())])


@corpus_file("empty.npz")
def _npz_empty_file() -> bytes:
    return b""


# --------------------------------------------------------------------------- reference dumps


def dump_input() -> np.ndarray:
    return rng(13).standard_normal((1, 6, 6, 2)).astype(np.float32)


@corpus_file("dump_params_not_json.npz")
def _dump_bad_json() -> bytes:
    x = dump_input()
    return reference_dump({"input": x, "output": x}, "{op: max_pool")


@corpus_file("dump_params_nan.npz")
def _dump_nan() -> bytes:
    x = dump_input()
    return reference_dump({"input": x, "output": x}, '{"op": "max_pool", "size": NaN}')


@corpus_file("dump_unknown_op.npz")
def _dump_op() -> bytes:
    x = dump_input()
    return reference_dump({"input": x, "output": x}, {"op": "rm -rf", "size": 1})


@corpus_file("dump_stride_zero.npz")
def _dump_stride() -> bytes:
    x = dump_input()
    return reference_dump({"input": x, "output": x}, {"op": "max_pool", "size": 2, "stride": 0})


@corpus_file("dump_padding_100000.npz")
def _dump_padding() -> bytes:
    x = dump_input()
    kernel = np.ones((1, 1), np.float32)
    return reference_dump(
        {"input": x, "output": x, "kernel": kernel}, {"op": "conv", "padding": 100000}
    )


@corpus_file("dump_pickle_kernel.npz")
def _dump_pickle() -> bytes:
    x = dump_input()
    members = [("input.npy", npy_bytes(x)), ("output.npy", npy_bytes(x))]
    members.append(("kernel.npy", object_npy()))
    members.append(("params.npy", npy_bytes(np.array('{"op": "conv"}'))))
    return zip_bytes(members)


@corpus_file("dump_missing_output.npz")
def _dump_missing() -> bytes:
    return reference_dump({"input": dump_input()}, {"op": "max_pool", "size": 1})


@corpus_file("dump_params_float.npz")
def _dump_params_float() -> bytes:
    x = dump_input()
    members = [("input.npy", npy_bytes(x)), ("output.npy", npy_bytes(x))]
    members.append(("params.npy", npy_bytes(np.array(1.5))))
    return zip_bytes(members)


@corpus_file("dump_kernel_5d.npz")
def _dump_kernel_5d() -> bytes:
    x = dump_input()
    kernel = np.ones((1, 1, 1, 1, 1), np.float32)
    return reference_dump({"input": x, "output": x, "kernel": kernel}, {"op": "conv"})


# --------------------------------------------------------------------------- kernels (JSON)


def kernel_text(text: str) -> Builder:
    return lambda: text.encode("utf-8")


for _name, _text in {
    "k_nan.json": '{"weights": [[1, NaN], [0, 1]]}',
    "k_infinity.json": '{"weights": [[1, Infinity], [0, 1]]}',
    "k_minus_infinity.json": "[[1, 0], [-Infinity, 1]]",
    "k_1e400.json": '{"weights": [[1, 0], [0, 1e400]]}',
    "k_5000_digits.json": '{"weights": [[1, 0], [0, ' + "9" * 5000 + "]]}",
    "k_duplicate_keys.json": '{"weights": [[1]], "weights": [[2]]}',
    "k_ragged.json": '{"weights": [[1, 2, 3], [4, 5], [6, 7, 8]]}',
    "k_empty_weights.json": '{"weights": []}',
    "k_empty_row.json": '{"weights": [[], []]}',
    "k_string_weight.json": '{"weights": [[1, "2"], [3, 4]]}',
    "k_bool_weight.json": '{"weights": [[1, true], [3, 4]]}',
    "k_null_weight.json": '{"weights": [[1, null], [3, 4]]}',
    "k_object_weight.json": '{"weights": [[1, {"a": 1}], [3, 4]]}',
    "k_unknown_key.json": '{"weights": [[1]], "strides": 2}',
    "k_control_chars_key.json": '{"weights": [[1]], "a\\nb\\u001b[31m": 1}',
    "k_surrogate_value.json": '{"weights": [[1]], "pad_mode": "\\ud800"}',
    "k_bias_length.json": '{"weights": [[[[1]]], [[[2]]]], "bias": [1, 2, 3]}',
    "k_1d.json": '{"weights": [1, 2, 3]}',
    "k_5d.json": '{"weights": [[[[[1]]]]]}',
    "k_scale_overflow.json": '{"weights": [[1e300, 1]], "scale": 1e300}',
    "k_normalize_zero_sum.json": '{"weights": [[1, -1]], "normalize": true}',
    "k_stride_zero.json": '{"weights": [[1]], "stride": 0}',
    "k_padding_negative.json": '{"weights": [[1]], "padding": [-1, -1]}',
    "k_groups_zero.json": '{"weights": [[1]], "groups": 0}',
    "k_layout_unknown.json": '{"weights": [[[[1]]]], "layout": "XYZW"}',
    "k_top_level_string.json": '"weights"',
    "k_trailing_garbage.json": '{"weights": [[1]]} }',
    "k_missing_weights.json": '{"bias": 1}',
    "k_deep_1000.json": "[" * 1000 + "]" * 1000,
    "k_dilation_huge.json": '{"weights": [[1, 1], [1, 1]], "dilation": 1' + "0" * 30 + "}",
    "k_padding_huge.json": '{"weights": [[1]], "padding": [1' + "0" * 30 + ", 0]}",
    "empty.json": "",
    "k_whitespace.json": " \n\t \n",
}.items():
    corpus_file(_name)(kernel_text(_text))


@corpus_file("k_bom.json")
def _k_bom() -> bytes:
    return b"\xef\xbb\xbf" + _valid_kernel()


@corpus_file("k_latin1.json")
def _k_latin1() -> bytes:
    return '{"weights": [[1]], "name": "caf\xe9"}'.encode("latin1")


@corpus_file("k_utf16.json")
def _k_utf16() -> bytes:
    return '{"weights": [[1]]}'.encode("utf-16")


@corpus_file("k_pickle.npy")
def _k_pickle() -> bytes:
    return object_npy()


@corpus_file("k_complex.npy")
def _k_complex() -> bytes:
    return npy_bytes(np.ones((3, 3), np.complex64))


@corpus_file("k_5d.npy")
def _k_5d() -> bytes:
    return npy_bytes(np.ones((1, 1, 1, 3, 3), np.float32))


@corpus_file("k_claims_75GiB.npy")
def _k_huge() -> bytes:
    return _npy_75gib()


@corpus_file("k_nan.npy")
def _k_nan() -> bytes:
    return npy_bytes(np.array([[1.0, np.nan], [0.0, 1.0]]))


@corpus_file("k_bool.npy")
def _k_bool() -> bytes:
    return npy_bytes(np.ones((3, 3), bool))


@corpus_file("k_truncated.npy")
def _k_truncated() -> bytes:
    return npy_bytes(np.ones((3, 3), np.float64))[:-20]


# --------------------------------------------------------------------------- large: test time


def _write_tiff_zlib_bomb(path: Path) -> None:
    """A real 20000x20000 8-bit TIFF of zeros in one zlib strip: ~400 KB on disk, 400 MB decoded."""
    width = height = 20000
    compressor = zlib.compressobj(9)
    row_block = b"\x00" * (width * 500)
    parts = [compressor.compress(row_block) for _ in range(height // 500)]
    parts.append(compressor.flush())
    path.write_bytes(tiff_gray_strip(width, height, b"".join(parts)))


def _write_deep_json(path: Path) -> None:
    path.write_bytes(b"[" * 100_000 + b"1" + b"]" * 100_000)


def _write_million_weights(path: Path) -> None:
    row = "[" + ",".join(["0"] * 1001) + "]"
    path.write_text('{"weights": [' + ",".join([row] * 1000) + "]}")


def _write_17mib_kernel(path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(b'{"weights": [[1]]}')
        handle.truncate(17 * 1024 * 1024)  # sparse: costs no disk


#: Files too large to commit, written by :func:`write_large` (name -> writer).
LARGE: dict[str, Callable[[Path], None]] = {
    "bomb_tiff_zlib_20000x20000.tif": _write_tiff_zlib_bomb,
    "k_deep_100000.json": _write_deep_json,
    "k_1001000_weights.json": _write_million_weights,
    "k_17MiB.json": _write_17mib_kernel,
}


def write_large(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, writer in LARGE.items():
        writer(folder / name)
    return folder


def build() -> dict[str, bytes]:
    return {name: builder() for name, builder in sorted(FILES.items())}


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else CORPUS
    target.mkdir(parents=True, exist_ok=True)
    files = build()
    for stale in target.iterdir():
        if stale.is_file() and stale.name not in files:
            stale.unlink()
    for name, data in files.items():
        (target / name).write_bytes(data)
    total = sum(len(data) for data in files.values())
    print(f"{len(files)} files, {total:,} bytes, largest {max(map(len, files.values())):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
