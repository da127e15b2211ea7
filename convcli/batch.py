"""Many inputs to many outputs: planning a batch, and processing one item of it.

Planning decides *what* is written *where* before anything runs (:func:`plan_batch`), so a
batch that would collide or overwrite stops before its first write. :func:`run_item` reads,
filters and atomically writes one job, turning its failure into its result; it is what each
worker process runs (see :mod:`convcli.workers`). Large ``(N, ...)`` .npy inputs go through in
chunks along N, so one item's memory is bounded too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from convcli import arrays, images, pipeline
from convcli.errors import ConvcliError, LimitError
from convcli.fileio import TEMP_PREFIX, OutputExistsError, replacing

#: .npy batches larger than this are processed this many input bytes at a time along N.
CHUNK_BYTES = 64 * 1024**2

# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class Job:
    """One input file and the output it becomes (strings: a 10,000-file plan is ~2.5 MB)."""

    source: str
    target: str
    format: str


@dataclass
class Plan:
    """The jobs of a batch, in walk order, and how many unsupported files the walk passed."""

    jobs: list[Job]
    ignored: int = 0


def walk_inputs(
    inputs: Iterable[Path], *, pattern: str | None = None, exclude: Path | None = None
) -> Iterator[tuple[Path, Path | None]]:
    """Yield ``(path, path relative to its root)`` for each file, in sorted walk order.

    Named files are yielded as they are; folders are walked recursively. Inside folders,
    hidden files and our own temporary files are passed over, ``pattern`` (a glob on the
    relative path or the file name) filters, and a file convcli cannot read is yielded with
    ``None`` as its relative path so the caller can count it. ``exclude`` (the output folder)
    is not walked, so outputs written inside an input folder are never read back as inputs.

    Raises:
        ConvcliError: a named input does not exist or is a file convcli cannot read.
    """
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for root in inputs:
        if root.is_dir():
            for folder, subfolders, names in os.walk(root):
                subfolders[:] = sorted(
                    name
                    for name in subfolders
                    if not name.startswith(".")
                    and os.path.realpath(os.path.join(folder, name)) != excluded
                )
                for name in sorted(names):
                    if name.startswith(".") or name.startswith(TEMP_PREFIX):
                        continue
                    path = Path(folder) / name
                    relative = path.relative_to(root)
                    if pattern and not (
                        fnmatch.fnmatch(str(relative), pattern) or fnmatch.fnmatch(name, pattern)
                    ):
                        continue
                    yield path, relative if pipeline.format_of(path) is not None else None
        elif root.exists():
            if pipeline.format_of(root) is None:
                raise ConvcliError(f"{root}: unsupported file type {root.suffix!r}")
            yield root, Path(root.name)
        else:
            raise ConvcliError(f"{root}: no such file or folder")


def output_format(source: Path, requested: str | None) -> str:
    """``--format`` if given, else the input's own format."""
    if requested is not None:
        return requested
    fmt = pipeline.format_of(source)
    assert fmt is not None
    return fmt


def extension(fmt: str) -> str:
    if fmt in pipeline.ARRAY_FORMATS:
        return f".{fmt}"
    return images.IMAGE_FORMATS[fmt][0]


def plan_batch(
    inputs: Iterable[Path],
    output_dir: Path,
    *,
    requested_format: str | None,
    pattern: str | None = None,
) -> Plan:
    """Walk ``inputs`` and map each file to its output under ``output_dir``.

    Relative paths under each input folder are mirrored; ``requested_format`` changes the
    extension. Nothing is written.

    Raises:
        ConvcliError: two inputs map to one output (``a.png`` and ``a.jpg`` -> ``a.png``), or
            an output would land on an input.
    """
    plan = Plan([])
    claimed: dict[str, int] = {}  # normalized target -> index of the job claiming it
    input_keys: set[str] = set()
    for path, relative in walk_inputs(inputs, pattern=pattern, exclude=output_dir):
        if relative is None:
            plan.ignored += 1
            continue
        fmt = output_format(path, requested_format)
        name = relative if requested_format is None else relative.with_suffix(extension(fmt))
        target = output_dir / name
        key = os.path.normcase(os.path.abspath(target))
        if key in claimed:
            raise ConvcliError(
                f"{path} and {plan.jobs[claimed[key]].source} would both be written to "
                f"{target}; rename one or process them separately"
            )
        claimed[key] = len(plan.jobs)
        input_keys.add(os.path.realpath(path))
        plan.jobs.append(Job(str(path), str(target), fmt))
    for job in plan.jobs:
        if os.path.realpath(job.target) in input_keys:
            raise ConvcliError(f"{job.target}: refusing to overwrite an input file")
    return plan


def existing_outputs(jobs: Iterable[Job]) -> list[Job]:
    """The jobs whose output already exists."""
    return [job for job in jobs if os.path.lexists(job.target)]


def refuse_existing(jobs: Sequence[Job]) -> None:
    """Stop a batch whose outputs exist (neither --overwrite nor --skip-existing given)."""
    existing = existing_outputs(jobs)
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0].target}{more}: output exists (use --overwrite to replace, or "
            "--skip-existing to keep and resume)"
        )


# --------------------------------------------------------------------------- one item


@dataclass(frozen=True)
class Settings:
    """What every item of a batch shares; pickled once per worker, not once per item.

    ``output.format`` is a placeholder: each job brings its own format.
    """

    operation: pipeline.Operation
    output: pipeline.OutputOptions
    max_pixels: int
    chunk_bytes: int | None = None  # None: CHUNK_BYTES

    @property
    def chunk_limit(self) -> int:
        return CHUNK_BYTES if self.chunk_bytes is None else self.chunk_bytes


