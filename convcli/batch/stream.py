"""Images larger than memory, as jobs: a large TIFF or .npy filtered tile by tile into
TIFF or .npy (the readers are :mod:`convcli.io.regions`).

Convolution tiles are gathered with their padding already applied (every pad mode, through
the engine's own index maps) and computed with none; pooling tiles let the engine pad at the
true edges (-inf for max, and average pooling's divisor and ceil-mode overhang as PyTorch
counts them). Peak memory is a few tiles and the decoded-segment cache, not the image.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from convcli import limits
from convcli.batch.pipeline import Convolution, OutputOptions, Pooling, Row
from convcli.batch.process import _filter_whole
from convcli.batch.progress import rows_done
from convcli.batch.tiling import conv_tiles, geometry, tile_side
from convcli.engine.blocks import AxisPlan
from convcli.errors import ConvcliError
from convcli.io import arrays, images
from convcli.io.decoding import Metadata
from convcli.io.fileio import writing
from convcli.io.image_meta import tiff_tags
from convcli.io.regions import _PLAIN_PHOTOMETRIC, Array, NpyRegions, Regions, TiffRegions, gather
from convcli.io.sources import format_of
from convcli.io.tiff_meta import tiff_metadata

# --------------------------------------------------------------------------- tiles


def _pool_tile(
    regions: Regions, plan: tuple[AxisPlan, AxisPlan], out: tuple[slice, slice], op: Pooling
) -> tuple[Array, Pooling, tuple[int, int]]:
    """The input a pooling tile reads, the operation that pools it with true-edge pads, and
    how many leading outputs per axis to drop.

    A last tile whose only window overhangs the input (ceil mode) would be too small for the
    engine on its own: it is widened backwards by whole strides and the extra outputs dropped.
    """
    pads: list[int] = []
    spans: list[slice] = []
    drops: list[int] = []
    ceil = False
    for axis, outputs in zip(plan, out, strict=True):
        span = axis.padded_span(outputs.start, outputs.stop)
        first = max(span.start - axis.before, 0)
        stop = min(span.stop - axis.before, axis.size)
        last = outputs.stop == axis.out
        before = axis.before if outputs.start == 0 else 0
        after = axis.after if last else 0
        drop = 0
        while stop - first + before + after < axis.extent and first > 0:
            first = max(first - axis.stride, 0)
            drop += 1
        pads += [before, after]
        spans.append(slice(first, stop))
        drops.append(drop)
        ceil = ceil or (last and op.ceil_mode)
    region = regions.read(spans[0], spans[1])
    tile_op = dataclasses.replace(op, padding=tuple(pads), ceil_mode=op.ceil_mode and ceil)
    return region, tile_op, (drops[0], drops[1])


def _tiles(
    regions: Regions, operation: Convolution | Pooling, options: OutputOptions, tile: int
) -> Iterator[tuple[int, int, Array, int]]:
    """(row, column, filtered tile in the output dtype, clipped count), in row-major order."""
    if isinstance(operation, Convolution):
        ahead = regions.prefetch if isinstance(regions, TiffRegions) else None
        yield from conv_tiles(
            lambda rows, cols: gather(regions, rows, cols),
            regions.shape, regions.has_alpha, operation, options, tile, _filter_whole, ahead,
        )  # fmt: skip
        return
    grid = geometry(regions.shape, operation)
    for r0 in range(0, grid.out_height, tile):
        rows = slice(r0, min(r0 + tile, grid.out_height))
        for c0 in range(0, grid.out_width, tile):
            cols = slice(c0, min(c0 + tile, grid.out_width))
            block, tile_op, drop = _pool_tile(regions, (grid.rows, grid.cols), (rows, cols),
                                              operation)  # fmt: skip
            pixels = block[..., 0] if block.shape[2] == 1 else block
            result, clipped = _filter_whole(pixels, regions.has_alpha, tile_op, options)
            result = result[drop[0] :, drop[1] :]
            expected = (rows.stop - rows.start, cols.stop - cols.start)
            if result.shape[:2] != expected:
                raise ConvcliError(f"tile {r0},{c0}: {result.shape[:2]} instead of {expected}")
            if cols.stop == grid.out_width:  # before the yield: the writer may stop at the last
                rows_done(rows.stop, grid.out_height)
            yield r0, c0, result, clipped


# --------------------------------------------------------------------------- jobs


def _tiff_streamable(handle: BinaryIO) -> bool:
    """A plain first page: gray or RGB(A), contiguous samples, no orientation to apply."""
    import tifffile

    try:
        with tifffile.TiffFile(handle) as tif:
            page = tif.pages.first
            return (
                int(page.photometric) in _PLAIN_PHOTOMETRIC
                and (int(page.planarconfig) == 1 or int(page.samplesperpixel) == 1)
                and page.dtype is not None
                and np.dtype(page.dtype).name in ("uint8", "uint16", "float32")
                and int(page.bitspersample) in (8, 16, 32)
                and int(page.tags.valueof(274, default=1)) == 1
                and tuple(int(kind) for kind in page.extrasamples) in ((), (0,), (2,))
                and int(page.imagedepth) == 1
                and int(page.samplesperpixel) <= 4
                and len(tif.pages) == 1
            )
    except Exception:  # anything odd goes the ordinary way, which reports it properly
        return False


def _open_regions(source: Path, fmt: str, name: str, max_bytes: int) -> Regions | None:
    """A region reader for a streamable input over ``limits.STREAM_MIN_BYTES``, else None."""
    if fmt == "npy":
        header = arrays.read_npy_header(source, name=name, max_bytes=2**62)
        shape = header.shape
        plain = len(shape) in (2, 3) or (len(shape) == 4 and shape[0] == 1)
        if not plain or header.fortran or header.nbytes <= limits.STREAM_MIN_BYTES:
            return None
        if header.dtype.kind not in "iuf":
            return None
        return NpyRegions(source, header, name)
    handle = source.open("rb")
    if not _tiff_streamable(handle):
        handle.close()
        return None
    handle.seek(0)
    regions = TiffRegions(handle, name)
    height, width, channels = regions.shape
    if height * width * channels * regions.dtype.itemsize <= limits.STREAM_MIN_BYTES:
        regions.close()
        return None
    return regions


def stream_job(
    source: str,
    target: str,
    out_format: str,
    operation: Convolution | Pooling,
    options: OutputOptions,
    *,
    replace: bool,
    tile: int | None = None,
) -> list[Row] | None:
    """Filter a large TIFF or .npy into TIFF or .npy tile by tile; None if it is not one.

    Raises:
        ConvcliError: the input cannot be read or the output written (the message names
            the file), or the tile's working set is over ``options.max_bytes``.
    """
    fmt = format_of(Path(source))
    if fmt not in ("tiff", "npy") or out_format not in ("tiff", "npy"):
        return None
    if options.range_mode == "normalize" or options.linear and fmt == "npy":
        return None
    regions = _open_regions(Path(source), fmt, source, options.max_bytes)
    if regions is None:
        return None
    try:
        image = fmt == "tiff"
        if image and regions.has_alpha and options.alpha == "pass":
            if isinstance(operation, Convolution) and operation.pad_mode in (None, "zeros"):
                return None  # see process._bands: the carried alpha replicates its edge
        operation = operation.for_input(image=image)
        size = tile_side(tile, out_format)
        if isinstance(regions, TiffRegions):
            rows_plan = geometry(regions.shape, operation).rows
            regions.fit_cache(rows_plan.extent + (size - 1) * rows_plan.stride)
        _check_working_set(regions, operation, size, options.max_bytes, source)
        started = time.perf_counter()
        rank = _input_rank(source, fmt, regions)
        keep = fmt == "tiff" and out_format == "tiff" and not options.strip
        metadata = _tiff_source_metadata(Path(source)) if keep else Metadata()
        rows = _write(regions, operation, options, size, Path(target), out_format, replace, rank,
                      metadata)  # fmt: skip
        rows.seconds = time.perf_counter() - started
        rows.name = source
        return [rows]
    finally:
        regions.close()


def _tiff_source_metadata(source: Path) -> Metadata:
    """The ICC profile, EXIF, XMP and resolution of a TIFF's first page, for its output."""
    import tifffile

    with source.open("rb") as handle, tifffile.TiffFile(handle) as tif:
        return tiff_metadata(tif.pages.first, handle, byteorder=tif.byteorder)


