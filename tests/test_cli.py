"""conv, pool and kernels through click's CliRunner: every flag and every error path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from convcli import avg_pool2d, conv2d, max_pool2d
from convcli.cli.main import main
from tests.conftest import SEED_IMAGE, SEED_KERNEL, SEED_OUTPUT, assert_clean_error, run
from tests.reference import conv2d_loop

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def save(path: Path, array: Any) -> Path:
    np.save(path, np.asarray(array))
    return path


def write_kernel(path: Path, content: Any) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_seed_case_through_the_cli(tmp_path: Path) -> None:
    """The seed's 5x5 image and 3x3 kernel, stride 1, pad 0, give the seed's numbers."""
    image = save(tmp_path / "image.npy", SEED_IMAGE)
    kernel = write_kernel(tmp_path / "k.json", SEED_KERNEL)
    result = run("conv", image, "-k", kernel, "--padding", "0", "-o", tmp_path / "out.npy")
    assert result.exit_code == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(out, SEED_OUTPUT)
    assert out.dtype == np.float32
    assert "5x5 -> 3x3" in result.stderr


def test_seed_batch_matches_torch_conv2d(tmp_path: Path) -> None:
    """4 RGB 9x9 images, 8 5x5x3 filters (OHWI) with bias, pad 2: torch's Conv2d to 1e-5."""
    with np.load(FIXTURES / "conv_seed_rgb.npz") as dump:
        x, weights, bias, expected = dump["input"], dump["kernel"], dump["bias"], dump["output"]
    assert x.shape == (4, 9, 9, 3) and weights.shape == (8, 5, 5, 3)
    image = save(tmp_path / "x.npy", x)
    kernel = write_kernel(tmp_path / "k.json", {"weights": weights.tolist(), "bias": bias.tolist()})
    result = run("conv", image, "-k", kernel, "--padding", "2", "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_kernel_file_defaults_then_flags_override(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((2, 7, 8, 3)).astype(np.float32)
    image = save(tmp_path / "x.npy", x)
    weights = np.random.default_rng(2).standard_normal((4, 3, 3, 3)).tolist()
    kernel = write_kernel(
        tmp_path / "k.json",
        {
            "weights": weights,
            "stride": 2,
            "padding": "valid",
            "pad_mode": "reflect",
            "bias": [1, 2, 3, 4],
        },
    )
    assert run("conv", image, "-k", kernel, "-o", tmp_path / "a.npy").exit_code == 0
    expected = conv2d(
        x, np.array(weights), np.array([1, 2, 3, 4]), stride=2, padding="valid", pad_mode="reflect"
    )
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected, rtol=1e-6)
    result = run(
        "conv",
        image,
        "-k",
        kernel,
        "--stride",
        "1,2",
        "--padding",
        "1,0,2,1",
        "-o",
        tmp_path / "b.npy",
    )
    assert result.exit_code == 0, result.stderr
    expected = conv2d(
        x,
        np.array(weights),
        np.array([1, 2, 3, 4]),
        stride=(1, 2),
        padding=(1, 0, 2, 1),
        pad_mode="reflect",
    )
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("flags", "keywords"),
    [
        (["--padding", "same"], {"padding": "same"}),
        (["--padding", "valid"], {"padding": "valid"}),
        (["--padding", "2"], {"padding": 2}),
        (["--padding", "1,2"], {"padding": (1, 2)}),
        (["--stride", "2", "--padding", "same"], {"stride": 2, "padding": "same"}),
        (["--dilation", "2", "--padding", "2"], {"dilation": 2, "padding": 2}),
        (["--pad-mode", "circular", "--padding", "1"], {"pad_mode": "circular", "padding": 1}),
        (["--pad-mode", "replicate"], {"pad_mode": "replicate", "padding": "same"}),
        (["--flip"], {"flip": True, "padding": "same"}),
    ],
)
def test_conv_flags_reach_the_engine(
    tmp_path: Path, flags: list[str], keywords: dict[str, Any]
) -> None:
    x = np.random.default_rng(3).standard_normal((1, 6, 7, 2))
    weights = np.random.default_rng(4).standard_normal((3, 3, 3, 2))
    image, kernel = save(tmp_path / "x.npy", x), save(tmp_path / "w.npy", weights)
    result = run("conv", image, "-k", kernel, *flags, "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.stderr
    actual = np.load(tmp_path / "y.npy")
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, conv2d_loop(x, weights, **keywords), rtol=1e-10)


