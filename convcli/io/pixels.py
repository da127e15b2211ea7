"""Mapping float results back to image dtypes, and splitting off and re-attaching alpha."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from convcli.engine.threads import resolve_threads, run_blocks
from convcli.errors import ConvcliError, join_or

__all__ = [
    "OUT_DTYPES",
    "RANGE_MODES",
    "flatten",
    "linear_to_srgb",
    "merge_alpha",
    "parse_color",
    "split_alpha",
    "srgb_to_linear",
    "to_image_dtype",
]

Array = npt.NDArray[Any]

#: How float results map back to integer pixels (see :func:`to_image_dtype`).
RANGE_MODES: Final = ("clip", "normalize", "abs")
#: Pixel dtypes an image may be written with.
OUT_DTYPES: Final = ("uint8", "uint16", "float32")


def to_image_dtype(result: Array, *, dtype: str, range_mode: str = "clip") -> tuple[Array, int]:
    """Map a (float) result to an image dtype.

    Parameters
    ----------
    result : ndarray
        Any real array, typically the float32/float64 output of the engine.
    dtype : {"uint8", "uint16", "float32"}
        The pixel dtype wanted.
    range_mode : {"clip", "normalize", "abs"}
        For ``uint8``/``uint16``: ``"clip"`` rounds half to even (``np.rint``) and clips to
        ``[0, max]``; ``"normalize"`` stretches ``[min, max]`` linearly onto ``[0, max]``, then
        rounds (a constant result becomes all zeros); ``"abs"`` takes the absolute value, then
        rounds and clips. For ``float32`` nothing is rounded or clipped: ``"clip"`` keeps the
        values, ``"abs"`` takes their absolute value and ``"normalize"`` stretches them onto
        ``[0, 1]``.

    Returns
    -------
    converted : ndarray
        Same shape as ``result``, dtype ``dtype``.
    clipped : int
        How many values fell outside ``[0, max]`` after rounding and were clipped (for
        ``float32``: how many finite values overflowed to infinity; normally 0).

    Raises
    ------
    ConvcliError
        Unknown ``dtype`` or ``range_mode``; non-finite values going to an integer dtype or
        being normalized.
    """
    if dtype not in OUT_DTYPES:
        raise ConvcliError(f"unknown output dtype {dtype!r}; expected one of {join_or(OUT_DTYPES)}")
    if range_mode not in RANGE_MODES:
        raise ConvcliError(
            f"unknown range mode {range_mode!r}; expected one of {join_or(RANGE_MODES)}"
        )
    values = np.asarray(result)
    if values.dtype.kind not in "biuf":
        raise ConvcliError(f"cannot map {values.dtype} values to image pixels")
    flat = values.reshape(-1)
    starts = range(0, flat.size, _CHUNK)
    workers = resolve_threads(None)
    if values.dtype.kind == "f" and (dtype != "float32" or range_mode == "normalize"):
        nonfinite = [0] * len(starts)

        def count_nonfinite(index: int) -> None:
            block = flat[starts[index] : starts[index] + _CHUNK]
            if np.isfinite(np.add.reduce(block, dtype=np.float64)):
                return  # a finite sum has no NaN or infinity in it (one pass, no temporary)
            nonfinite[index] = block.size - int(np.count_nonzero(np.isfinite(block)))

        run_blocks(range(len(starts)), count_nonfinite, workers)
        bad = sum(nonfinite)
        if bad:
            fix = "write to .npy or TIFF float32 to keep them"
            if dtype == "float32":
                fix = "use --range clip or abs to keep them"
            raise ConvcliError(f"result has {bad:,} non-finite values (NaN/Inf); {fix}")
    top = 1.0 if dtype == "float32" else float(np.iinfo(dtype).max)
    low, scale = 0.0, 1.0
    if range_mode == "normalize" and flat.size:
        low, high = float(flat.min()), float(flat.max())
        scale = top / (high - low) if high > low else 0.0
    out = np.empty(flat.shape, dtype=dtype)
    clipped = [0] * len(starts)
    # Chunks bound the temporaries and spread over threads. float64 holds every float32 and
    # integer pixel value exactly, so the result does not depend on the chunking or the
    # input's float type; a float32 result that is only rounded, clipped or made absolute (no
    # stretch) stays in float32, which rounds it just as exactly at half the memory traffic.
    work_dtype = (
        np.float32 if values.dtype == np.float32 and range_mode != "normalize" else np.float64
    )

    def convert(index: int) -> None:
        start = starts[index]
        chunk = flat[start : start + _CHUNK]
        if dtype != "float32" and range_mode == "clip" and chunk.dtype == work_dtype:
            # the common case in one rounding pass into scratch; the range is checked with
            # two reductions, and the clip and its counts are needed only past it
            work_clip = np.rint(chunk)
            if chunk.size and (work_clip.min() < 0 or work_clip.max() > top):
                low_count = int(np.count_nonzero(work_clip < 0))
                clipped[index] = low_count + int(np.count_nonzero(work_clip > top))
                np.clip(work_clip, 0.0, top, out=work_clip)
            out[start : start + _CHUNK] = work_clip
            return
        work: npt.NDArray[np.floating[Any]] = chunk.astype(work_dtype)
        if range_mode == "abs":
            np.abs(work, out=work)
        elif range_mode == "normalize":
            work -= low
            work *= scale
        if dtype == "float32":
            with np.errstate(over="ignore"):
                converted = work.astype(np.float32, copy=False)
            clipped[index] = int(np.count_nonzero(np.isinf(converted) & np.isfinite(work)))
            out[start : start + _CHUNK] = converted
            return
        np.rint(work, out=work)
        if range_mode != "normalize":
            clipped[index] = int(np.count_nonzero(work < 0)) + int(np.count_nonzero(work > top))
        np.clip(work, 0.0, top, out=work)
        out[start : start + _CHUNK] = work

    run_blocks(range(len(starts)), convert, workers)
    return out.reshape(values.shape), sum(clipped)


#: Elements per block in :func:`to_image_dtype` (1 MiB of float32: stays in L2).
_CHUNK: Final = 1 << 18


# --------------------------------------------------------------------------- alpha


def split_alpha(pixels: Array) -> tuple[Array, Array | None]:
    """Split off the alpha channel of gray + alpha or RGBA pixels.

    Returns
    -------
    color : ndarray
        ``(H, W)`` for 2 channels, ``(H, W, 3)`` for 4; ``pixels`` itself otherwise.
    alpha : ndarray or None
        ``(H, W)`` (a view), or None when ``pixels`` has not 2 or 4 channels.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (2, 4):
        return pixels, None
    color = pixels[:, :, 0] if pixels.shape[2] == 2 else pixels[:, :, :3]
    return color, pixels[:, :, -1]


