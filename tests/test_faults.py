"""The runner under a hostile environment: FIFOs, unlistable folders, signals, files that
change under it, closed standard streams, tight memory and thread limits.

Each fault ends with its documented exit code, one ``Error:`` line (or a failed item), no
traceback and no temporary file. Signals and closed streams go through real processes.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convcli import limits
from convcli.batch import jobs, pipeline
from convcli.batch.plan import plan_run
from convcli.batch.runner import Run
from convcli.errors import ExitCode, InputError
from convcli.io import sources
from convcli.kernels.files import load_kernel
from tests.conftest import (
    ROOT,
    SUBPROCESS_TIMEOUT,
    convcli,
    convcli_command,
    run,
    subprocess_env,
    temp_files,
)

RNG = np.random.default_rng(10)
#: A .npy over limits.CHUNK_BYTES (64 MiB) in three samples: read and written a sample at a
#: time, so a run on it keeps its temporary output open for a while.
CHUNKED_SHAPE = (3, 2800, 2048, 1)
#: A kernel the GEMM path takes (one filter over all channels): a second or so per sample.
SLOW_KERNEL = "slow.npy"


def png(path: Path, size: int = 16) -> Path:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, RNG.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a chunked-size .npy and a kernel slow enough to signal a run mid-way."""
    folder = tmp_path_factory.mktemp("chunked")
    array = np.lib.format.open_memmap(
        folder / "big.npy", mode="w+", dtype=np.float32, shape=CHUNKED_SHAPE
    )
    array[:] = 1.0
    del array
    assert (folder / "big.npy").stat().st_size > limits.CHUNK_BYTES
    np.save(folder / SLOW_KERNEL, RNG.standard_normal((1, 15, 15, 1)).astype(np.float32))
    return folder


def start(*args: Any, cwd: Path, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        convcli_command(*args),
        cwd=cwd,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def wait_for_temp_file(folder: Path, process: subprocess.Popen[bytes]) -> None:
    """Wait until the run has a temporary output open (the moment a signal is most harmful)."""
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not temp_files(folder):
        assert process.poll() is None, "the run ended before its output was started"
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.01)


def one_error_line(stderr: bytes, *fragments: str) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------- folders


def test_a_fifo_named_like_an_image_fails_as_an_item_without_being_opened(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the walk stats it instead."""
    source = tmp_path / "in"
    png(source / "a.png")
    os.mkfifo(source / "pipe.png")
    done = convcli("conv", source, "-k", "sharpen", "-o", tmp_path / "out", "-q")
    assert done.returncode == ExitCode.DIFFERENCES  # a.png written, the FIFO failed
    one_error_line(done.stderr, "pipe.png", "FIFO")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png"]


def test_an_unlistable_subfolder_is_a_failed_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.walk's error (EACCES) becomes a failure naming the folder, not a silent skip."""
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "locked" / "b.png")
    scandir = os.scandir

    def refusing(path: Any = ".") -> Any:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    result = run("conv", source, "-k", "sharpen", "-o", tmp_path / "out", "--jobs", "1", "-q")
    assert result.exit_code == ExitCode.DIFFERENCES
    assert result.stderr.count("Error:") == 1
    assert "locked: cannot list: Permission denied" in result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder whatever its mode")
