"""The hostile-input corpus: every case ends in one clean Error: line, writes nothing, in bounded
time and memory (cases in tests/hostile/cases.py, files from tests/hostile/make_corpus.py)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from convcli import conv2d, max_pool2d
from convcli.cli.main import main
from convcli.io.fileio import TEMP_PREFIX, atomic_write, write_stdout
from tests.conftest import convcli_command, subprocess_env
from tests.hostile import make_corpus
from tests.hostile.cases import CASES, USAGE, Case

CORPUS = make_corpus.CORPUS
MARKER = make_corpus.PICKLE_MARKER
#: Bytes one case may allocate in-process (traced by tracemalloc, NumPy's arrays included):
#: bombs and oversized headers are refused before their pixels or arrays are allocated.
CASE_PEAK_BYTES = 64 * 1024**2
#: Peak resident memory allowed while refusing the largest bomb (the 400 KB zlib TIFF that
#: decodes to 400 MB), in MiB.
BOMB_PEAK_MIB = 200
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs too big to commit, written once per run."""
    return make_corpus.write_large(tmp_path_factory.mktemp("large"))


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


CORPUS_DIGEST = digest(CORPUS)


def argv(case: Case, out: Path, large: Path) -> list[str]:
    return [arg.format(c=CORPUS, large=large, out=out) for arg in case.args]