def merge_alpha(color: Array, alpha: Array) -> Array:
    """Append ``alpha`` to ``color`` as its last channel, in ``color``'s dtype.

    ``color`` is ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; ``alpha`` is ``(H, W)``.
    Alpha follows the dtype change: uint8 -> uint16 multiplies by 257, uint16 -> uint8
    divides by 257 and rounds; to float32 the values are kept; float to an integer dtype
    rounds and clips.

    Raises
    ------
    ConvcliError
        The two do not have the same height and width (e.g. after a stride or pooling).
    """
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if color.ndim not in (2, 3) or alpha.ndim != 2 or color.shape[:2] != alpha.shape:
        raise ConvcliError(
            f"the alpha channel {alpha.shape} does not fit the filtered image {color.shape}; "
            "use --filter-alpha to filter it along"
        )
    stacked = color if color.ndim == 3 else color[:, :, None]
    return np.concatenate([stacked, _alpha_as(alpha, color.dtype)[:, :, None]], axis=2)


def _alpha_as(alpha: Array, dtype: np.dtype[Any]) -> Array:
    if alpha.dtype == dtype:
        return alpha
    if dtype.kind == "f":
        return alpha.astype(dtype)
    top = float(np.iinfo(dtype).max)
    values = alpha.astype(np.float64)
    if alpha.dtype.kind in "ui":
        values *= top / float(np.iinfo(alpha.dtype).max)
    return np.clip(np.rint(values), 0.0, top).astype(dtype)


