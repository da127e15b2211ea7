"""``convcli verify``: compare arrays, images, folders or a reference dump, like h5diff.

Exit status 0 when everything matches, 1 when differences were found (a shape or dtype-kind
mismatch and a missing partner included), 2 for trouble. The report (a rich table) goes to
stdout, being the command's output; with ``--json`` stdout holds only the JSON document and
notes go to stderr; with ``-q`` nothing is printed (errors still are, on stderr).
Trouble is raised as :class:`~convcli.errors.ConvcliError` (or a click usage error) for the
top-level group to report as one ``Error:`` line with exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from convcli.cli.params import BYTES, TOLERANCE
from convcli.errors import ConvcliError, ExitCode
from convcli.io.fileio import atomic_write, check_output_path
from convcli.io.images import encode_image
from convcli.limits import DEFAULT_MAX_PIXELS
from convcli.verify import EXPECTED_LAYOUTS

if TYPE_CHECKING:
    from convcli.verify.run import HeatMap

# rich, json, the report and the verify library are imported when the command runs, not
# when the command line starts: conv and pool need none of them.

__all__ = ["verify"]

#: Most worst elements ``--show`` lists per pair.
MAX_SHOW = 10_000


def _write_heatmap(path: Path, heatmap: HeatMap) -> None:
    data = encode_image(heatmap.pixels, format="png", name=str(path))
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise ConvcliError(f"{path}: cannot write: {exc.strerror or exc}") from exc


HELP = """Compare ACTUAL with EXPECTED, or recompute a reference dump, like h5diff.

\b
ACTUAL and EXPECTED are .npy arrays, .npz files (compared member by member),
images (any pair of formats; an image against an .npy works too) or folders
(files paired by relative path; a file with no partner is a difference).
With ACTUAL alone it must be a reference dump (.npz with input, output,
kernel, params): its operation is recomputed by convcli's engine and
compared with the dump's output.

\b
An element matches when |actual - expected| <= atol + rtol * |expected|.
Default tolerances follow torch.testing.assert_close, by the expected dtype:
float16 rtol 1e-3 atol 1e-5, float32 rtol 1.3e-6 atol 1e-5,
float64 rtol 1e-7 atol 1e-7, integers exact. A dump may record its own;
--rtol/--atol override both. NaN matches NaN at the same position only.

\b
Exit status: 0 all pairs match, 1 differences found (including a shape or
dtype-kind mismatch or a missing partner), 2 trouble (unreadable input,
bad option).

\b
Examples:
  convcli verify out.npy expected.npy
  convcli verify out.npy torch_out.npy --expected-layout NCHW --rtol 1e-5
  convcli verify results/ golden/ --json > report.json
  convcli verify reference_conv.npz --show 5
  convcli verify blurred.png golden.png --diff-image diff.png
  convcli verify a.npz b.npz -q && echo same
"""


@click.command("verify", help=HELP, short_help="Compare arrays, images, folders or a dump.")
@click.argument("actual", type=click.Path(exists=True, path_type=Path))
@click.argument("expected", type=click.Path(exists=True, path_type=Path), required=False)
@click.option("--rtol", type=TOLERANCE, help="Relative tolerance [default: by dtype].")
@click.option("--atol", type=TOLERANCE, help="Absolute tolerance [default: by dtype].")
@click.option(
    "--expected-layout",
    type=click.Choice(EXPECTED_LAYOUTS),
    help="Layout of EXPECTED; NCHW is transposed to channels-last first [default: NHWC].",
)
@click.option(
    "--show",
    type=click.IntRange(0, MAX_SHOW),
    default=0,
    metavar="N",
    help="List the N elements with the largest differences.",
)
@click.option(
    "--diff-image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG heat map of |diff| (of the first differing pair).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --diff-image file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit status tells.")
@click.option(
    "--max-bytes",
    type=BYTES,
    default="4G",
    show_default=True,
    help="Refuse arrays larger than this (4G, 512M, 1000000).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse images with more pixels than this.",
)
@click.pass_context
def verify(
    ctx: click.Context,
    actual: Path,
    expected: Path | None,
    rtol: float | None,
    atol: float | None,
    expected_layout: str | None,
    show: int,
    diff_image: Path | None,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    max_bytes: int,
    max_pixels: int,
) -> None:
    """The ``verify`` command (help text in :data:`HELP`)."""
    import json

    from convcli.cli.report import stderr_console, stdout_console
    from convcli.cli.report_verify import heatmap_note, render_comparisons
    from convcli.verify.run import comparisons_to_json
    from convcli.verify.run import verify as run_verify

    if expected is None:
        if actual.is_dir() or actual.suffix.lower() != ".npz":
            raise click.UsageError(
                "ACTUAL alone must be a reference dump (.npz); give EXPECTED to compare two inputs"
            )
        if expected_layout is not None:
            raise click.UsageError(
                "--expected-layout needs EXPECTED; a reference dump records its own layout"
            )
    if diff_image is not None:
        if diff_image.suffix.lower() != ".png":
            raise click.UsageError("--diff-image writes a PNG: give a path ending in .png")
        inputs = (actual,) if expected is None else (actual, expected)
        check_output_path(diff_image, inputs=inputs, overwrite=overwrite)

    result = run_verify(
        actual,
        expected,
        rtol=rtol,
        atol=atol,
        expected_layout=expected_layout,
        show=show,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        heatmap=diff_image is not None,
    )
    if diff_image is not None and result.heatmap is not None:
        _write_heatmap(diff_image, result.heatmap)

    if not quiet:
        notes = stderr_console()
        if as_json:
            click.echo(
                json.dumps(comparisons_to_json(result.comparisons), indent=2, allow_nan=False)
            )
        else:
            report = stdout_console()
            render_comparisons(report, result.comparisons)
            notes = report
        if diff_image is not None:
            if result.heatmap is not None:
                notes.print(heatmap_note(diff_image, result.heatmap), soft_wrap=True)
            else:
                notes.print(
                    f"diff image {diff_image} not written: no pair with equal shapes and "
                    "real dtypes to draw",
                    style="yellow",
                    soft_wrap=True,
                )
    if not result.match:
        ctx.exit(int(ExitCode.DIFFERENCES))
