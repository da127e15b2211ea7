"""One job: read one input, filter it, write one output; the only path any input takes.

A single file, standard input (``-``), standard output (``-o -``) and every item of a folder
batch are a :class:`Job` run by :func:`run_item`. Where it runs is the runner's choice: in
this process (a single input, ``--jobs 1``), in a worker process (:mod:`convcli.batch.workers`) or
in a Dask task (:mod:`convcli.batch.dask_runner`). Large ``(N, ...)`` .npy inputs go through in
chunks along N, so one job's memory is bounded.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convcli import limits
from convcli.batch import pipeline
from convcli.batch.process import process
from convcli.batch.tiling import GRID_FORMATS, tile_side
from convcli.errors import ConvcliError, LimitError
from convcli.io import arrays, images
from convcli.io.fileio import (
    BrokenPipe,
    OutputAppearedError,
    atomic_write,
    run_token,
    write_stdout,
    writing,
)
from convcli.io.sources import STDIN, format_of, read_input
from convcli.limits import DEFAULT_MAX_PIXELS

#: The name of standard output as a job's target.
STDOUT = "-"


@dataclass(frozen=True, slots=True)
class Job:
    """One input and the output it becomes (strings: a 10,000-file plan is ~2.5 MB).

    ``source`` is a path or ``-`` (standard input); ``target`` a path or ``-`` (stdout).
    ``format`` is the output's; empty for stdin to stdout with no ``--format`` (the input's).
    """

    source: str
    target: str
    format: str


@dataclass(frozen=True)
class Settings:
    """What every job of a run shares; pickled once per worker, not once per job.

    ``output.format`` is a placeholder: each job brings its own format. ``overwrite``
    replaces outputs that exist; otherwise a job never replaces one, and with
    ``skip_existing`` an output that appeared after planning counts the job as skipped.
    ``run_token`` (empty for a local run) goes into the names of the temporary files the
    jobs write (:func:`~convcli.io.fileio.run_token`), so that a run on a Dask cluster finds its
    own leftovers on any host.
    """

    operation: pipeline.Operation
    output: pipeline.OutputOptions
    max_pixels: int = DEFAULT_MAX_PIXELS
    chunk_bytes: int | None = None  # None: limits.CHUNK_BYTES
    tile: int | None = None  # streamed images' tile side; None: limits.DEFAULT_TILE
    overwrite: bool = False
    skip_existing: bool = False
    debug: bool = False
    run_token: str = ""

    @property
    def chunk_limit(self) -> int:
        return limits.CHUNK_BYTES if self.chunk_bytes is None else self.chunk_bytes


@dataclass(frozen=True)
class ItemResult:
    """What came of one job: its report rows, or why it failed, or that it was skipped."""

    index: int
    source: str
    rows: list[pipeline.Row]
    error: str | None = None
    skipped: bool = False


# --------------------------------------------------------------------------- chunked .npy


def _chunked(header: arrays.NpyHeader, job: Job, settings: Settings) -> bool:
    """Whether an .npy input goes through :func:`_process_npy_chunks` instead of whole."""
    output = settings.output
    return (
        job.format == "npy"
        and job.target != STDOUT
        and len(header.shape) == 4
        and header.shape[0] > 1
        and not header.fortran
        and header.nbytes > settings.chunk_limit
        # a min-max stretch needs the whole result; every other step is per sample
        and not (output.out_dtype is not None and output.range_mode == "normalize")
    )


def chunking(job: Job, settings: Settings) -> tuple[arrays.NpyHeader, int] | None:
    """The header of a job's .npy input and the samples per chunk, if it goes in chunks.

    None for every other job (it is processed whole). Local runs and Dask runs decide with
    this one rule.

    Raises:
        ConvcliError: the input's .npy header is unreadable or over ``--max-bytes``.
    """
    if job.format != "npy" or job.source == STDIN or format_of(Path(job.source)) != "npy":
        return None
    header = arrays.read_npy_header(
        Path(job.source), name=job.source, max_bytes=settings.output.max_bytes
    )
    if not _chunked(header, job, settings):
        return None
    return header, max(1, settings.chunk_limit // (header.nbytes // header.shape[0]))


def chunk_output(result: Any, output: pipeline.OutputOptions) -> tuple[Any, int]:
    """A chunk's result as it is written to the output .npy, and how many values clipped."""
    clipped = 0
    if output.out_dtype is not None:
        result, clipped = images.to_image_dtype(
            result, dtype=output.out_dtype, range_mode=output.range_mode
        )
    return np.ascontiguousarray(result), clipped


