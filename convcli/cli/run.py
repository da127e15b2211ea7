"""``convcli conv`` and ``convcli pool``: plan, run, render.

Every invocation, one file or a folder of thousands, goes the same way: the flags become
a :class:`~convcli.batch.jobs.Settings` and a :class:`~convcli.batch.plan.Plan`, a
:class:`~convcli.batch.runner.Run` runs it, and this module renders its results and
summary. The shared flags are :mod:`convcli.cli.options`.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from convcli import engine, kernels
from convcli.batch import pipeline, progress
from convcli.batch.plan import plan_run
from convcli.batch.runner import Run, Summary
from convcli.cli import report, report_plain
from convcli.cli.options import RunOptions, _alpha_mode, _checked, output_options
from convcli.cli.params import PADDING, PAIR
from convcli.errors import ConvcliError, ExitCode, one_line
from convcli.io.fileio import BrokenPipe


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


class _JsonItems:
    """``--json``: items are written as they finish, then the summary, so nothing piles up.

    The document is ``{"items": [...], "summary": {...}}``; with several workers the items
    come in the order they finished (each names its input).
    """

    def __init__(self) -> None:
        self.count = 0

    def add(self, rows: Sequence[pipeline.Row]) -> None:
        import json  # --json only: a run with tables has no use for it

        for row in rows:
            opening = ",\n" if self.count else '{\n  "items": [\n'
            _echo(opening + textwrap.indent(json.dumps(_row_json(row), indent=2), "    "))
            self.count += 1

    def finish(self, summary: dict[str, Any]) -> None:
        import json

        opening = "\n  ],\n" if self.count else '{\n  "items": [],\n'
        closing_ = textwrap.indent(json.dumps(summary, indent=2), "  ").lstrip()
        _echo(f'{opening}  "summary": {closing_}\n}}\n')


def _echo(text: str) -> None:
    try:
        click.echo(text, nl=False)
    except BrokenPipeError as error:
        raise BrokenPipe() from error


def _render(summary: Summary, single: bool, options: RunOptions) -> None:
    """The tables on stderr (rows, summary, failures), or -q's one line per failure."""
    if options.quiet:
        for source, reason in summary.failed:
            named = reason if reason.startswith(source) else f"{source}: {reason}"
            click.echo(f"Error: {one_line(named)}", err=True)
        return
    plain = report_plain.plain_rows_table(
        summary.rows, more=summary.rows_not_kept, stream=sys.stderr
    )  # the ordinary table without importing rich, exactly as rich draws it
    if plain is not None:
        report_plain.write_plain(plain, sys.stderr)
    rich_rows = plain is None and bool(summary.rows)
    if rich_rows or not single or summary.skipped or summary.failed:
        console = report.stderr_console()
        if rich_rows:
            console.print(report.rows_table(summary.rows, more=summary.rows_not_kept))
        if not single or summary.skipped:
            console.print(report.summary_table(summary))
        if summary.failed:
            console.print(report.failures_table(summary.failed))


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _run(options: RunOptions, operation: pipeline.Operation) -> None:
    """Plan, run and report one conv/pool invocation; the exit code tells how it went."""
    ctx = click.get_current_context()
    options = _checked(options, ctx.meta.get("convcli.closed", set()))
    plan = plan_run(
        options.inputs,
        options.output,
        requested_format=options.output_format,
        pattern=options.pattern,
        overwrite=options.overwrite,
        skip_existing=options.skip_existing,
    )
    debug = bool(ctx.find_root().params.get("debug"))
    settings = options.settings(operation, debug=debug)
    run = Run(plan, settings, workers=options.jobs, scheduler=options.scheduler)
    json_items = _JsonItems() if options.as_json else None
    wants_progress = not (options.quiet or json_items) and _stderr_is_terminal()
    # rich only when drawing: a batch's bar draws at once, one image's only once it is slow
    batch_bar = wants_progress and not plan.single
    console = report.stderr_console() if batch_bar else None
    with contextlib.ExitStack() as bars:
        advance: Callable[[], None] = lambda: None  # noqa: E731
        if plan.single and wants_progress:  # one image: its rows, once it takes a while
            name = plan.jobs[0].source if plan.jobs else ""
            rows = report.row_progress(name, console=None, enabled=True)
            bars.enter_context(progress.reporting(bars.enter_context(rows)))
        elif not plan.single:
            advance = bars.enter_context(
                report.progress(len(plan.jobs), console=console, enabled=wants_progress)
            )
        for result in run.results():
            advance()
            if plan.single and result.error is not None:
                raise ConvcliError(result.error)  # one input: its failure is the error
            if json_items is not None:
                json_items.add(result.rows)
    summary = run.summary
    if json_items is not None:
        json_items.finish(summary.to_json())
    else:
        _render(summary, plan.single, options)
    if summary.failed:
        # Some items done (written, or kept by --skip-existing): "some items failed" (1);
        # none at all: nothing could be done (2).
        done = summary.processed + summary.skipped
        raise SystemExit(ExitCode.DIFFERENCES if done else ExitCode.TROUBLE)