def prepare(case: Case, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh output folder with the case's setup files, and a fresh working directory."""
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    out.mkdir()
    cwd.mkdir()
    for relative, source in case.setup.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            target.write_text("not an image\n")
        else:
            target.write_bytes((CORPUS / source).read_bytes())
    return out, cwd


def check_outcome(
    case: Case, code: int, stdout: str, stderr: str, out: Path, before: dict[str, str]
) -> None:
    """The assertions every case shares (see tests/hostile/cases.py)."""
    assert code == case.exit_code, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    if case.kind == USAGE:
        # click's usage errors: "Usage: ...", "Try '... -h' for help.", then the Error: line.
        assert lines[0].startswith("Usage:") and lines[-1] == errors[0], stderr
    else:
        assert lines == errors, f"more than one line on stderr:\n{stderr}"
    message = errors[0]
    for fragment in case.fragments:
        assert fragment in message
    assert case.culprit in message
    assert "\x1b" not in stderr  # no terminal escape from an input reaches the terminal
    assert digest(out) == before, "the output folder changed"
    assert not [path for path in out.rglob("*") if path.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(
    case: Case, tmp_path: Path, large: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One case in-process: exit code, one Error: line naming the culprit, nothing written."""
    out, cwd = prepare(case, tmp_path)
    monkeypatch.chdir(cwd)
    before = digest(out)
    stdin = (CORPUS / case.stdin).read_bytes() if case.stdin else None
    tracemalloc.start()
    try:
        result: Result = CliRunner().invoke(main, argv(case, out, large), input=stdin)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    check_outcome(case, result.exit_code, result.stdout, result.stderr, out, before)
    assert peak < CASE_PEAK_BYTES, f"{peak:,} bytes allocated to refuse it"
    assert not (cwd / MARKER).exists(), "a pickle payload ran"
    assert digest(CORPUS) == CORPUS_DIGEST, "an input changed"


SUBPROCESS_CASES = [case for case in CASES if case.subprocess]


def run_convcli(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m convcli`` with warnings shown (as a user's default would)."""
    return subprocess.Popen(
        convcli_command(*args),
        cwd=cwd,
        env=subprocess_env(PYTHONWARNINGS="default"),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[case.id for case in SUBPROCESS_CASES])
def test_hostile_case_in_a_real_process(case: Case, tmp_path: Path, large: Path) -> None:
    """No traceback, warning or decoder log line reaches a real stderr; the same one line."""
    out, cwd = prepare(case, tmp_path)
    before = digest(out)
    stdin = (CORPUS / case.stdin).read_bytes() if case.stdin else None
    process = run_convcli(argv(case, out, large), cwd, stdin)
    stdout, stderr = process.communicate(stdin, timeout=60)
    text = stderr.decode("utf-8", "replace")
    assert "Warning" not in text and "WARNING" not in text, text
    check_outcome(case, process.returncode, stdout.decode(), text, out, before)
    assert not (cwd / MARKER).exists()


def test_the_pickle_payload_is_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trap is armed: np.load(..., allow_pickle=True) on the corpus file runs the payload,
    so the marker's absence in the cases above means convcli never unpickled it."""
    monkeypatch.chdir(tmp_path)
    with (CORPUS / "npy_pickle_payload.npy").open("rb") as handle:
        np.load(handle, allow_pickle=True)
    assert (tmp_path / MARKER).exists()
    (tmp_path / MARKER).rmdir()
    pickle.loads(make_corpus.pickle_payload())
    assert (tmp_path / MARKER).exists()


def test_corpus_is_small_and_deterministic() -> None:
    """Every committed file is tiny, the whole corpus well under 1 MB, and the generator gives
    the same bytes twice (fixed seeds and zip dates)."""
    sizes = [path.stat().st_size for path in CORPUS.iterdir()]
    assert max(sizes) <= 16 * 1024 and sum(sizes) < 256 * 1024
    assert make_corpus.build() == make_corpus.build()
    assert sorted(make_corpus.build()) == sorted(path.name for path in CORPUS.iterdir())


def test_cases_cover_every_command() -> None:
    """At least 50 cases, spread over conv, pool, verify and kernels (files, presets, command)."""
    commands = {case.command for case in CASES}
    assert {"conv", "pool", "verify", "kernels"} <= commands
    kernel_cases = [case for case in CASES if case.id.startswith(("kernel", "preset"))]
    assert len(CASES) >= 50 and len(kernel_cases) >= 20


# --------------------------------------------------------------------------- memory


#: Runs convcli as its child and prints the child's peak RSS. A child's ru_maxrss counts the
#: memory of the process it was forked from (until exec), so convcli must be forked from this
#: small interpreter (no numpy), not from pytest's, or every reading would be pytest's size.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "convcli", *sys.argv[1:]],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mib(args: list[str], cwd: Path) -> tuple[float, int, str]:
    """Run convcli in a grandchild; return its peak RSS (MiB), exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    measured = subprocess.run(
        [sys.executable, "-S", "-c", _MEASURE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    code, kib = measured.stdout.split()
    return int(kib) / 1024, int(code), measured.stderr  # Linux: ru_maxrss is in KiB


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units and wait4 are Linux's")
def test_refusing_the_largest_bomb_takes_little_memory(tmp_path: Path, large: Path) -> None:
    """The 400 KB TIFF that decodes to 400 MB is refused from its header: the process peaks
    below 200 MiB, within 64 MiB of converting an 8x8 PNG."""
    bomb = large / "bomb_tiff_zlib_20000x20000.tif"
    assert bomb.stat().st_size < 1024 * 1024
    peak, code, stderr = peak_rss_mib(
        ["conv", str(bomb), "-k", "sharpen", "-o", str(tmp_path / "bomb.png")], tmp_path
    )
    assert code == 2 and "20000x20000" in stderr
    baseline, code, _ = peak_rss_mib(
        ["conv", str(CORPUS / "valid_rgb.png"), "-k", "sharpen", "-o", str(tmp_path / "ok.png")],
        tmp_path,
    )
    assert code == 0
    assert peak < BOMB_PEAK_MIB, f"peak {peak:.0f} MiB refusing the bomb"
    assert peak < baseline + 64, f"peak {peak:.0f} MiB vs {baseline:.0f} MiB for an 8x8 PNG"


# --------------------------------------------------------------------------- batches


def test_a_corrupt_item_costs_only_itself(tmp_path: Path) -> None:
    """A folder with a good and a corrupt image: the good one is written, the bad one listed
    as failed, exit 1, and no partial or temporary file anywhere."""
    source = tmp_path / "in"
    source.mkdir()
    for name in ("valid_rgb.png", "truncated.png", "bomb_png_30000x30000.png"):
        (source / name).write_bytes((CORPUS / name).read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["conv", str(source), "-k", "sharpen", "-o", str(out), "--json"]
    )
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["valid_rgb.png"]
    failures = {
        Path(failure["input"]).name: failure["error"]
        for failure in json.loads(result.stdout)["summary"]["failures"]
    }
    assert sorted(failures) == ["bomb_png_30000x30000.png", "truncated.png"]
    assert "30000x30000" in failures["bomb_png_30000x30000.png"]


def test_an_unsupported_array_in_one_item_costs_only_itself(tmp_path: Path) -> None:
    """An item the engine refuses (complex numbers) fails alone, like an unreadable file."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.png").write_bytes((CORPUS / "valid_rgb.png").read_bytes())
    (source / "b.npy").write_bytes((CORPUS / "npy_complex.npy").read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["conv", str(source), "-k", "sharpen", "-o", str(out)])
    assert result.exit_code == 1, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]
    assert "complex" in result.stderr


# --------------------------------------------------------------------------- NaN and Inf


def nan_inf_input() -> np.ndarray:
    x = np.zeros((1, 12, 12, 2))
    x[0, 3, 4, 0] = np.nan
    x[0, 8, 8, 1] = np.inf
    return x


def touched(mask: np.ndarray, size: int) -> np.ndarray:
    """Outputs of a stride-1, "same" window of ``size`` that see a marked input."""
    pad = size // 2
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros_like(mask)
    for dy in range(size):
        for dx in range(size):
            out |= padded[:, dy : dy + mask.shape[1], dx : dx + mask.shape[2]]
    return out


def test_nan_and_inf_propagate_as_in_pytorch(tmp_path: Path) -> None:
    """Through the CLI, NaN/Inf reach exactly the outputs whose window holds them, as in
    PyTorch's direct convolution and pooling: 0 * NaN and 0 * Inf are NaN, max and mean of a
    window with NaN are NaN. The results are written as .npy, and numpy's "invalid value"
    warnings stay off stderr (this test runs with warnings as errors)."""
    x = nan_inf_input()
    source = tmp_path / "x.npy"
    np.save(source, x)
    weights = np.random.default_rng(0).standard_normal((3, 3))
    weights[1, 1] = 0.0  # a zero tap still propagates NaN (0 * NaN)
    kernel_file = tmp_path / "k.json"
    kernel_file.write_text(f'{{"weights": {weights.tolist()}}}')
    runner = CliRunner()
    args = ["conv", str(source), "-k", str(kernel_file), "-o", str(tmp_path / "c.npy")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "Warning" not in result.stderr
    conv = np.load(tmp_path / "c.npy")
    nan_in, inf_in = np.isnan(x), np.isinf(x)
    assert np.array_equal(~np.isfinite(conv), touched(nan_in | inf_in, 3))
    # NaN where a window holds NaN, and where Inf meets the zero centre tap (0 * Inf).
    assert np.array_equal(np.isnan(conv), touched(nan_in, 3) | inf_in)
    for op in ("max", "avg"):
        target = tmp_path / f"{op}.npy"
        args = ["pool", str(source), "--size", "3", "--stride", "1", "--padding", "1"]
        result = runner.invoke(main, [*args, "--op", op, "-o", str(target)])
        assert result.exit_code == 0 and "Warning" not in result.stderr
        pooled = np.load(target)
        assert np.array_equal(np.isnan(pooled), touched(nan_in, 3))
        assert np.array_equal(np.isposinf(pooled), touched(inf_in, 3))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_stays_local_for_large_kernels() -> None:
    """A 31x31 kernel (an FFT-sized one) also keeps NaN inside the windows that hold it: a
    transform would spread one NaN over the whole image."""
    x = np.zeros((1, 64, 64, 1), np.float32)
    x[0, 10, 10, 0] = np.nan
    weights = np.random.default_rng(1).standard_normal((31, 31))
    y = conv2d(x, weights, padding="same")
    # Outputs 0..25 along each axis have (10, 10) inside their 31x31 window.
    assert int(np.isnan(y).sum()) == 26 * 26


def test_max_pool_nan_is_not_beaten_by_padding() -> None:
    """max_pool2d's -inf padding never hides a NaN (PyTorch's max propagates NaN)."""
    x = np.zeros((1, 4, 4, 1))
    x[0, 0, 0, 0] = np.nan
    pooled = max_pool2d(x, 3, 1, 1)
    assert np.isnan(pooled[0, :2, :2, 0]).all() and not np.isnan(pooled[0, 2:, 2:, 0]).any()


# --------------------------------------------------------------------------- streams and signals


def _blocked_reading_stdin(pid: int) -> bool:
    """Whether the process sits in read(0, ...) (Linux's /proc/PID/syscall: nr 0, fd 0x0)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == "0" and fields[1] == "0x0"


@pytest.mark.skipif(not Path("/proc/self/syscall").exists(), reason="needs Linux's /proc")
def test_ctrl_c_exits_130_quietly_and_writes_nothing(tmp_path: Path) -> None:
    """Ctrl-C while convcli waits for stdin: exit 130, one line, no traceback, no file."""
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        convcli_command("conv", "-", "-k", "sharpen", "-o", out / "r.png"),
        cwd=tmp_path,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not _blocked_reading_stdin(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.stdin is not None
    process.stdin.write((CORPUS / "valid_rgb.png").read_bytes()[:100])  # some, not all
    process.stdin.flush()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.decode().strip() == "Interrupted." and stdout == b""
    assert list(out.iterdir()) == []


def test_an_interrupted_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between writing the temporary file and renaming it removes the temporary file."""

    def interrupted(source: str, target: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "r.png", b"x" * 100_000)
    assert list(tmp_path.iterdir()) == []


def test_short_writes_to_stdout_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe that takes 7 bytes per write(2) still receives every byte, in order."""
    received = bytearray()

    def short_write(fd: int, data: memoryview) -> int:
        received.extend(bytes(data[:7]))
        return min(7, len(data))

    monkeypatch.setattr(os, "write", short_write)
    payload = bytes(range(256)) * 40
    write_stdout(payload, fd=99)
    assert bytes(received) == payload