def test_groups_layout_and_kernel_layout_flags(tmp_path: Path) -> None:
    """NCHW input, an OIHW .npy bank (PyTorch's weight), groups=2."""
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 6)).astype(np.float32)  # NCHW
    weights = np.random.default_rng(6).standard_normal((6, 2, 3, 3)).astype(np.float32)
    image, kernel = save(tmp_path / "x.npy", x), save(tmp_path / "w.npy", weights)
    result = run(
        "conv",
        image,
        "-k",
        kernel,
        "--kernel-layout",
        "OIHW",
        "--layout",
        "NCHW",
        "--groups",
        "2",
        "--padding",
        "1",
        "-o",
        tmp_path / "y.npy",
    )
    assert result.exit_code == 0, result.stderr
    actual = np.load(tmp_path / "y.npy")
    assert actual.shape == (2, 6, 5, 6)
    expected = conv2d_loop(x, weights, padding=1, groups=2, layout="NCHW", kernel_layout="OIHW")
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_npz_members_are_each_filtered(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", a=np.ones((5, 5)), b=np.arange(36.0).reshape(6, 6))
    kernel = write_kernel(tmp_path / "k.json", [[1, 1], [1, 1]])
    result = run(
        "conv", tmp_path / "in.npz", "-k", kernel, "--padding", "valid", "-o", tmp_path / "out.npz"
    )
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == ["a", "b"]
        np.testing.assert_array_equal(out["a"], np.full((4, 4), 4.0))
        assert out["b"].shape == (5, 5)


@pytest.mark.parametrize(
    ("flags", "call"),
    [
        (["--size", "2"], lambda x: max_pool2d(x, 2)),
        (
            ["--size", "3", "--stride", "2", "--padding", "1", "--ceil-mode"],
            lambda x: max_pool2d(x, 3, 2, 1, ceil_mode=True),
        ),
        (["--size", "3", "--dilation", "2"], lambda x: max_pool2d(x, 3, dilation=2)),
        (
            ["--size", "2", "--op", "avg", "--padding", "same", "--no-count-include-pad"],
            lambda x: avg_pool2d(x, 2, padding="same", count_include_pad=False),
        ),
        (
            ["--size", "3,2", "--op", "avg", "--padding", "1", "--stride", "2,1"],
            lambda x: avg_pool2d(x, (3, 2), (2, 1), 1),
        ),
    ],
)
def test_pool_flags(tmp_path: Path, flags: list[str], call: Any) -> None:
    x = np.random.default_rng(7).standard_normal((2, 9, 8, 3)).astype(np.float32)
    image = save(tmp_path / "x.npy", x)
    result = run("pool", image, *flags, "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), call(x), rtol=1e-6)


def test_pool_ncwh_layout_keeps_the_layout(tmp_path: Path) -> None:
    x = np.random.default_rng(8).standard_normal((2, 3, 8, 8)).astype(np.float32)
    result = run(
        "pool",
        save(tmp_path / "x.npy", x),
        "--size",
        "2",
        "--layout",
        "NCHW",
        "-o",
        tmp_path / "y.npy",
    )
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "y.npy").shape == (2, 3, 4, 4)


def test_json_report_on_stdout(tmp_path: Path) -> None:
    image = save(tmp_path / "x.npy", np.ones((1, 4, 4, 2), dtype=np.float32))
    result = run("pool", image, "--size", "2", "-o", tmp_path / "y.npy", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    (item,) = report["items"]
    assert item["shape_in"] == [1, 4, 4, 2]
    assert item["shape_out"] == [1, 2, 2, 2]
    assert item["dtype_out"] == "float32"
    assert report["summary"]["processed"] == 1


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    image = save(tmp_path / "x.npy", np.ones((4, 4)))
    result = run("pool", image, "--size", "2", "-o", tmp_path / "y.npy", "-q")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    image = save(tmp_path / "x.npy", np.ones((4, 4)))
    target = tmp_path / "y.npy"
    target.write_bytes(b"keep me")
    result = run("pool", image, "--size", "2", "-o", target)
    assert_clean_error(result, 2, "y.npy", "output exists", "--overwrite")
    assert target.read_bytes() == b"keep me"
    assert run("pool", image, "--size", "2", "-o", target, "--overwrite").exit_code == 0
    assert np.load(target).shape == (2, 2)


def test_input_is_never_overwritten(tmp_path: Path) -> None:
    image = save(tmp_path / "x.npy", np.ones((4, 4)))
    before = image.read_bytes()
    result = run("pool", image, "--size", "2", "-o", image, "--overwrite")
    assert_clean_error(result, 2, "refusing to overwrite an input")
    assert image.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["conv", "missing.npy", "-k", "sharpen", "-o", "o.npy"], ["missing.npy", "no such file"]),
        (["conv", "x.npy", "-k", "nope.json", "-o", "o.npy"], ["nope.json"]),
        (["conv", "x.npy", "-k", "bad.json", "-o", "o.npy"], ["bad.json", "weights[1]"]),
        (["conv", "x.npy", "-k", "k3.json", "--groups", "2", "-o", "o.npy"], ["groups=2"]),
        (
            [
                "conv",
                "x.npy",
                "-k",
                "k3.json",
                "--padding",
                "valid",
                "--dilation",
                "9",
                "-o",
                "o.npy",
            ],
            ["output would be empty"],
        ),
        (
            ["conv", "x.npy", "-k", "k3.json", "--padding", "100000", "-o", "o.npy"],
            ["would need", "over the limit"],
        ),
        (
            ["conv", "x.npy", "-k", "k3.json", "--max-bytes", "100", "-o", "o.npy"],
            ["x.npy", "--max-bytes"],
        ),
        (["pool", "x.npy", "--size", "2", "--padding", "2", "-o", "o.npy"], ["size // 2"]),
        (["pool", "x.npy", "--size", "2", "-o", "o.xyz"], ["cannot tell the output format"]),
        (["pool", "x.npy", "--size", "2", "-o", "o.npz"], ["only an .npz input"]),
        (["pool", "pickled.npy", "--size", "2", "-o", "o.npy"], ["pickled.npy", "unpickle"]),
        (
            ["pool", "x.npy", "--size", "2", "--op", "avg", "--dilation", "2", "-o", "o.npy"],
            ["--dilation applies to max pooling only"],
        ),
    ],
)
def test_errors_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "x.npy", np.ones((1, 6, 6, 3), dtype=np.float32))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    write_kernel(tmp_path / "bad.json", [[1, 2, 3], [4, 5]])
    write_kernel(tmp_path / "k3.json", np.ones((3, 3, 3)).tolist())
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(*args)
    assert_clean_error(result, 2, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "args",
    [
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--stride", "0"],
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--padding", "-1"],
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--padding", "1,2,3"],
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--pad-mode", "mirror"],
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--groups", "0"],
        ["conv", "x.npy", "-k", "sharpen", "-o", "o.npy", "--max-bytes", "lots"],
        ["pool", "x.npy", "-o", "o.npy"],
        ["pool", "x.npy", "--size", "2", "-o", "o.npy", "--overwrite", "--skip-existing"],
        ["pool", "x.npy", "--size", "2", "-o", "-", "--json"],
    ],
)
def test_bad_flags_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "x.npy", np.ones((6, 6)))
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert "Error" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_version_and_help_with_examples() -> None:
    assert run("--version").exit_code == 0
    for command in ("conv", "pool", "verify", "kernels"):
        result = run(command, "--help")
        assert result.exit_code == 0
        assert "Examples:" in result.stdout