# --------------------------------------------------------------------------- commands


@click.command()
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
    "--pad-mode",
    type=click.Choice(engine.PAD_MODES),
    help="What padding holds (default: the kernel's, else replicate for images, zeros for arrays).",
)
@click.option("--dilation", type=PAIR, help="Dilation N or H,W (default 1).")
@click.option("--groups", type=click.IntRange(min=1), help="Grouped convolution (default 1).")
@click.option(
    "--flip/--no-flip", default=None, help="Rotate the kernel 180 degrees (true convolution)."
)
@click.option(
    "--kernel-layout",
    type=click.Choice(engine.KERNEL_LAYOUTS),
    help="Layout of 4-D .npy kernels (default OHWI; OIHW with --layout NCHW).",
)
@output_options
def conv(
    kernel_spec: str,
    stride: engine.PairArg | None,
    padding: engine.PaddingArg | None,
    pad_mode: str | None,
    dilation: engine.PairArg | None,
    groups: int | None,
    flip: bool | None,
    kernel_layout: str | None,
    inputs: tuple[str, ...],
    output: str,
    output_format: str | None,
    layout: str,
    range_mode: str,
    out_dtype: str | None,
    quality: int | None,
    alpha: str,
    filter_alpha: bool,
    background: tuple[float, float, float] | None,
    linear: bool,
    strip: bool,
    frames: str | tuple[int, ...],
    overwrite: bool,
    skip_existing: bool,
    pattern: str | None,
    jobs: int | None,
    scheduler: str | None,
    max_bytes: int,
    tile: int | None,
    max_pixels: int,
    threads: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Cross-correlate images or arrays with a kernel.

    INPUT is an image (PNG, JPEG, TIFF, BMP, GIF, WebP), a .npy or .npz array, a folder, or -
    for stdin. Operation defaults come from the kernel file, then: stride 1, padding same,
    dilation 1, pad-mode replicate for images (no dark frame at a photo's edge) and zeros
    for arrays (PyTorch's). Arrays are (N,H,W,C), (H,W,C) or (H,W) in --layout.

    \b
    Examples:
      convcli conv photo.jpg -k sharpen -o sharp.jpg
      convcli conv photo.png -k sobel-x --range abs -o edges.png
      convcli conv a.png -k gaussian:size=7,sigma=1.5 -o - --format png | convcli pool - \\
          --size 2 -o - --format png > small.png
      convcli conv batch.npy -k filters.npy --kernel-layout OIHW --layout NCHW -o out.npy
    """
    options = RunOptions(
        inputs, output, output_format, layout, range_mode, out_dtype, quality,
        _alpha_mode(alpha, filter_alpha), background, linear, strip, frames,
        overwrite, skip_existing, pattern, jobs, threads, max_bytes, max_pixels, tile, quiet,
        as_json, scheduler,
    )  # fmt: skip
    if kernel_layout is None and layout == "NCHW":
        kernel_layout = "OIHW"  # the PyTorch pair: NCHW activations, OIHW weights
    kernel = kernels.load_kernel(kernel_spec, kernel_layout=kernel_layout)
    flags = {
        "stride": stride,
        "padding": padding,
        "pad_mode": pad_mode,
        "dilation": dilation,
        "groups": groups,
        "flip": flip,
    }
    chosen = {**kernel.options, **{key: value for key, value in flags.items() if value is not None}}
    operation = pipeline.Convolution(
        weights=kernel.weights,
        bias=kernel.bias,
        kernel_layout=kernel.layout,
        kernel_name=kernel.name or Path(kernel_spec).stem,
        stride=chosen.get("stride", 1),
        padding=chosen.get("padding", "same"),
        dilation=chosen.get("dilation", 1),
        groups=chosen.get("groups", 1),
        pad_mode=chosen.get("pad_mode"),  # None: replicate for images, zeros for arrays
        flip=bool(chosen.get("flip", False)),
    )
    _run(options, operation)


@click.command()
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
    size: engine.PairArg,
    stride: engine.PairArg | None,
    padding: engine.PaddingArg,
    op: str,
    ceil_mode: bool,
    count_include_pad: bool,
    dilation: engine.PairArg,
    inputs: tuple[str, ...],
    output: str,
    output_format: str | None,
    layout: str,
    range_mode: str,
    out_dtype: str | None,
    quality: int | None,
    alpha: str,
    filter_alpha: bool,
    background: tuple[float, float, float] | None,
    linear: bool,
    strip: bool,
    frames: str | tuple[int, ...],
    overwrite: bool,
    skip_existing: bool,
    pattern: str | None,
    jobs: int | None,
    scheduler: str | None,
    max_bytes: int,
    tile: int | None,
    max_pixels: int,
    threads: int | None,
    quiet: bool,
    as_json: bool,
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
    options = RunOptions(
        inputs, output, output_format, layout, range_mode, out_dtype, quality,
        _alpha_mode(alpha, filter_alpha), background, linear, strip, frames,
        overwrite, skip_existing, pattern, jobs, threads, max_bytes, max_pixels, tile, quiet,
        as_json, scheduler,
    )  # fmt: skip
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
