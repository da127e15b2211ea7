"""Turning a TIFF page's stored samples into pixels: palettes, sample widths, CMYK, alpha.

Each function takes and returns ``(H, W, C)`` arrays and rounds the way ImageMagick does
(libvips and Pillow agree where they handle the case at all).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["cmyk_to_rgb", "expand_palette", "rescale", "unpremultiply"]

Array = npt.NDArray[Any]


def expand_palette(index: Array, colormap: Any, dtype: np.dtype[Any]) -> Array:
    """``(H, W, 3)`` colours of palette indices ``(H, W)`` from a TIFF ColorMap ``(3, N)``.

    The ColorMap holds 16-bit values; ``dtype`` uint8 takes their high bytes (the plan picks
    uint8 only when every value is a multiple of 257, so nothing is lost). Indices past a
    short colormap are black, as in libtiff's readers.
    """
    table = np.asarray(colormap, dtype=np.uint16).reshape(3, -1).T  # (entries, 3)
    needed = int(index.max()) + 1 if index.size else 0
    if needed > len(table):
        table = np.concatenate([table, np.zeros((needed - len(table), 3), np.uint16)])
    rgb = table[index]
    return rgb // 257 if dtype == np.uint8 else rgb


def rescale(samples: Array, bits: int, dtype: np.dtype[Any]) -> Array:
    """Unsigned ``bits``-wide samples as ``dtype`` uint8 or uint16 over its full range.

    ``round(value * max(dtype) / (2**bits - 1))``: exact bit replication for 1, 2 and 4 bits
    (4-bit 15 is 255), ImageMagick's rounding for 12 bits (4095 is 65535, 255 is 4081).
    Samples already as wide as ``dtype``, and float output, are only cast.
    """
    if dtype.kind != "u" or samples.dtype.kind not in "ub":
        return samples.astype(dtype, copy=False)
    top = (1 << bits) - 1
    target = int(np.iinfo(dtype).max)
    if top == target:
        return samples.astype(dtype, copy=False)
    wide = samples.astype(np.uint32)  # at most 65535 * 255 * 2 or 4095 * 65535 * 2: no overflow
    return ((wide * (2 * target) + top) // (2 * top)).astype(dtype)


def unpremultiply(colour: Array, alpha: Array) -> Array:
    """Colour ``(H, W, C)`` divided by its associated alpha ``(H, W)``: colour / alpha.

    Integers are rounded and clipped to the dtype's range; colour is 0 where alpha is 0.
    """
    if colour.dtype.kind == "f":
        safe = np.where(alpha == 0, 1, alpha)[..., np.newaxis]
        return np.where(alpha[..., np.newaxis] == 0, 0, colour / safe).astype(colour.dtype)
    top = int(np.iinfo(colour.dtype).max)
    wide = _wide(colour.dtype)
    weight = alpha.astype(wide)[..., np.newaxis]
    scaled = (colour.astype(wide) * (2 * top) + weight) // (2 * np.maximum(weight, 1))
    return np.where(weight == 0, 0, np.minimum(scaled, top)).astype(colour.dtype)


def cmyk_to_rgb(cmyk: Array) -> Array:
    """RGB ``(H, W, 3)`` from CMYK ``(H, W, 4)`` without a profile, as Pillow and ImageMagick.

    ``R = (1 - C)(1 - K)`` (likewise G from M, B from Y), rounded; floats are taken as 0-1.
    """
    if cmyk.dtype.kind == "f":
        rgb: Array = (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:4])
        return rgb.astype(cmyk.dtype)
    top = int(np.iinfo(cmyk.dtype).max)
    inverse: Array = top - cmyk.astype(_wide(cmyk.dtype))
    product = inverse[..., :3] * inverse[..., 3:4]
    return ((product * 2 + top) // (2 * top)).astype(cmyk.dtype)


def _wide(dtype: np.dtype[Any]) -> type[np.unsignedinteger[Any]]:
    """An unsigned type that holds twice the square of ``dtype``'s largest value."""
    return np.uint32 if dtype.itemsize == 1 else np.uint64
