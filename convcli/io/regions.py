"""Images larger than memory: TIFF and .npy inputs filtered tile by tile into TIFF or .npy.

An output tile needs the input rows and columns its windows read (a halo around it), and
nothing else: :func:`stream_job` reads just those (:class:`TiffRegions` decodes the TIFF's own
strips or tiles, keeping a few in a small cache; :class:`NpyRegions` reads row pieces with
explicit reads, never a memory map), filters the tile with the same code as a whole image,
and writes it (a tiled BigTIFF from a tile iterator, or an .npy at its offsets). Peak memory
is a few tiles and the decoded-segment cache, not the image.

Convolution tiles are gathered with their padding already applied (every pad mode, through
the same index maps as the engine's, :mod:`convcli.engine.blocks`) and computed with none; pooling
tiles let the engine pad at the true edges (-inf for max, and average pooling's divisor and
ceil-mode overhang as PyTorch counts them). Each output sums the same products in the same
order as in memory, so the result is the in-memory one, tile seams and corners included.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from convcli import limits
from convcli.errors import InputError
from convcli.io import arrays

Array = npt.NDArray[Any]
#: TIFF photometric interpretations streamed (others decode whole: palettes, CMYK, ...).
_PLAIN_PHOTOMETRIC = (1, 2)  # minisblack, rgb


# --------------------------------------------------------------------------- readers


class TiffRegions:
    """Rectangles of a TIFF's first page, decoded from the strips or tiles that hold them.

    Decoded segments are kept in a least-recently-used cache of ``cache_bytes``, so the
    overlapping halos of neighbouring tiles decode each segment about once; :meth:`prefetch`
    decodes the segments of the next rectangle on a background thread (zlib and the
    predictor release the GIL) while the current one is filtered.
    """

    def __init__(self, handle: BinaryIO, name: str, cache_bytes: int | None = None) -> None:
        import tifffile

        self.name = name
        self._handle = handle  # owned: closed with the reader
        self._tif = tifffile.TiffFile(handle)
        page = self._tif.pages.first
        self.page = page
        self.shape = (int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel))
        self.dtype = np.dtype(page.dtype)
        # unassociated alpha only: an unspecified extra sample is a plain channel
        self.has_alpha = self.shape[2] in (2, 4) and tuple(page.extrasamples) == (2,)
        if page.is_tiled:
            self.segment = (int(page.tilelength), int(page.tilewidth))
        else:
            self.segment = (int(page.rowsperstrip), self.shape[1])
        self._cache: OrderedDict[int, Array] = OrderedDict()
        self._pending: dict[int, Future[Array]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._cache_bytes = limits.TILE_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cached = 0
        #: Segments decoded so far (a segment evicted and read again counts twice).
        self.decoded = 0
        self._decode = page.decode
        self._jpeg: dict[str, Any] = {}
        if int(page.compression) in (6, 7, 34892, 33007):
            self._jpeg = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._tif.close()
        self._handle.close()

    def prefetch(self, rows: slice, cols: slice) -> None:
        """Start decoding the segments a later :meth:`read` of this rectangle needs."""
        for index in self._indices(rows, cols):
            if index not in self._cache and index not in self._pending:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1)
                self._pending[index] = self._pool.submit(self._decoded, index)

    def _indices(self, rows: slice, cols: slice) -> list[int]:
        seg_h, seg_w = self.segment
        across = -(-self.shape[1] // seg_w)
        return [
            seg_row * across + seg_col
            for seg_row in range(rows.start // seg_h, -(-rows.stop // seg_h))
            for seg_col in range(cols.start // seg_w, -(-cols.stop // seg_w))
        ]

    def _decoded(self, index: int) -> Array:
        """Segment ``index`` decoded (safe on any thread: a positioned read, no seek)."""
        count = int(self.page.databytecounts[index])
        data = os.pread(self._handle.fileno(), count, int(self.page.dataoffsets[index]))
        decoded, _, shape = self._decode(data, index, _fullsize=self.page.is_tiled, **self._jpeg)
        if decoded is None:
            return np.zeros(shape[1:], self.dtype)
        segment: Array = np.asarray(decoded).reshape(shape[1], shape[2], shape[3])
        return segment

    def fit_cache(self, band_rows: int) -> None:
        """Keep the segments that one row of output tiles and the next share.

        A row of output tiles reads ``band_rows`` input rows (its halo included): the
        segments under its bottom halo are the next row's top ones. The cache holds the rows
        of segments one band spans, whole, so each segment is decoded once; it grows with the
        width (a 40000-pixel-wide RGB image with 512x512 tiles: 3 rows of 79 tiles, 186 MB),
        never with the height, and at most TILE_CACHE_BYTES. Strips span the width by design.
        """
        seg_h, seg_w = self.segment
        across = -(-self.shape[1] // seg_w)
        down = -(-band_rows // seg_h) + 1  # a band not aligned to segments spans one more
        segment_bytes = seg_h * seg_w * self.shape[2] * self.dtype.itemsize
        self._cache_bytes = min(limits.TILE_CACHE_BYTES, (across * down + 2) * segment_bytes)

    def _segment(self, index: int) -> Array:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        pending = self._pending.pop(index, None)
        segment = pending.result() if pending is not None else self._decoded(index)
        self.decoded += 1
        self._cache[index] = segment
        self._cached += segment.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= dropped.nbytes
        return segment

    def read(self, rows: slice, cols: slice) -> Array:
        """Input rows ``rows`` and columns ``cols`` (steps of 1), as (h, w, C)."""
        seg_h, seg_w = self.segment
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start, self.shape[2]), self.dtype)
        across = -(-self.shape[1] // seg_w)
        for seg_row in range(rows.start // seg_h, -(-rows.stop // seg_h)):
            for seg_col in range(cols.start // seg_w, -(-cols.stop // seg_w)):
                segment = self._segment(seg_row * across + seg_col)
                top, left = seg_row * seg_h, seg_col * seg_w
                r0, r1 = max(rows.start, top), min(rows.stop, top + seg_h, self.shape[0])
                c0, c1 = max(cols.start, left), min(cols.stop, left + seg_w, self.shape[1])
                out[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start] = segment[
                    r0 - top : r1 - top, c0 - left : c1 - left
                ]
        return out


class NpyRegions:
    """Rectangles of a C-order (H, W), (H, W, C) or (1, H, W, C) .npy, read row piece by piece."""

    def __init__(self, path: Path, header: arrays.NpyHeader, name: str) -> None:
        shape = header.shape[1:] if len(header.shape) == 4 else header.shape
        self.shape = (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
        self.dtype = header.dtype
        self.has_alpha = False
        self.name = name
        self._offset = header.offset
        self._row_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._handle = path.open("rb", buffering=0)

    def close(self) -> None:
        self._handle.close()

    def read(self, rows: slice, cols: slice) -> Array:
        pixel = self.shape[2] * self.dtype.itemsize
        width = cols.stop - cols.start
        out = np.empty((rows.stop - rows.start, width, self.shape[2]), self.dtype)
        view = out.reshape(out.shape[0], -1).view(np.uint8)
        for row in range(rows.start, rows.stop):
            where = self._offset + row * self._row_bytes + cols.start * pixel
            data = os.pread(self._handle.fileno(), width * pixel, where)
            if len(data) != width * pixel:
                raise InputError(f"{self.name}: truncated while being read")
            view[row - rows.start] = np.frombuffer(data, np.uint8)
        return out


Regions = TiffRegions | NpyRegions


def _runs(index: Array) -> list[tuple[int, int]]:
    """Sorted contiguous runs (start, stop) covering the distinct values of ``index``."""
    values = np.unique(index)
    breaks = np.flatnonzero(np.diff(values) > 1)
    starts = [int(values[0]), *(int(values[b + 1]) for b in breaks)]
    stops = [*(int(values[b]) + 1 for b in breaks), int(values[-1]) + 1]
    return list(zip(starts, stops, strict=True))


def gather(regions: Regions, row_index: Array, col_index: Array) -> Array:
    """``image[row_index][:, col_index]``, reading only the runs of rows and columns used."""
    row_runs, col_runs = _runs(row_index), _runs(col_index)
    row_values = np.concatenate([np.arange(a, b) for a, b in row_runs])
    col_values = np.concatenate([np.arange(a, b) for a, b in col_runs])
    block = np.empty((len(row_values), len(col_values), regions.shape[2]), regions.dtype)
    r = 0
    for r0, r1 in row_runs:
        c = 0
        for c0, c1 in col_runs:
            block[r : r + r1 - r0, c : c + c1 - c0] = regions.read(slice(r0, r1), slice(c0, c1))
            c += c1 - c0
        r += r1 - r0
    rows = np.searchsorted(row_values, row_index)
    cols = np.searchsorted(col_values, col_index)
    picked: Array = block[rows][:, cols]
    return picked