def test_a_folder_without_permissions_is_a_failed_item(tmp_path: Path) -> None:
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "locked" / "b.png")
    (source / "locked").chmod(0)
    try:
        done = convcli("conv", source, "-k", "sharpen", "-o", tmp_path / "out", "-q")
    finally:
        (source / "locked").chmod(0o755)
    assert done.returncode == ExitCode.DIFFERENCES
    one_error_line(done.stderr, "locked", "cannot list")


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, ExitCode.TERMINATED), (signal.SIGHUP, ExitCode.HANGUP)],
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_signal_to_a_single_run_removes_its_temporary_file(
    chunked: Path, tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = start(
        "conv", chunked / "big.npy", "-k", chunked / SLOW_KERNEL, "-o", out / "r.npy", cwd=tmp_path
    )
    wait_for_temp_file(out, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == code
    one_error_line(stderr, signal.Signals(signum).name)
    assert list(out.iterdir()) == []


def test_sigterm_to_the_process_group_mid_batch_leaves_only_complete_outputs(
    chunked: Path, tmp_path: Path
) -> None:
    """What `timeout` or a scheduler does: every process of the group gets SIGTERM."""
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.npy", "b.npy", "c.npy"):
        os.link(chunked / "big.npy", source / name)
    out = tmp_path / "out"
    process = start(
        "conv", source, "-k", chunked / SLOW_KERNEL, "-o", out, "--jobs", "2", "-q",
        cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    out.mkdir(exist_ok=True)
    wait_for_temp_file(out, process)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == ExitCode.TERMINATED
    one_error_line(stderr, "SIGTERM")
    assert temp_files(out) == []
    for path in out.iterdir():  # whatever finished is whole
        assert np.load(path).shape == CHUNKED_SHAPE


def test_skip_existing_removes_temporary_files_of_dead_runs(tmp_path: Path) -> None:
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "b.png")
    out = tmp_path / "out"
    assert run("conv", source / "a.png", "-k", "sharpen", "-o", out / "a.png").exit_code == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".convcli-tmp-{dead.pid}-x1y2.png"
    live = out / f".convcli-tmp-{os.getpid()}-x3y4.png"  # this process: alive
    stale.write_bytes(b"half")
    live.write_bytes(b"busy")
    result = run("conv", source, "-k", "sharpen", "-o", out, "--skip-existing", "--json")
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and live.exists()
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == [
        "a.png",
        "b.png",
    ]


# --------------------------------------------------------------------------- files that change


def test_an_npy_truncated_mid_run_fails_cleanly(chunked: Path, tmp_path: Path) -> None:
    """Read through a memory map this was SIGBUS (exit 135) and a temporary file left."""
    source = tmp_path / "in"
    source.mkdir()
    victim = source / "a.npy"
    victim.write_bytes((chunked / "big.npy").read_bytes())
    np.save(source / "b.npy", np.ones((4, 4), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    process = start(
        "conv", source, "-k", chunked / SLOW_KERNEL, "-o", out, "--jobs", "1", "-q", cwd=tmp_path
    )
    wait_for_temp_file(out, process)
    os.truncate(victim, victim.stat().st_size // 2)
    _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == ExitCode.DIFFERENCES  # b.npy, after it, still ran
    one_error_line(stderr, "a.npy", "truncated while being read")
    assert temp_files(out) == [] and sorted(p.name for p in out.iterdir()) == ["b.npy"]


def _conv_settings(**options: Any) -> jobs.Settings:
    kernel = load_kernel("sharpen")
    operation = pipeline.Convolution(kernel.weights, kernel.bias, kernel.layout, "sharpen")
    return jobs.Settings(operation, pipeline.OutputOptions(format="png"), **options)


@pytest.mark.parametrize("mode", ["default", "skip-existing", "overwrite"])
def test_an_output_that_appears_after_planning(tmp_path: Path, mode: str) -> None:
    """Never replaced unless --overwrite; with --skip-existing the job counts as skipped."""
    source = tmp_path / "in"
    png(source / "a.png")
    png(source / "b.png")
    out = tmp_path / "out"
    flags = {"skip_existing": mode == "skip-existing", "overwrite": mode == "overwrite"}
    plan = plan_run([str(source)], str(out), **flags)
    assert len(plan.jobs) == 2
    out.mkdir()
    (out / "b.png").write_bytes(b"another process wrote this")
    summary = Run(plan, _conv_settings(**flags), workers=1).run()
    replaced = (out / "b.png").read_bytes() != b"another process wrote this"
    assert replaced == (mode == "overwrite")
    assert temp_files(out) == []
    if mode == "default":
        ((name, reason),) = summary.failed
        assert name.endswith("b.png") and "not replaced (use --overwrite)" in reason
        assert summary.processed == 1
    else:
        assert summary.failed == []
        assert (summary.processed, summary.skipped) == ((1, 1) if mode != "overwrite" else (2, 0))


# --------------------------------------------------------------------------- standard streams


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``command`` in bash, where ``convcli`` runs this checkout with this interpreter."""
    prefix = f'convcli() {{ {sys.executable} -m convcli "$@"; }}; '
    return subprocess.run(
        ["bash", "-c", prefix + command],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def test_closed_stdin_is_an_error_line(tmp_path: Path) -> None:
    done = shell("convcli conv - -k sharpen -o r.png <&-", tmp_path)
    assert done.returncode == ExitCode.TROUBLE
    one_error_line(done.stderr, "<stdin>", "closed")
    assert list(tmp_path.iterdir()) == []


def test_closed_stderr_does_not_stop_stdout_or_a_batch(tmp_path: Path) -> None:
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "b.png")
    to_stdout = shell("convcli conv in/a.png -k sharpen -o - --format png 2>&-", tmp_path)
    assert to_stdout.returncode == 0
    assert run("conv", tmp_path / "in" / "a.png", "-k", "sharpen", "-o", tmp_path / "a.png")
    assert to_stdout.stdout == (tmp_path / "a.png").read_bytes()
    batch = shell("convcli conv in -k sharpen -o out 2>&-", tmp_path)
    assert batch.returncode == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize("output", ["r.png --json", "-"])
def test_closed_stdout_for_the_report_or_the_output_is_an_error_line(
    tmp_path: Path, output: str
) -> None:
    png(tmp_path / "a.png")
    done = shell(f"convcli conv a.png -k sharpen -o {output} >&-", tmp_path)
    assert done.returncode == ExitCode.TROUBLE
    one_error_line(done.stderr, "<stdout>", "closed")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png"]


# --------------------------------------------------------------------------- resources


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requests: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.requests.append(-1 if size is None else size)
        return super().read(size)


def test_stdin_is_read_in_pieces_not_allocated_up_front() -> None:
    data = bytes(range(256)) * 10_000
    stream = _CountingStream(data)
    assert sources.read_stdin(stream, max_bytes=4 * 1024**3) == data
    assert max(stream.requests) <= limits.STDIN_PIECE_BYTES


@pytest.mark.skipif(sys.platform != "linux", reason="ulimit -v is enforced as RLIMIT_AS")
def test_a_small_image_on_stdin_runs_under_a_tight_address_space_limit(tmp_path: Path) -> None:
    """Reading stdin with read(max_bytes + 1) asked for 4 GiB at once: MemoryError."""
    png(tmp_path / "a.png")
    done = shell("ulimit -v 3000000; convcli conv - -k sharpen -o r.png -q < a.png", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.png").exists()


def test_a_thread_that_cannot_start_names_the_file_and_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "x.npy"
    np.save(source, RNG.standard_normal((8, 256, 256, 3)).astype(np.float32))

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(limits, "CHUNK_BYTES", 256 * 256 * 3 * 4 * 2)  # chunks of 2 samples
    monkeypatch.setattr(threading.Thread, "start", refuse)
    result = run("conv", source, "-k", "sharpen", "--threads", "2", "-o", tmp_path / "y.npy")
    assert result.exit_code == ExitCode.TROUBLE
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "x.npy: cannot start a thread" in result.stderr and "fewer --threads" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x.npy"]


def test_out_of_memory_in_a_chunked_run_names_the_file_and_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "x.npy"
    np.save(source, RNG.standard_normal((8, 16, 16, 1)).astype(np.float32))
    calls: list[int] = []

    def exhausted(self: Any, x: Any, **kwargs: Any) -> Any:
        calls.append(x.shape[0])
        raise MemoryError

    monkeypatch.setattr(limits, "CHUNK_BYTES", 16 * 16 * 4 * 2)
    monkeypatch.setattr(pipeline.Convolution, "apply", exhausted)
    result = run("conv", source, "-k", "sharpen", "-o", tmp_path / "y.npy")
    assert calls == [2]  # the chunked path, stopped at its first chunk
    assert result.exit_code == ExitCode.TROUBLE
    assert "x.npy: out of memory" in result.stderr and "smaller --max-bytes" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x.npy"]


def test_reading_slices_of_a_shrinking_npy_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 8, 8, 1), np.float32))
    from convcli.io.arrays import iter_npy_slices, read_npy_header

    header = read_npy_header(path, name="x.npy")
    slices = iter_npy_slices(path, header, 1, name="x.npy")
    next(slices)
    os.truncate(path, header.offset + header.nbytes // 2)
    with pytest.raises(InputError, match="x.npy: truncated while being read"):
        list(slices)


assert ROOT.is_dir()