def _input_rank(source: str, fmt: str, regions: Regions) -> int:
    if fmt == "tiff":  # images are (H, W) gray or (H, W, C)
        return 2 if regions.shape[2] == 1 else 3
    header = arrays.read_npy_header(Path(source), name=source, max_bytes=2**62)
    return len(header.shape)


def _check_working_set(
    regions: Regions, operation: Convolution | Pooling, tile: int, max_bytes: int, name: str
) -> None:
    grid = geometry(regions.shape, operation)
    halo_rows = grid.rows.extent + (tile - 1) * grid.rows.stride
    halo_cols = grid.cols.extent + (tile - 1) * grid.cols.stride
    channels = regions.shape[2]
    working = halo_rows * halo_cols * channels * 8 * 3 + limits.TILE_CACHE_BYTES
    if working > max_bytes:
        raise ConvcliError(
            f"{name}: a {tile}x{tile} tile needs about {working:,} bytes, over --max-bytes "
            f"{max_bytes:,}; pass a smaller --tile"
        )


def _write(
    regions: Regions,
    operation: Convolution | Pooling,
    options: OutputOptions,
    tile: int,
    target: Path,
    out_format: str,
    replace: bool,
    rank: int,
    metadata: Metadata,
) -> Row:
    """Compute every tile and write it; the report row (name and time filled by the caller)."""
    grid = geometry(regions.shape, operation)
    tiles = _tiles(regions, operation, options, tile)
    first = next(tiles)
    channels = first[2].shape[2] if first[2].ndim == 3 else 1
    dtype = first[2].dtype
    shape2 = (grid.out_height, grid.out_width)
    clipped = [0]

    def all_tiles() -> Iterator[tuple[int, int, Array, int]]:
        yield first
        yield from tiles

    with writing(target, replace=replace) as handle:
        if out_format == "tiff":
            alpha = regions.has_alpha and options.background is None
            _write_tiff(handle, all_tiles(), shape2, channels, dtype, tile, clipped, alpha,
                        metadata)  # fmt: skip
        else:
            _write_npy(handle, all_tiles(), shape2, channels, dtype, rank, clipped)
    out_shape: tuple[int, ...] = (*shape2, channels) if channels > 1 or rank >= 3 else shape2
    if rank == 4:
        out_shape = (1, *shape2, channels)
    in_shape: tuple[int, ...] = (
        regions.shape if regions.shape[2] > 1 or rank >= 3 else regions.shape[:2]
    )
    if rank == 4:
        in_shape = (1, *regions.shape)
    described = f"{operation.describe()} (streamed, {tile}x{tile} tiles)"
    return Row("", in_shape, out_shape, str(regions.dtype), str(dtype), described, 0.0, clipped[0])


