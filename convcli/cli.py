"""The ``convcli`` command line: parse flags, call the library, render, map errors to exit codes.

One error boundary (:class:`ConvcliGroup`) turns library errors into a single ``Error:`` line
and exit code 2, Ctrl-C into exit 130 and a closed pipe into a quiet exit; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from convcli import batch, engine, images, kernels, pipeline, presets, report, threads
from convcli.cli_verify import verify
from convcli.errors import ConvcliError, ExitCode, one_line
from convcli.fileio import BrokenPipe, atomic_write, check_output_path, write_stdout
from convcli.params import BYTES, PADDING, PAIR
from convcli.quiet import library_noise_silenced

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """A user-facing failure: ``Error: <message>`` on stderr and exit code 2.

    The message is made one inert line: file names, JSON keys and member names come from
    the input, and a newline or an ANSI escape in them must not forge output lines.
    """

    exit_code = ExitCode.TROUBLE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def _quiet_exit(code: int) -> NoReturn:
    """Exit without Python complaining about a closed stdout at shutdown."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    raise SystemExit(code)


class ConvcliGroup(click.Group):
    """The error boundary: library errors become one ``Error:`` line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            with library_noise_silenced(debug):
                return super().invoke(ctx)
        except (BrokenPipe, BrokenPipeError):
            _quiet_exit(141)  # 128 + SIGPIPE, what `cat` reports when `head` stops reading
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("Interrupted.", err=True)
            raise SystemExit(ExitCode.INTERRUPTED) from None
        except ConvcliError as error:
            if debug:
                raise
            raise CommandError(str(error)) from error
        except (MemoryError, RecursionError) as error:
            if debug:
                raise
            raise CommandError(f"out of resources: {type(error).__name__}") from error
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click reports these itself
        except OSError as error:  # an I/O path the library did not map: still one line
            if debug:
                raise
            where = f"{error.filename}: " if error.filename is not None else ""
            raise CommandError(f"{where}{error.strerror or error}") from error
        except Exception as error:
            # A bug, not bad input; the user still gets one line and exit 2, not a traceback.
            if debug:
                raise
            raise CommandError(
                f"internal error: {type(error).__name__}: {error} "
                "(rerun with --debug for the traceback, and please report it)"
            ) from error


# --------------------------------------------------------------------------- shared options


def output_options(command: F) -> F:
    """Options shared by conv and pool: inputs, outputs, images, limits, reports."""
    decorators = [
        click.argument("inputs", nargs=-1, required=True, metavar="INPUT..."),
        click.option(
            "-o",
            "--output",
            required=True,
            metavar="PATH",
            help="Output file, folder (several inputs or a folder input), or - for stdout.",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(pipeline.ALL_FORMATS),
            help="Output format for stdout and folders (default: the input's).",
        ),
        click.option(
            "--layout",
            type=click.Choice(engine.LAYOUTS),
            default="NHWC",
            show_default=True,
            help="Layout of array inputs (images are HWC).",
        ),
        click.option(
            "--range",
            "range_mode",
            type=click.Choice(images.RANGE_MODES),
            default="clip",
            show_default=True,
            help="How float results map back to integer images.",
        ),
        click.option(
            "--out-dtype",
            type=click.Choice(images.OUT_DTYPES),
            help="Output dtype (default: the input image's).",
        ),
        click.option(
            "--quality", type=click.IntRange(1, 100), help="JPEG/WebP quality (default 95)."
        ),
        click.option(
            "--filter-alpha",
            is_flag=True,
            help="Filter the alpha channel too (default: it passes through).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option(
            "--skip-existing",
            is_flag=True,
            help="Leave existing outputs alone and process the rest (resume).",
        ),
        click.option(
            "--glob",
            "pattern",
            metavar="PATTERN",
            help="Only files in folders matching this glob (e.g. '*.png').",
        ),
        click.option(
            "-j",
            "--jobs",
            type=click.IntRange(min=1),
            metavar="N",
            help="Worker processes for several inputs (default: one per core; 1: this process).",
        ),
        click.option(
            "--max-bytes",
            type=BYTES,
            default="4G",
            show_default=True,
            help="Refuse arrays, outputs or scratch larger than this.",
        ),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            default=images.DEFAULT_MAX_PIXELS,
            show_default=True,
            help="Refuse images with more pixels (read from the header).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            help=f"Threads for one computation (default: ${threads.THREADS_ENV}, else the "
            "number of cores).",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Print no tables; errors only."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@dataclass(frozen=True)
class RunOptions:
    """The parsed output options of one conv/pool invocation."""

    inputs: tuple[str, ...]
    output: str
    output_format: str | None
    layout: str
    range_mode: str
    out_dtype: str | None
    quality: int | None
    filter_alpha: bool
    overwrite: bool
    skip_existing: bool
    pattern: str | None
    jobs: int | None
    threads: int | None
    max_bytes: int
    max_pixels: int
    quiet: bool
    as_json: bool

    def output_options(self, fmt: str) -> pipeline.OutputOptions:
        return pipeline.OutputOptions(
            format=fmt,
            layout=self.layout,
            range_mode=self.range_mode,
            out_dtype=self.out_dtype,
            quality=self.quality,
            filter_alpha=self.filter_alpha,
            max_bytes=self.max_bytes,
        )


def _run_options(params: dict[str, Any]) -> RunOptions:
    names = RunOptions.__dataclass_fields__
    options = RunOptions(**{name: params.pop(name) for name in names})
    if options.overwrite and options.skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other")
    if options.as_json and options.output == "-":
        raise click.UsageError("--json and -o - both want stdout; choose one")
    return options


# --------------------------------------------------------------------------- running


def _row_json(row: pipeline.Row) -> dict[str, Any]:
    return {
        "input": row.name,
        "shape_in": list(row.shape_in),
        "shape_out": list(row.shape_out),
        "dtype_in": row.dtype_in,
        "dtype_out": row.dtype_out,
        "operation": row.operation,
        "seconds": round(row.seconds, 6),
        "clipped": row.clipped,
    }


def _file_format(path: Path, requested: str | None) -> str:
    fmt = pipeline.format_of(path)
    if fmt is None:
        if requested is not None:
            return requested
        raise CommandError(
            f"{path}: cannot tell the output format from {path.suffix or 'no extension'!r}; "
            f"use one of {', '.join(pipeline.ALL_FORMATS)} or --format"
        )
    if requested is not None and requested != fmt:
        raise CommandError(f"{path}: --format {requested} contradicts the extension {path.suffix}")
    return fmt


def _run_single(options: RunOptions, operation: pipeline.Operation) -> list[pipeline.Row]:
    """One input (a file or stdin) to one output (a file, a folder or stdout)."""
    name = options.inputs[0]
    source_path = None if name == "-" else Path(name)
    if source_path is not None and not source_path.exists():
        raise ConvcliError(f"{name}: no such file")
    to_stdout = options.output == "-"
    target: Path | None = None
    fmt: str | None = None
    if not to_stdout:
        target = Path(options.output)
        if target.is_dir():
            if source_path is None:
                raise CommandError("-o is a folder; name the output file for stdin input")
            fmt = batch.output_format(source_path, options.output_format)
            relative = Path(source_path.name)
            if options.output_format is not None:
                relative = relative.with_suffix(batch.extension(fmt))
            target = target / relative
        else:
            fmt = _file_format(target, options.output_format)
        inputs = (source_path,) if source_path is not None else ()
        if options.skip_existing and target.exists():
            return []
        check_output_path(target, inputs=inputs, overwrite=options.overwrite)
    if source_path is not None and target is not None and fmt == "npy":
        # a large (N, ...) .npy goes through in chunks, so memory does not grow with N
        job = batch.Job(str(source_path), str(target), fmt)
        chunked_rows = batch.process_npy_chunks(job, _settings(options, operation))
        if chunked_rows is not None:
            return chunked_rows
    if source_path is None:
        data = pipeline.read_stdin(sys.stdin.buffer, max_bytes=options.max_bytes)
        source = pipeline.read_source(
            None, data=data, max_bytes=options.max_bytes, max_pixels=options.max_pixels
        )
    else:
        source = pipeline.read_source(
            source_path, max_bytes=options.max_bytes, max_pixels=options.max_pixels
        )
    if fmt is None:
        fmt = options.output_format or source.format
    payload, rows = pipeline.process(source, operation, options.output_options(fmt))
    if target is None:
        write_stdout(payload)
    else:
        atomic_write(target, payload)
    return rows


def _settings(options: RunOptions, operation: pipeline.Operation) -> batch.Settings:
    # each job brings its own format; "npy" only fills the field
    return batch.Settings(operation, options.output_options("npy"), options.max_pixels)


def _run_batch(
    options: RunOptions,
    operation: pipeline.Operation,
    summary: report.Summary,
    json_items: _JsonItems | None,
) -> tuple[list[pipeline.Row], int]:
    """Several inputs or folders into an output folder; a failing item costs only itself.

    Results stream in from the workers: the rows of the first :data:`report.TABLE_ROWS` jobs
    are kept for the table, later ones only counted (and streamed to ``--json``), so memory
    does not grow with the batch. Returns the kept rows and how many rows were not kept.
    """
    from convcli import workers  # multiprocessing: batches only

    if "-" in options.inputs:
        raise CommandError("- (stdin) cannot be combined with other inputs")
    if options.output == "-":
        raise CommandError("several inputs need -o FOLDER, not -o -")
    output_dir = Path(options.output)
    if output_dir.exists() and not output_dir.is_dir():
        raise CommandError(f"{output_dir}: several inputs need -o to be a folder, not a file")
    plan = batch.plan_batch(
        [Path(name) for name in options.inputs],
        output_dir,
        requested_format=options.output_format,
        pattern=options.pattern,
    )
    summary.ignored = plan.ignored
    jobs = plan.jobs
    if options.skip_existing:
        existing = set(batch.existing_outputs(jobs))
        summary.skipped = len(existing)
        jobs = [job for job in jobs if job not in existing]
        del existing
    elif not options.overwrite:
        batch.refuse_existing(jobs)
    del plan
    console = report.stderr_console()
    show_progress = not (options.quiet or options.as_json) and console.is_terminal
    kept: list[tuple[int, pipeline.Row]] = []
    not_kept = 0
    failures: list[tuple[int, str, str]] = []
    processes = workers.worker_count(options.jobs, len(jobs))
    results = workers.run_jobs(jobs, _settings(options, operation), workers=processes)
    with (
        closing(results),
        report.progress(len(jobs), console=console, enabled=show_progress) as advance,
    ):
        for result in results:
            advance()
            if result.error is not None:
                failures.append((result.index, result.source, result.error))
                continue
            summary.processed += 1
            if json_items is not None:
                json_items.add(result.rows)
            if result.index < report.TABLE_ROWS:
                kept.extend((result.index, row) for row in result.rows)
            else:
                not_kept += len(result.rows)
    summary.failed = [(source, error) for _, source, error in sorted(failures)]
    return [row for _, row in sorted(kept, key=lambda item: item[0])], not_kept


class _JsonItems:
    """``--json``: items are written as they finish, then the summary, so nothing piles up.

    The document is ``{"items": [...], "summary": {...}}``; with several workers the items
    come in the order they finished (each names its input).
    """

    def __init__(self) -> None:
        self.count = 0

    def add(self, rows: list[pipeline.Row]) -> None:
        for row in rows:
            opening = ",\n" if self.count else '{\n  "items": [\n'
            _echo(opening + textwrap.indent(json.dumps(_row_json(row), indent=2), "    "))
            self.count += 1

    def finish(self, summary: dict[str, Any]) -> None:
        opening = "\n  ],\n" if self.count else '{\n  "items": [],\n'
        closing_ = textwrap.indent(json.dumps(summary, indent=2), "  ").lstrip()
        _echo(f'{opening}  "summary": {closing_}\n}}\n')


def _echo(text: str) -> None:
    try:
        click.echo(text, nl=False)
    except BrokenPipeError as error:
        raise BrokenPipe() from error


def _run(options: RunOptions, operation: pipeline.Operation) -> None:
    started = time.perf_counter()
    if options.threads is not None:
        # The engine and the worker processes both read it; the flag wins over the variable.
        os.environ[threads.THREADS_ENV] = str(options.threads)
    summary = report.Summary()
    single = len(options.inputs) == 1 and (
        options.inputs[0] == "-" or not Path(options.inputs[0]).is_dir()
    )
    json_items = _JsonItems() if options.as_json else None
    not_kept = 0
    if single:
        rows = _run_single(options, operation)
        if rows:
            summary.processed = 1
        else:
            summary.skipped = 1  # --skip-existing found the output
        if json_items is not None:
            json_items.add(rows)
    else:
        rows, not_kept = _run_batch(options, operation, summary, json_items)
    summary.seconds = time.perf_counter() - started
    if json_items is not None:
        json_items.finish(summary.to_json())
    elif not options.quiet:
        console = report.stderr_console()
        if rows:
            console.print(report.rows_table(rows, more=not_kept))
        if not single or summary.skipped:
            console.print(report.summary_table(summary))
        if summary.failed:
            console.print(report.failures_table(summary.failed))
    else:
        for source, reason in summary.failed:
            # -q drops the tables, not the errors: one line per failed item.
            named = reason if reason.startswith(source) else f"{source}: {reason}"
            click.echo(f"Error: {one_line(named)}", err=True)
    if summary.failed:
        # Some items written: "some items failed" (1); none at all: nothing could be done (2).
        raise SystemExit(ExitCode.DIFFERENCES if summary.processed else ExitCode.TROUBLE)


# --------------------------------------------------------------------------- commands


@click.group(cls=ConvcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convcli")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of Error: lines.")
def main(debug: bool) -> None:
    """Convolution and pooling for images and NumPy arrays, exact to PyTorch and TensorFlow.

    \b
    Examples:
      convcli conv photo.jpg -k sharpen -o sharp.jpg
      convcli conv scans/ -k gaussian:sigma=2 -o blurred/
      convcli pool batch.npy --size 2 -o pooled.npy
      convcli verify dump.npz
      convcli kernels
    """


@main.command()
@click.option(
    "-k",
    "--kernel",
    "kernel_spec",
    required=True,
    metavar="KERNEL",
    help="A JSON kernel file, a .npy filter bank, or a preset NAME[:key=value,...].",
)
@click.option("--stride", type=PAIR, help="Stride N or H,W (default 1).")
@click.option(
    "--padding",
    type=PADDING,
    help="same (TensorFlow's rule), valid, N, PH,PW or T,B,L,R (default same).",
)
@click.option(
    "--pad-mode", type=click.Choice(engine.PAD_MODES), help="What padding holds (default zeros)."
)
@click.option("--dilation", type=PAIR, help="Dilation N or H,W (default 1).")
@click.option("--groups", type=click.IntRange(min=1), help="Grouped convolution (default 1).")
@click.option(
    "--flip/--no-flip", default=None, help="Rotate the kernel 180 degrees (true convolution)."
)
@click.option(
    "--kernel-layout",
    type=click.Choice(engine.KERNEL_LAYOUTS),
    help="Layout of 4-D .npy kernels (default OHWI).",
)
@output_options
def conv(kernel_spec: str, kernel_layout: str | None, **params: Any) -> None:
    """Cross-correlate images or arrays with a kernel.

    INPUT is an image (PNG, JPEG, TIFF, BMP, GIF, WebP), a .npy or .npz array, a folder, or -
    for stdin. Operation defaults come from the kernel file, then: stride 1, padding same,
    pad-mode zeros, dilation 1. Arrays are (N,H,W,C), (H,W,C) or (H,W) in --layout.

    \b
    Examples:
      convcli conv photo.jpg -k sharpen -o sharp.jpg
      convcli conv photo.png -k sobel-x --range abs -o edges.png
      convcli conv a.png -k gaussian:size=7,sigma=1.5 -o - --format png | convcli pool - \\
          --size 2 -o - --format png > small.png
      convcli conv batch.npy -k filters.npy --kernel-layout OIHW --layout NCHW -o out.npy
    """
    options = _run_options(params)
    kernel = kernels.load_kernel(kernel_spec, kernel_layout=kernel_layout)
    settings = dict(kernel.options)
    for key in ("stride", "padding", "pad_mode", "dilation", "groups", "flip"):
        if params.get(key) is not None:
            settings[key] = params[key]
    operation = pipeline.Convolution(
        weights=kernel.weights,
        bias=kernel.bias,
        kernel_layout=kernel.layout,
        kernel_name=kernel.name or Path(kernel_spec).stem,
        stride=settings.get("stride", 1),
        padding=settings.get("padding", "same"),
        dilation=settings.get("dilation", 1),
        groups=settings.get("groups", 1),
        pad_mode=settings.get("pad_mode", "zeros"),
        flip=bool(settings.get("flip", False)),
    )
    _run(options, operation)


@main.command()
@click.option("--size", required=True, type=PAIR, help="Window size K or H,W.")
@click.option("--stride", type=PAIR, help="Stride (default: the window size).")
@click.option(
    "--padding",
    type=PADDING,
    default="0",
    show_default=True,
    help="N, PH,PW or T,B,L,R (each at most size // 2), valid, or same.",
)
@click.option(
    "--op",
    type=click.Choice(["max", "avg"]),
    default="max",
    show_default=True,
    help="Max or average pooling.",
)
@click.option("--ceil-mode", is_flag=True, help="Round the output size up (PyTorch's rule).")
@click.option(
    "--count-include-pad/--no-count-include-pad",
    default=True,
    show_default=True,
    help="Average pooling: count padding in the divisor.",
)
@click.option(
    "--dilation",
    type=PAIR,
    default="1",
    show_default=True,
    help="Spacing of window taps (max pooling).",
)
@output_options
def pool(
    size: Any,
    stride: Any,
    padding: Any,
    op: str,
    ceil_mode: bool,
    count_include_pad: bool,
    dilation: Any,
    **params: Any,
) -> None:
    """Max or average pooling of images or arrays.

    Inputs and outputs as for conv. The output size per axis is
    floor((in + pads - dilation*(size-1) - 1) / stride) + 1, or ceil with --ceil-mode.

    \b
    Examples:
      convcli pool photo.png --size 2 -o half.png
      convcli pool acts.npy --size 3 --stride 2 --padding 1 --ceil-mode -o pooled.npy
      convcli pool acts.npy --size 2 --op avg --padding same --no-count-include-pad -o tf.npy
    """
    options = _run_options(params)
    operation = pipeline.Pooling(
        op="max" if op == "max" else "avg",
        size=size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )
    _run(options, operation)


@main.command(name="kernels")
@click.argument("preset", required=False, metavar="[NAME[:key=value,...]]")
def kernels_command(preset: str | None) -> None:
    """List the kernel presets, or print one as a kernel file (JSON).

    \b
    Examples:
      convcli kernels
      convcli kernels gaussian:size=7,sigma=1.5 > blur.json
      convcli conv photo.png -k blur.json -o blurred.png
    """
    if preset is not None:
        click.echo(presets.preset_kernel(preset).to_json())
        return
    report.stdout_console().print(report.presets_table(presets.preset_table()))


main.add_command(verify)
