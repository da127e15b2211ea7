"""Progress of one long image: the library reports output rows done, the CLI draws a bar.

The bar needs a terminal and a slow image, which tests have neither of: the listener is
checked directly, the bar is drawn on a forced-terminal console with no delay, and the
CLI's wiring is checked with both patched in.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rich.console import Console

from convcli import limits
from convcli.batch import pipeline, progress
from convcli.batch.process import BAND_BYTES, filter_image
from convcli.cli import report
from convcli.cli import run as cli_run
from tests.conftest import run

RNG = np.random.default_rng(7)


def sharpen() -> pipeline.Convolution:
    weights = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
    return pipeline.Convolution(weights, None, "OHWI", "sharpen", pad_mode="replicate")


def test_bands_of_an_image_report_rows_up_to_the_total() -> None:
    rows = 2 * BAND_BYTES // (300 * 3 * 4) + 40  # more than two bands
    pixels = RNG.integers(0, 256, (rows, 300, 3), dtype=np.uint8)
    seen: list[tuple[int, int]] = []
    with progress.reporting(lambda done, total: seen.append((done, total))):
        filter_image(pixels, False, sharpen(), pipeline.OutputOptions(format="png"))
    assert len(seen) >= 3
    assert all(total == rows for _, total in seen)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})
    assert seen[-1] == (rows, rows)


def test_a_streamed_tiff_reports_each_row_of_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tifffile.imwrite(tmp_path / "a.tif", RNG.integers(0, 256, (70, 50, 3), dtype=np.uint8),
                     tile=(16, 16), photometric="rgb")  # fmt: skip
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 0)
    seen: list[tuple[int, int]] = []
    with progress.reporting(lambda done, total: seen.append((done, total))):
        result = run("conv", tmp_path / "a.tif", "-k", "sharpen", "-o", tmp_path / "b.tif",
                     "--tile", 16, "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert seen == [(16, 70), (32, 70), (48, 70), (64, 70), (70, 70)]


def test_the_row_bar_shows_rows_done_rate_and_eta_once_an_image_is_slow() -> None:
    shown = io.StringIO()
    console = Console(file=shown, force_terminal=True, width=120)
    with report.row_progress("big.tif", console=console, enabled=True, delay=0) as listen:
        listen(100, 400)
        listen(400, 400)
    text = shown.getvalue()
    assert "big.tif" in text and "/400" in text and "eta" in text


def test_the_row_bar_stays_away_from_quick_images_and_when_disabled() -> None:
    for delay, enabled in ((3600.0, True), (0.0, False)):
        shown = io.StringIO()
        console = Console(file=shown, force_terminal=True)
        with report.row_progress("a.png", console=console, enabled=enabled, delay=delay) as listen:
            listen(10, 400)
            listen(400, 400)
        assert shown.getvalue() == ""


@pytest.mark.parametrize(("flags", "drawn"), [([], True), (["-q"], False), (["--json"], False)])
def test_a_single_image_on_a_terminal_gets_the_row_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], drawn: bool
) -> None:
    shown = io.StringIO()
    monkeypatch.setattr(cli_run, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(report, "ROW_PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(
        report, "stderr_console", lambda: Console(file=shown, force_terminal=True, width=120)
    )
    np.save(tmp_path / "a.npy", RNG.standard_normal((40, 30)).astype(np.float32))
    result = run("conv", tmp_path / "a.npy", "-k", "sharpen", "-o", tmp_path / "b.npy",
                 "--tile", 16, *flags)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert ("/40" in shown.getvalue()) is drawn