def _write_tiff(
    handle: BinaryIO,
    tiles: Iterator[tuple[int, int, Array, int]],
    shape: tuple[int, int],
    channels: int,
    dtype: np.dtype[Any],
    tile: int,
    clipped: list[int],
    has_alpha: bool,
    metadata: Metadata,
) -> None:
    """A tiled, deflated BigTIFF, written from the tile iterator, with the source's ICC
    profile, XMP, resolution and main EXIF fields as the in-memory writer keeps them.

    Tiles are padded to full size, given TIFF's horizontal predictor (integer samples) and
    deflated by :func:`_deflate_tiles` on threads while the next tiles are computed;
    tifffile writes the encoded tiles as they are.
    """
    import tifffile

    predict = dtype.kind == "u"

    def padded() -> Iterator[Array]:
        for _, _, result, count in tiles:
            clipped[0] += count
            block = result if result.ndim == 3 else result[..., None]
            full = np.zeros((tile, tile, channels), dtype)
            full[: block.shape[0], : block.shape[1]] = block
            yield full

    options: dict[str, Any] = {
        "photometric": "rgb" if channels in (3, 4) else "minisblack",
        "compression": "zlib",
        "metadata": None,
        "tile": (tile, tile),
    }
    if predict:
        options["predictor"] = "horizontal"
    if channels in (2, 4):
        options["extrasamples"] = ("unassalpha",) if has_alpha else ("unspecified",)
    options.update(tiff_tags(metadata))
    full_shape = (*shape, channels) if channels > 1 else shape
    with tifffile.TiffWriter(handle, bigtiff=True, byteorder="<") as writer:
        encoded = _deflate_tiles(padded(), predict)
        writer.write(encoded, shape=full_shape, dtype=dtype, **options)


