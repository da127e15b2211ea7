"""stdin/stdout through real processes and real pipes, as a shell user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convcli.io import images
from tests.conftest import convcli

SAMPLES = Path(__file__).parent.parent / "sample_images"


def test_stdout_is_byte_identical_to_the_file(tmp_path: Path) -> None:
    """`-o -` writes exactly the bytes `-o file` writes; the table goes to stderr."""
    source = SAMPLES / "photo_rgb.png"
    to_file = convcli("conv", source, "-k", "sharpen", "-o", tmp_path / "a.png")
    to_stdout = convcli("conv", source, "-k", "sharpen", "-o", "-", "--format", "png")
    assert to_file.returncode == 0 and to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == (tmp_path / "a.png").read_bytes()
    assert b"sharpen" in to_stdout.stderr


def test_stdin_format_is_sniffed_and_kept(tmp_path: Path) -> None:
    """`-` reads stdin; without --format the output has the input's format."""
    data = (SAMPLES / "photo_rgb.jpg").read_bytes()
    result = convcli("pool", "-", "--size", "2", "-o", "-", stdin=data)
    assert result.returncode == 0, result.stderr
    assert images.sniff_format(result.stdout) == "jpeg"
    assert images.read_image(result.stdout, name="out").pixels.shape == (60, 80, 3)


def test_npy_through_stdin_and_stdout() -> None:
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    buffer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np; "
            "np.save(sys.stdout.buffer, np.arange(64, dtype=np.float32).reshape(8, 8))",
        ],
        capture_output=True,
        check=True,
    ).stdout
    result = convcli("pool", "-", "--size", "2", "-o", "-", "-q", stdin=buffer)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    out = np.load(__import__("io").BytesIO(result.stdout))
    np.testing.assert_array_equal(out, x.reshape(4, 2, 4, 2).max(axis=(1, 3)))


def test_a_shell_chain_of_two_commands(tmp_path: Path) -> None:
    """conv | pool through a real shell pipe gives what the two steps give with files."""
    source = SAMPLES / "photo_rgb.png"
    command = (
        f"{sys.executable} -m convcli conv {source} -k gaussian -o - --format png -q | "
        f"{sys.executable} -m convcli pool - --size 2 -o - --format png -q > {tmp_path / 'b.png'}"
    )
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, timeout=120)
    assert convcli("conv", source, "-k", "gaussian", "-o", tmp_path / "g.png").returncode == 0
    assert (
        convcli("pool", tmp_path / "g.png", "--size", "2", "-o", tmp_path / "p.png").returncode == 0
    )
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "p.png").read_bytes()


def test_head_closing_the_pipe_ends_quietly(tmp_path: Path) -> None:
    """`| head -c 10` must not print a traceback or message (exit 141, like cat)."""
    big = np.zeros((1, 512, 512, 3), dtype=np.float32)  # 3 MiB: larger than a pipe buffer
    np.save(tmp_path / "big.npy", big)
    command = (
        f"{sys.executable} -m convcli pool {tmp_path / 'big.npy'} --size 1 -o - -q | head -c 10"
        " > /dev/null; echo ${PIPESTATUS[0]}"
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, check=True)
    assert result.stderr == b""
    assert result.stdout.strip() == b"141"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX pipes")
def test_errors_on_stdin_input_name_stdin() -> None:
    result = convcli("conv", "-", "-k", "sharpen", "-o", "-", stdin=b"not an image at all")
    assert result.returncode == 2
    assert b"Error: <stdin>" in result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stdout == b""