def npy_output_header(
    dtype: np.dtype[Any], shape: tuple[int, ...], job: Job, max_bytes: int
) -> bytes:
    """The .npy header of a chunked job's whole output, refused first if over ``max_bytes``.

    The bytes ``np.save`` writes for a C-order array of ``shape`` and ``dtype``.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise LimitError(
            f"{job.source}: output {shape} {dtype} needs {nbytes:,} bytes, "
            f"over --max-bytes {max_bytes:,}"
        )
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _process_npy_chunks(
    source: Path, header: arrays.NpyHeader, per_chunk: int, job: Job, settings: Settings
) -> list[pipeline.Row]:
    """Filter an (N, ...) .npy a few samples at a time, appending each to the output file.

    Memory holds one chunk of input and output, whatever N is. The same steps as
    :func:`pipeline.process` for an array written as .npy, applied per chunk. The input is
    read chunk by chunk and the output appended, both explicitly rather than memory-mapped:
    a truncated input or a full disk then raises an error instead of killing the process
    with SIGBUS.
    """
    operation, output = settings.operation, settings.output
    count = header.shape[0]
    started = time.perf_counter()
    clipped = 0
    shape_out: tuple[int, ...] = ()
    dtype_out = ""
    with (
        writing(Path(job.target), replace=settings.overwrite) as handle,
        pipeline.naming_errors(job.source, job.source, operation),
    ):
        chunks = arrays.iter_npy_slices(source, header, per_chunk, name=job.source)
        for start, chunk in chunks:
            result = operation.apply(
                chunk, layout=output.layout, max_bytes=output.max_bytes, threads=output.threads
            )
            del chunk
            result, chunk_clipped = chunk_output(result, output)
            clipped += chunk_clipped
            if start == 0:
                shape_out = (count, *result.shape[1:])
                dtype_out = str(result.dtype)
                handle.write(npy_output_header(result.dtype, shape_out, job, output.max_bytes))
            handle.write(result.data)
    row = pipeline.Row(
        job.source,
        header.shape,
        shape_out,
        str(header.dtype),
        dtype_out,
        operation.describe(),
        time.perf_counter() - started,
        clipped,
    )
    return [row]


def _npy_chunks(job: Job, settings: Settings) -> list[pipeline.Row] | None:
    """Process a large (N, ...) .npy in chunks along N, or return None if it is not one."""
    chunks = chunking(job, settings)
    if chunks is None:
        return None
    header, per_chunk = chunks
    return _process_npy_chunks(Path(job.source), header, per_chunk, job, settings)


# --------------------------------------------------------------------------- one job


def process_job(job: Job, settings: Settings) -> list[pipeline.Row]:
    """Read, filter and atomically write one job's output; return its report rows.

    Raises:
        ConvcliError: the input is unreadable or unsafe, the operation cannot apply to it,
            or the output cannot be written.
        OutputAppearedError: the output appeared after planning and ``overwrite`` is off.
    """
    rows = _npy_chunks(job, settings)
    if (
        rows is None
        and job.source != STDIN
        and job.target != STDOUT
        and format_of(Path(job.source)) in GRID_FORMATS
        and job.format in GRID_FORMATS
    ):
        # Imported here: stream_job streams only these formats (it returns None for any
        # other pair), so a PNG or JPEG job does not load the streaming modules.
        from convcli.batch.stream import stream_job

        rows = stream_job(
            job.source,
            job.target,
            job.format,
            settings.operation,
            dataclasses.replace(settings.output, format=job.format),
            replace=settings.overwrite,
            tile=settings.tile,
        )
    if rows is not None:
        return rows
    options = settings.output
    source = read_input(
        job.source,
        max_bytes=options.max_bytes,
        max_pixels=settings.max_pixels,
        frames=options.frames,
    )
    # stdin to stdout without --format keeps the format the bytes announced
    output = dataclasses.replace(options, format=job.format or source.format)
    if source.format in GRID_FORMATS and output.format in GRID_FORMATS:
        # the tile grid of a streamed run: the same bytes whether the file streams or not
        output = dataclasses.replace(output, tile=tile_side(settings.tile, output.format))
    payload, rows = process(source, settings.operation, output)
    del source
    if job.target == STDOUT:
        write_stdout(payload)
    else:
        atomic_write(Path(job.target), payload, replace=settings.overwrite)
    return rows


#: One step of a job: :func:`process_job`, or a part of it run as its own Dask task.
Step = Callable[[Job, Settings], list[pipeline.Row]]


def run_item(index: int, job: Job, settings: Settings, step: Step = process_job) -> ItemResult:
    """:func:`process_job` (or ``step``), with any failure of this job turned into its result.

    KeyboardInterrupt, termination and a closed stdout (BrokenPipe) are not failures of
    the job: they end the run, and propagate. With ``settings.debug`` an unexpected
    exception propagates too, so its traceback can be shown.
    """
    try:
        with run_token(settings.run_token):
            return ItemResult(index, job.source, step(job, settings))
    except OutputAppearedError as error:
        if settings.skip_existing:
            return ItemResult(index, job.source, [], skipped=True)
        reason = str(error)
    except ConvcliError as error:
        reason = str(error)
    except MemoryError:
        reason = f"{job.source}: out of memory; {pipeline.RESOURCE_ADVICE}"
    except BrokenPipe:
        raise
    except Exception as error:  # a decoder's surprise must cost only its own file
        if settings.debug:
            raise
        if pipeline.is_thread_failure(error):
            reason = f"{job.source}: cannot start a thread ({error}); {pipeline.RESOURCE_ADVICE}"
        else:
            reason = f"{job.source}: unexpected {type(error).__name__}: {error}"
    return ItemResult(index, job.source, [], reason)