#: Tiles deflated ahead of the writer, per thread: enough to keep every core busy.
_TILES_AHEAD = 2


def _deflate_tiles(tiles: Iterator[Array], predict: bool) -> Iterator[bytes]:
    """Each (tile, tile, C) tile as TIFF deflate bytes, in order, compressed on threads.

    zlib's run-length strategy (``Z_RLE``) on predicted rows: on a blurred photograph's
    512x512 RGB tile 15 ms and 147 kB, against 113 ms and 144 kB for the default strategy
    at level 6 (flat tiles: 3 ms, 2 kB). zlib releases the GIL, so the threads overlap each
    other and the filtering of the next tiles.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from convcli.engine.threads import available_cores

    workers = available_cores()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[bytes]] = deque()
        for full in tiles:
            pending.append(pool.submit(_deflate_tile, full, predict))
            if len(pending) > workers * _TILES_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _deflate_tile(full: Array, predict: bool) -> bytes:
    """One tile, little-endian, with the horizontal predictor if ``predict``, deflated."""
    import zlib

    data = full.astype(full.dtype.newbyteorder("<"), copy=False)
    if predict:  # TIFF predictor 2: each sample minus its left neighbour's, modulo 2**bits
        residual = data.copy()
        np.subtract(data[:, 1:], data[:, :-1], out=residual[:, 1:])
        data = residual
    packer = zlib.compressobj(images.PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return packer.compress(data.tobytes()) + packer.flush()


def _write_npy(
    handle: BinaryIO,
    tiles: Iterator[tuple[int, int, Array, int]],
    shape: tuple[int, int],
    channels: int,
    dtype: np.dtype[Any],
    rank: int,
    clipped: list[int],
) -> None:
    """An .npy whose tiles are written at their offsets with explicit writes."""
    full: tuple[int, ...] = (*shape, channels) if channels > 1 or rank >= 3 else shape
    if rank == 4:
        full = (1, *full)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": full}
    np.lib.format.write_array_header_1_0(handle, header)
    handle.flush()
    offset = handle.tell()
    pixel = channels * dtype.itemsize
    row_bytes = shape[1] * pixel
    handle.truncate(offset + shape[0] * row_bytes)
    fd = handle.fileno()
    for r0, c0, result, count in tiles:
        clipped[0] += count
        block = np.ascontiguousarray(result)
        pieces = block.reshape(block.shape[0], -1).view(np.uint8)
        for row in range(block.shape[0]):
            os.pwrite(fd, pieces[row].data, offset + (r0 + row) * row_bytes + c0 * pixel)
