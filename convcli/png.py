"""PNG at the byte level: what Pillow cannot do for convcli.

Pillow opens 16-bit color and gray + alpha PNGs as 8-bit images and cannot write them;
:func:`decode_png16` and :func:`encode_png16` keep all 16 bits. The encoder filters rows
with libpng's heuristic (:func:`filter_rows`) and deflates them with zlib.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

__all__ = ["PNG_SIGNATURE", "decode_png16", "encode_png16", "filter_rows", "png16_color"]

Array = npt.NDArray[Any]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def png16_color(prefix: bytes) -> tuple[int, int] | None:
    """(channels, interlace) of a 16-bit color or gray+alpha PNG, from its IHDR; else None."""
    if prefix[12:16] != b"IHDR" or len(prefix) < 29:
        return None
    bit_depth, color_type, _, _, interlace = struct.unpack(">BBBBB", prefix[24:29])
    channels = {2: 3, 4: 2, 6: 4}.get(color_type)
    if bit_depth != 16 or channels is None:
        return None
    return channels, interlace


def _png_idat(handle: IO[bytes]) -> bytes:
    """The concatenated IDAT payload (the zlib stream) of a PNG."""
    handle.seek(len(PNG_SIGNATURE))
    parts: list[bytes] = []
    while True:
        head = handle.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            data = handle.read(length)
            if len(data) < length:
                raise EOFError("PNG file is truncated")
            parts.append(data)
            handle.seek(4, io.SEEK_CUR)  # CRC
        else:
            handle.seek(length + 4, io.SEEK_CUR)
    return b"".join(parts)


def decode_png16(handle: IO[bytes], opened: PILImage.Image, png16: tuple[int, int]) -> Array:
    """Decode a 16-bit RGB, RGBA or gray + alpha PNG at full depth.

    Pillow has no 16-bit multi-channel modes: it opens these as 8-bit RGB/RGBA, keeping the
    high bytes. Its PNG decoder (zlib and row unfiltering, Adam7 included) is still used, twice:
    the "RGB;16B"/"RGBA;16B" raw modes keep the high byte of each sample, the ";16L" ones the
    low byte. For gray + alpha, "RGBA" copies the four bytes of each pixel as they are.
    """
    channels, interlace = png16
    stream = _png_idat(handle)
    width, height = opened.size
    if channels == 2:
        raw = np.asarray(
            PILImage.frombytes("RGBA", (width, height), stream, "zip", "RGBA", interlace)
        )
        high, low = raw[..., 0::2], raw[..., 1::2]
    else:
        mode = "RGB" if channels == 3 else "RGBA"
        high = np.asarray(
            PILImage.frombytes(mode, (width, height), stream, "zip", f"{mode};16B", interlace)
        )
        low = np.asarray(
            PILImage.frombytes(mode, (width, height), stream, "zip", f"{mode};16L", interlace)
        )
    pixels: Array = (high.astype(np.uint16) << 8) | low
    key = opened.info.get("transparency")
    if channels == 3 and isinstance(key, tuple) and len(key) == 3:
        opaque = np.any(pixels != np.asarray(key, dtype=np.uint16), axis=-1)
        alpha = np.where(opaque, 65535, 0).astype(np.uint16)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    return pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png16(array: Array, *, level: int) -> bytes:
    """A 16-bit gray + alpha, RGB or RGBA PNG (Pillow cannot write these), at zlib ``level``."""
    height, width, channels = array.shape
    color_type = {2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)
    filtered = filter_rows(rows, bytes_per_pixel=2 * channels)
    stream = zlib.compress(filtered.tobytes(), level)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    chunk_size = 1 << 20
    idat = b"".join(
        _chunk(b"IDAT", stream[start : start + chunk_size])
        for start in range(0, max(len(stream), 1), chunk_size)
    )
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def filter_rows(rows: Array, *, bytes_per_pixel: int) -> Array:
    """PNG-filter byte rows, choosing per row the filter with the smallest sum of |residual|.

    That is libpng's heuristic. Returns ``(H, 1 + row bytes)`` uint8: the filter type, then
    the filtered bytes. Works in blocks of rows to bound the temporaries.
    """
    height, stride = rows.shape
    out = np.empty((height, stride + 1), dtype=np.uint8)
    block = max(1, (1 << 20) // max(stride, 1))
    above = np.zeros(stride, dtype=np.int16)
    for start in range(0, height, block):
        current = rows[start : start + block].astype(np.int16)
        up = np.concatenate([above[None, :], current[:-1]], axis=0)
        left = np.zeros_like(current)
        left[:, bytes_per_pixel:] = current[:, :-bytes_per_pixel]
        up_left = np.zeros_like(up)
        up_left[:, bytes_per_pixel:] = up[:, :-bytes_per_pixel]
        estimate = left + up - up_left
        distance_left = np.abs(estimate - left)
        distance_up = np.abs(estimate - up)
        distance_up_left = np.abs(estimate - up_left)
        paeth = np.where(
            (distance_left <= distance_up) & (distance_left <= distance_up_left),
            left,
            np.where(distance_up <= distance_up_left, up, up_left),
        )
        candidates = (
            np.stack(
                [
                    current,
                    current - left,
                    current - up,
                    current - ((left + up) >> 1),
                    current - paeth,
                ]
            )
            & 0xFF
        )
        cost = np.minimum(candidates, 256 - candidates).sum(axis=2, dtype=np.int64)
        choice = np.argmin(cost, axis=0)
        stop = start + current.shape[0]
        out[start:stop, 0] = choice
        out[start:stop, 1:] = candidates[choice, np.arange(current.shape[0])]
        above = current[-1]
    return out
