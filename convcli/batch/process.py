"""One input through one operation to the bytes of one output: the work behind conv and pool.

:func:`process` applies an operation to every array of a :class:`~convcli.io.sources.Source`
(an array, the members of an ``.npz``, or the frames of an image) and encodes the output
file, returning its bytes and the rows of the report. Images are filtered in float and
mapped back to their dtype (:mod:`convcli.io.pixels`): alpha passed through, filtered or
premultiplied, colour optionally in linear light, alpha optionally flattened onto a
background; their metadata and frame timing go to the output (:mod:`convcli.io.image_write`).
Nothing here prints, parses flags, reads or writes files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.batch.pipeline import (
    ARRAY_PAD_MODE,
    Convolution,
    Operation,
    OutputOptions,
    Row,
    naming_errors,
)
from convcli.batch.progress import rows_done
from convcli.batch.tiling import conv_on_grid
from convcli.engine.args import _pair, resolve_padding
from convcli.engine.blocks import axis_plan
from convcli.errors import ConvcliError
from convcli.io import arrays, images
from convcli.io.decoding import Metadata
from convcli.io.pixels import flatten, linear_to_srgb, srgb_to_linear
from convcli.io.sources import Source

Array = npt.NDArray[Any]
#: ``--alpha`` choices.
ALPHA_MODES = ("pass", "filter", "premultiply")


def _image_dtype(source_dtype: np.dtype[Any], requested: str | None) -> str:
    if requested is not None:
        return requested
    if source_dtype in (np.uint8, np.uint16):
        return str(source_dtype)
    return "float32"


def _top(dtype: np.dtype[Any] | str) -> float:
    kind = np.dtype(dtype)
    return float(np.iinfo(kind).max) if kind.kind in "ui" else 1.0


def predicted_image_channels(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions
) -> int:
    """Channels of the written image, known before computing (to refuse early)."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if not has_alpha:
        return operation.out_channels(channels)
    kept = 0 if options.background is not None else 1
    if options.alpha == "filter":
        return operation.out_channels(channels) - (1 - kept)
    return operation.out_channels(channels - 1) + kept


def _check_image_output(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions, label: str
) -> None:
    """Refuse, before computing, what the output format cannot hold."""
    if options.background is not None and not has_alpha:
        return
    channels = predicted_image_channels(pixels, has_alpha, operation, options)
    dtype = _image_dtype(pixels.dtype, options.out_dtype)
    if options.format in ("jpeg", "bmp") and has_alpha and options.background is None:
        if channels in (2, 4):
            raise ConvcliError(
                f"{label}: {images.LABELS[options.format]} holds no alpha; pass --background "
                "COLOR (e.g. white) to flatten it, or write PNG, TIFF or WebP"
            )
    images.check_writable((1, 1, channels), dtype, options.format, name=label)


#: Bytes of float results one band of an image aims for: memory stays about the decoded
#: image plus the output plus this, whatever the image's size.
BAND_BYTES = 8 * 1024**2


def filter_image(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions
) -> tuple[Array, int]:
    """Filter one (H, W) or (H, W, C) image in row bands; return it in the output dtype.

    A convolution is computed a band of output rows at a time from the input rows (and
    padding) that band reads, and each band goes to the output dtype at once, so peak
    memory is the image, its output and one band of float scratch. Every step but the
    convolution is per pixel, and each output row sums the same products in the same order,
    so the bands give the whole image's result. ``--range normalize`` needs the whole
    result's range and pooling shrinks the image: those go whole.
    """
    if isinstance(operation, Convolution) and options.tile is not None:
        if _gridded(has_alpha, operation, options):
            return conv_on_grid(pixels, has_alpha, operation, options, options.tile, _filter_whole)
    bands = _bands(pixels, has_alpha, operation, options)
    if bands is None:
        return _filter_whole(pixels, has_alpha, operation, options)
    out: Array | None = None
    clipped = 0
    for first, stop, rows, band_operation in bands:
        result, band_clipped = _filter_whole(rows, has_alpha, band_operation, options)
        if out is None:
            out = np.empty((bands.out_height, *result.shape[1:]), dtype=result.dtype)
        out[first:stop] = result
        clipped += band_clipped
        rows_done(stop, bands.out_height)
    assert out is not None
    return out, clipped