@dataclass(frozen=True)
class ItemResult:
    """What came of one job: its report rows, or why it failed."""

    index: int
    source: str
    rows: list[pipeline.Row]
    error: str | None = None


def _temp_prefix(pid: int) -> str:
    """Temporary names carry the writer's pid, so a dead worker's leftovers can be found."""
    return f"{TEMP_PREFIX}{pid}-"


@contextmanager
def _replacing(target: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``target`` (its folder made), renamed onto it on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target, prefix=_temp_prefix(os.getpid())) as handle:
        yield handle


def remove_temporary_files(folder: Path, pid: int) -> None:
    """Remove the temporary files process ``pid`` left in ``folder`` (it died or was stopped)."""
    prefix = _temp_prefix(pid)
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _chunked(header: arrays.NpyHeader, job: Job, settings: Settings) -> bool:
    """Whether an .npy input goes through :func:`_process_npy_chunks` instead of whole."""
    output = settings.output
    return (
        job.format == "npy"
        and len(header.shape) == 4
        and header.shape[0] > 1
        and header.nbytes > settings.chunk_limit
        # a min-max stretch needs the whole result; every other step is per sample
        and not (output.out_dtype is not None and output.range_mode == "normalize")
    )


def _process_npy_chunks(
    array: np.memmap[Any, Any], job: Job, settings: Settings
) -> list[pipeline.Row]:
    """Filter an (N, ...) .npy a few samples at a time, appending each to the output file.

    Memory holds one chunk of input and output, whatever N is. The same steps as
    :func:`pipeline.process` for an array written as .npy, applied per chunk. The output is
    appended sequentially rather than memory-mapped: a full disk then raises an OSError
    instead of killing the process with SIGBUS.
    """
    operation, output = settings.operation, settings.output
    count = array.shape[0]
    per_chunk = max(1, settings.chunk_limit // (array.nbytes // count))
    started = time.perf_counter()
    clipped = 0
    shape_out: tuple[int, ...] = ()
    dtype_out = ""
    with _replacing(Path(job.target)) as handle:
        for start in range(0, count, per_chunk):
            chunk = np.ascontiguousarray(array[start : start + per_chunk])
            result = operation.apply(chunk, layout=output.layout, max_bytes=output.max_bytes)
            if output.out_dtype is not None:
                result, chunk_clipped = images.to_image_dtype(
                    result, dtype=output.out_dtype, range_mode=output.range_mode
                )
                clipped += chunk_clipped
            result = np.ascontiguousarray(result)
            if start == 0:
                shape_out = (count, *result.shape[1:])
                dtype_out = str(result.dtype)
                nbytes = count * (result.nbytes // result.shape[0])
                if nbytes > output.max_bytes:
                    raise LimitError(
                        f"{job.source}: output {shape_out} {dtype_out} needs {nbytes:,} bytes, "
                        f"over --max-bytes {output.max_bytes:,}"
                    )
                header = np.lib.format.header_data_from_array_1_0(result)
                header["shape"] = shape_out
                np.lib.format.write_array_header_1_0(handle, header)
            handle.write(result.data)
    row = pipeline.Row(
        job.source,
        array.shape,
        shape_out,
        str(array.dtype),
        dtype_out,
        operation.describe(),
        time.perf_counter() - started,
        clipped,
    )
    return [row]


def process_npy_chunks(job: Job, settings: Settings) -> list[pipeline.Row] | None:
    """Process a large (N, ...) .npy in chunks along N, or return None if it is not one.

    Raises:
        ConvcliError: as :func:`process_job`.
    """
    if job.format != "npy" or pipeline.format_of(Path(job.source)) != "npy":
        return None
    source = Path(job.source)
    header = arrays.read_npy_header(source, name=job.source, max_bytes=settings.output.max_bytes)
    if not _chunked(header, job, settings):
        return None
    return _write_errors(
        job, lambda: _process_npy_chunks(arrays.open_npy(source, header), job, settings)
    )


def process_job(job: Job, settings: Settings) -> list[pipeline.Row]:
    """Read, filter and atomically write one job's output; return its report rows.

    Raises:
        ConvcliError: the input is unreadable or unsafe, the operation cannot apply to it,
            or the output cannot be written.
    """
    rows = process_npy_chunks(job, settings)
    if rows is not None:
        return rows
    output = dataclasses.replace(settings.output, format=job.format)
    source = pipeline.read_source(
        Path(job.source), max_bytes=output.max_bytes, max_pixels=settings.max_pixels
    )
    payload, rows = pipeline.process(source, settings.operation, output)
    del source

    def write() -> list[pipeline.Row]:
        with _replacing(Path(job.target)) as handle:
            handle.write(payload)
        return rows

    return _write_errors(job, write)


def _write_errors(job: Job, work: Callable[[], list[pipeline.Row]]) -> list[pipeline.Row]:
    """Run ``work``, reporting an OSError (full disk, read-only folder) as the output's error."""
    try:
        return work()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ConvcliError(f"{job.target}: cannot write: {reason}") from error


def run_item(index: int, job: Job, settings: Settings) -> ItemResult:
    """:func:`process_job`, with any failure of this one item turned into its result."""
    try:
        return ItemResult(index, job.source, process_job(job, settings))
    except ConvcliError as error:
        reason = str(error)
    except MemoryError:
        reason = f"{job.source}: out of memory"
    except Exception as error:  # a decoder's surprise must cost only its own file
        reason = f"{job.source}: unexpected {type(error).__name__}: {error}"
    return ItemResult(index, job.source, [], reason)