# --------------------------------------------------------------------------- light and colour


def _srgb_decode(encoded: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IEC 61966-2-1: sRGB-encoded [0, 1] to linear light [0, 1]."""
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def _srgb_encode(linear: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The inverse of :func:`_srgb_decode`."""
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def srgb_to_linear(pixels: Array) -> npt.NDArray[np.float32]:
    """8- or 16-bit sRGB-encoded pixels in linear light, as float32 on the same scale.

    Code ``c`` of a dtype with maximum ``top`` becomes ``top * decode(c / top)``: the engine
    then filters light, not encoded values (a blurred black/white checkerboard is 188, not
    128). A lookup table of every code makes it exact and cheap.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ConvcliError(f"--linear applies to 8- and 16-bit images, not {pixels.dtype}")
    top = float(np.iinfo(pixels.dtype).max)
    codes = np.arange(int(top) + 1, dtype=np.float64)
    table = (_srgb_decode(codes / top) * top).astype(np.float32)
    return table[pixels]


def linear_to_srgb(values: Array, top: float) -> tuple[npt.NDArray[np.float64], int]:
    """Linear light on a ``[0, top]`` scale back to sRGB-encoded values on the same scale.

    The exact inverse of :func:`srgb_to_linear` before rounding, so unfiltered pixels come
    back as the codes they were. Values outside ``[0, top]`` are clipped first (no encoded
    value holds them); returns the values and how many were clipped.
    """
    work = np.asarray(values, dtype=np.float64) / top
    clipped = int(np.count_nonzero(work < 0)) + int(np.count_nonzero(work > 1))
    np.clip(work, 0.0, 1.0, out=work)
    return _srgb_encode(work) * top, clipped


#: Colours ``--background`` knows by name (CSS's basic colours), as 8-bit RGB.
NAMED_COLORS: Final = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "lime": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}


def parse_color(text: str) -> tuple[float, float, float]:
    """A colour name of :data:`NAMED_COLORS`, ``#rgb`` or ``#rrggbb``, as RGB in [0, 1].

    Raises:
        ConvcliError: anything else.
    """
    value = text.strip().lower()
    if value in NAMED_COLORS:
        red, green, blue = NAMED_COLORS[value]
        return (red / 255, green / 255, blue / 255)
    digits = value[1:] if value.startswith("#") else ""
    if len(digits) == 3:
        digits = "".join(digit * 2 for digit in digits)
    try:
        if len(digits) != 6:
            raise ValueError
        channels = [int(digits[i : i + 2], 16) for i in (0, 2, 4)]
    except ValueError:
        known = ", ".join(sorted(NAMED_COLORS))
        raise ConvcliError(
            f"--background: {text!r} is not #rrggbb, #rgb or one of {known}"
        ) from None
    return (channels[0] / 255, channels[1] / 255, channels[2] / 255)


def flatten(
    color: Array, alpha: Array, alpha_top: float, background: tuple[float, float, float], top: float
) -> npt.NDArray[np.float64]:
    """Composite ``color`` (float, ``[0, top]``) with ``alpha`` over an opaque background.

    ``color`` is ``(H, W)`` gray or ``(H, W, 3)``; gray takes the background's luma
    (Rec. 601 weights, as Pillow's RGB to L).
    """
    coverage = np.clip(np.asarray(alpha, dtype=np.float64) / alpha_top, 0.0, 1.0)
    red, green, blue = background
    if color.ndim == 2 or color.shape[-1] == 1:
        shade: Any = (0.299 * red + 0.587 * green + 0.114 * blue) * top
        if color.ndim == 3:
            coverage = coverage[..., None]
    else:
        shade = np.array([red, green, blue]) * top
        coverage = coverage[..., None]
    flat: npt.NDArray[np.float64] = np.asarray(color, dtype=np.float64) * coverage
    flat += shade * (1.0 - coverage)
    return flat
