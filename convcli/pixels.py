"""Mapping float results back to image dtypes, and splitting off and re-attaching alpha."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError, join_or
from convcli.threads import resolve_threads, run_blocks

__all__ = ["OUT_DTYPES", "RANGE_MODES", "merge_alpha", "split_alpha", "to_image_dtype"]

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
        work: npt.NDArray[np.floating[Any]] = flat[start : start + _CHUNK].astype(work_dtype)
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