class _Bands:
    """Row bands of a convolution: (first, stop, input rows padded vertically, operation)."""

    def __init__(self, pixels: Array, operation: Convolution, step: int) -> None:
        height, width = pixels.shape[:2]
        kernel_h, kernel_w = operation.kernel_size
        stride = _pair(operation.stride, "stride")
        dilation = _pair(operation.dilation, "dilation")
        extent = ((kernel_h - 1) * dilation[0] + 1, (kernel_w - 1) * dilation[1] + 1)
        top, bottom, left, right = resolve_padding(
            operation.padding, (height, width), extent, stride
        )
        self.out_height = (height + top + bottom - extent[0]) // stride[0] + 1
        self.plan = axis_plan(height, top, bottom, kernel=kernel_h, stride=stride[0],
                              dilation=dilation[0], out=self.out_height,
                              mode=operation.pad_mode or ARRAY_PAD_MODE)  # fmt: skip
        self.pixels = pixels
        self.step = step
        self.operation = dataclasses.replace(operation, padding=(0, 0, left, right))

    def __iter__(self) -> Iterator[tuple[int, int, Array, Convolution]]:
        plan = self.plan
        for first in range(0, self.out_height, self.step):
            stop = min(first + self.step, self.out_height)
            span = plan.padded_span(first, stop)
            rows = self.pixels[plan.index[span]]
            if plan.fill_only:
                rows[~plan.valid[span]] = 0
            yield first, stop, rows, self.operation


def _gridded(has_alpha: bool, operation: Convolution, options: OutputOptions) -> bool:
    """Whether a convolution goes on the tile grid: what a streamed run would stream."""
    if options.range_mode == "normalize":
        return False  # needs the whole result's range
    # The carried alpha replicates its edge where the colour reads zeros.
    return not (has_alpha and options.alpha == "pass" and operation.pad_mode in (None, "zeros"))


