"""Folder batches: planning, worker processes, failures, resume, Ctrl-C, JSON, chunked .npy."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import Result
from rich.console import Console

from convcli import kernels, limits
from convcli.batch import jobs as job_path
from convcli.batch import pipeline, runner
from convcli.cli import report
from convcli.io import sources
from convcli.io.fileio import TEMP_PREFIX
from tests.conftest import ROOT, run, temp_files

RNG = np.random.default_rng(5)


def summary_of(result: Result) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(result.stdout)["summary"]
    return summary


def png(path: Path, shape: tuple[int, ...] = (12, 10, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, RNG.integers(0, 256, shape, dtype=np.uint8))
    return path


def npy(path: Path, array: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(array))
    return path


def files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path (temporary files included)."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def mixed_folder(root: Path) -> Path:
    """Gray and RGB PNGs, a JPEG, arrays and an .npz, in nested folders."""
    png(root / "a.png")
    png(root / "gray.png", (9, 11))
    png(root / "sub" / "b.png")
    png(root / "sub" / "deeper" / "c.png", (8, 8, 4))
    iio.imwrite(root / "sub" / "photo.jpg", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    npy(root / "arrays" / "x.npy", RNG.standard_normal((2, 6, 5, 3)).astype(np.float32))
    np.savez(root / "arrays" / "pair.npz", p=np.ones((5, 5)), q=np.arange(30.0).reshape(5, 6))
    return root


# --------------------------------------------------------------------------- planning


def test_nested_folders_are_mirrored_under_the_output(tmp_path: Path) -> None:
    source = mixed_folder(tmp_path / "in")
    result = run("conv", source, "-k", "sharpen", "-o", tmp_path / "out", "--jobs", "1")
    assert result.exit_code == 0, result.stderr
    assert sorted(files(tmp_path / "out")) == sorted(files(source))
    assert iio.imread(tmp_path / "out" / "sub" / "deeper" / "c.png").shape == (8, 8, 4)


def test_files_and_folders_mix_and_format_changes_extensions(tmp_path: Path) -> None:
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "sub" / "b.png")
    single = png(tmp_path / "single.png")
    out = tmp_path / "out"
    result = run("pool", tmp_path / "in", single, "--size", "2", "-o", out, "--format", "tiff")
    assert result.exit_code == 0, result.stderr
    assert sorted(files(out)) == ["a.tif", "single.tif", os.path.join("sub", "b.tif")]
    assert iio.imread(out / "sub" / "b.tif").shape == (6, 5, 3)


def test_collisions_are_refused_before_anything_runs(tmp_path: Path) -> None:
    png(tmp_path / "in" / "0-first.png")
    png(tmp_path / "in" / "a.png")
    iio.imwrite(tmp_path / "in" / "a.jpg", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    result = run("conv", tmp_path / "in", "-k", "box", "-o", tmp_path / "out", "--format", "png")
    assert result.exit_code == 2
    assert "would both be written to" in result.stderr and "a.png" in result.stderr
    assert files(tmp_path / "out") == {}  # not even 0-first.png, which sorts before the pair


def test_existing_outputs_stop_the_run_unless_overwrite_or_skip_existing(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        png(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"
    assert run("conv", tmp_path / "in", "-k", "box", "-o", out, "-q").exit_code == 0
    fresh = files(out)
    (out / "a.png").write_bytes(b"keep me")
    (out / "c.png").unlink()

    refused = run("conv", tmp_path / "in", "-k", "box", "-o", out)
    assert refused.exit_code == 2
    assert "output exists" in refused.stderr and "--skip-existing" in refused.stderr
    assert files(out) == {"a.png": b"keep me", "b.png": fresh["b.png"]}  # c.png not written

    resumed = run("conv", tmp_path / "in", "-k", "box", "-o", out, "--skip-existing", "--json")
    assert resumed.exit_code == 0
    assert summary_of(resumed)["skipped"] == 2 and summary_of(resumed)["processed"] == 1
    assert files(out) == {**fresh, "a.png": b"keep me"}

    replaced = run("conv", tmp_path / "in", "-k", "box", "-o", out, "--overwrite", "-q")
    assert replaced.exit_code == 0
    assert files(out) == fresh


def test_glob_filters_and_unsupported_files_are_counted_as_ignored(tmp_path: Path) -> None:
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "sub" / "b.png")
    npy(source / "x.npy", np.ones((4, 4)))
    (source / "notes.txt").write_text("not an image")
    (source / "sub" / "table.csv").write_text("1,2")
    (source / ".hidden.png").write_bytes(b"hidden files are passed over silently")
    out = tmp_path / "out"
    everything = run("pool", source, "--size", "2", "-o", out, "--json")
    assert everything.exit_code == 0
    assert summary_of(everything)["ignored"] == 2
    assert summary_of(everything)["processed"] == 3
    only_png = run("pool", source, "--size", "2", "-o", tmp_path / "png", "--glob", "*.png", "-q")
    assert only_png.exit_code == 0
    assert sorted(files(tmp_path / "png")) == ["a.png", os.path.join("sub", "b.png")]


def test_an_output_folder_inside_the_input_is_not_read_back(tmp_path: Path) -> None:
    source = tmp_path / "in"
    png(source / "a.png")
    out = source / "filtered"
    assert run("conv", source, "-k", "box", "-o", out, "-q").exit_code == 0
    again = run("conv", source, "-k", "box", "-o", out, "--skip-existing", "--json")
    assert summary_of(again)["skipped"] == 1 and summary_of(again)["processed"] == 0
    assert sorted(files(out)) == ["a.png"]  # no filtered/filtered/a.png


# --------------------------------------------------------------------------- running


def test_corrupt_files_cost_only_themselves(tmp_path: Path) -> None:
    source = tmp_path / "in"
    good = [png(source / f"good{index}.png") for index in range(4)]
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    npy(source / "truncated.npy", np.ones((8, 8)))
    (source / "truncated.npy").write_bytes((source / "truncated.npy").read_bytes()[:-20])
    out = tmp_path / "out"
    result = run("conv", source, "-k", "sharpen", "-o", out, "--jobs", "2")
    assert result.exit_code == 1
    assert "broken.png" in result.stderr and "truncated.npy" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(files(out)) == sorted(path.name for path in good)
    for path in good:
        assert iio.imread(out / path.name).shape == (12, 10, 3)
    assert temp_files(out) == []


def test_json_summary_lists_counts_and_each_failure(tmp_path: Path) -> None:
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "b.png")
    (source / "bad.png").write_bytes(b"garbage")
    (source / "readme.txt").write_text("ignored")
    result = run("conv", source, "-k", "box", "-o", tmp_path / "out", "--json", "--jobs", "2")
    assert result.exit_code == 1
    report_ = json.loads(result.stdout)
    assert sorted(item["input"] for item in report_["items"]) == [
        str(source / "a.png"),
        str(source / "b.png"),
    ]
    assert set(report_["items"][0]) >= {"input", "shape_in", "shape_out", "dtype_out", "seconds"}
    summary = report_["summary"]
    assert {key: summary[key] for key in ("processed", "skipped", "failed", "ignored")} == {
        "processed": 2,
        "skipped": 0,
        "failed": 1,
        "ignored": 1,
    }
    assert summary["seconds"] > 0 and summary["items_per_second"] > 0
    (failure,) = summary["failures"]
    assert failure["input"] == str(source / "bad.png") and "bad.png" in failure["error"]
    assert result.stderr == ""  # no tables and no progress bar with --json


def test_one_and_two_workers_write_identical_bytes(tmp_path: Path) -> None:
    source = mixed_folder(tmp_path / "in")
    for jobs in ("1", "2"):
        result = run("conv", source, "-k", "gaussian", "-o", tmp_path / jobs, "-q", "--jobs", jobs)
        assert result.exit_code == 0, result.stderr
    one, two = files(tmp_path / "1"), files(tmp_path / "2")
    assert len(one) == 7
    assert one == two


def test_file_names_are_shown_as_plain_text_in_the_tables(tmp_path: Path) -> None:
    """A name with [markup], an ANSI escape or a newline cannot restyle or forge lines."""
    npy(tmp_path / "in" / "x[bold]y.npy", np.ones((3, 3)))
    (tmp_path / "in" / "bad\x1b[31m\nforged.npy").write_bytes(b"zz")
    result = run("pool", tmp_path / "in", "--size", "1", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "x[bold]y.npy" in result.stderr
    assert "bad\\x1b[31m\\nforged.npy" in result.stderr
    assert "\x1b" not in result.stderr and "\nforged" not in result.stderr


def test_a_big_batch_keeps_only_the_first_rows_for_the_table(tmp_path: Path) -> None:
    for index in range(report.TABLE_ROWS + 5):
        npy(tmp_path / "in" / f"x{index:02d}.npy", np.ones((3, 3)))
    result = run("pool", tmp_path / "in", "--size", "1", "-o", tmp_path / "out", "--jobs", "2")
    assert result.exit_code == 0
    assert "x19.npy" in result.stderr and "x20.npy" not in result.stderr
    assert "and 5 more" in result.stderr
    assert len(files(tmp_path / "out")) == report.TABLE_ROWS + 5


def test_an_unwritable_output_fails_that_item_only(tmp_path: Path) -> None:
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "sub" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the folder should be")
    result = run("conv", tmp_path / "in", "-k", "box", "-o", out, "--json", "--jobs", "1")
    assert result.exit_code == 1
    (failure,) = summary_of(result)["failures"]
    assert failure["input"].endswith("b.png") and "cannot write" in failure["error"]
    assert (out / "a.png").exists()


def test_an_unexpected_error_in_one_item_is_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(sources, "read_source", explode)
    job = job_path.Job(str(png(tmp_path / "a.png")), str(tmp_path / "out.png"), "png")
    result = job_path.run_item(3, job, settings(pipeline.Pooling("max", 2)))
    assert result.index == 3 and result.rows == []
    assert result.error is not None and "unexpected RuntimeError: decoder bug" in result.error


def settings(operation: pipeline.Operation, chunk_bytes: int | None = None) -> job_path.Settings:
    return job_path.Settings(operation, pipeline.OutputOptions(format="npy"), 10**8, chunk_bytes)


class Misbehaves(pipeline.Pooling):
    """Max pooling that, like a bad decoder, leaves a temporary file named as its writes are
    (in ``litter``) and then kills its own process (a 7x7 input, as the OOM killer would) or
    hangs (a 5x5 input).
    """

    litter = ""

    def apply(self, x: Any, *, layout: str, max_bytes: int, threads: int | None = None) -> Any:
        if x.shape in ((7, 7), (5, 5)):
            Path(self.litter, f"{TEMP_PREFIX}{os.getpid()}-half-written.npy").write_bytes(b"x")
            if x.shape == (7, 7):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
        return super().apply(x, layout=layout, max_bytes=max_bytes, threads=threads)


def misbehaving(litter: Path) -> Misbehaves:
    operation = Misbehaves("max", 2)
    object.__setattr__(operation, "litter", str(litter))
    return operation


def test_a_killed_worker_fails_its_item_and_the_run_completes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = [f"x{index}.npy" for index in range(12)]
    crashers = {"x2.npy", "x7.npy"}
    jobs = [
        job_path.Job(
            str(npy(tmp_path / name, np.ones((7, 7) if name in crashers else (6, 6)))),
            str(out / name),
            "npy",
        )
        for name in names
    ]
    results = list(runner.run_jobs(jobs, settings(misbehaving(out)), workers=2))
    assert sorted(result.index for result in results) == list(range(12))
    failed = {Path(result.source).name: result.error for result in results if result.error}
    assert set(failed) == crashers
    assert all(
        "worker process died" in str(error) and "SIGKILL" in str(error) for error in failed.values()
    )
    assert sorted(files(out)) == sorted(set(names) - crashers)  # the litter was swept too
    assert np.load(out / "x11.npy").shape == (3, 3)


def test_closing_the_results_stops_busy_workers_and_removes_their_temporary_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shapes = [(5, 5)] + [(6, 6)] * 8  # the first job hangs its worker
    jobs = [
        job_path.Job(
            str(npy(tmp_path / f"x{i}.npy", np.ones(shape))), str(out / f"x{i}.npy"), "npy"
        )
        for i, shape in enumerate(shapes)
    ]
    results = runner.run_jobs(jobs, settings(misbehaving(out)), workers=2)
    # The other worker does the rest but x2, queued behind the hang (two jobs per worker).
    done = [next(results) for _ in range(7)]
    assert sorted(result.index for result in done) == [1, 3, 4, 5, 6, 7, 8]
    started = time.monotonic()
    results.close()
    # a hang guard, not a timing: the item sleeps 60 s, and close() must not wait for it
    assert time.monotonic() - started < 30
    assert temp_files(out) == []
    assert sorted(files(out)) == [f"x{i}.npy" for i in (1, 3, 4, 5, 6, 7, 8)]


def test_workers_do_not_rerun_the_callers_main_script(tmp_path: Path) -> None:
    """A script read from stdin (no file to re-run) still gets working workers."""
    for index in range(4):
        npy(tmp_path / "in" / f"x{index}.npy", np.ones((4, 4)))
    script = (
        "from convcli.cli import main\n"
        f"main(['pool', {str(tmp_path / 'in')!r}, '--size', '2', '-o', {str(tmp_path / 'out')!r},"
        " '--jobs', '2', '-q'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-"], input=script, text=True, capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(files(tmp_path / "out")) == [f"x{index}.npy" for index in range(4)]


def test_progress_bar_shows_done_total_and_rate_only_when_enabled() -> None:
    shown = io.StringIO()
    with report.progress(3, console=Console(file=shown, force_terminal=True), enabled=True) as step:
        for _ in range(3):
            step()
    assert "3/3" in shown.getvalue() and "items/s" in shown.getvalue()
    hidden = io.StringIO()
    with report.progress(
        3, console=Console(file=hidden, force_terminal=True), enabled=False
    ) as step:
        step()
    assert hidden.getvalue() == ""


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("jobs", ["2", "1"])
def test_ctrl_c_stops_the_workers_leaves_no_partial_files_and_resume_completes(
    tmp_path: Path, jobs: str
) -> None:
    """SIGINT to the process group mid-run: exit 130, no temporary or partial files."""
    count = 120
    source = tmp_path / "in"
    for index in range(count):
        png(source / f"img{index:03d}.png", (96, 96, 3))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "convcli", "conv", str(source), "-k", "gaussian:size=21"]
    command += ["-o", str(out), "--jobs", jobs]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [
        path for path in out.glob("*.png") if not path.name.startswith(TEMP_PREFIX)
    ]:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on ^C
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr.decode()
    assert "Interrupted" in stderr.decode() and "Traceback" not in stderr.decode()
    assert temp_files(out) == []
    interrupted = files(out)
    assert 0 < len(interrupted) < count

    resumed = run("conv", source, "-k", "gaussian:size=21", "-o", out, "--skip-existing", "--json")
    assert resumed.exit_code == 0
    assert summary_of(resumed)["skipped"] == len(interrupted)
    assert summary_of(resumed)["processed"] == count - len(interrupted)
    reference = run("conv", source, "-k", "gaussian:size=21", "-o", tmp_path / "ref", "-q")
    assert reference.exit_code == 0
    assert files(out) == files(tmp_path / "ref")  # every output complete, the first ones too


# --------------------------------------------------------------------------- chunked .npy


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("extra", [[], ["--out-dtype", "uint8", "--range", "abs"]])
def test_a_large_npy_batch_goes_through_in_chunks_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str, extra: list[str]
) -> None:
    array = np.asarray(RNG.standard_normal((37, 10, 9, 3)) * 50, dtype=np.float32, order=order)
    source = npy(tmp_path / "x.npy", array)
    whole = run("conv", source, "-k", "sobel-x", *extra, "-o", tmp_path / "whole.npy", "-q")
    assert whole.exit_code == 0

    batch_sizes: list[int] = []
    apply = pipeline.Convolution.apply

    def recording(self: pipeline.Convolution, x: Any, **kwargs: Any) -> Any:
        batch_sizes.append(x.shape[0])
        return apply(self, x, **kwargs)

    monkeypatch.setattr(pipeline.Convolution, "apply", recording)
    monkeypatch.setattr(limits, "CHUNK_BYTES", 5 * array[0].nbytes)
    chunked = run("conv", source, "-k", "sobel-x", *extra, "-o", tmp_path / "chunked.npy", "-q")
    assert chunked.exit_code == 0
    # C order reads 5 samples at a time; a Fortran-order file has no contiguous chunk along N
    assert batch_sizes == ([5] * 7 + [2] if order == "C" else [37])
    expected, got = np.load(tmp_path / "whole.npy"), np.load(tmp_path / "chunked.npy")
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_chunked_npy_memory_stays_bounded_by_the_chunk(tmp_path: Path) -> None:
    array = RNG.standard_normal((256, 32, 32, 4)).astype(np.float32)  # 4 MiB
    source = npy(tmp_path / "x.npy", array)
    kernel = kernels.load_kernel("box")
    operation = pipeline.Convolution(kernel.weights, kernel.bias, kernel.layout, "box")
    job = job_path.Job(str(source), str(tmp_path / "y.npy"), "npy")
    tracemalloc.start()
    try:
        rows = job_path.process_job(job, settings(operation, chunk_bytes=64 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < array.nbytes / 4
    assert rows[0].shape_out == (256, 32, 32, 4)
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy")[-3:],
        operation.apply(array[-3:], layout="NHWC", max_bytes=2**30),
    )


def test_normalize_needs_the_whole_array_so_it_is_not_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = npy(tmp_path / "x.npy", RNG.standard_normal((8, 4, 4, 1)).astype(np.float32))
    monkeypatch.setattr(limits, "CHUNK_BYTES", 64)
    args = ["--out-dtype", "uint8", "--range", "normalize", "-q"]
    assert run("conv", source, "-k", "box", *args, "-o", tmp_path / "y.npy").exit_code == 0
    result = np.load(tmp_path / "y.npy")
    assert result.min() == 0 and result.max() == 255  # stretched over the whole batch at once
