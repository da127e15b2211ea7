"""``convcli conv`` and ``convcli pool``: parse flags, plan, run, render.

Every invocation, one file or a folder of thousands, goes the same way: the flags become
a :class:`~convcli.batch.jobs.Settings` and a :class:`~convcli.batch.plan.Plan`, a
:class:`~convcli.batch.runner.Run` runs it, and this module renders its results and summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from convcli import engine
from convcli.batch import pipeline
from convcli.batch.jobs import STDOUT, Settings
from convcli.batch.plan import check_inputs
from convcli.batch.process import ALPHA_MODES
from convcli.cli.params import BYTES, COLOR, FRAMES
from convcli.engine.threads import THREADS_ENV
from convcli.errors import ConvcliError
from convcli.io import images
from convcli.io.sources import ALL_FORMATS
from convcli.limits import DEFAULT_MAX_PIXELS

F = TypeVar("F", bound=Callable[..., Any])


def _check_run_flags(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse, at parse time, input/output combinations that cannot work."""
    if param.name == "output":
        try:
            check_inputs(ctx.params.get("inputs", ()), value)
        except ConvcliError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return value


#: The variable Dask itself reads the scheduler's address from; ``--scheduler`` wins over it.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def _check_scheduler(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse, at parse time, ``--jobs`` on a Dask cluster, whose workers set the parallelism.

    This runs for both options; the one parsed second sees the other's value.
    """
    if param.name == "scheduler" and value is not None and not value.strip():
        raise click.BadParameter("expected tcp://HOST:PORT or local", ctx=ctx, param=param)
    jobs = value if param.name == "jobs" else ctx.params.get("jobs")
    scheduler = value if param.name == "scheduler" else ctx.params.get("scheduler")
    if jobs is None or scheduler is None:
        return value
    if ctx.get_parameter_source("scheduler") == click.core.ParameterSource.ENVIRONMENT:
        reason = (
            f"--jobs does not apply with {SCHEDULER_ENV} set ({scheduler}): the Dask cluster's "
            f"workers run the items; unset {SCHEDULER_ENV} to run on local worker processes"
        )
    else:
        reason = "--jobs does not apply with --scheduler: the Dask cluster's workers run the items"
    raise click.BadParameter(reason, ctx=ctx, param_hint="--jobs")


def output_options(command: F) -> F:
    """Options shared by conv and pool: inputs, outputs, images, limits, reports."""
    decorators = [
        click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", is_eager=True),
        click.option(
            "-o",
            "--output",
            required=True,
            metavar="PATH",
            callback=_check_run_flags,
            help="Output file, folder (several inputs or a folder input), or - for stdout.",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(ALL_FORMATS),
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
            "--alpha",
            type=click.Choice(ALPHA_MODES),
            default="pass",
            show_default=True,
            help="Alpha: pass through unfiltered, filter like colour, or premultiply (colour "
            "weighted by alpha: no dark fringe on a blurred cut-out).",
        ),
        click.option(
            "--filter-alpha",
            is_flag=True,
            help="Filter the alpha channel too (the same as --alpha filter).",
        ),
        click.option(
            "--background",
            type=COLOR,
            help="Flatten alpha onto this colour (a name or #rrggbb): JPEG and BMP need it.",
        ),
        click.option("--linear", is_flag=True, help="Filter 8/16-bit sRGB images in linear light."),
        click.option(
            "--strip", is_flag=True, help="Drop metadata (ICC profile, EXIF, XMP, DPI, text)."
        ),
        click.option(
            "--frames",
            type=FRAMES,
            default="all",
            show_default=True,
            help="Frames or pages of GIF, APNG, WebP and TIFF inputs: all, first, or "
            "0-based indices I[,J...].",
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
            callback=_check_scheduler,
            help="Worker processes for several inputs (default: one per core; 1: this process).",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            envvar=SCHEDULER_ENV,
            callback=_check_scheduler,
            help="Run several inputs on a Dask cluster: tcp://HOST:8786, or local for a "
            f"LocalCluster on this machine (default: ${SCHEDULER_ENV}). Needs convcli[dask].",
        ),
        click.option(
            "--max-bytes",
            type=BYTES,
            default="4G",
            show_default=True,
            help="Refuse arrays, outputs or scratch larger than this.",
        ),
        click.option(
            "--tile",
            type=click.IntRange(min=1),
            metavar="N",
            help="Tile side for TIFF and .npy inputs streamed tile by tile (default 512).",
        ),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_PIXELS,
            show_default=True,
            help="Refuse images with more pixels (read from the header).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            envvar=THREADS_ENV,
            help=f"Threads for one computation (default: ${THREADS_ENV}, else the "
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
    alpha: str
    background: tuple[float, float, float] | None
    linear: bool
    strip: bool
    frames: str | tuple[int, ...]
    overwrite: bool
    skip_existing: bool
    pattern: str | None
    jobs: int | None
    threads: int | None
    max_bytes: int
    max_pixels: int
    tile: int | None
    quiet: bool
    as_json: bool
    scheduler: str | None = None

    def settings(self, operation: pipeline.Operation, *, debug: bool) -> Settings:
        output = pipeline.OutputOptions(
            format="npy",  # each job brings its own format; this only fills the field
            layout=self.layout,
            range_mode=self.range_mode,
            out_dtype=self.out_dtype,
            quality=self.quality,
            alpha=self.alpha,
            background=self.background,
            linear=self.linear,
            strip=self.strip,
            frames=self.frames,
            max_bytes=self.max_bytes,
            threads=self.threads,
        )
        return Settings(
            operation,
            output,
            self.max_pixels,
            tile=self.tile,
            overwrite=self.overwrite,
            skip_existing=self.skip_existing,
            debug=debug,
        )


def _alpha_mode(alpha: str, filter_alpha: bool) -> str:
    if filter_alpha and alpha not in ("pass", "filter"):
        raise click.BadParameter(
            f"--filter-alpha is --alpha filter; it contradicts --alpha {alpha}",
            param_hint="--filter-alpha",
        )
    return "filter" if filter_alpha else alpha


def _refuse(message: str) -> NoReturn:
    raise click.UsageError(message)


def _checked(options: RunOptions, closed: set[int]) -> RunOptions:
    """Flag combinations that exclude each other, and outputs on closed streams."""
    if options.overwrite and options.skip_existing:
        _refuse("--overwrite and --skip-existing exclude each other")
    if options.as_json and options.output == STDOUT:
        _refuse("--json and -o - both want stdout; choose one")
    if 1 in closed and (options.as_json or options.output == STDOUT):
        what = "--json" if options.as_json else "-o -"
        raise ConvcliError(f"<stdout>: standard output is closed; {what} has nowhere to go")
    if 0 in closed and "-" in options.inputs:
        raise ConvcliError("<stdin>: standard input is closed")
    return options