def _bands(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions
) -> _Bands | None:
    if not isinstance(operation, Convolution) or options.range_mode == "normalize":
        return None
    if has_alpha and options.alpha == "pass" and operation.pad_mode in (None, "zeros"):
        return None  # the carried alpha replicates its edge where the colour reads zeros
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    row_bytes = pixels.shape[1] * max(operation.out_channels(channels), channels) * 4
    step = max(1, BAND_BYTES // row_bytes)
    if pixels.shape[0] <= 2 * step:  # small images: one call
        return None
    return _Bands(pixels, operation, step)


def _filter_whole(
    pixels: Array, has_alpha: bool, operation: Operation, options: OutputOptions
) -> tuple[Array, int]:
    """Filter one (H, W) or (H, W, C) image; return it in the output dtype and the clip count.

    The steps: split off alpha; colour to linear light (``--linear``); colour weighted by
    alpha (``premultiply``); filter; undo both; map to the output dtype (``--range``);
    alpha back on, or flattened onto ``--background``.
    """
    dtype = _image_dtype(pixels.dtype, options.out_dtype)
    top = _top(pixels.dtype)
    color, alpha = images.split_alpha(pixels) if has_alpha else (pixels, None)
    mode = options.alpha if alpha is not None else "filter"
    work: Array = srgb_to_linear(color) if options.linear else color
    clipped = 0

    def apply(x: Array) -> Array:
        return operation.apply(
            x, layout="NHWC", max_bytes=options.max_bytes, threads=options.threads
        )

    alpha_out: Array | None = None
    if alpha is None:
        result = apply(work)
    elif mode == "filter":
        stacked = np.concatenate([_channels_last(work), alpha[..., None].astype(np.float32)], 2)
        filtered = apply(stacked)
        if filtered.shape[-1] == stacked.shape[-1]:  # still colour + alpha
            result, alpha_out = filtered[..., :-1], filtered[..., -1]
            if result.shape[-1] == 1:
                result = result[..., 0]
        else:  # a kernel that mixes channels: what comes out is no longer alpha
            result = filtered
    elif mode == "premultiply":
        coverage = alpha.astype(np.float32) / np.float32(_top(alpha.dtype))
        weighted = _channels_last(work) * coverage[..., None]
        stacked = np.concatenate([weighted, alpha[..., None].astype(np.float32)], 2)
        filtered = apply(stacked)
        alpha_out = filtered[..., -1]
        kept = np.clip(alpha_out / np.float32(_top(alpha.dtype)), 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            result = np.where(kept[..., None] > 0, filtered[..., :-1] / kept[..., None], 0.0)
        if result.shape[-1] == 1:
            result = result[..., 0]
    else:  # pass: the alpha follows the geometry unfiltered
        result = apply(work)
        alpha_out = operation.carry_alpha(
            alpha, max_bytes=options.max_bytes, threads=options.threads
        )
    if options.linear:
        result, clipped = linear_to_srgb(result, top)
    if alpha is not None and alpha_out is not None and options.background is not None:
        result = flatten(result, alpha_out, _top(alpha.dtype), options.background, top)
        alpha_out = None
    if options.format in images.IMAGE_FORMATS or options.out_dtype is not None:
        result, clipped_now = images.to_image_dtype(
            result, dtype=dtype, range_mode=options.range_mode
        )
        clipped += clipped_now
    else:  # an image to .npy keeps the float result
        result = np.asarray(result, dtype=np.float64 if result.dtype == np.float64 else np.float32)
    if alpha_out is not None:
        alpha_dtype = (
            str(alpha.dtype) if alpha is not None and alpha.dtype.kind in "ui" else "float32"
        )
        carried, _ = images.to_image_dtype(alpha_out, dtype=alpha_dtype, range_mode="clip")
        result = images.merge_alpha(result, carried)
    if result.ndim == 3 and result.shape[2] == 1:
        result = result[:, :, 0]
    return result, clipped


def _channels_last(color: Array) -> Array:
    return color if color.ndim == 3 else color[..., None]


def process(
    source: Source, operation: Operation, options: OutputOptions
) -> tuple[bytes, list[Row]]:
    """Apply ``operation`` to every array of ``source``; return the output's bytes and rows.

    Raises:
        ConvcliError: the combination of input, operation and output format cannot work;
            raised before the computation wherever the shapes alone tell.
    """
    fmt = options.format
    if source.format == "npz" and fmt != "npz":
        raise ConvcliError(f"{source.name}: an .npz input is written as .npz, not {fmt}")
    if source.format != "npz" and fmt == "npz":
        raise ConvcliError(f"{source.name}: only an .npz input is written as .npz")
    operation = operation.for_input(image=source.image is not None)
    if source.image is not None:
        return _process_image(source, operation, options)
    rows: list[Row] = []
    results: dict[str, Array] = {}
    for member, array in source.arrays.items():
        label = f"{source.name}:{member}" if member else source.name
        with naming_errors(label, source.name, operation):
            result, row = _process_array(array, label, operation, options)
        results[member] = result
        rows.append(row)
    if fmt == "npz":
        return arrays.encode_npz(results), rows
    (result,) = results.values()
    if fmt == "npy":
        return arrays.encode_npy(result), rows
    return images.encode_image(result, format=fmt, quality=options.quality, name=source.name), rows


def _process_array(
    array: Array, label: str, operation: Operation, options: OutputOptions
) -> tuple[Array, Row]:
    """Filter one array: the result (in the output's dtype) and its report row."""
    fmt = options.format
    if options.linear:
        raise ConvcliError(f"{label}: --linear applies to 8- and 16-bit images, not arrays")
    if fmt in images.IMAGE_FORMATS:
        if array.ndim not in (2, 3):
            raise ConvcliError(
                f"{label}: a {array.ndim}-D array cannot be written as one {fmt} image; write .npy"
            )
        if options.layout == "NCHW" and array.ndim == 3:
            raise ConvcliError(f"{label}: write NCHW arrays to .npy, not {fmt}")
        channels = operation.out_channels(1 if array.ndim == 2 else array.shape[2])
        dtype = _image_dtype(array.dtype, options.out_dtype)
        images.check_writable((1, 1, channels), dtype, fmt, name=label)
    started = time.perf_counter()
    single = array.ndim in (2, 3) or (array.ndim == 4 and array.shape[0] == 1)
    if (
        isinstance(operation, Convolution)
        and options.tile is not None
        and options.layout == "NHWC"
        and single
        and _gridded(False, operation, options)
    ):  # one image on the tile grid, as a streamed run computes it
        pixels = array[0] if array.ndim == 4 else array
        result, clipped = conv_on_grid(
            pixels, False, operation, options, options.tile, _filter_whole
        )
        if array.ndim >= 3 and result.ndim == 2 and fmt not in images.IMAGE_FORMATS:
            result = result[..., None]  # (H, W, 1) stays 3-D in .npy
        if array.ndim == 4:
            result = result[None]
        seconds = time.perf_counter() - started
        row = Row(label, array.shape, result.shape, str(array.dtype), str(result.dtype),
                  operation.describe(), seconds, clipped)  # fmt: skip
        return result, row
    result = operation.apply(
        array, layout=options.layout, max_bytes=options.max_bytes, threads=options.threads
    )
    clipped = 0
    if fmt in images.IMAGE_FORMATS or options.out_dtype is not None:
        dtype = _image_dtype(array.dtype, options.out_dtype)
        result, clipped = images.to_image_dtype(result, dtype=dtype, range_mode=options.range_mode)
    if fmt in images.IMAGE_FORMATS and result.ndim == 3 and result.shape[2] == 1:
        result = result[:, :, 0]
    seconds = time.perf_counter() - started
    row = Row(label, array.shape, result.shape, str(array.dtype), str(result.dtype),
              operation.describe(), seconds, clipped)  # fmt: skip
    return result, row


def _frames(source: Source) -> Iterator[tuple[Array, int, int]]:
    """(pixels, duration, disposal) of every chosen frame, the first already decoded."""
    frames = source.frames
    assert source.image is not None
    if frames is None:
        yield source.image.pixels, 0, 0
        return
    yield (source.image.pixels, *frames.first_timing)
    yield from frames.rest()


def _release_decoded(source: Source) -> None:
    """Drop the source's decoded pixels (the first frame), once they have been filtered."""
    source.arrays.clear()
    if source.image is not None:
        pixels = source.image.pixels  # an empty array of its kind, not a view that keeps it
        source.image.pixels = np.empty((0, *pixels.shape[1:]), pixels.dtype)


def _process_image(
    source: Source, operation: Operation, options: OutputOptions
) -> tuple[bytes, list[Row]]:
    """Filter every chosen frame of an image into one output file; one report row."""
    image = source.image
    assert image is not None
    fmt, name = options.format, source.name
    count = source.frames.count if source.frames is not None else 1
    if fmt in images.IMAGE_FORMATS:
        images.check_frames(count, fmt, name=name)
        _check_image_output(image.pixels, image.has_alpha, operation, options, name)
    metadata = Metadata() if options.strip else image.metadata
    jpeg = image.jpeg if image.format == "jpeg" else None
    writer = None
    if fmt in images.IMAGE_FORMATS:
        keeps_alpha = image.has_alpha and options.background is None
        writer = images.FrameWriter(fmt, name=name, quality=options.quality, metadata=metadata,
                                    jpeg=jpeg, has_alpha=keeps_alpha)  # fmt: skip
    shape_in = image.pixels.shape if count == 1 else (count, *image.pixels.shape)
    dtype_in = str(image.pixels.dtype)
    stacked: list[Array] = []
    durations: list[int] = []
    disposal: list[int] = []
    started = time.perf_counter()
    clipped = 0
    shape_out: tuple[int, ...] = ()
    for pixels, duration, dispose in _frames(source):
        with naming_errors(name, name, operation):
            result, frame_clipped = filter_image(pixels, image.has_alpha, operation, options)
        clipped += frame_clipped
        shape_out = result.shape
        durations.append(duration)
        disposal.append(dispose)
        if writer is not None:
            writer.add(result)
        else:
            stacked.append(result)
        del pixels, result
        _release_decoded(source)  # the input's memory goes before the output is encoded
    if writer is not None:
        loop = source.frames.loop if source.frames is not None else None
        writer.animation = images.Animation(tuple(durations), loop, tuple(disposal))
        payload = writer.finish()
    else:  # .npy: frames on the N axis
        array = stacked[0] if count == 1 else np.stack(stacked)
        payload = arrays.encode_npy(array)
        shape_out = array.shape
    if count > 1 and writer is not None:
        shape_out = (count, *shape_out)
    dtype_out = str(writer.dtype) if writer is not None and writer.dtype is not None else ""
    row = Row(name, shape_in, shape_out, dtype_in,
              dtype_out or _image_dtype(np.dtype(dtype_in), options.out_dtype),
              operation.describe(), time.perf_counter() - started, clipped)  # fmt: skip
    return payload, [row]