def test_conv_starts_without_the_modules_it_does_not_need() -> None:
    """Start-up time: conv/pool import neither rich, TIFF, imageio, verify nor the workers.

    They load when used (a table is drawn, a TIFF read, verify run, a batch started); the
    package's lazy exports still resolve.
    """
    import subprocess
    import sys

    code = (
        "import sys, convcli.cli\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'tifffile', 'imageio', 'multiprocessing', 'convcli'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    unexpected = {"rich", "tifffile", "imageio", "multiprocessing"}
    unexpected |= {
        f"convcli.{name}"
        for name in ("verify.run", "verify.dumps", "verify.pairs", "batch.workers", "io.tiff")
    }
    assert "convcli.engine" in loaded and not unexpected & set(loaded)
    import convcli

    assert all(getattr(convcli, name) is not None for name in convcli.__all__)


def test_threads_flag_caps_the_engine_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads N (or $CONVCLI_THREADS) runs the engine on N threads; os.environ is untouched."""
    import threading

    from convcli.engine import threads

    started: list[str] = []
    start = threading.Thread.start

    def recording(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", recording)
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    x = np.random.default_rng(9).standard_normal((2, 256, 256, 3)).astype(np.float32)
    image = save(tmp_path / "x.npy", x)
    kernel = ("-k", "sharpen")  # the depthwise tap loop runs on the engine's threads

    def engine_threads() -> list[str]:
        return [name for name in started if name.startswith("convcli")]

    result = run("conv", image, *kernel, "--threads", "2", "-o", tmp_path / "a.npy")
    assert result.exit_code == 0, result.stderr
    assert engine_threads()  # the cap would be vacuous if the work never spread
    started.clear()
    result = run("conv", image, *kernel, "--threads", "1", "-o", tmp_path / "b.npy")
    assert result.exit_code == 0, result.stderr
    assert engine_threads() == []
    assert threads.THREADS_ENV not in os.environ  # nothing leaks into later tests
    result = CliRunner().invoke(
        main, ["conv", str(image), *kernel, "-o", str(tmp_path / "c.npy")],
        env={threads.THREADS_ENV: "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert engine_threads() == []
    for name in ("b.npy", "c.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "a.npy"), np.load(tmp_path / name), rtol=1e-6, atol=1e-6
        )


def test_quiet_batch_still_names_each_failure_and_all_failed_is_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.png").write_bytes(b"\x89PNG broken")
    (source / "b.npy").write_bytes(b"not numpy")
    result = run("pool", source, "--size", "2", "-o", tmp_path / "out", "-q", "--jobs", "1")
    assert result.exit_code == 2  # nothing could be done
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("Error: ") for line in lines)
    assert "a.png" in lines[0] and "b.npy" in lines[1]
    save(source / "c.npy", np.ones((4, 4)))
    result = run("pool", source, "--size", "2", "-o", tmp_path / "out", "-q", "--jobs", "1")
    assert result.exit_code == 1  # some items written, some failed
    assert (tmp_path / "out" / "c.npy").exists()


def test_every_command_has_help_and_appears_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, command in main.commands.items():
        assert command.help or command.short_help, name
        assert f"convcli {name}" in readme, name
